// The hot kernels, compiled once per instruction-set level and chosen at run
// time (see simd.hpp): matrix product, tanh over an array, row softmax, and
// clipped AdaGrad. Every variant runs the same operations in the same order,
// but the build contracts a*b + c into fused multiply-adds where the target
// has them (-ffp-contract=fast; AVX2 and AVX-512 do, the SSE2 baseline does
// not), and a fused multiply-add rounds once instead of twice. So the last
// bits of a result depend on the variant the CPU gets: CHARRNN_ISA=baseline,
// avx2 or avx512 give slightly different numbers. For a fixed variant the
// results are reproducible run to run and for any thread count.
#pragma once

#include <cmath>
#include <cstddef>

#include "adagrad.hpp"
#include "linalg.hpp"
#include "simd.hpp"
#include "vmath.hpp"

namespace charrnn {

// x <- tanh(x) elementwise.
template <typename T>
CHARRNN_ALWAYS_INLINE void tanh_inplace_impl(T* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) x[i] = vtanh(x[i]);
}

// For each of `rows` rows of O (length K, row stride ld), with s = scale * o:
//   o <- softmax(s) = exp(scale * (o - max o)) / sum;  log_z[r] = log(sum) + scale * max o
// so that -log p[y] = log_z[r] - s[y]. The maximum is taken before scaling, so
// a huge scale (a tiny sampling temperature) sends the other entries to
// exp(-huge) = 0 instead of overflowing to inf - inf; for scale = 1 this is
// the plain softmax. Lane-wise partial max/sum keep the loops vectorisable
// with a fixed order.
template <typename T, int VB>
CHARRNN_ALWAYS_INLINE void softmax_rows_impl(T* O, std::size_t rows, std::size_t K, std::size_t ld, T scale,
                                             T* log_z) {
    constexpr std::size_t L = 2 * VB / sizeof(T);
    for (std::size_t r = 0; r < rows; ++r) {
        T* o = O + r * ld;
        T mxl[L];
        for (std::size_t l = 0; l < L; ++l) mxl[l] = o[0];
        std::size_t k = 0;
        for (; k + L <= K; k += L)
            for (std::size_t l = 0; l < L; ++l) mxl[l] = mxl[l] < o[k + l] ? o[k + l] : mxl[l];
        T mx = o[0];
        for (; k < K; ++k) mx = mx < o[k] ? o[k] : mx;
        for (std::size_t l = 0; l < L; ++l) mx = mx < mxl[l] ? mxl[l] : mx;
        for (k = 0; k < K; ++k) o[k] = vexp((o[k] - mx) * scale);
        T suml[L];
        for (std::size_t l = 0; l < L; ++l) suml[l] = T(0);
        for (k = 0; k + L <= K; k += L)
            for (std::size_t l = 0; l < L; ++l) suml[l] += o[k + l];
        T sum = T(0);
        for (; k < K; ++k) sum += o[k];
        for (std::size_t l = 0; l < L; ++l) sum += suml[l];
        const T inv = T(1) / sum;
        for (k = 0; k < K; ++k) o[k] *= inv;
        log_z[r] = std::log(sum) + mx * scale;
    }
}

// dh <- (1 - h^2) * (dh + carry)  (carry may be null): back through tanh.
template <typename T>
CHARRNN_ALWAYS_INLINE void tanh_backward_impl(T* dh, const T* h, const T* carry, std::size_t n) {
    if (carry) {
        for (std::size_t i = 0; i < n; ++i) dh[i] = (T(1) - h[i] * h[i]) * (dh[i] + carry[i]);
    } else {
        for (std::size_t i = 0; i < n; ++i) dh[i] = (T(1) - h[i] * h[i]) * dh[i];
    }
}

template <typename T>
struct Kernels {
    Isa isa;
    void (*gemm)(const GemmArgs<T>&);
    void (*tanh_inplace)(T* x, std::size_t n);
    void (*softmax_rows)(T* O, std::size_t rows, std::size_t K, std::size_t ld, T scale, T* log_z);
    void (*clip_adagrad)(T* theta, T* mem, const T* grad, std::size_t n, T eta, T clip, T eps);
    void (*tanh_backward)(T* dh, const T* h, const T* carry, std::size_t n);
    void (*transpose)(const T* src, std::size_t rows, std::size_t cols, T* dst, std::size_t r0, std::size_t r1);
};

// One set of entry points per instruction set, VB = its vector width in bytes.
#define CHARRNN_KERNEL_SET(ATTR, SUFFIX, VB, FMA)                                                                  \
    template <typename T>                                                                                     \
    struct KernelSet_##SUFFIX {                                                                               \
        ATTR static void gemm(const GemmArgs<T>& g) { gemm_impl<T, VB, FMA>(g); }                             \
        ATTR static void tanh_inplace(T* x, std::size_t n) { tanh_inplace_impl<T>(x, n); }                    \
        ATTR static void softmax_rows(T* O, std::size_t rows, std::size_t K, std::size_t ld, T scale,        \
                                      T* log_z) {                                                             \
            softmax_rows_impl<T, VB>(O, rows, K, ld, scale, log_z);                                           \
        }                                                                                                     \
        ATTR static void clip_adagrad(T* theta, T* mem, const T* grad, std::size_t n, T eta, T clip, T eps) { \
            clip_adagrad_impl<T>(theta, mem, grad, n, eta, clip, eps);                                        \
        }                                                                                                     \
        ATTR static void tanh_backward(T* dh, const T* h, const T* carry, std::size_t n) {                   \
            tanh_backward_impl<T>(dh, h, carry, n);                                                           \
        }                                                                                                     \
        ATTR static void transpose(const T* src, std::size_t rows, std::size_t cols, T* dst, std::size_t r0, \
                                   std::size_t r1) {                                                          \
            transpose_impl<T>(src, rows, cols, dst, r0, r1);                                                  \
        }                                                                                                     \
        static Kernels<T> table(Isa isa) {                                                                    \
            return {isa, &gemm, &tanh_inplace, &softmax_rows, &clip_adagrad, &tanh_backward, &transpose};      \
        }                                                                                                     \
    };

#if defined(__FMA__)
#define CHARRNN_BASELINE_FMA true
#else
#define CHARRNN_BASELINE_FMA false
#endif
#if defined(__AVX512F__)
#define CHARRNN_BASELINE_VB 64
#elif defined(__AVX__)
#define CHARRNN_BASELINE_VB 32
#else
#define CHARRNN_BASELINE_VB 16
#endif

CHARRNN_KERNEL_SET(, baseline, CHARRNN_BASELINE_VB, CHARRNN_BASELINE_FMA)
#if CHARRNN_X86_DISPATCH
CHARRNN_KERNEL_SET(CHARRNN_TARGET_AVX2, avx2, 32, true)
CHARRNN_KERNEL_SET(CHARRNN_TARGET_AVX512, avx512, 64, true)
#endif
#undef CHARRNN_KERNEL_SET

template <typename T>
Kernels<T> select_kernels(Isa isa) {
#if CHARRNN_X86_DISPATCH
    if (isa == Isa::avx512) return KernelSet_avx512<T>::table(Isa::avx512);
    if (isa == Isa::avx2) return KernelSet_avx2<T>::table(Isa::avx2);
#endif
    (void)isa;
    return KernelSet_baseline<T>::table(Isa::baseline);
}

// The best kernels for this CPU, chosen on first use.
template <typename T>
const Kernels<T>& kernels() {
    static const Kernels<T> k = select_kernels<T>(detect_isa());
    return k;
}

}  // namespace charrnn
