// Matrix products for the engine: C (+)= A B with B packed into column panels.
//
//   A (M x P): A(r, p) = A[r * rsa + p * csa]   (A^T is A with the strides swapped)
//   B (P x N): packed once (pack_panels) into panels of NR columns; panel j
//              holds columns [j*NR, j*NR + NR) as P rows of NR contiguous
//              values, zero-padded past N
//   C (M x N): row-major with row stride ldc
//
// Every C(r, c) is accumulated as (((C0 + A(r,0) B(0,c)) + A(r,1) B(1,c)) + ...)
// in increasing p, whatever the tiling, the row block a row falls in, or the
// thread that computes it: a result never depends on M, on how rows or panels
// are shared between threads, or on the vector width. (It does depend on the
// instruction set: where the target has fused multiply-add the compiler
// contracts a*b + c into one rounding; see kernels.hpp.)
//
// The micro-kernel holds an MR x NR tile of C in registers (MR * NR / VL
// vector accumulators) and streams one packed panel of B, which stays in L1
// for a block of KC rows of P while the rows of A go past.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "simd.hpp"

namespace charrnn {

// std::vector whose resize() leaves new elements uninitialised: work arrays
// that every step overwrites in full need no zeroing.
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

// The half-open slice of [0, n) that worker `id` of `count` handles; slice
// boundaries are multiples of `align`.
struct Range {
    std::size_t begin, end;
    std::size_t size() const { return end - begin; }
};

inline Range split_range(std::size_t n, std::size_t id, std::size_t count, std::size_t align = 1) {
    const std::size_t blocks = (n + align - 1) / align;
    const std::size_t lo = blocks * id / count, hi = blocks * (id + 1) / count;
    return {std::min(n, lo * align), std::min(n, hi * align)};
}

// A P x N matrix in panels of NR columns (see the top of this file).
template <typename T>
struct Packed {
    WorkArray<T> data;
    std::size_t P = 0, N = 0, NR = 1;

    void resize(std::size_t P_, std::size_t N_, std::size_t NR_) {
        P = P_;
        N = N_;
        NR = NR_;
        data.resize(panels() * P * NR);
    }
    std::size_t panels() const { return (N + NR - 1) / NR; }
    T* panel(std::size_t j) { return data.data() + j * P * NR; }
    const T* panel(std::size_t j) const { return data.data() + j * P * NR; }
};

// Packs panels [j0, j1) of B(p, n) = src[p * rs + col(n) * cs] with
// col(n) = map ? map[n] : n. Columns past N are zeros.
template <typename T>
CHARRNN_ALWAYS_INLINE void pack_panels(const T* src, std::size_t rs, std::size_t cs, const std::uint32_t* map, Packed<T>& B,
                 std::size_t j0, std::size_t j1) {
    const std::size_t NR = B.NR, P = B.P;
    for (std::size_t j = j0; j < j1; ++j) {
        T* dst = B.panel(j);
        const std::size_t c0 = j * NR, w = std::min(NR, B.N - c0);
        if (cs == 1 && map == nullptr) {
            for (std::size_t p = 0; p < P; ++p) {
                std::copy(src + p * rs + c0, src + p * rs + c0 + w, dst + p * NR);
                std::fill(dst + p * NR + w, dst + (p + 1) * NR, T(0));
            }
            continue;
        }
        for (std::size_t c = 0; c < w; ++c) {
            const T* s = src + (map ? map[c0 + c] : c0 + c) * cs;
            for (std::size_t p = 0; p < P; ++p) dst[p * NR + c] = s[p * rs];
        }
        if (w < NR)
            for (std::size_t p = 0; p < P; ++p) std::fill(dst + p * NR + w, dst + (p + 1) * NR, T(0));
    }
}

// One product C[0..M) x [panel columns j0*NR .. min(N, j1*NR)) (+)= A B.
// With B2, also C2 (+)= A B2 over the same columns, reading A once where it
// is copied (B2 as deep and as wide as B): the two weight gradients of a layer.
template <typename T>
struct GemmArgs {
    std::size_t M;
    std::size_t j0, j1;  // panels of B
    const T* A;
    std::size_t rsa, csa;
    const Packed<T>* B;
    T* C;
    std::size_t ldc;
    bool accumulate;
    const Packed<T>* B2 = nullptr;
    T* C2 = nullptr;
};

#if defined(__GNUC__) || defined(__clang__)
template <typename T, int VL>
struct VecType {
    typedef T type __attribute__((vector_size(VL * sizeof(T))));
};
#endif

// NV vectors of VL lanes: GCC/Clang vector extensions, so that the
// accumulators surely stay in vector registers; plain arrays for VL = 1
// (long double, and compilers without the extensions).
template <typename T, int VL, typename Enable = void>
struct Lanes {
    T v[VL];
    CHARRNN_ALWAYS_INLINE static Lanes load(const T* p) {
        Lanes x;
        for (int i = 0; i < VL; ++i) x.v[i] = p[i];
        return x;
    }
    CHARRNN_ALWAYS_INLINE void store(T* p) const {
        for (int i = 0; i < VL; ++i) p[i] = v[i];
    }
    CHARRNN_ALWAYS_INLINE static Lanes zero() {
        Lanes x;
        for (int i = 0; i < VL; ++i) x.v[i] = T(0);
        return x;
    }
    CHARRNN_ALWAYS_INLINE void fma(T a, const Lanes& b) {
        for (int i = 0; i < VL; ++i) v[i] += a * b.v[i];
    }
};

#if defined(__GNUC__) || defined(__clang__)
template <typename T, int VL>
struct Lanes<T, VL, std::enable_if_t<(VL > 1) && std::is_floating_point_v<T> && (sizeof(T) <= 8)>> {
    typename VecType<T, VL>::type v;
    CHARRNN_ALWAYS_INLINE static Lanes load(const T* p) {
        Lanes x;
        std::memcpy(&x.v, p, sizeof(x.v));
        return x;
    }
    CHARRNN_ALWAYS_INLINE void store(T* p) const { std::memcpy(p, &v, sizeof(v)); }
    CHARRNN_ALWAYS_INLINE static Lanes zero() {
        Lanes x;
        x.v = typename VecType<T, VL>::type{};
        return x;
    }
    CHARRNN_ALWAYS_INLINE void fma(T a, const Lanes& b) { v += a * b.v; }
};
#endif

// C tile (R x NV*VL, row stride ldc) (+)= A rows (R x P) times the first
// NV*VL columns of a packed panel block (P rows of NR).
template <typename T, int VL, int NV, int R, std::size_t NR = static_cast<std::size_t>(NV * VL)>
CHARRNN_ALWAYS_INLINE void gemm_micro(std::size_t P, const T* A, std::size_t rsa, std::size_t csa, const T* Bp,
                                      T* C, std::size_t ldc, bool accumulate) {
    using L = Lanes<T, VL>;
    L acc[R][NV];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? L::load(C + r * ldc + v * VL) : L::zero();
    for (std::size_t p = 0; p < P; ++p, A += csa, Bp += NR) {
        L b[NV];
        for (int v = 0; v < NV; ++v) b[v] = L::load(Bp + v * VL);
        for (int r = 0; r < R; ++r) {
            const T a = A[r * rsa];
            for (int v = 0; v < NV; ++v) acc[r][v].fma(a, b[v]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v].store(C + r * ldc + v * VL);
}

// The first nv (1 <= nv <= NE) vectors of an edge panel (of NV): only the
// vectors that hold columns below N are computed.
template <typename T, int VL, int NV, int R, int NE>
CHARRNN_ALWAYS_INLINE void gemm_edge(int nv, std::size_t P, const T* A, std::size_t rsa, std::size_t csa,
                                     const T* Bp, T* C, std::size_t ldc, bool accumulate) {
    if constexpr (NE > 1) {
        if (nv < NE) {
            gemm_edge<T, VL, NV, R, NE - 1>(nv, P, A, rsa, csa, Bp, C, ldc, accumulate);
            return;
        }
    }
    gemm_micro<T, VL, NE, R, static_cast<std::size_t>(NV * VL)>(P, A, rsa, csa, Bp, C, ldc, accumulate);
}

// R rows against one panel block; an edge panel (fewer than NR columns of C)
// goes through a local tile so that nothing past column N is touched, and
// computes only the vectors that reach below N (80 columns in panels of 64:
// 64 + 16, not 64 + 64). Each column's sums are the same either way.
template <typename T, int VL, int NV, int R>
CHARRNN_ALWAYS_INLINE void gemm_rows(std::size_t P, const T* A, std::size_t rsa, std::size_t csa, const T* Bp, T* C,
                                     std::size_t ldc, std::size_t width, bool accumulate) {
    constexpr std::size_t NR = static_cast<std::size_t>(NV * VL);
    if (width == NR) {
        gemm_micro<T, VL, NV, R>(P, A, rsa, csa, Bp, C, ldc, accumulate);
        return;
    }
    const int nv = static_cast<int>((width + VL - 1) / VL);
    const std::size_t w = static_cast<std::size_t>(nv * VL);
    T tile[R * NR];
    for (int r = 0; r < R; ++r) {
        for (std::size_t c = 0; c < w; ++c) tile[r * NR + c] = (accumulate && c < width) ? C[r * ldc + c] : T(0);
    }
    if constexpr (NV > 1) {
        if (nv < NV) {
            gemm_edge<T, VL, NV, R, NV - 1>(nv, P, A, rsa, csa, Bp, tile, NR, accumulate);
        } else {
            gemm_micro<T, VL, NV, R>(P, A, rsa, csa, Bp, tile, NR, accumulate);
        }
    } else {
        gemm_micro<T, VL, NV, R>(P, A, rsa, csa, Bp, tile, NR, accumulate);
    }
    for (int r = 0; r < R; ++r) std::copy(tile + r * NR, tile + r * NR + width, C + r * ldc);
}

// The R = MR-1, ..., 1 row tails.
template <typename T, int VL, int NV, int R>
CHARRNN_ALWAYS_INLINE void gemm_row_tail(std::size_t rows, std::size_t P, const T* A, std::size_t rsa, std::size_t csa,
                                         const T* Bp, T* C, std::size_t ldc, std::size_t width, bool accumulate) {
    if constexpr (R > 0) {
        if (rows == R) {
            gemm_rows<T, VL, NV, R>(P, A, rsa, csa, Bp, C, ldc, width, accumulate);
            return;
        }
        gemm_row_tail<T, VL, NV, R - 1>(rows, P, A, rsa, csa, Bp, C, ldc, width, accumulate);
    }
}

// A transposed (csa > rsa: the weight gradients) is read a depth block at a
// time into blocks of MR rows, each stored p-major (MR values per p), so
// that the micro-kernel reads A contiguously instead of one cache line per
// p, all of them a whole stored row apart (which also share an L1 set). The
// values and the order of the sums are those of the unpacked loop.
template <typename T, int VL, int NV, int MR, std::size_t KC>
CHARRNN_ALWAYS_INLINE void gemm_impl_packed_a(const GemmArgs<T>& g) {
    constexpr std::size_t NR = static_cast<std::size_t>(NV * VL);
    const Packed<T>& B = *g.B;
    const std::size_t P = B.P, blocks = (g.M + MR - 1) / MR;
    thread_local WorkArray<T> buf;
    if (buf.size() < blocks * MR * KC) buf.resize(blocks * MR * KC);
    for (std::size_t k0 = 0; k0 < P || k0 == 0; k0 += KC) {
        const std::size_t kc = std::min(KC, P - k0);
        const bool acc = g.accumulate || k0 > 0;
        for (std::size_t p = 0; p < kc; ++p) {
            const T* src = g.A + (k0 + p) * g.csa;
            for (std::size_t r0 = 0; r0 < g.M; r0 += MR) {
                T* dst = buf.data() + r0 * kc + p * MR;
                const std::size_t rows = std::min<std::size_t>(MR, g.M - r0);
                for (std::size_t i = 0; i < rows; ++i) dst[i] = src[(r0 + i) * g.rsa];
            }
        }
        for (int part = 0; part < (g.B2 != nullptr ? 2 : 1); ++part) {
            const Packed<T>& Bx = part ? *g.B2 : B;
            T* C = part ? g.C2 : g.C;
            for (std::size_t j = g.j0; j < g.j1; ++j) {
                const std::size_t c0 = j * NR, width = std::min(NR, Bx.N - c0);
                const T* Bk = Bx.panel(j) + k0 * NR;
                std::size_t r = 0;
                for (; r + MR <= g.M; r += MR)
                    gemm_rows<T, VL, NV, MR>(kc, buf.data() + r * kc, 1, MR, Bk, C + r * g.ldc + c0, g.ldc, width, acc);
                if (r < g.M)
                    gemm_row_tail<T, VL, NV, MR - 1>(g.M - r, kc, buf.data() + r * kc, 1, MR, Bk, C + r * g.ldc + c0,
                                                     g.ldc, width, acc);
            }
        }
        if (P == 0) break;
    }
}

// C (+)= A B reading A where it lies (a product of a few rows or a short depth).
template <typename T, int VL, int NV, int MR, std::size_t KC>
CHARRNN_ALWAYS_INLINE void gemm_impl_direct(const GemmArgs<T>& g, const Packed<T>& B, T* C) {
    constexpr std::size_t NR = static_cast<std::size_t>(NV * VL);
    const std::size_t P = B.P;
    for (std::size_t j = g.j0; j < g.j1; ++j) {
        const T* panel = B.panel(j);
        const std::size_t c0 = j * NR, width = std::min(NR, B.N - c0);
        for (std::size_t k0 = 0; k0 < P || k0 == 0; k0 += KC) {
            const std::size_t kc = std::min(KC, P - k0);
            const bool acc = g.accumulate || k0 > 0;
            const T* Bk = panel + k0 * NR;
            std::size_t r = 0;
            for (; r + MR <= g.M; r += MR)
                gemm_rows<T, VL, NV, MR>(kc, g.A + r * g.rsa + k0 * g.csa, g.rsa, g.csa, Bk, C + r * g.ldc + c0, g.ldc,
                                         width, acc);
            if (r < g.M)
                gemm_row_tail<T, VL, NV, MR - 1>(g.M - r, kc, g.A + r * g.rsa + k0 * g.csa, g.rsa, g.csa, Bk,
                                                 C + r * g.ldc + c0, g.ldc, width, acc);
            if (P == 0) break;
        }
    }
}

template <typename T, int VL, int NV, int MR, std::size_t KC>
CHARRNN_ALWAYS_INLINE void gemm_impl(const GemmArgs<T>& g) {
    static_assert(KC >= 1, "a depth block of 0 rows would never end");
    const std::size_t P = g.B->P;
    assert(g.B2 == nullptr || (g.B2->P == P && g.B2->N == g.B->N));
    // A transposed and big enough for the copy to pay (the weight gradients); a
    // product of a few rows or a short depth reads A directly.
    if (g.csa > g.rsa && g.M >= 2 * static_cast<std::size_t>(MR) && P >= 2 * static_cast<std::size_t>(MR)) {
        gemm_impl_packed_a<T, VL, NV, MR, KC>(g);
        return;
    }
    gemm_impl_direct<T, VL, NV, MR, KC>(g, *g.B, g.C);
    if (g.B2 != nullptr) gemm_impl_direct<T, VL, NV, MR, KC>(g, *g.B2, g.C2);
}

// On a core with a larger L1 (kernels.hpp), two kinds of product take depth
// blocks of KC / 2, so that a block of B (32 KB) stays in L1 while A passes:
// products of at most 32 rows in one call (the recurrences, and small slices
// of other products) and products with A transposed (the weight gradients,
// whose A is copied block by block). The others keep KC: over many rows of A
// read where they lie, smaller blocks pass C through memory twice as often
// and measured slower. Depth blocks never change the order of a sum, so both
// sizes give the same bits.
template <typename T>
inline bool half_depth_blocks(const GemmArgs<T>& g) {
    return g.csa > g.rsa || g.M <= 32;
}

// out[c] = sum_r X[r * ld + c] for c in [c0, c1), rows in increasing order
// (64 columns at a time in a local block, so that the sums stay in registers).
template <typename T>
CHARRNN_ALWAYS_INLINE void column_sums(const T* X, std::size_t rows, std::size_t ld, std::size_t c0, std::size_t c1,
                                       T* out) {
    constexpr std::size_t W = 64;
    for (std::size_t b = c0; b < c1; b += W) {
        const std::size_t w = std::min(W, c1 - b);
        T acc[W];
        for (std::size_t c = 0; c < W; ++c) acc[c] = T(0);
        if (w == W) {
            for (std::size_t r = 0; r < rows; ++r) {
                const T* x = X + r * ld + b;
                for (std::size_t c = 0; c < W; ++c) acc[c] += x[c];
            }
        } else {
            for (std::size_t r = 0; r < rows; ++r) {
                const T* x = X + r * ld + b;
                for (std::size_t c = 0; c < w; ++c) acc[c] += x[c];
            }
        }
        std::copy(acc, acc + w, out + b);
    }
}

}  // namespace charrnn
