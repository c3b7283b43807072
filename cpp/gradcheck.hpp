// Numerical gradients by centred differences, (L(theta + h) - L(theta - h)) / 2h
// for every entry of every parameter array, with the losses evaluated by the
// engine in long double. In double, the difference of two losses of about
// T ln K would carry ~1e-14 / 2h of rounding noise (1e-6 of the smallest
// gradients at h = 1e-4); in long double (64-bit mantissa on x86-64) what is
// left is the O(h^2) truncation error.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <vector>

#include "engine.hpp"
#include "gemm.hpp"
#include "parallel.hpp"
#include "train.hpp"

namespace charrnn {

// params: float64 arrays in layout order; X, Y: B x n (stream-major);
// states: B x state_size initial states; out: float64 arrays like params.
// `threads` workers share the entries, each with its own copy of the
// parameters and its own one-thread engine: every entry is computed alone,
// in the same way whichever worker takes it, so the result does not depend
// on the thread count.
template <typename I, typename J>
void numerical_grads(const NetLayout& lay, const std::vector<const double*>& params, const Dropout& drop, const I* X,
                     const J* Y, std::size_t B, std::size_t n, const double* states, double h,
                     const std::vector<double*>& out, std::size_t threads = 1) {
    using LD = long double;
    const auto specs = lay.arrays();
    std::size_t total = 0;
    for (const auto& s : specs) total += s.size();
    threads = std::max<std::size_t>(1, std::min(threads, total));
    // Each worker's copy of the parameters and states, and its engine, made
    // before the team starts (nothing that can throw runs in a worker).
    struct Worker {
        std::vector<std::vector<LD>> work;
        std::vector<LD> st;
        std::unique_ptr<Engine<LD>> eng;
        std::unique_ptr<NetParams<LD>> P;
    };
    std::vector<Worker> workers(threads);
    for (Worker& w : workers) {
        std::vector<LD*> ptrs;
        w.work.resize(specs.size());
        for (std::size_t i = 0; i < specs.size(); ++i) {
            w.work[i].assign(params[i], params[i] + specs[i].size());
            ptrs.push_back(w.work[i].data());
        }
        w.st.assign(states, states + B * lay.state_size());
        w.eng = std::make_unique<Engine<LD>>(lay, 1);
        w.eng->dropout = drop;
        load_engine_chunk(*w.eng, X, Y, B, n, w.st.data());
        w.P = std::make_unique<NetParams<LD>>(lay, ptrs);
    }
    const LD step = static_cast<LD>(h);
    run_team(threads, [&](std::size_t id) {
        Worker& w = workers[id];
        Engine<LD>& eng = *w.eng;
        auto loss = [&]() -> LD {
            for (std::size_t s = 0; s < B; ++s) eng.set_state(s, w.st.data() + s * lay.state_size());
            eng.prepare(*w.P, 0);
            eng.forward(0);
            return eng.output(*w.P, 0, false);
        };
        // this worker's entries: [r.begin, r.end) of all arrays' entries in layout order
        const Range r = split_range(total, id, threads);
        std::size_t first = 0;  // flat index of array i's entry 0
        for (std::size_t i = 0; i < specs.size(); ++i) {
            const std::size_t size = specs[i].size();
            const std::size_t j0 = std::clamp(r.begin, first, first + size) - first;
            const std::size_t j1 = std::clamp(r.end, first, first + size) - first;
            for (std::size_t j = j0; j < j1; ++j) {
                LD& v = w.work[i][j];
                const LD old = v;
                v = old + step;
                const LD up = loss();
                v = old - step;
                const LD down = loss();
                v = old;
                out[i][j] = static_cast<double>((up - down) / (2 * step));
            }
            first += size;
        }
    });
}

}  // namespace charrnn
