// Small dense kernels shared by the model, written as plain loops with unit
// stride so that the compiler can vectorise them without -ffast-math.
#pragma once

#include <cstddef>

namespace charrnn {

// sum_j a[j] * b[j].  Eight independent partial sums let the compiler keep
// several vector lanes busy while the result stays deterministic (the order
// of additions is fixed by this code, not by the optimiser).
template <typename T>
inline T dot(const T* a, const T* b, std::size_t n) {
    T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    std::size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (std::size_t l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
    }
    T tail = T(0);
    for (; j < n; ++j) tail += a[j] * b[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

// y[j] += alpha * x[j]
template <typename T>
inline void axpy(T alpha, const T* x, T* y, std::size_t n) {
    for (std::size_t j = 0; j < n; ++j) y[j] += alpha * x[j];
}

}  // namespace charrnn
