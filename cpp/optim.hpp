// First-order optimisers over the list of parameter arrays, with gradient
// clipping. With g the (clipped) gradient of one entry:
//   adagrad:  M <- M + g^2;                         theta <- theta - eta g / sqrt(M + eps)
//   rmsprop:  M <- gamma M + (1 - gamma) g^2;       theta <- theta - eta g / sqrt(M + eps)
//   adam:     t <- t + 1
//             m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
//             theta <- theta - eta (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// Clipping, before the update:
//   elementwise:  g <- min(max(g, -clip), clip)
//   global_norm:  g <- g * min(1, clip / ||g||_2), the norm over ALL arrays
//   none:         g unchanged
// The square roots and divisions are IEEE-exact (no approximations), so an
// update matches the formula above as written in NumPy.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "checks.hpp"
#include "layout.hpp"
#include "simd.hpp"

namespace charrnn {

struct OptConfig {
    Optimizer opt = Optimizer::adagrad;
    ClipMode clip_mode = ClipMode::elementwise;
    double eta = 0, clip = 0, gamma = 0, beta1 = 0, beta2 = 0, eps = 0;
};

// One parameter array, its gradient and its optimiser memory (s2: adam's v).
template <typename T>
struct OptSlot {
    T* theta;
    const T* grad;
    T* s1;
    T* s2;
    std::size_t n;
};

// Per-update constants, in T.
template <typename T>
struct OptCoeffs {
    T clip, scale, eta, eps, gamma, one_m_gamma, b1, one_m_b1, b2, one_m_b2, bc1, bc2;
};

template <typename T>
CHARRNN_ALWAYS_INLINE T clip_value(T g, T clip) {
    g = g < -clip ? -clip : g;
    return g > clip ? clip : g;
}

// Entries [i0, i1) of one slot, with the clipping mode and optimiser fixed at
// compile time so that the loop has no branches but the clamps.
template <ClipMode C, Optimizer O, typename T>
CHARRNN_ALWAYS_INLINE void update_range(const OptSlot<T>& sl, std::size_t i0, std::size_t i1, const OptCoeffs<T>& k) {
    T* const theta = sl.theta;
    const T* const grad = sl.grad;
    T* const s1 = sl.s1;
    T* const s2 = sl.s2;
    for (std::size_t i = i0; i < i1; ++i) {
        T g = grad[i];
        if constexpr (C == ClipMode::elementwise) g = clip_value(g, k.clip);
        if constexpr (C == ClipMode::global_norm) g = g * k.scale;
        if constexpr (O == Optimizer::adagrad) {
            const T mi = s1[i] + g * g;
            s1[i] = mi;
            theta[i] -= k.eta * g / std::sqrt(mi + k.eps);
        } else if constexpr (O == Optimizer::rmsprop) {
            const T mi = k.gamma * s1[i] + k.one_m_gamma * (g * g);
            s1[i] = mi;
            theta[i] -= k.eta * g / std::sqrt(mi + k.eps);
        } else {
            const T mi = k.b1 * s1[i] + k.one_m_b1 * g;
            const T vi = k.b2 * s2[i] + k.one_m_b2 * (g * g);
            s1[i] = mi;
            s2[i] = vi;
            theta[i] -= k.eta * (mi / k.bc1) / (std::sqrt(vi / k.bc2) + k.eps);
        }
    }
}

template <ClipMode C, typename T>
CHARRNN_ALWAYS_INLINE void update_range_for(Optimizer o, const OptSlot<T>& sl, std::size_t i0, std::size_t i1,
                                            const OptCoeffs<T>& k) {
    switch (o) {
        case Optimizer::adagrad: return update_range<C, Optimizer::adagrad>(sl, i0, i1, k);
        case Optimizer::rmsprop: return update_range<C, Optimizer::rmsprop>(sl, i0, i1, k);
        case Optimizer::adam: return update_range<C, Optimizer::adam>(sl, i0, i1, k);
    }
}

template <typename T>
CHARRNN_ALWAYS_INLINE void optimizer_range_impl(ClipMode c, Optimizer o, const OptSlot<T>& sl, std::size_t i0,
                                                std::size_t i1, const OptCoeffs<T>& k) {
    switch (c) {
        case ClipMode::elementwise: return update_range_for<ClipMode::elementwise>(o, sl, i0, i1, k);
        case ClipMode::global_norm: return update_range_for<ClipMode::global_norm>(o, sl, i0, i1, k);
        case ClipMode::none: return update_range_for<ClipMode::none>(o, sl, i0, i1, k);
    }
}

// sum of g^2 over g[0..n), in double: eight interleaved partial sums added in a fixed order.
template <typename T>
CHARRNN_ALWAYS_INLINE double sum_squares_impl(const T* g, std::size_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (std::size_t l = 0; l < 8; ++l) acc[l] += static_cast<double>(g[i + l]) * static_cast<double>(g[i + l]);
    double tail = 0.0;
    for (; i < n; ++i) tail += static_cast<double>(g[i]) * static_cast<double>(g[i]);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

// 0 when every g[i] is finite, NaN otherwise: without a norm to compute, this
// is what keeps a non-finite gradient from reaching the parameters.
template <typename T>
CHARRNN_ALWAYS_INLINE double finite_probe_impl(const T* g, std::size_t n) {
    return all_finite(g, n) ? 0.0 : std::numeric_limits<double>::quiet_NaN();
}

// The constants of update number t (1-based), given the gradient's global
// norm (only used by global_norm clipping).
template <typename T>
OptCoeffs<T> opt_coeffs(const OptConfig& cfg, std::uint64_t t, double norm) {
    OptCoeffs<T> k;
    k.clip = static_cast<T>(cfg.clip);
    k.scale = T(1);
    if (cfg.clip_mode == ClipMode::global_norm && norm > cfg.clip) k.scale = static_cast<T>(cfg.clip / norm);
    k.eta = static_cast<T>(cfg.eta);
    k.eps = static_cast<T>(cfg.eps);
    k.gamma = static_cast<T>(cfg.gamma);
    k.one_m_gamma = static_cast<T>(1.0 - cfg.gamma);
    k.b1 = static_cast<T>(cfg.beta1);
    k.one_m_b1 = static_cast<T>(1.0 - cfg.beta1);
    k.b2 = static_cast<T>(cfg.beta2);
    k.one_m_b2 = static_cast<T>(1.0 - cfg.beta2);
    const double td = static_cast<double>(t);
    k.bc1 = static_cast<T>(1.0 - std::pow(cfg.beta1, td));
    k.bc2 = static_cast<T>(1.0 - std::pow(cfg.beta2, td));
    return k;
}

}  // namespace charrnn
