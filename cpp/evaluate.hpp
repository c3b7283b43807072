// Forward-only passes over a whole text by B streams and a thread team, with
// no gradient storage used (walk.hpp, EvalSplit): the loss of a text, summed
// in double, and the walk it shares with the trace (trace.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "engine.hpp"
#include "parallel.hpp"
#include "walk.hpp"

namespace charrnn {

// Steps per chunk of an evaluation.
constexpr std::size_t kEvalChunk = 64;

// Where the rows of one chunk of a forward walk come from: row t*B + s is
// input position first + s*stride + t0 + t of the text (its target the next
// character).
struct WalkChunk {
    std::size_t B, stride, first, t0, n;
    std::size_t position(std::size_t row) const { return first + (row % B) * stride + t0 + row / B; }
};

// The forward walk of the loss: predicts data[1..N) from data[0..N-1) by up
// to B_max streams (EvalSplit). `state` (one stream's state_size values) is
// where stream 0 starts and, on return, the state at the end of the text.
// `prec` is the precision of the matrix products (bf16: bfloat16 operands
// and float32 sums, as bfloat16 training computes them; float engines only).
// After each chunk's output, every worker of the team calls
// visit(eng, id, chunk), so a caller can read what the engine computed
// (Engine::hidden, probabilities, ...) in its share of the rows; every
// worker's visit ends before the next chunk is loaded. Returns the summed loss.
template <typename T, typename I, typename Visit>
double forward_text(const NetLayout& lay, const std::vector<T*>& params, const I* data, std::size_t N, T* state,
                    std::size_t B_max, std::size_t threads, Precision prec, Visit&& visit) {
    const EvalSplit sp = EvalSplit::of(N, B_max);
    const NetParams<T> P(lay, params);
    const std::size_t bytes = prec == Precision::bf16 ? 2 : sizeof(T);  // of a packed weight
    Engine<T> eng(lay, sp.B == 1 ? stream_team(lay, threads, bytes) : team_size(lay, sp.B, threads), prec);
    eng.forward_only = true;
    const std::size_t SS = lay.state_size(), K = lay.K;
    std::vector<T> states(sp.B * SS, T(0));
    std::copy(state, state + SS, states.begin());
    double loss = 0.0;
    // The chunks: ceil(E / kEvalChunk) of B streams, then ceil(tail / kEvalChunk) of the last stream alone.
    const std::size_t head = (sp.E + kEvalChunk - 1) / kEvalChunk, tail = (sp.tail + kEvalChunk - 1) / kEvalChunk;
    auto chunk_at = [&](std::size_t c) -> WalkChunk {
        if (c < head) return {sp.B, sp.E, 0, c * kEvalChunk, std::min(kEvalChunk, sp.E - c * kEvalChunk)};
        const std::size_t t0 = (c - head) * kEvalChunk;
        return {1, 0, sp.B * sp.E, t0, std::min(kEvalChunk, sp.tail - t0)};
    };
    // stream s of a chunk continues the state of stream s (the tail: of the last stream)
    auto state_of = [&](const WalkChunk& ch, std::size_t s) {
        return states.data() + (ch.first == 0 ? s : sp.B - 1) * SS;
    };
    if (head + tail == 0) return loss;
    // The first chunk is the largest: later ones fit in what it allocates, so
    // nothing is allocated once the team runs. One team for every chunk:
    // starting threads for each one cost about 4 % of a validation on the Xeon.
    eng.resize(chunk_at(0).B, chunk_at(0).n);
    run_team(eng.threads, [&](std::size_t id) {
        for (std::size_t c = 0; c < head + tail; ++c) {
            const WalkChunk ch = chunk_at(c);
            if (id == 0) {
                eng.resize(ch.B, ch.n);
                for (std::size_t s = 0; s < ch.B; ++s) {
                    copy_chunk(data + ch.first + s * ch.stride + ch.t0, ch.n, K, eng.inputs() + s,
                               eng.targets() + s, ch.B);
                    eng.set_state(s, state_of(ch, s));
                }
            }
            eng.barrier.wait();
            if (c == 0) eng.prepare(P, id);
            eng.forward(id);
            const double l = eng.output(P, id, false);
            if (id == 0) loss += l;
            visit(static_cast<const Engine<T>&>(eng), id, ch);
            eng.barrier.wait();  // every worker is done with this chunk's rows
            if (id == 0)
                for (std::size_t s = 0; s < ch.B; ++s) eng.get_state(s, state_of(ch, s));
        }
    });
    std::copy(states.begin() + (sp.B - 1) * SS, states.begin() + sp.B * SS, state);
    return loss;
}

// Summed loss of predicting data[1..N) from data[0..N-1) (forward_text,
// nothing read besides the loss).
template <typename T, typename I>
double evaluate_text(const NetLayout& lay, const std::vector<T*>& params, const I* data, std::size_t N, T* state,
                     std::size_t B_max, std::size_t threads, Precision prec = Precision::full) {
    return forward_text(lay, params, data, N, state, B_max, threads, prec,
                        [](const Engine<T>&, std::size_t, const WalkChunk&) {});
}

}  // namespace charrnn
