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
// (Engine::hidden, probabilities, ...) in its share of the rows; the team
// ends before the next chunk is loaded. Returns the summed loss.
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
    // A chunk of n steps of B streams, stream s reading data[first + s*stride + t0 + t].
    auto run = [&](std::size_t B, std::size_t stride, std::size_t first, std::size_t total) {
        bool packed = false;
        for (std::size_t t0 = 0; t0 < total; t0 += kEvalChunk) {
            const std::size_t n = std::min(kEvalChunk, total - t0);
            eng.resize(B, n);
            for (std::size_t s = 0; s < B; ++s) {
                copy_chunk(data + first + s * stride + t0, n, K, eng.inputs() + s, eng.targets() + s, B);
                eng.set_state(s, states.data() + (first == 0 ? s : sp.B - 1) * SS);
            }
            const WalkChunk chunk{B, stride, first, t0, n};
            run_team(eng.threads, [&](std::size_t id) {
                if (!packed) eng.prepare(P, id);
                eng.forward(id);
                const double l = eng.output(P, id, false);
                if (id == 0) loss += l;
                visit(static_cast<const Engine<T>&>(eng), id, chunk);
            });
            packed = true;
            for (std::size_t s = 0; s < B; ++s) eng.get_state(s, states.data() + (first == 0 ? s : sp.B - 1) * SS);
        }
    };
    if (sp.E > 0) run(sp.B, sp.E, 0, sp.E);
    if (sp.tail > 0) run(1, 0, sp.B * sp.E, sp.tail);
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
