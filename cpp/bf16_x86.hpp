// The x86 bfloat16 product kernels, chosen at run time (kernels.hpp) over the
// portable one in bf16.hpp, which computes the same sums on any CPU:
//   avx512bf16  `vdpbf16ps`: 6 rows x 64 columns of C in 24 zmm registers,
//               each instruction adding one pair of products per lane;
//   amx         AMX-BF16 tiles: 32 rows x 32 columns of C in four 16 x 16
//               float32 tiles, each `tdpbf16ps` adding 16 x 16 x 32 products.
// Both read the packings of bf16.hpp unchanged: an AMX A tile is 16 rows of
// packed A (32 bfloat16 each), a B tile 16 pair rows of one panel.
//
// Linux hands out the AMX tile registers only to a process that asks
// (arch_prctl ARCH_REQ_XCOMP_PERM); if it refuses, the AMX path is not used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "bf16.hpp"
#include "simd.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>  // cpu_vendor(), and detect_bf16() where the kernels dispatch
#endif

#if CHARRNN_X86_DISPATCH
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define CHARRNN_TARGET_AVX512BF16 \
    __attribute__((target("avx512bf16,avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2")))
#define CHARRNN_TARGET_AMX \
    __attribute__((target("amx-tile,amx-bf16,avx512bf16,avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2")))
#endif

namespace charrnn {

// The CPU's vendor as CPUID leaf 0 spells it ("GenuineIntel",
// "AuthenticAMD", ...), or "" on other architectures. The same instruction
// has different costs on different vendors' cores: engine.py decides with it
// whether bfloat16 products pay where only AVX512-BF16 computes them.
inline std::string cpu_vendor() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return "";
    char name[12];
    std::memcpy(name, &b, 4);  // the twelve characters come in EBX, EDX, ECX
    std::memcpy(name + 4, &d, 4);
    std::memcpy(name + 8, &c, 4);
    return std::string(name, 12);
#else
    return "";
#endif
}

// What the CPU (and the OS) offer for bfloat16 products.
struct Bf16Support {
    bool avx512bf16 = false;
    bool amx = false;
};

#if CHARRNN_X86_DISPATCH

// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (EDX bit 24) in sub-leaf 0,
// AVX512-BF16 (EAX bit 5) in sub-leaf 1; XCR0 bits 17-18 say the OS saves
// the tile state. The kernel must then also grant this process the tiles.
inline bool amx_permitted() {
#if defined(__linux__)
    static const bool granted = [] {
        constexpr long kGetPerm = 0x1022, kReqPerm = 0x1023;  // ARCH_GET/REQ_XCOMP_PERM
        constexpr unsigned long kTileData = 18;               // XFEATURE_XTILEDATA
        if (syscall(SYS_arch_prctl, kReqPerm, kTileData) != 0) return false;
        unsigned long mask = 0;
        if (syscall(SYS_arch_prctl, kGetPerm, &mask) != 0) return false;
        return (mask & (1ul << kTileData)) != 0;
    }();
    return granted;
#else
    return false;
#endif
}

// want_amx false: AMX is not asked for (CHARRNN_ISA below amx), so the
// process never requests the tile registers.
inline Bf16Support detect_bf16(bool want_amx = true) {
    Bf16Support s;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return s;
    const unsigned subleaves = a;  // the highest sub-leaf of leaf 7
    const bool amx_bits = (d >> 22 & 1u) && (d >> 24 & 1u);
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (avx512 && subleaves >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) s.avx512bf16 = (a >> 5) & 1u;
    if (want_amx && amx_bits && s.avx512bf16) {
        unsigned lo = 0, hi = 0;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        const bool os_tiles = ((lo >> 17) & 3u) == 3u;
        s.amx = os_tiles && amx_permitted();
    }
    return s;
}

// ---------------------------------------------------------------- avx512bf16

template <int NP, int R>
CHARRNN_TARGET_AVX512BF16 CHARRNN_ALWAYS_INLINE void bf16_micro_avx512(std::size_t kc, const std::uint32_t* A,
                                                                       std::size_t lda, const std::uint32_t* const* Bp,
                                                                       float* const* Ct, std::size_t ldc, bool acc) {
    __m512 c[R][NP];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NP; ++v) c[r][v] = acc ? _mm512_loadu_ps(Ct[v] + r * ldc) : _mm512_setzero_ps();
    for (std::size_t q = 0; q < kc; ++q) {
        __m512i b[NP];
        for (int v = 0; v < NP; ++v) b[v] = _mm512_loadu_si512(Bp[v] + q * kBf16Panel);
        for (int r = 0; r < R; ++r) {
            const __m512i a = _mm512_set1_epi32(static_cast<int>(A[r * lda + q]));
            for (int v = 0; v < NP; ++v) c[r][v] = _mm512_dpbf16_ps(c[r][v], (__m512bh)a, (__m512bh)b[v]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NP; ++v) _mm512_storeu_ps(Ct[v] + r * ldc, c[r][v]);
}

template <int R>
CHARRNN_TARGET_AVX512BF16 CHARRNN_ALWAYS_INLINE void bf16_rows_avx512(std::size_t rows, std::size_t kc,
                                                                      const std::uint32_t* A, std::size_t lda,
                                                                      const std::uint32_t* const* Bp,
                                                                      float* const* Ct, std::size_t ldc, bool acc) {
    if constexpr (R > 0) {
        if (rows == R) return bf16_micro_avx512<4, R>(kc, A, lda, Bp, Ct, ldc, acc);
        bf16_rows_avx512<R - 1>(rows, kc, A, lda, Bp, Ct, ldc, acc);
    }
}

CHARRNN_TARGET_AVX512BF16 inline void bf16_tile_avx512(std::size_t rows, const std::uint32_t* A, std::size_t lda,
                                                       const std::uint32_t* const* Bp, float* const* Ct,
                                                       std::size_t ldc, std::size_t kc, bool acc) {
    bf16_rows_avx512<6>(rows, kc, A, lda, Bp, Ct, ldc, acc);
}

CHARRNN_TARGET_AVX512BF16 inline void gemm16_avx512bf16(const Gemm16Args& g) {
    bf16_gemm_driver(g, &bf16_tile_avx512, 6, 4);
}

// ---------------------------------------------------------------- packing with vcvtne2ps2bf16

// Transposes a 16 x 16 matrix of 32-bit words held in 16 registers, in place
// (v[i] word j becomes v[j] word i): pairs, then quads within 128-bit lanes,
// then the lanes themselves. (The zero-masking forms with every lane kept are
// the same instructions; GCC 12 warns about the unmasked forms' undefined
// pass-through operand.)
CHARRNN_TARGET_AVX512BF16 CHARRNN_ALWAYS_INLINE void transpose16x16_epi32(__m512i* v) {
    constexpr __mmask16 all16 = 0xffff;
    constexpr __mmask8 all8 = 0xff;
    __m512i t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_maskz_unpacklo_epi32(all16, v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_maskz_unpackhi_epi32(all16, v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        v[4 * i] = _mm512_maskz_unpacklo_epi64(all8, t[4 * i], t[4 * i + 2]);
        v[4 * i + 1] = _mm512_maskz_unpackhi_epi64(all8, t[4 * i], t[4 * i + 2]);
        v[4 * i + 2] = _mm512_maskz_unpacklo_epi64(all8, t[4 * i + 1], t[4 * i + 3]);
        v[4 * i + 3] = _mm512_maskz_unpackhi_epi64(all8, t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_maskz_shuffle_i32x4(all16, v[i], v[i + 4], 0x88);
        t[i + 4] = _mm512_maskz_shuffle_i32x4(all16, v[i], v[i + 4], 0xdd);
        t[i + 8] = _mm512_maskz_shuffle_i32x4(all16, v[i + 8], v[i + 12], 0x88);
        t[i + 12] = _mm512_maskz_shuffle_i32x4(all16, v[i + 8], v[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; ++i) {
        v[i] = _mm512_maskz_shuffle_i32x4(all16, t[i], t[i + 8], 0x88);
        v[i + 8] = _mm512_maskz_shuffle_i32x4(all16, t[i], t[i + 8], 0xdd);
    }
}

// pack_rows_bf16 (bf16.hpp) for the two layouts the engine passes, with the
// conversion instruction: it rounds exactly as to_bf16 does (tests/cpp
// compares the two on every float32 bit pattern; only NaN payloads may
// differ, and a NaN stays a NaN). Other layouts take the portable code.
CHARRNN_TARGET_AVX512BF16 CHARRNN_ALWAYS_INLINE void pack_rows_bf16_hw(const float* A, std::size_t rsa,
                                                                       std::size_t csa, std::size_t M, std::size_t P,
                                                                       std::size_t Q, std::size_t lda,
                                                                       std::size_t rows_out, std::uint32_t* out) {
    const std::size_t used = (P + 1) / 2;
    if (csa == 1 && rsa >= P) {
        // contiguous rows: 32 values make 16 words, in order
        for (std::size_t r = 0; r < M; ++r) {
            const float* a = A + r * rsa;
            std::uint32_t* o = out + r * lda;
            std::size_t p = 0;
            for (; p + 32 <= P; p += 32) {
                const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + p + 16), _mm512_loadu_ps(a + p));
                _mm512_storeu_si512(o + p / 2, (__m512i)h);
            }
            Bf16Half* half = reinterpret_cast<Bf16Half*>(o);
            for (; p < P; ++p) half[p] = static_cast<std::uint16_t>(to_bf16(a[p]));
            if (P % 2) half[P] = 0;
        }
    } else if (rsa == 1 && csa >= M) {
        // transposed: pair q of 16 rows from two stored rows, interleaved in
        // registers, through a 16 x 16 tile written out transposed
        const std::size_t full = P / 2;
        alignas(64) std::uint32_t tile[16 * 16];
        const __m512i mix = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                             21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        for (std::size_t q0 = 0; q0 < full; q0 += 16) {
            const std::size_t qn = std::min<std::size_t>(16, full - q0);
            for (std::size_t r0 = 0; r0 < M; r0 += 16) {
                const std::size_t rn = std::min<std::size_t>(16, M - r0);
                const __mmask16 k = static_cast<__mmask16>((1u << rn) - 1u);
                __m512i v[16];
                for (std::size_t i = 0; i < 16; ++i) {
                    if (i >= qn) {
                        v[i] = _mm512_setzero_si512();
                        continue;
                    }
                    const float* lo = A + 2 * (q0 + i) * csa + r0;
                    const __m512 vlo = _mm512_maskz_loadu_ps(k, lo), vhi = _mm512_maskz_loadu_ps(k, lo + csa);
                    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(vhi, vlo);  // lo0..lo15 hi0..hi15
                    v[i] = _mm512_permutexvar_epi16(mix, h);                      // word r: the pair of row r
                }
                if (qn == 16) {
                    transpose16x16_epi32(v);  // v[r]: row r's 16 words
                    for (std::size_t r = 0; r < rn; ++r) _mm512_storeu_si512(out + (r0 + r) * lda + q0, v[r]);
                    continue;
                }
                for (std::size_t i = 0; i < qn; ++i) _mm512_store_si512(tile + i * 16, v[i]);
                for (std::size_t r = 0; r < rn; ++r) {
                    std::uint32_t* o = out + (r0 + r) * lda + q0;
                    for (std::size_t i = 0; i < qn; ++i) o[i] = tile[i * 16 + r];
                }
            }
        }
        if (P % 2) {
            const float* lo = A + (P - 1) * csa;
            for (std::size_t r = 0; r < M; ++r) out[r * lda + full] = to_bf16(lo[r]);
        }
    } else {
        pack_rows_bf16(A, rsa, csa, M, P, Q, lda, rows_out, out);
        return;
    }
    for (std::size_t r = 0; r < rows_out; ++r) std::fill(out + r * lda + (r < M ? used : 0), out + r * lda + Q, 0u);
}

// ---------------------------------------------------------------- amx

// Tiles: 0-3 C (rows 0-15 / 16-31 x panels j / j+1), 4-5 A, 6-7 B; every tile
// is 16 rows of 64 bytes.
struct alignas(64) AmxConfig {
    std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
    AmxConfig() {
        for (int i = 0; i < 8; ++i) {
            colsb[i] = 64;
            rows[i] = 16;
        }
    }
};

// C block (16 rows x 16 columns at C, row stride ldc) into / out of tile T;
// blocks cut by the edge of C go through `tmp`.
#define CHARRNN_AMX_LOAD_C(T, C, ldc, rows, cols, acc, tmp)                                     \
    do {                                                                                     \
        if (!(acc)) {                                                                        \
            _tile_zero(T);                                                                   \
        } else if ((rows) == 16 && (cols) == 16) {                                           \
            _tile_loadd(T, (C), static_cast<int>((ldc) * sizeof(float)));                    \
        } else {                                                                             \
            for (std::size_t i_ = 0; i_ < 16; ++i_)                                          \
                for (std::size_t c_ = 0; c_ < 16; ++c_)                                      \
                    (tmp)[i_ * 16 + c_] = (i_ < (rows) && c_ < (cols)) ? (C)[i_ * (ldc) + c_] : 0.0f; \
            _tile_loadd(T, (tmp), 64);                                                       \
        }                                                                                    \
    } while (0)
#define CHARRNN_AMX_STORE_C(T, C, ldc, rows, cols, tmp)                                          \
    do {                                                                                     \
        if ((rows) == 16 && (cols) == 16) {                                                  \
            _tile_stored(T, (C), static_cast<int>((ldc) * sizeof(float)));                   \
        } else if ((rows) > 0 && (cols) > 0) {                                               \
            _tile_stored(T, (tmp), 64);                                                      \
            for (std::size_t i_ = 0; i_ < (rows); ++i_)                                      \
                std::memcpy((C) + i_ * (ldc), (tmp) + i_ * 16, (cols) * sizeof(float));      \
        }                                                                                    \
    } while (0)

// The depth is taken in blocks of kAmxDepth pair rows, so that the A block
// of 32 rows (16 KB) stays in L1 while every panel pair of B streams past;
// C goes through memory between blocks, which leaves the order of the sums
// unchanged. The weight gradients (A stored transposed: a narrow product
// over the chunk's 2,048 rows) take the whole depth at once instead: their C
// then goes through memory once, not once per block, and their updates ran
// 4-6 % faster on the Xeon (benchmarks/README.md).
constexpr std::size_t kAmxDepth = 128;

// The 16 x 16 block of a product's initial value (Gemm16Args::init) at rows
// [r0, r0 + rows) and columns [c, c + cols), zero-filled to 16 x 16, into tmp.
inline void amx_init_block(const Gemm16Args& g, std::size_t r0, std::size_t rows, std::size_t c, std::size_t cols,
                           float* tmp) {
    for (std::size_t i = 0; i < 16; ++i) {
        float* t = tmp + i * 16;
        if (i < rows && cols == 16) {
            std::memcpy(t, init_row(g, r0 + i) + c, 16 * sizeof(float));
            continue;
        }
        for (std::size_t j = 0; j < 16; ++j) t[j] = i < rows && j < cols ? init_row(g, r0 + i)[c + j] : 0.0f;
    }
}
// C block into tile T: from C itself, zero, or (init, first depth block) the initial value.
#define CHARRNN_AMX_START_C(T, C, ldc, rows, cols, acc, tmp, g, r0, c, first)  \
    do {                                                                       \
        if ((first) && (g).init != nullptr) {                                  \
            amx_init_block((g), (r0), (rows), (c), (cols), (tmp));             \
            _tile_loadd(T, (tmp), 64);                                         \
        } else {                                                               \
            CHARRNN_AMX_LOAD_C(T, C, ldc, rows, cols, acc, tmp);               \
        }                                                                      \
    } while (0)

// The tile loops of gemm16_amx over A packed in Apk (rows lda words apart,
// zero rows up to a multiple of 32), with the tile configuration loaded:
// C (+)= A B, or C = init + A B (g.init: g supplies only that).
CHARRNN_TARGET_AMX inline void amx_tiles(std::size_t M, std::size_t p0, std::size_t p1, std::size_t c1,
                                         const std::uint32_t* Apk, std::size_t lda, const PackedBf16& B, float* C,
                                         std::size_t ldc, bool accumulate, const Gemm16Args& g, std::size_t depth) {
    const std::size_t Q = B.Q;
    alignas(64) float tmp[16 * 16];
    for (std::size_t r0 = 0; r0 < M; r0 += 32) {
        const std::size_t rb = std::min<std::size_t>(32, M - r0);
        const std::size_t rows0 = std::min<std::size_t>(16, rb), rows1 = rb - rows0;
        float* C0 = C + r0 * ldc;
        float* C1 = C0 + 16 * ldc;
        for (std::size_t k0 = 0; k0 < Q || k0 == 0; k0 += depth) {
            const std::size_t k1 = std::min(Q, k0 + depth);
            const bool acc = accumulate || k0 > 0;
            const std::uint32_t* Ap = Apk + r0 * lda;
            for (std::size_t j = p0; j < p1; j += 2) {
                const std::size_t cb = j * kBf16Panel;
                const std::size_t w0 = std::min(kBf16Panel, c1 - cb);
                const std::size_t w1 = j + 1 < p1 ? std::min(kBf16Panel, c1 - cb - kBf16Panel) : 0;
                const std::uint32_t* B0 = B.panel(j);
                const std::uint32_t* B1 = w1 ? B.panel(j + 1) : B0;
                CHARRNN_AMX_START_C(0, C0 + cb, ldc, rows0, w0, acc, tmp, g, r0, cb, k0 == 0);
                CHARRNN_AMX_START_C(1, C0 + cb + 16, ldc, rows0, w1, acc, tmp, g, r0, cb + 16, k0 == 0);
                if (rows1) {
                    CHARRNN_AMX_START_C(2, C1 + cb, ldc, rows1, w0, acc, tmp, g, r0 + 16, cb, k0 == 0);
                    CHARRNN_AMX_START_C(3, C1 + cb + 16, ldc, rows1, w1, acc, tmp, g, r0 + 16, cb + 16, k0 == 0);
                    for (std::size_t q = k0; q < k1; q += 16) {
                        _tile_loadd(4, Ap + q, static_cast<int>(lda * 4));
                        _tile_loadd(5, Ap + 16 * lda + q, static_cast<int>(lda * 4));
                        _tile_loadd(6, B0 + q * kBf16Panel, 64);
                        _tile_loadd(7, B1 + q * kBf16Panel, 64);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(1, 4, 7);
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                    CHARRNN_AMX_STORE_C(2, C1 + cb, ldc, rows1, w0, tmp);
                    CHARRNN_AMX_STORE_C(3, C1 + cb + 16, ldc, rows1, w1, tmp);
                } else {
                    for (std::size_t q = k0; q < k1; q += 16) {
                        _tile_loadd(4, Ap + q, static_cast<int>(lda * 4));
                        _tile_loadd(6, B0 + q * kBf16Panel, 64);
                        _tile_loadd(7, B1 + q * kBf16Panel, 64);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(1, 4, 7);
                    }
                }
                CHARRNN_AMX_STORE_C(0, C0 + cb, ldc, rows0, w0, tmp);
                CHARRNN_AMX_STORE_C(1, C0 + cb + 16, ldc, rows0, w1, tmp);
            }
            if (Q == 0) break;
        }
    }
}

CHARRNN_TARGET_AMX inline void gemm16_amx(const Gemm16Args& g) {
    const PackedBf16& B = *g.B;
    const std::size_t Q = B.Q, lda = bf16_row_stride(Q);
    assert(g.c0 % kBf16Panel == 0 && g.c1 <= B.N);  // the columns before c0 belong to another thread
    assert(g.B2 == nullptr || (g.B2->P == B.P && g.B2->N == B.N));
    const std::size_t p0 = g.c0 / kBf16Panel, p1 = (g.c1 + kBf16Panel - 1) / kBf16Panel;
    static const AmxConfig cfg;
    _tile_loadconfig(&cfg);
    const std::size_t Mpad = (g.M + 31) / 32 * 32;  // whole tiles of zero rows past M
    std::uint32_t* Apk = bf16_row_buffer(Mpad * lda);
    pack_rows_bf16_hw(g.A, g.rsa, g.csa, g.M, B.P, Q, lda, Mpad, Apk);
    assert(g.init == nullptr || g.B2 == nullptr);
    const std::size_t depth = g.rsa < g.csa ? Q : kAmxDepth;  // see kAmxDepth
    amx_tiles(g.M, p0, p1, g.c1, Apk, lda, B, g.C, g.ldc, g.accumulate, g, depth);
    if (g.B2 != nullptr) amx_tiles(g.M, p0, p1, g.c1, Apk, lda, *g.B2, g.C2, g.ldc, g.accumulate, Gemm16Args{}, depth);
    _tile_release();
}

#undef CHARRNN_AMX_START_C
#undef CHARRNN_AMX_LOAD_C
#undef CHARRNN_AMX_STORE_C

#else

inline Bf16Support detect_bf16(bool = true) { return {}; }

#endif

}  // namespace charrnn
