// The trace of a text: the forward pass of the loss (evaluate.hpp's walk, the
// engine's own forward and output), with what it computes at every position
// kept instead of summed: the probability of the actual next character, the
// k most probable next characters, and every layer's hidden state (and an
// LSTM's cell state). The states are the engine's own, so they are exactly
// the ones training and evaluation compute; the row losses sum to the loss
// of evaluate_text with the same streams.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine.hpp"
#include "evaluate.hpp"
#include "gemm.hpp"
#include "sampling.hpp"
#include "walk.hpp"

namespace charrnn {

// Where a trace goes: caller-owned arrays, row i for input position i of the
// text (i = 0 .. N-2: having read data[i], predicting data[i+1]).
template <typename T>
struct TraceOut {
    std::size_t top_k = 0;              // columns of top_index and top_prob (0: none kept)
    double* nll = nullptr;              // N-1: -log p(data[i+1]), the engine's row losses
    T* prob = nullptr;                  // N-1: p(data[i+1]), the softmax output
    std::int32_t* top_index = nullptr;  // (N-1) x top_k: most probable first, ties by the lower index
    T* top_prob = nullptr;              // (N-1) x top_k: their probabilities
    T* hidden = nullptr;                // L x (N-1) x m: layer l's state after reading data[i]; null: not kept
    T* cell = nullptr;                  // L x (N-1) x m: an LSTM's cell states; null: not kept
};

// Traces data[0..N) (N >= 2) from `state` (one stream's state_size values,
// replaced by the state at the end of the text) by up to B_max streams, as
// forward_text walks it (B_max = 1: one stream, every state the one of a
// single pass from the start), its matrix products in precision `prec` as
// in evaluate_text. Returns the summed loss.
template <typename T, typename I>
double trace_text(const NetLayout& lay, const std::vector<T*>& params, const I* data, std::size_t N, T* state,
                  std::size_t B_max, std::size_t threads, const TraceOut<T>& out, Precision prec = Precision::full) {
    const std::size_t K = lay.K, m = lay.m, rows_total = N - 1;
    T* const cells = lay.S() == 2 ? out.cell : nullptr;  // only an LSTM has cell states
    std::vector<std::vector<std::uint32_t>> order(std::max<std::size_t>(1, threads));  // each worker's scratch
    auto keep = [&](const Engine<T>& eng, std::size_t id, const WalkChunk& chunk) {
        const std::size_t rows = chunk.B * chunk.n, k = out.top_k;
        const Range r = split_range(rows, id, eng.threads);
        const T* probs = eng.probabilities();
        const T* losses = eng.row_losses();
        for (std::size_t row = r.begin; row < r.end; ++row) {
            const std::size_t i = chunk.position(row);
            const T* p = probs + row * K;
            out.nll[i] = static_cast<double>(losses[row]);
            out.prob[i] = p[static_cast<std::size_t>(safe_index(data[i + 1], K))];
            if (k > 0) {
                rank_top(p, K, k, order[id]);
                for (std::size_t j = 0; j < k; ++j) {
                    out.top_index[i * k + j] = static_cast<std::int32_t>(order[id][j]);
                    out.top_prob[i * k + j] = p[order[id][j]];
                }
            }
            for (std::size_t l = 0; l < lay.L; ++l) {
                const std::size_t dst = (l * rows_total + i) * m;
                if (out.hidden) std::copy_n(eng.hidden(l) + row * m, m, out.hidden + dst);
                if (cells) std::copy_n(eng.cell_state(l) + row * m, m, cells + dst);
            }
        }
    };
    return forward_text(lay, params, data, N, state, B_max, threads, prec, keep);
}

}  // namespace charrnn
