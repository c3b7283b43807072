// The hot kernels, compiled once per instruction-set level and chosen at run
// time (simd.hpp): the packed matrix product, the cells over a block of units,
// the row softmax, the optimiser update, the gradient norm and the dropout
// masks. Every variant runs the same operations in the same order, but the
// build contracts a*b + c into fused multiply-adds where the target has them
// (-ffp-contract=fast; AVX2 and AVX-512 do, the SSE2 baseline does not), and
// a fused multiply-add rounds once instead of twice. So the last bits of a
// result depend on the variant the CPU gets (CHARRNN_ISA=baseline|avx2 lowers
// it); for a fixed variant results are reproducible run to run and for any
// thread count.
//
// long double (used for numerical gradients) always takes the plain scalar
// variant.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "bf16.hpp"
#include "bf16_x86.hpp"
#include "cells.hpp"
#include "dropout.hpp"
#include "gemm.hpp"
#include "layout.hpp"
#include "optim.hpp"
#include "simd.hpp"
#include "vmath.hpp"

namespace charrnn {

// ---------------------------------------------------------------- cells over streams and units

// One time step of one layer for streams [0, B) and units [k0, k1) (k0 and k1
// on block boundaries of the gate order).
template <typename T>
struct CellStep {
    Cell cell;
    std::size_t B, m;
    GateOrder order;
    T* Z;                       // B x G*m, gate order: pre-activations in, gate values out
    const T* AH;                // gru: B x G*m, gate order: Wh h_prev + bh
    const T* Hprev;             // B x m
    T* H;                       // B x m
    const T* Cprev;             // lstm: B x m
    T* C;                       // lstm
    T* TC;                      // lstm: tanh(c)
    T* HN;                      // gru: B x m, ah_n
    std::size_t k0, k1;
    std::size_t ld;             // row stride of Z and AH (at least G*m)
};

template <typename T>
struct CellBackStep {
    Cell cell;
    std::size_t B, m;
    GateOrder order;
    const T* Z;                 // gate values, gate order
    const T* Hprev;
    const T* H;
    const T* Cprev;
    const T* TC;
    const T* HN;
    const T* dHin;              // B x m: dL/dh_t from above (output or next layer)
    T* dh_next;                 // B x m: in, dL/dh_t from step t+1; out (gru), the direct part dh z
    T* dc;                      // lstm: B x m, carried from step t+1 to t-1
    T* dh;                      // B x m scratch
    T* dA;                      // B x G*m, natural order: dL/d(pre-activations)
    T* dAh;                     // gru: the recurrent-side ones
    std::size_t k0, k1;
    std::size_t ld;             // row stride of Z, dA and dAh (at least G*m)
};

template <typename T, Cell C>
CHARRNN_ALWAYS_INLINE void cell_forward_cell(const CellStep<T>& s) {
    for (std::size_t r = 0; r < s.B; ++r) {
        for (std::size_t k0 = s.k0; k0 < s.k1; k0 += s.order.u) {
            // the block's gates: u units of gate 0, then of gate 1, ...
            const std::size_t ub = s.order.block_units(k0), hr = r * s.m + k0;
            T* z = s.Z + r * s.ld + k0 * s.order.G;
            if constexpr (C == Cell::rnn) {
                rnn_forward(z, s.H + hr, ub);
            } else if constexpr (C == Cell::lstm) {
                lstm_forward(z, z + ub, z + 2 * ub, z + 3 * ub, s.Cprev + hr, s.C + hr, s.TC + hr, s.H + hr, ub);
            } else {
                const T* ah = s.AH + r * s.ld + k0 * s.order.G;
                gru_forward(z, z + ub, z + 2 * ub, ah, ah + ub, ah + 2 * ub, s.Hprev + hr, s.HN + hr, s.H + hr, ub);
            }
        }
    }
}

template <typename T, Cell C>
CHARRNN_ALWAYS_INLINE void cell_backward_cell(const CellBackStep<T>& s) {
    const std::size_t m = s.m;
    for (std::size_t r = 0; r < s.B; ++r) {
        for (std::size_t k0 = s.k0; k0 < s.k1; k0 += s.order.u) {
            const std::size_t ub = s.order.block_units(k0), hr = r * m + k0;
            T* dh = s.dh + hr;
            for (std::size_t k = 0; k < ub; ++k) dh[k] = s.dHin[hr + k] + s.dh_next[hr + k];
            const T* z = s.Z + r * s.ld + k0 * s.order.G;  // gate order
            T* dA = s.dA + r * s.ld + k0;                    // natural order: gate g at g*m
            if constexpr (C == Cell::rnn) {
                rnn_backward(s.H + hr, dh, dA, ub);
            } else if constexpr (C == Cell::lstm) {
                lstm_backward(z, z + ub, z + 2 * ub, z + 3 * ub, s.Cprev + hr, s.TC + hr, dh, s.dc + hr, dA, dA + m,
                              dA + 2 * m, dA + 3 * m, ub);
            } else {
                T* dAh = s.dAh + r * s.ld + k0;
                gru_backward(z, z + ub, z + 2 * ub, s.HN + hr, s.Hprev + hr, dh, dA, dA + m, dA + 2 * m, dAh, dAh + m,
                             dAh + 2 * m, s.dh_next + hr, ub);
            }
        }
    }
}

// ---------------------------------------------------------------- softmax

// For each of `rows` rows of O (length K, row stride ld), with s = scale * o:
//   o <- softmax(s) = exp(scale * (o - max o)) / sum;  log_z[r] = log(sum) + scale * max o
// so that -log p[y] = log_z[r] - s[y]. The maximum is taken before scaling, so
// a huge scale (a tiny sampling temperature) sends the other entries to
// exp(-huge) = 0 instead of overflowing to inf - inf. Lane-wise partial
// max/sum keep the loops vectorisable with a fixed order.
template <typename T, int VB>
CHARRNN_ALWAYS_INLINE void softmax_rows_impl(T* O, std::size_t rows, std::size_t K, std::size_t ld, T scale,
                                             T* log_z) {
    constexpr std::size_t L = sizeof(T) > 8 ? 1 : 2 * VB / sizeof(T);
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

// ---------------------------------------------------------------- the table

template <typename T>
struct Kernels {
    Isa isa;
    std::size_t NR;  // panel width of the packed products
    void (*gemm)(const GemmArgs<T>&);
    Isa isa16;                                // float: the level of gemm16 (amx, avx512bf16, or portable below them)
    Gemm16Fn gemm16;                          // float: bfloat16 products (bf16.hpp); else null
    Gemm16Fn gemm16_rows;                     // float: the same for products of few rows (kTileStreams)
    // Packing of B operands (gemm.hpp, bf16.hpp; pack16 null unless float) and column sums.
    void (*pack)(const T*, std::size_t, std::size_t, const std::uint32_t*, Packed<T>&, std::size_t, std::size_t);
    void (*pack16)(const float*, std::size_t, std::size_t, const std::uint32_t*, PackedBf16&, std::size_t,
                   std::size_t);
    void (*column_sums)(const T* X, std::size_t rows, std::size_t ld, std::size_t c0, std::size_t c1, T* out);
    void (*cell_forward[3])(const CellStep<T>&);
    void (*cell_backward[3])(const CellBackStep<T>&);
    void (*softmax_rows)(T* O, std::size_t rows, std::size_t K, std::size_t ld, T scale, T* log_z);
    void (*optimizer_range)(ClipMode, Optimizer, const OptSlot<T>&, std::size_t, std::size_t, const OptCoeffs<T>&);
    double (*sum_squares)(const T* g, std::size_t n);
    double (*finite_probe)(const T* g, std::size_t n);
    void (*dropout_keep)(std::uint64_t key, std::size_t k0, std::size_t k1, std::uint32_t threshold,
                         std::uint8_t* keep);
};

// Vector registers: 32 with AVX-512, 16 otherwise. The micro-kernel keeps MR
// rows x NV = 4 vectors of accumulators: 6 x 4 = 24 of 32 registers, 2 x 4 = 8 of 16.
template <typename T, int VB>
struct KernelShape {
    static constexpr int VL = sizeof(T) > 8 ? 1 : VB / static_cast<int>(sizeof(T));
    static constexpr int NV = 4;
    static constexpr int MR = VB >= 64 ? 6 : 2;
    static constexpr std::size_t KC = 256;
};

// The smallest L1 data cache at which the AVX-512 float32 products take
// depth blocks of KC / 2 for some shapes (half_depth_blocks in gemm.hpp;
// gemm_large_l1 below): such a block of a panel is 32 KB and fits there
// beside the rows of A. On an Intel Xeon (48 KB) that made the recurrences and
// the weight gradients 5-15 % faster, and the other products slower
// (benchmarks/README.md). A 32 KB L1 (AMD Zen 4, where KC was tuned) keeps KC
// for every product; float64 keeps it everywhere (not measured).
constexpr std::size_t kLargeL1 = 48 * 1024;

#define CHARRNN_KERNEL_SET(ATTR, SUFFIX, VB)                                                                          \
    template <typename T>                                                                                           \
    struct KernelSet_##SUFFIX {                                                                                     \
        using S = KernelShape<T, VB>;                                                                               \
        /* gemm and gemm_half_depth out of line: gemm_large_l1 stays a test and a call */                           \
        ATTR CHARRNN_NOINLINE static void gemm(const GemmArgs<T>& g) {                                              \
            gemm_impl<T, S::VL, S::NV, S::MR, S::KC>(g);                                                            \
        }                                                                                                           \
        ATTR CHARRNN_NOINLINE static void gemm_half_depth(const GemmArgs<T>& g) {                                   \
            gemm_impl<T, S::VL, S::NV, S::MR, S::KC / 2>(g);                                                        \
        }                                                                                                           \
        ATTR static void gemm_large_l1(const GemmArgs<T>& g) {                                                      \
            if (half_depth_blocks(g)) {                                                                             \
                gemm_half_depth(g);                                                                                 \
            } else {                                                                                                \
                gemm(g);                                                                                            \
            }                                                                                                       \
        }                                                                                                           \
        using S16 = Bf16PortableShape<VB>;                                                                          \
        ATTR static void bf16_tile(std::size_t rows, const std::uint32_t* A, std::size_t lda,                       \
                                   const std::uint32_t* const* Bp, float* const* Ct, std::size_t ldc,               \
                                   std::size_t kc, bool acc) {                                                      \
            bf16_rows<S16::MR, S16::template Rows>(rows, A, lda, Bp, Ct, ldc, kc, acc);                             \
        }                                                                                                           \
        ATTR static void gemm16(const Gemm16Args& g) { bf16_gemm_driver(g, &bf16_tile, S16::MR, S16::NP); }         \
        ATTR static void pack(const T* src, std::size_t rs, std::size_t cs, const std::uint32_t* map, Packed<T>& B, \
                              std::size_t j0, std::size_t j1) {                                                     \
            pack_panels(src, rs, cs, map, B, j0, j1);                                                               \
        }                                                                                                           \
        ATTR static void pack16(const float* src, std::size_t rs, std::size_t cs, const std::uint32_t* map,         \
                                PackedBf16& B, std::size_t j0, std::size_t j1) {                                    \
            pack_panels_bf16(src, rs, cs, map, B, j0, j1);                                                          \
        }                                                                                                           \
        ATTR static void col_sums(const T* X, std::size_t rows, std::size_t ld, std::size_t c0, std::size_t c1,     \
                                  T* out) {                                                                         \
            column_sums(X, rows, ld, c0, c1, out);                                                                  \
        }                                                                                                           \
        ATTR static void fwd_rnn(const CellStep<T>& s) { cell_forward_cell<T, Cell::rnn>(s); }                       \
        ATTR static void fwd_lstm(const CellStep<T>& s) { cell_forward_cell<T, Cell::lstm>(s); }                     \
        ATTR static void fwd_gru(const CellStep<T>& s) { cell_forward_cell<T, Cell::gru>(s); }                       \
        ATTR static void bwd_rnn(const CellBackStep<T>& s) { cell_backward_cell<T, Cell::rnn>(s); }                  \
        ATTR static void bwd_lstm(const CellBackStep<T>& s) { cell_backward_cell<T, Cell::lstm>(s); }                \
        ATTR static void bwd_gru(const CellBackStep<T>& s) { cell_backward_cell<T, Cell::gru>(s); }                  \
        ATTR static void softmax_rows(T* O, std::size_t rows, std::size_t K, std::size_t ld, T scale, T* log_z) {   \
            softmax_rows_impl<T, VB>(O, rows, K, ld, scale, log_z);                                                 \
        }                                                                                                           \
        ATTR static void optimizer_range(ClipMode c, Optimizer o, const OptSlot<T>& sl, std::size_t i0,             \
                                         std::size_t i1, const OptCoeffs<T>& k) {                                   \
            optimizer_range_impl<T>(c, o, sl, i0, i1, k);                                                           \
        }                                                                                                           \
        ATTR static double sum_squares(const T* g, std::size_t n) { return sum_squares_impl<T>(g, n); }             \
        ATTR static double finite_probe(const T* g, std::size_t n) { return finite_probe_impl<T>(g, n); }           \
        ATTR static void dropout_keep(std::uint64_t key, std::size_t k0, std::size_t k1, std::uint32_t threshold,   \
                                      std::uint8_t* keep) {                                                         \
            dropout_keep_impl(key, k0, k1, threshold, keep);                                                        \
        }                                                                                                           \
        static Kernels<T> table(Isa isa) {                                                                          \
            return {isa,         static_cast<std::size_t>(S::NV * S::VL),                                           \
                    &gemm,       isa,                                                                               \
                    std::is_same_v<T, float> ? &gemm16 : nullptr,                                                   \
                    std::is_same_v<T, float> ? &gemm16 : nullptr,                                                   \
                    &pack,       std::is_same_v<T, float> ? &pack16 : nullptr,                                     \
                    &col_sums,                                                                                      \
                    {&fwd_rnn, &fwd_lstm, &fwd_gru},                                                                \
                    {&bwd_rnn, &bwd_lstm, &bwd_gru},                                                                \
                    &softmax_rows, &optimizer_range, &sum_squares, &finite_probe, &dropout_keep};                   \
        }                                                                                                           \
    };

#if defined(__AVX512F__)
#define CHARRNN_BASELINE_VB 64
#elif defined(__AVX__)
#define CHARRNN_BASELINE_VB 32
#else
#define CHARRNN_BASELINE_VB 16
#endif

CHARRNN_KERNEL_SET(, baseline, CHARRNN_BASELINE_VB)
#if CHARRNN_X86_DISPATCH
CHARRNN_KERNEL_SET(CHARRNN_TARGET_AVX2, avx2, 32)
CHARRNN_KERNEL_SET(CHARRNN_TARGET_AVX512, avx512, 64)
#endif
#undef CHARRNN_KERNEL_SET

// The kernels of level `isa`; for float, the bfloat16 products of level
// `isa16` (at or above avx512bf16: that instruction set's own kernel; below:
// the portable one of the float level).
template <typename T>
Kernels<T> select_kernels(Isa isa, Isa isa16 = Isa::baseline) {
    Kernels<T> k = KernelSet_baseline<T>::table(Isa::baseline);
#if CHARRNN_X86_DISPATCH
    if constexpr (sizeof(T) <= 8) {
        if (isa >= Isa::avx512) {
            k = KernelSet_avx512<T>::table(Isa::avx512);
            if (std::is_same_v<T, float> && l1d_bytes() >= kLargeL1) k.gemm = &KernelSet_avx512<T>::gemm_large_l1;
        } else if (isa == Isa::avx2) {
            k = KernelSet_avx2<T>::table(Isa::avx2);
        }
    }
    if constexpr (std::is_same_v<T, float>) {
        if (isa16 == Isa::amx && amx_permitted()) {
            k.gemm16 = &gemm16_amx;
            k.isa16 = Isa::amx;
            // A tile computes 16 rows whatever the count, vdpbf16ps one row's
            // work for one row (detect_bf16 grants AMX only beside AVX512-BF16).
            k.gemm16_rows = &gemm16_avx512bf16;
        } else if (isa16 == Isa::avx512bf16) {
            k.gemm16 = k.gemm16_rows = &gemm16_avx512bf16;
            k.isa16 = Isa::avx512bf16;
        }
    }
#endif
    (void)isa;
    (void)isa16;
    return k;
}

// The bfloat16 level this CPU, its OS and CHARRNN_ISA allow: a hardware
// kernel, or the float level whose portable kernel computes the products.
inline Isa detect_isa16() {
    const Bf16Support s = detect_bf16(isa_cap(Isa::amx) == Isa::amx);
    if (!s.amx && !s.avx512bf16) return detect_isa();
    return isa_cap(s.amx ? Isa::amx : Isa::avx512bf16);
}

// The best kernels for this CPU, chosen on first use.
template <typename T>
const Kernels<T>& kernels() {
    static const Kernels<T> k = select_kernels<T>(detect_isa(), std::is_same_v<T, float> ? detect_isa16() : Isa::baseline);
    return k;
}

}  // namespace charrnn
