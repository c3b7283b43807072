// Text synthesis: run the recurrence and draw each next character from
// softmax(o / temperature).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.hpp"
#include "rnn.hpp"

namespace charrnn {

// SplitMix64: tiny, fast, and fully specified, so a seed gives the same text
// on every platform and compiler (std:: distributions do not promise that).
struct SplitMix64 {
    std::uint64_t state;
    explicit SplitMix64(std::uint64_t seed) : state(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    // Uniform double in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

// Index k drawn with probability w[k] / sum(w), by inverse CDF on u in [0, 1).
template <typename T>
inline std::size_t draw_index(const T* w, std::size_t K, double u) {
    double total = 0.0;
    for (std::size_t k = 0; k < K; ++k) total += static_cast<double>(w[k]);
    const double target = u * total;
    double cum = 0.0;
    std::size_t last_positive = 0;
    for (std::size_t k = 0; k < K; ++k) {
        if (w[k] > T(0)) {
            cum += static_cast<double>(w[k]);
            last_positive = k;
            if (target < cum) return k;
        }
    }
    return last_positive;  // only reached through rounding at the top end
}

// Feeds the prime characters through the network starting from h (updated in
// place), then synthesises n characters into out. On return h is the state
// after the last prime/sampled character *before* the final sampled one, so
// calling again with prime = {out[n-1]} and the returned h continues exactly.
template <typename T, typename I>
void sample(const ParamsView<T>& P, T* h, const I* prime, std::size_t n_prime, std::size_t n,
            double temperature, std::uint64_t seed, std::int32_t* out) {
    const std::size_t m = P.m, K = P.K;
    const Kernels<T>& kn = kernels<T>();
    Transposed<T> tr;
    tr.resize(K, m);
    tr.refresh(kn, P, 0, 1);
    std::vector<T> a(m), o(K);
    SplitMix64 rng(seed);
    const T inv_temp = static_cast<T>(1.0 / temperature);
    T log_z;
    // h = tanh(W h + U[:, x] + b)
    auto step = [&](std::size_t x) {
        for (std::size_t i = 0; i < m; ++i) a[i] = P.b[i] + P.U[i * K + x];
        kn.gemm({1, m, m, h, m, 1, tr.WT.data(), m, a.data(), m, true});
        kn.tanh_inplace(a.data(), m);
        std::copy(a.begin(), a.end(), h);
    };
    for (std::size_t i = 0; i < n_prime; ++i) step(static_cast<std::size_t>(prime[i]));
    for (std::size_t i = 0; i < n; ++i) {
        if (i > 0) step(static_cast<std::size_t>(out[i - 1]));
        // p = softmax((V h + c) / temperature)
        std::copy(P.c, P.c + K, o.begin());
        kn.gemm({1, K, m, h, m, 1, tr.VT.data(), K, o.data(), K, true});
        kn.softmax_rows(o.data(), 1, K, K, inv_temp, &log_z);
        out[i] = static_cast<std::int32_t>(draw_index(o.data(), K, rng.uniform()));
    }
}

}  // namespace charrnn
