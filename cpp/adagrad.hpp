// AdaGrad with elementwise gradient clipping, fused into one pass:
//   g <- clip(g, -clip, clip);  M <- M + g^2;  theta <- theta - eta * g / sqrt(M + eps)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace charrnn {

template <typename T>
inline void clip_adagrad(T* theta, T* mem, const T* grad, std::size_t n, T eta, T clip, T eps) {
    for (std::size_t i = 0; i < n; ++i) {
        const T g = std::min(std::max(grad[i], -clip), clip);
        mem[i] += g * g;
        theta[i] -= eta * g / std::sqrt(mem[i] + eps);
    }
}

}  // namespace charrnn
