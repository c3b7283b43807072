// Numerical gradients by centred differences, (L(theta + h) - L(theta - h)) / 2h
// for every entry of every parameter array, with the losses evaluated by the
// engine in long double. In double, the difference of two losses of about
// T ln K would carry ~1e-14 / 2h of rounding noise (1e-6 of the smallest
// gradients at h = 1e-4); in long double (64-bit mantissa on x86-64) what is
// left is the O(h^2) truncation error.
#pragma once

#include <cstddef>
#include <vector>

#include "engine.hpp"
#include "train.hpp"

namespace charrnn {

// params: float64 arrays in layout order; X, Y: B x n (stream-major);
// states: B x state_size initial states; out: float64 arrays like params.
template <typename I, typename J>
void numerical_grads(const NetLayout& lay, const std::vector<const double*>& params, const Dropout& drop, const I* X,
                     const J* Y, std::size_t B, std::size_t n, const double* states, double h,
                     const std::vector<double*>& out) {
    using LD = long double;
    const auto specs = lay.arrays();
    std::vector<std::vector<LD>> work(specs.size());
    std::vector<LD*> ptrs;
    for (std::size_t i = 0; i < specs.size(); ++i) {
        work[i].assign(params[i], params[i] + specs[i].size());
        ptrs.push_back(work[i].data());
    }
    std::vector<LD> st(states, states + B * lay.state_size());
    Engine<LD> eng(lay, 1);
    eng.dropout = drop;
    load_engine_chunk(eng, X, Y, B, n, st.data());
    const NetParams<LD> P(lay, ptrs);
    auto loss = [&]() -> LD {
        for (std::size_t s = 0; s < B; ++s) eng.set_state(s, st.data() + s * lay.state_size());
        eng.prepare(P, 0);
        eng.forward(0);
        return eng.output(P, 0, false);
    };
    const LD step = static_cast<LD>(h);
    for (std::size_t i = 0; i < specs.size(); ++i) {
        for (std::size_t j = 0; j < specs[i].size(); ++j) {
            LD& v = work[i][j];
            const LD old = v;
            v = old + step;
            const LD up = loss();
            v = old - step;
            const LD down = loss();
            v = old;
            out[i][j] = static_cast<double>((up - down) / (2 * step));
        }
    }
}

}  // namespace charrnn
