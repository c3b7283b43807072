// Forward-only loss of a whole text by B streams and a thread team, with no
// gradient storage used (walk.hpp, EvalSplit). Summed in double.
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

// Summed loss of predicting data[1..N) from data[0..N-1); `state` (one
// stream's state_size values) is where stream 0 starts and, on return, the
// state at the end of the text.
template <typename T, typename I>
double evaluate_text(const NetLayout& lay, const std::vector<T*>& params, const I* data, std::size_t N, T* state,
                     std::size_t B_max, std::size_t threads) {
    const EvalSplit sp = EvalSplit::of(N, B_max);
    const NetParams<T> P(lay, params);
    Engine<T> eng(lay, threads);
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
            run_team(eng.threads, [&](std::size_t id) {
                if (!packed) eng.prepare(P, id);
                eng.forward(id);
                const double l = eng.output(P, id, false);
                if (id == 0) loss += l;
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

}  // namespace charrnn
