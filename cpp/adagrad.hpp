// AdaGrad with elementwise gradient clipping, fused into one pass:
//   g <- clip(g, -clip, clip);  M <- M + g^2;  theta <- theta - eta * g / sqrt(M + eps)
// (kernels.hpp compiles it per instruction set; the loop vectorises because
// the build uses -fno-math-errno, which leaves sqrt IEEE-exact.)
#pragma once

#include <cmath>
#include <cstddef>

#include "simd.hpp"

namespace charrnn {

// g limited to [-clip, clip].
template <typename T>
CHARRNN_ALWAYS_INLINE T clip_value(T g, T clip) {
    g = g < -clip ? -clip : g;
    return g > clip ? clip : g;
}

// One AdaGrad update of one entry with the (already clipped) gradient g.
// Shared with optim.hpp, so both trainers do the same arithmetic.
template <typename T>
CHARRNN_ALWAYS_INLINE void adagrad_entry(T& theta, T& mem, T g, T eta, T eps) {
    const T mi = mem + g * g;
    mem = mi;
    theta -= eta * g / std::sqrt(mi + eps);
}

template <typename T>
CHARRNN_ALWAYS_INLINE void clip_adagrad_impl(T* theta, T* mem, const T* grad, std::size_t n, T eta, T clip, T eps) {
    for (std::size_t i = 0; i < n; ++i) adagrad_entry(theta[i], mem[i], clip_value(grad[i], clip), eta, eps);
}

}  // namespace charrnn
