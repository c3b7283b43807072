// bfloat16 matrix products for mixed-precision training (--dtype bfloat16):
// C (+)= A B with both operands rounded to bfloat16 and every product summed
// in float32. Everything else in the engine (weights, optimiser, gates,
// softmax, loss) stays float32; only the operands of the products lose bits.
//
// The number format. A bfloat16 is the top half of a float32: sign, the same
// 8-bit exponent, 7 stored mantissa bits. to_bf16 rounds to nearest even and
// sends denormals to a signed zero, as the x86 conversion instructions do.
// The product of two bfloat16 values has at most 16 significant bits, so it
// is exact in float32 unless it falls below float32's normal range: a fused
// multiply-add and a multiply-then-add then round the same way, and the
// paths below can be compared bit for bit. Below the normal range they can
// differ: the x86 instructions treat denormal inputs (C included) as zero
// and flush denormal results, the portable kernel keeps them. A trained
// network's products and sums are far above 1e-38, where this never arises.
//
// The order of the sums. The reduction index p is taken in pairs: for pair q
// (p = 2q, 2q + 1) and every C(r, c),
//     C <- (C + A(r, 2q+1) B(2q+1, c)) + A(r, 2q) B(2q, c)
// in increasing q. That is what one AVX512-BF16 `vdpbf16ps` does per lane,
// and what the portable kernel computes on any CPU. An odd P gets a zero
// partner. AMX tiles (`tdpbf16ps`) take the same pairs in the same q order,
// but Intel's manual adds the even product of a pair first, and the hardware
// may round inside a pair differently; tests bound that difference by the
// float32 accumulation error (tests/cpp/test_bf16.cpp, tests/test_bf16.py).
//
// Layouts (both padded with zeros, so padding adds exact zeros):
//   A is packed per call: row r is Q words, word q holding the bfloat16 of
//     A(r, 2q) in its low half and A(r, 2q+1) in its high half -- which is
//     also an AMX A tile's row of 32 bfloat16 values.
//   B is packed once per weight change into panels of 16 columns; panel j
//     holds Q rows of 16 words, word c of row q holding B(2q, c) and
//     B(2q+1, c): one zmm register, and one row of an AMX B tile.
//   Q = P/2 rounded up to a multiple of 16 (an AMX tile's depth).
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gemm.hpp"
#include "layout.hpp"
#include "simd.hpp"
#include "vmath.hpp"

namespace charrnn {

// What the matrix products of an engine compute in: the parameters' own type
// (full), or bfloat16 operands with float32 sums (float32 engines only).
enum class Precision { full, bf16 };
template <>
struct Names<Precision> {
    static constexpr const char* what = "precision";
    static constexpr const char* list[] = {"full", "bfloat16"};
};

constexpr std::size_t kBf16Panel = 16;  // columns per packed panel
constexpr std::size_t kBf16Depth = 16;  // Q is a multiple of this

CHARRNN_ALWAYS_INLINE std::uint32_t to_bf16(float x) {
    // Written with selects rather than branches so that packing loops vectorise.
    const std::uint32_t u = bit_cast_to<std::uint32_t>(x);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // to nearest even (inf past the top)
    const std::uint32_t tiny = (u >> 16) & 0x8000u;                          // zero or denormal: signed zero
    const std::uint32_t nan = (u >> 16) | 0x0040u;                           // NaN stays a (quiet) NaN
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : (u & 0x7f800000u) == 0 ? tiny : rounded;
}

// The float32 value of the low / high bfloat16 of a packed word.
CHARRNN_ALWAYS_INLINE float bf16_lo(std::uint32_t w) { return bit_cast_to<float>(w << 16); }
CHARRNN_ALWAYS_INLINE float bf16_hi(std::uint32_t w) { return bit_cast_to<float>(w & 0xffff0000u); }

inline std::size_t bf16_depth(std::size_t P) {
    const std::size_t q = (P + 1) / 2;
    return (q + kBf16Depth - 1) / kBf16Depth * kBf16Depth;
}

// A P x N matrix in bfloat16 panels (see the top of this file).
struct PackedBf16 {
    WorkArray<std::uint32_t> data;
    std::size_t P = 0, N = 0, Q = 0;

    void resize(std::size_t P_, std::size_t N_) {
        P = P_;
        N = N_;
        Q = bf16_depth(P);
        data.resize(panels() * Q * kBf16Panel);
    }
    std::size_t panels() const { return (N + kBf16Panel - 1) / kBf16Panel; }
    std::uint32_t* panel(std::size_t j) { return data.data() + j * Q * kBf16Panel; }
    const std::uint32_t* panel(std::size_t j) const { return data.data() + j * Q * kBf16Panel; }
};

// Packs panels [j0, j1) of B(p, n) = src[p * rs + col(n) * cs], col(n) = map ? map[n] : n.
CHARRNN_ALWAYS_INLINE void pack_panels_bf16(const float* src, std::size_t rs, std::size_t cs, const std::uint32_t* map,
                             PackedBf16& B, std::size_t j0, std::size_t j1) {
    const std::size_t P = B.P, Q = B.Q;
    if (cs == 1 && map == nullptr) {
        // Rows of B are contiguous: two rows at a time across all the panels,
        // so that the reads stream; the padding of each panel is written too.
        const std::size_t cend = std::min(B.N, j1 * kBf16Panel);
        for (std::size_t q = 0; q < Q; ++q) {
            const float* lo = src + 2 * q * rs;
            const float* hi = lo + rs;
            const bool has_lo = 2 * q < P, has_hi = 2 * q + 1 < P;
            for (std::size_t j = j0; j < j1; ++j) {
                std::uint32_t* d = B.panel(j) + q * kBf16Panel;
                const std::size_t c0 = j * kBf16Panel;
                if (has_hi && c0 + kBf16Panel <= cend) {
                    for (std::size_t c = 0; c < kBf16Panel; ++c) d[c] = to_bf16(lo[c0 + c]) | (to_bf16(hi[c0 + c]) << 16);
                    continue;
                }
                for (std::size_t c = 0; c < kBf16Panel; ++c) {
                    const bool in = c0 + c < cend;
                    d[c] = (in && has_lo ? to_bf16(lo[c0 + c]) : 0u) | ((in && has_hi ? to_bf16(hi[c0 + c]) : 0u) << 16);
                }
            }
        }
        return;
    }
    for (std::size_t j = j0; j < j1; ++j) {
        std::uint32_t* dst = B.panel(j);
        std::fill(dst, dst + Q * kBf16Panel, 0u);
        const std::size_t c0 = j * kBf16Panel, w = std::min(kBf16Panel, B.N - c0);
        for (std::size_t c = 0; c < w; ++c) {
            const float* s = src + (map ? map[c0 + c] : c0 + c) * cs;
            for (std::size_t q = 0; q < P / 2; ++q)
                dst[q * kBf16Panel + c] = to_bf16(s[2 * q * rs]) | (to_bf16(s[(2 * q + 1) * rs]) << 16);
            if (P % 2) dst[(P / 2) * kBf16Panel + c] = to_bf16(s[(P - 1) * rs]);
        }
    }
}

// A bfloat16 as a half of a packed word (it may alias the word).
#if defined(__GNUC__) || defined(__clang__)
typedef std::uint16_t __attribute__((may_alias)) Bf16Half;
#else
typedef std::uint16_t Bf16Half;
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the bfloat16 packing reads a word's low half as its first bfloat16: little-endian only"
#endif

// The row stride, in words, of a packed A of Q words a row: one cache line
// more than Q. Packed rows Q * 4 bytes apart would put the rows of a tile in
// one L1 set whenever that is a multiple of 4 KB -- as for the weight
// gradients, whose depth is a chunk of 2048 rows -- and evict each other.
constexpr std::size_t bf16_row_stride(std::size_t Q) { return Q + 16; }

// Rows [0, M) of A(r, p) = A[r * rsa + p * csa] as bfloat16 pairs, Q words a
// row, rows lda words apart; rows M..rows_out are zeros up to Q. A transposed operand (csa > rsa) is read
// along its stored rows: 16 x 16 blocks of pairs go through a small tile,
// walking 32 stored rows at a time from end to end, so the reads stream.
CHARRNN_ALWAYS_INLINE void pack_rows_bf16(const float* A, std::size_t rsa, std::size_t csa, std::size_t M,
                                          std::size_t P, std::size_t Q, std::size_t lda, std::size_t rows_out,
                                          std::uint32_t* out) {
    const std::size_t full = P / 2;  // pairs with both halves in range
    if (csa > rsa) {
        constexpr std::size_t W = 16;
        alignas(64) std::uint32_t tile[W * W];
        for (std::size_t q0 = 0; q0 < full; q0 += W) {
            const std::size_t qn = std::min(W, full - q0);
            for (std::size_t r0 = 0; r0 < M; r0 += W) {
                const std::size_t rn = std::min(W, M - r0);
                // tile row i: pair q0 + i of rows r0.. (converted along the
                // stored rows, which vectorises), then written transposed
                for (std::size_t i = 0; i < qn; ++i) {
                    const float* lo = A + 2 * (q0 + i) * csa + r0 * rsa;
                    const float* hi = lo + csa;
                    std::uint32_t* t = tile + i * W;
                    if (rsa == 1 && rn == W) {  // the usual transposed operand: contiguous in r
                        for (std::size_t r = 0; r < W; ++r) t[r] = to_bf16(lo[r]) | (to_bf16(hi[r]) << 16);
                    } else {
                        for (std::size_t r = 0; r < rn; ++r) t[r] = to_bf16(lo[r * rsa]) | (to_bf16(hi[r * rsa]) << 16);
                    }
                }
                for (std::size_t r = 0; r < rn; ++r) {
                    std::uint32_t* o = out + (r0 + r) * lda + q0;
                    for (std::size_t i = 0; i < qn; ++i) o[i] = tile[i * W + r];
                }
            }
        }
        if (P % 2) {
            const float* lo = A + (P - 1) * csa;
            for (std::size_t r = 0; r < M; ++r) out[r * lda + full] = to_bf16(lo[r * rsa]);
        }
    } else {
        for (std::size_t r = 0; r < M; ++r) {
            const float* a = A + r * rsa;
            std::uint32_t* o = out + r * lda;
            if (csa == 1) {
                // The usual operand, a contiguous row: its pairs are its
                // bfloat16 values in order (little-endian words), so convert
                // element by element, which vectorises without shuffles.
                Bf16Half* h = reinterpret_cast<Bf16Half*>(o);
                for (std::size_t p = 0; p < 2 * full; ++p) h[p] = static_cast<std::uint16_t>(to_bf16(a[p]));
            } else {
                for (std::size_t q = 0; q < full; ++q)
                    o[q] = to_bf16(a[2 * q * csa]) | (to_bf16(a[(2 * q + 1) * csa]) << 16);
            }
            if (P % 2) o[full] = to_bf16(a[(P - 1) * csa]);
        }
    }
    const std::size_t used = (P + 1) / 2;
    for (std::size_t r = 0; r < rows_out; ++r) std::fill(out + r * lda + (r < M ? used : 0), out + r * lda + Q, 0u);
}

// One bfloat16 product: C[0..M) x [c0, c1) (+)= A B, c0 on a panel boundary.
// With B2, also C2 (+)= A B2 over the same columns, from the same packed A
// (B2 as deep and as wide as B): the two weight gradients of a layer.
// With init, C = I + A B instead, where row r of I is
// init + (init_rows ? init_rows[r] : r) * ld_init (ld_init = 0: one row for
// all), at C's columns: a recurrence's step starting from the input's rows
// or the bias without first copying them into C. Not with B2.
struct Gemm16Args {
    std::size_t M;
    std::size_t c0, c1;
    const float* A;
    std::size_t rsa, csa;
    const PackedBf16* B;
    float* C;
    std::size_t ldc;
    bool accumulate;
    const PackedBf16* B2 = nullptr;
    float* C2 = nullptr;
    const float* init = nullptr;
    const std::int32_t* init_rows = nullptr;
    std::size_t ld_init = 0;
};

// A bfloat16 product kernel (the table in kernels.hpp holds one per level).
using Gemm16Fn = void (*)(const Gemm16Args&);

// Row r of a product's initial value (Gemm16Args::init).
inline const float* init_row(const Gemm16Args& g, std::size_t r) {
    return g.init + (g.init_rows ? static_cast<std::size_t>(g.init_rows[r]) : r) * g.ld_init;
}

// A thread's scratch for the packed rows of A.
inline std::uint32_t* bf16_row_buffer(std::size_t words) {
    thread_local WorkArray<std::uint32_t> buf;
    if (buf.size() < words) buf.resize(words);
    return buf.data();
}

// ---------------------------------------------------------------- the portable kernel

// R rows x NP panels over pair rows [0, Qk), vectorised by the compiler
// (GCC/Clang vector extensions of VL lanes; plain loops elsewhere).
template <int VL, int NP, int R>
CHARRNN_ALWAYS_INLINE void bf16_micro_portable(std::size_t Qk, const std::uint32_t* A, std::size_t lda,
                                               const std::uint32_t* const* Bp, float* const* Ctile, std::size_t ldc,
                                               bool accumulate) {
    constexpr int V = static_cast<int>(kBf16Panel) / VL;  // vectors per panel
#if defined(__GNUC__) || defined(__clang__)
    typedef float fv __attribute__((vector_size(VL * 4)));
    typedef std::uint32_t uv __attribute__((vector_size(VL * 4)));
    fv acc[R][NP * V];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NP * V; ++v) {
            if (accumulate) {
                std::memcpy(&acc[r][v], Ctile[v / V] + r * ldc + (v % V) * VL, sizeof(fv));
            } else {
                acc[r][v] = fv{};
            }
        }
    for (std::size_t q = 0; q < Qk; ++q) {
        fv lo[NP * V], hi[NP * V];
        for (int v = 0; v < NP * V; ++v) {
            uv w;
            std::memcpy(&w, Bp[v / V] + q * kBf16Panel + (v % V) * VL, sizeof(uv));
            lo[v] = (fv)(w << 16);
            hi[v] = (fv)(w & 0xffff0000u);
        }
        for (int r = 0; r < R; ++r) {
            const std::uint32_t a = A[r * lda + q];
            const float alo = bf16_lo(a), ahi = bf16_hi(a);
            for (int v = 0; v < NP * V; ++v) {
                acc[r][v] = acc[r][v] + ahi * hi[v];
                acc[r][v] = acc[r][v] + alo * lo[v];
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NP * V; ++v) std::memcpy(Ctile[v / V] + r * ldc + (v % V) * VL, &acc[r][v], sizeof(fv));
#else
    for (int r = 0; r < R; ++r)
        for (int jp = 0; jp < NP; ++jp)
            for (std::size_t c = 0; c < kBf16Panel; ++c) {
                float s = accumulate ? Ctile[jp][r * ldc + c] : 0.0f;
                for (std::size_t q = 0; q < Qk; ++q) {
                    const std::uint32_t a = A[r * lda + q], b = Bp[jp][q * kBf16Panel + c];
                    s = s + bf16_hi(a) * bf16_hi(b);
                    s = s + bf16_lo(a) * bf16_lo(b);
                }
                Ctile[jp][r * ldc + c] = s;
            }
#endif
}

// One micro-tile of the vector kernels: `rows` (<= MR) rows of packed A
// (row stride lda words) times NP panels (pointers Bp, already at the first
// pair row of the depth block) over kc pair rows, into NP column blocks of C
// (Ct, row stride ldc), adding to what C holds when acc.
using Bf16Tile = void (*)(std::size_t rows, const std::uint32_t* A, std::size_t lda, const std::uint32_t* const* Bp,
                          float* const* Ct, std::size_t ldc, std::size_t kc, bool acc);

constexpr int kBf16MaxMR = 8, kBf16MaxNP = 4;

// The loops of bf16_gemm_driver over A already packed (rows lda words
// apart): blocks of 8 MR rows, panels [p0, p1) NP at a time, the depth in
// blocks of KC pair rows (C carries the partial sums between blocks, so the
// order of the sums does not change). Edge tiles (fewer than NP * 16 columns
// of C before c1, or fewer than MR rows) go through a local tile so that
// nothing outside C's range is touched.
CHARRNN_ALWAYS_INLINE void bf16_gemm_packed(std::size_t M, std::size_t p0, std::size_t p1, std::size_t c1,
                                            const std::uint32_t* Apk, std::size_t lda, const PackedBf16& B,
                                            float* Cm, std::size_t ldc, bool accumulate, Bf16Tile micro,
                                            std::size_t MR, std::size_t NP) {
    constexpr std::size_t KC = 128;
    const std::size_t Q = B.Q, RB = 8 * MR;
    alignas(64) float tile[kBf16MaxMR * kBf16MaxNP * kBf16Panel];
    for (std::size_t r0 = 0; r0 < M; r0 += RB) {
        const std::size_t rb = std::min(RB, M - r0);
        const std::uint32_t* Ap = Apk + r0 * lda;
        for (std::size_t j = p0; j < p1; j += NP) {
            const std::size_t np = std::min(NP, p1 - j);
            const std::size_t cbeg = j * kBf16Panel, cend = std::min(c1, (j + np) * kBf16Panel);
            for (std::size_t k0 = 0; k0 < Q || k0 == 0; k0 += KC) {
                const std::size_t kc = std::min(KC, Q - k0);
                const bool acc = accumulate || k0 > 0;
                const std::uint32_t* Bp[kBf16MaxNP];
                for (std::size_t v = 0; v < NP; ++v) Bp[v] = B.panel(j + std::min(v, np - 1)) + k0 * kBf16Panel;
                for (std::size_t r = 0; r < rb; r += MR) {
                    const std::size_t rows = std::min(MR, rb - r);
                    float* C = Cm + (r0 + r) * ldc + cbeg;
                    float* Ct[kBf16MaxNP];
                    if (cend - cbeg == NP * kBf16Panel) {
                        for (std::size_t v = 0; v < NP; ++v) Ct[v] = C + v * kBf16Panel;
                        micro(rows, Ap + r * lda + k0, lda, Bp, Ct, ldc, kc, acc);
                        continue;
                    }
                    const std::size_t ldt = NP * kBf16Panel, w = cend - cbeg;
                    for (std::size_t v = 0; v < NP; ++v) Ct[v] = tile + v * kBf16Panel;
                    for (std::size_t i = 0; i < rows; ++i)
                        for (std::size_t c = 0; c < ldt; ++c) tile[i * ldt + c] = (acc && c < w) ? C[i * ldc + c] : 0.0f;
                    micro(rows, Ap + r * lda + k0, lda, Bp, Ct, ldt, kc, acc);
                    for (std::size_t i = 0; i < rows; ++i) std::copy(tile + i * ldt, tile + i * ldt + w, C + i * ldc);
                }
                if (Q == 0) break;
            }
        }
    }
}

// The driver of the vector kernels: A packed whole first, then the
// product(s) over it (bf16_gemm_packed).
CHARRNN_ALWAYS_INLINE void bf16_gemm_driver(const Gemm16Args& g, Bf16Tile micro, std::size_t MR, std::size_t NP) {
    const PackedBf16& B = *g.B;
    const std::size_t Q = B.Q;
    // c0 on a panel boundary: the columns before it belong to another thread
    assert(g.c0 % kBf16Panel == 0 && g.c1 <= B.N);
    assert(g.B2 == nullptr || (g.B2->P == B.P && g.B2->N == B.N));
    assert(g.init == nullptr || g.B2 == nullptr);
    const std::size_t p0 = g.c0 / kBf16Panel, p1 = (g.c1 + kBf16Panel - 1) / kBf16Panel;
    const std::size_t lda = bf16_row_stride(Q);
    std::uint32_t* Apk = bf16_row_buffer(g.M * lda);
    pack_rows_bf16(g.A, g.rsa, g.csa, g.M, B.P, Q, lda, g.M, Apk);
    if (g.init != nullptr)
        for (std::size_t r = 0; r < g.M; ++r) std::copy(init_row(g, r) + g.c0, init_row(g, r) + g.c1, g.C + r * g.ldc + g.c0);
    bf16_gemm_packed(g.M, p0, p1, g.c1, Apk, lda, B, g.C, g.ldc, g.accumulate || g.init != nullptr, micro, MR, NP);
    if (g.B2 != nullptr) bf16_gemm_packed(g.M, p0, p1, g.c1, Apk, lda, *g.B2, g.C2, g.ldc, g.accumulate, micro, MR, NP);
}

// Calls Run<R>::run for R = rows (R <= MR).
template <int R, template <int> class Run>
CHARRNN_ALWAYS_INLINE void bf16_rows(std::size_t rows, const std::uint32_t* A, std::size_t lda,
                                     const std::uint32_t* const* Bp, float* const* Ct, std::size_t ldc,
                                     std::size_t kc, bool acc) {
    if constexpr (R > 0) {
        if (rows == R) {
            Run<R>::run(kc, A, lda, Bp, Ct, ldc, acc);
            return;
        }
        bf16_rows<R - 1, Run>(rows, A, lda, Bp, Ct, ldc, kc, acc);
    }
}

// The portable kernel's shape for vectors of VB bytes: NP panels and MR rows
// of accumulators (VB = 64: 6 x 4 zmm of 32; VB = 32: 4 x 2 ymm of 16).
template <int VB>
struct Bf16PortableShape {
    static constexpr int VL = VB / 4;
    static constexpr int NP = VB >= 64 ? 4 : 1;
    static constexpr int MR = VB >= 64 ? 6 : VB >= 32 ? 4 : 2;
    template <int R>
    struct Rows {
        CHARRNN_ALWAYS_INLINE static void run(std::size_t kc, const std::uint32_t* A, std::size_t lda,
                                              const std::uint32_t* const* Bp, float* const* Ct, std::size_t ldc,
                                              bool acc) {
            bf16_micro_portable<VL, NP, R>(kc, A, lda, Bp, Ct, ldc, acc);
        }
    };
};

}  // namespace charrnn
