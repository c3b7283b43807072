// AdaGrad with elementwise gradient clipping, fused into one pass:
//   g <- clip(g, -clip, clip);  M <- M + g^2;  theta <- theta - eta * g / sqrt(M + eps)
// (kernels.hpp compiles it per instruction set; the loop vectorises because
// the build uses -fno-math-errno, which leaves sqrt IEEE-exact.)
#pragma once

#include <cmath>
#include <cstddef>

#include "simd.hpp"

namespace charrnn {

template <typename T>
CHARRNN_ALWAYS_INLINE void clip_adagrad_impl(T* theta, T* mem, const T* grad, std::size_t n, T eta, T clip, T eps) {
    for (std::size_t i = 0; i < n; ++i) {
        T g = grad[i] < -clip ? -clip : grad[i];
        g = g > clip ? clip : g;
        const T mi = mem[i] + g * g;
        mem[i] = mi;
        theta[i] -= eta * g / std::sqrt(mi + eps);
    }
}

}  // namespace charrnn
