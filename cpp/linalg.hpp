// Dense kernels shared by the model: a register-blocked matrix product, a
// transpose and a few row-wise helpers. Plain loops with unit-stride inner
// dimensions and fixed-size accumulator tiles, so the compiler vectorises them
// without -ffast-math; the order of every floating-point addition is fixed by
// this code, so a result does not depend on the vector width or on how the
// rows are shared between threads. It can depend on the instruction set,
// though: on targets with fused multiply-add (AVX2, AVX-512) the compiler
// contracts a*b + c into one rounding, the SSE2 baseline rounds twice, so
// the variants of kernels.hpp differ in the last bits.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "simd.hpp"

namespace charrnn {

// std::vector whose resize() leaves new elements uninitialised: work arrays
// that every step overwrites in full need no zeroing (which was a visible
// share of a short train_steps call).
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
    template <typename U>
    struct rebind {
        using other = DefaultInitAllocator<U>;
    };
    DefaultInitAllocator() = default;
    template <typename U>
    DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
    template <typename U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <typename U, typename... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};

template <typename T>
using WorkArray = std::vector<T, DefaultInitAllocator<T>>;

// C = A B  or  C += A B, with
//   A (M x P): A(r, p) = A[r * rsa + p * csa]  (pass A^T by swapping the strides)
//   B (P x N): row-major with row stride ldb
//   C (M x N): row-major with row stride ldc
// Each C(r, c) is accumulated as ((C0 + A(r,0) B(0,c)) + A(r,1) B(1,c)) + ...
// in increasing p, whatever the tiling.
template <typename T>
struct GemmArgs {
    std::size_t M, N, P;
    const T* A;
    std::size_t rsa, csa;
    const T* B;
    std::size_t ldb;
    T* C;
    std::size_t ldc;
    bool accumulate;
};

// A tile of R rows x W columns with plain loops: the narrow column tails, and
// compilers without vector extensions. Rows are done one at a time and, when
// the instruction set has FMA (Fma = true), with explicit fused multiply-adds,
// so that every element is computed exactly as in the contracted vector tiles
// whatever R is (results must not depend on how rows are split into tiles).
template <typename T, int R, int W, bool Fma>
CHARRNN_ALWAYS_INLINE void gemm_tile_scalar(const GemmArgs<T>& g, std::size_t r0, std::size_t c0) {
    for (int r = 0; r < R; ++r) {
        T acc[W];
        T* crow = g.C + (r0 + r) * g.ldc + c0;
        for (int c = 0; c < W; ++c) acc[c] = g.accumulate ? crow[c] : T(0);
        const T* a = g.A + (r0 + r) * g.rsa;
        const T* b = g.B + c0;
        for (std::size_t p = 0; p < g.P; ++p, a += g.csa, b += g.ldb) {
            const T ar = *a;
            for (int c = 0; c < W; ++c) {
                if constexpr (Fma) {
                    acc[c] = __builtin_fma(ar, b[c], acc[c]);
                } else {
                    acc[c] += ar * b[c];
                }
            }
        }
        for (int c = 0; c < W; ++c) crow[c] = acc[c];
    }
}

#if defined(__GNUC__) || defined(__clang__)
// The same tile with W = NV vectors of VL lanes, written with GCC/Clang vector
// extensions so that the accumulators surely stay in vector registers.
template <typename T, int VL>
struct Vec {
    typedef T type __attribute__((vector_size(VL * sizeof(T))));
};

template <typename V, typename T>
CHARRNN_ALWAYS_INLINE V load_vec(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}

template <typename V, typename T>
CHARRNN_ALWAYS_INLINE void store_vec(T* p, V v) {
    std::memcpy(p, &v, sizeof(V));
}

template <typename T, int R, int W, int VL, bool Fma>
CHARRNN_ALWAYS_INLINE void gemm_tile(const GemmArgs<T>& g, std::size_t r0, std::size_t c0) {
    if constexpr (W == 1 || VL == 1) {
        gemm_tile_scalar<T, R, W, Fma>(g, r0, c0);
    } else {
        // Narrow tails use narrower vectors (e.g. 8 floats in a ymm register).
        constexpr int VW = W < VL ? W : VL;
        using V = typename Vec<T, VW>::type;
        constexpr int NV = W / VW;
        V acc[R][NV];
        for (int r = 0; r < R; ++r)
            for (int v = 0; v < NV; ++v)
                acc[r][v] = g.accumulate ? load_vec<V>(g.C + (r0 + r) * g.ldc + c0 + v * VW) : V{};
        const T* a = g.A + r0 * g.rsa;
        const T* b = g.B + c0;
        for (std::size_t p = 0; p < g.P; ++p, a += g.csa, b += g.ldb) {
            V bv[NV];
            for (int v = 0; v < NV; ++v) bv[v] = load_vec<V>(b + v * VW);
            for (int r = 0; r < R; ++r) {
                const T ar = a[r * g.rsa];
                for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
            }
        }
        for (int r = 0; r < R; ++r)
            for (int v = 0; v < NV; ++v) store_vec(g.C + (r0 + r) * g.ldc + c0 + v * VW, acc[r][v]);
    }
}
#else
template <typename T, int R, int W, int VL, bool Fma>
CHARRNN_ALWAYS_INLINE void gemm_tile(const GemmArgs<T>& g, std::size_t r0, std::size_t c0) {
    gemm_tile_scalar<T, R, W, Fma>(g, r0, c0);
}
#endif

// The columns left after the full-width tiles, as tiles of W, W/2, ..., 1.
template <typename T, int R, int W, int VL, bool Fma>
CHARRNN_ALWAYS_INLINE void gemm_col_tail(const GemmArgs<T>& g, std::size_t r0, std::size_t c0) {
    if (c0 + W <= g.N) {
        gemm_tile<T, R, W, VL, Fma>(g, r0, c0);
        c0 += W;
    }
    if constexpr (W > 1) gemm_col_tail<T, R, W / 2, VL, Fma>(g, r0, c0);
}

// R rows of C: tiles of R x W with R * W = NACC vector registers of
// accumulators: 16 of the 32 AVX-512 registers, 8 of the 16 elsewhere --
// enough independent FMA chains to cover the FMA latency.
template <int VL, typename T>
constexpr int accumulators() {
    return VL * static_cast<int>(sizeof(T)) >= 64 ? 16 : 8;
}

template <typename T, int R, int VL, bool Fma>
CHARRNN_ALWAYS_INLINE void gemm_rows(const GemmArgs<T>& g, std::size_t r0) {
    constexpr int W = accumulators<VL, T>() * VL / R;
    std::size_t c0 = 0;
    for (; c0 + W <= g.N; c0 += W) gemm_tile<T, R, W, VL, Fma>(g, r0, c0);
    if constexpr (W > 1) gemm_col_tail<T, R, W / 2, VL, Fma>(g, r0, c0);
}

template <typename T, int R, int VL, bool Fma>
CHARRNN_ALWAYS_INLINE void gemm_row_tail(const GemmArgs<T>& g, std::size_t r0) {
    if (r0 + R <= g.M) {
        gemm_rows<T, R, VL, Fma>(g, r0);
        r0 += R;
    }
    if constexpr (R > 1) gemm_row_tail<T, R / 2, VL, Fma>(g, r0);
}

// VB: vector register width in bytes of the instruction set compiled for;
// Fma: whether it has fused multiply-add (the vector tiles then contract
// a * b + c into FMA under -ffp-contract=fast, and the scalar tails match).
template <typename T, int VB, bool Fma>
CHARRNN_ALWAYS_INLINE void gemm_impl(const GemmArgs<T>& g) {
    constexpr int VL = VB / static_cast<int>(sizeof(T));
    constexpr int R = 4;
    std::size_t r0 = 0;
    for (; r0 + R <= g.M; r0 += R) gemm_rows<T, R, VL, Fma>(g, r0);
    gemm_row_tail<T, R / 2, VL, Fma>(g, r0);
}

// dst (cols x rows) = src (rows x cols)^T, both row-major; 8 x 8 blocks.
template <typename T>
CHARRNN_ALWAYS_INLINE void transpose_impl(const T* src, std::size_t rows, std::size_t cols, T* dst, std::size_t r_begin,
                      std::size_t r_end) {
    constexpr std::size_t Bk = 8;
    for (std::size_t i0 = r_begin; i0 < r_end; i0 += Bk) {
        const std::size_t i1 = std::min(i0 + Bk, r_end);
        for (std::size_t j0 = 0; j0 < cols; j0 += Bk) {
            const std::size_t j1 = std::min(j0 + Bk, cols);
            for (std::size_t i = i0; i < i1; ++i)
                for (std::size_t j = j0; j < j1; ++j) dst[j * rows + i] = src[i * cols + j];
        }
    }
}

// out[c] = sum_r X[r * ld + c] for c in [c0, c1), rows in increasing order.
template <typename T>
inline void column_sums(const T* X, std::size_t rows, std::size_t ld, std::size_t c0, std::size_t c1, T* out) {
    for (std::size_t c = c0; c < c1; ++c) out[c] = T(0);
    for (std::size_t r = 0; r < rows; ++r) {
        const T* x = X + r * ld;
        for (std::size_t c = c0; c < c1; ++c) out[c] += x[c];
    }
}

// sum_j a[j] * b[j] with eight interleaved partial sums (fixed order).
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

// The half-open slice of [0, n) that worker `id` of `count` handles; slice
// boundaries are multiples of `align` so that tiles are not split.
struct Range {
    std::size_t begin, end;
    std::size_t size() const { return end - begin; }
};

inline Range split_range(std::size_t n, std::size_t id, std::size_t count, std::size_t align = 1) {
    const std::size_t blocks = (n + align - 1) / align;
    const std::size_t lo = blocks * id / count, hi = blocks * (id + 1) / count;
    return {std::min(n, lo * align), std::min(n, hi * align)};
}

}  // namespace charrnn
