// The bfloat16 products of the core (cpp/bf16.hpp, cpp/bf16_x86.hpp), tested
// without Python: the conversion against the CPU's own instruction, every
// kernel this machine has against the portable one and against a float64
// sum, and the engine's bfloat16 gradients for 1, 2 and 3 threads, with the
// recurrences split by units and by streams.
//
// Prints one line per check and closes with "N passed, M failed"; exits 1 if
// anything failed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "train.hpp"

#include "check.hpp"

using namespace charrnn;

namespace {

void check(bool ok, const std::string& what) { charrnn_test::tally.check(ok, what); }

// ---------------------------------------------------------------- the conversion

void test_conversion_cases() {
    auto bits = [](float x) { return to_bf16(x); };
    check(bits(1.0f) == 0x3f80u, "1.0 converts exactly");
    check(bits(bit_cast_to<float>(0x3f808000u)) == 0x3f80u, "a tie rounds to the even neighbour (down)");
    check(bits(bit_cast_to<float>(0x3f818000u)) == 0x3f82u, "a tie rounds to the even neighbour (up)");
    check(bits(bit_cast_to<float>(0x3f808001u)) == 0x3f81u, "just above a tie rounds up");
    check(bits(bit_cast_to<float>(0x00000001u)) == 0x0000u, "a positive denormal becomes +0");
    check(bits(bit_cast_to<float>(0x807fffffu)) == 0x8000u, "a negative denormal becomes -0");
    check(bits(INFINITY) == 0x7f80u && bits(-INFINITY) == 0xff80u, "infinities stay infinite");
    check(bits(bit_cast_to<float>(0x7f7fffffu)) == 0x7f80u, "the largest float rounds up to infinity");
    const std::uint32_t nan = bits(bit_cast_to<float>(0x7f800001u));
    check((nan & 0x7f80u) == 0x7f80u && (nan & 0x7fu) != 0 && (nan & 0x40u), "a signalling NaN becomes a quiet NaN");
}

#if CHARRNN_X86_DISPATCH
CHARRNN_TARGET_AVX512BF16 std::uint64_t conversion_mismatches() {
    // Every float32 bit pattern, 32 at a time, against vcvtne2ps2bf16.
    std::uint64_t bad = 0;
    alignas(64) std::uint32_t in[32];
    alignas(64) std::uint16_t hw[32];
    for (std::uint64_t base = 0; base < (std::uint64_t(1) << 32); base += 32) {
        for (int i = 0; i < 32; ++i) in[i] = static_cast<std::uint32_t>(base + i);
        const __m512 lo = _mm512_load_ps(reinterpret_cast<const float*>(in));
        const __m512 hi = _mm512_load_ps(reinterpret_cast<const float*>(in + 16));
        _mm512_store_si512(hw, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        for (int i = 0; i < 32; ++i) {
            const std::uint32_t mine = to_bf16(bit_cast_to<float>(in[i]));
            const bool is_nan = (in[i] & 0x7fffffffu) > 0x7f800000u;
            // NaN payloads may differ; both must be NaN of the same sign
            if (is_nan ? ((hw[i] & 0x7f80u) != 0x7f80u || (hw[i] & 0x7fu) == 0 || (hw[i] ^ mine) & 0x8000u)
                       : hw[i] != mine)
                ++bad;
        }
    }
    return bad;
}
#endif

void test_conversion_matches_the_hardware() {
#if CHARRNN_X86_DISPATCH
    if (detect_bf16().avx512bf16) {
        const std::uint64_t bad = conversion_mismatches();
        check(bad == 0, "to_bf16 equals vcvtne2ps2bf16 on all 2^32 inputs (" + std::to_string(bad) + " differ)");
        return;
    }
#endif
    std::printf("skip the conversion against the hardware: no AVX512-BF16 here\n");
}

// ---------------------------------------------------------------- the kernels

// C is (M + 1) x ldc, ldc > N: the product writes rows [0, M) x columns
// [c0, c1) only, and everything else (columns before c0, from c1 on, past N,
// and the extra row) must keep its value.
struct Case {
    std::size_t M, P, N, c0, c1, ldc;
    bool transposed, accumulate;
};

std::vector<float> run(const Kernels<float>& k, const Case& c, const std::vector<float>& A, const PackedBf16& B,
                       const std::vector<float>& C0) {
    std::vector<float> C = C0;
    const std::size_t rsa = c.transposed ? 1 : c.P, csa = c.transposed ? c.M : 1;
    k.gemm16({c.M, c.c0, c.c1, A.data(), rsa, csa, &B, C.data(), c.ldc, c.accumulate});
    return C;
}

// The paired form (B2, C2: two products of one A) gives, bit for bit, what
// the two products give one at a time.
bool paired_same(const Kernels<float>& k, const Case& c, const std::vector<float>& A, const PackedBf16& B,
                 const PackedBf16& B2, const std::vector<float>& C0, const std::vector<float>& C20) {
    std::vector<float> C = C0, C2 = C20;
    const std::size_t rsa = c.transposed ? 1 : c.P, csa = c.transposed ? c.M : 1;
    k.gemm16({c.M, c.c0, c.c1, A.data(), rsa, csa, &B, C.data(), c.ldc, c.accumulate, &B2, C2.data()});
    return C == run(k, c, A, B, C0) && C2 == run(k, c, A, B2, C20);
}

// The product started from given rows (Gemm16Args::init: rows picked by an
// index, or one row for all) gives, bit for bit, those rows copied into C
// and the product accumulated onto them; C's other columns keep their values.
bool init_same(const Kernels<float>& k, const Case& c, const std::vector<float>& A, const PackedBf16& B,
               const std::vector<float>& C0, std::mt19937& rng) {
    const std::size_t n_init = 1 + rng() % 7;
    std::vector<float> I(n_init * c.N);
    std::normal_distribution<float> nd;
    for (auto& v : I) v = nd(rng);
    std::vector<std::int32_t> idx(c.M);
    for (auto& v : idx) v = static_cast<std::int32_t>(rng() % n_init);
    const std::size_t rsa = c.transposed ? 1 : c.P, csa = c.transposed ? c.M : 1;
    bool ok = true;
    for (const bool broadcast : {false, true}) {
        std::vector<float> C = C0, D = C0;
        for (std::size_t r = 0; r < c.M; ++r)
            for (std::size_t j = c.c0; j < c.c1; ++j) D[r * c.ldc + j] = I[(broadcast ? 0 : idx[r]) * c.N + j];
        k.gemm16({c.M, c.c0, c.c1, A.data(), rsa, csa, &B, C.data(), c.ldc, false, nullptr, nullptr, I.data(),
                  broadcast ? nullptr : idx.data(), broadcast ? 0 : c.N});
        k.gemm16({c.M, c.c0, c.c1, A.data(), rsa, csa, &B, D.data(), c.ldc, true});
        ok = ok && C == D;
    }
    return ok;
}

void test_kernels() {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    // the portable kernel at each float level, and the hardware kernels this CPU has
    const Isa top = detect_isa(), top16 = detect_isa16();
    std::vector<std::pair<std::string, Kernels<float>>> portable;
    portable.push_back({"portable/baseline", select_kernels<float>(Isa::baseline)});
#if CHARRNN_X86_DISPATCH
    if (top >= Isa::avx2) portable.push_back({"portable/avx2", select_kernels<float>(Isa::avx2, Isa::avx2)});
    if (top >= Isa::avx512) portable.push_back({"portable/avx512", select_kernels<float>(Isa::avx512, Isa::avx512)});
#endif
    const Kernels<float> ref = portable.back().second;
    const bool has16 = top16 >= Isa::avx512bf16, has_amx = top16 == Isa::amx;
    const Kernels<float> k16 = select_kernels<float>(top, has16 ? Isa::avx512bf16 : top);
    const Kernels<float> kamx = select_kernels<float>(top, top16);
    int same = 0, same16 = 0, within = 0, amx_within = 0, untouched = 0, paired = 0, started = 0, total = 0;
    double worst_amx = 0.0, worst_ref = 0.0;
    for (int trial = 0; trial < 60; ++trial) {
        Case c{1 + rng() % 70, 1 + rng() % 300, 1 + rng() % 150, 0, 0, 0, rng() % 2 == 1, rng() % 2 == 1};
        c.c0 = kBf16Panel * (rng() % ((c.N + kBf16Panel - 1) / kBf16Panel));
        c.c1 = c.c0 + 1 + rng() % (c.N - c.c0);
        c.ldc = c.N + 1 + rng() % 20;
        std::vector<float> A(c.M * c.P), Bm(c.P * c.N), C0((c.M + 1) * c.ldc);
        for (auto& v : A) v = nd(rng);
        for (auto& v : Bm) v = nd(rng);
        for (auto& v : C0) v = nd(rng);
        PackedBf16 B, B2;
        B.resize(c.P, c.N);
        pack_panels_bf16(Bm.data(), c.N, 1, nullptr, B, 0, B.panels());
        std::vector<float> Bm2(c.P * c.N), C20(C0.size());
        for (auto& v : Bm2) v = nd(rng);
        for (auto& v : C20) v = nd(rng);
        B2.resize(c.P, c.N);
        pack_panels_bf16(Bm2.data(), c.N, 1, nullptr, B2, 0, B2.panels());
        bool pairs = paired_same(k16, c, A, B, B2, C0, C20) && paired_same(kamx, c, A, B, B2, C0, C20);
        for (const auto& kp : portable) pairs = pairs && paired_same(kp.second, c, A, B, B2, C0, C20);
        paired += pairs;
        bool starts = init_same(k16, c, A, B, C0, rng) && init_same(kamx, c, A, B, C0, rng);
        for (const auto& kp : portable) starts = starts && init_same(kp.second, c, A, B, C0, rng);
        started += starts;
        const std::vector<float> Cr = run(ref, c, A, B, C0);
        bool all_same = true;
        for (const auto& kp : portable) all_same = all_same && run(kp.second, c, A, B, C0) == Cr;
        same += all_same;
        same16 += !has16 || run(k16, c, A, B, C0) == Cr;
        const std::vector<float> Ca = run(kamx, c, A, B, C0);
        bool ok = true, ok_amx = true, kept = true;
        const std::size_t rsa = c.transposed ? 1 : c.P, csa = c.transposed ? c.M : 1;
        for (std::size_t r = 0; r <= c.M; ++r)
            for (std::size_t j = 0; j < c.ldc; ++j) {
                const std::size_t i = r * c.ldc + j;
                if (r == c.M || j < c.c0 || j >= c.c1) {
                    kept = kept && Cr[i] == C0[i] && Ca[i] == C0[i];
                    continue;
                }
                // float64 sum of the bfloat16-rounded products, and the float32
                // summation bound 2 P u sum |terms| (u = 2^-24)
                double exact = c.accumulate ? C0[i] : 0.0, mag = std::fabs(exact);
                for (std::size_t p = 0; p < c.P; ++p) {
                    const double t = static_cast<double>(bf16_lo(to_bf16(A[r * rsa + p * csa]))) *
                                     static_cast<double>(bf16_lo(to_bf16(Bm[p * c.N + j])));
                    exact += t;
                    mag += std::fabs(t);
                }
                const double bound = 2.0 * static_cast<double>(c.P + 1) * std::ldexp(1.0, -24) * mag;
                ok = ok && std::fabs(Cr[i] - exact) <= bound;
                ok_amx = ok_amx && std::fabs(Ca[i] - Cr[i]) <= bound;
                if (bound > 0) {
                    worst_ref = std::max(worst_ref, std::fabs(Cr[i] - exact) / bound);
                    worst_amx = std::max(worst_amx, std::fabs(Ca[i] - Cr[i]) / bound);
                }
            }
        within += ok;
        amx_within += ok_amx;
        untouched += kept;
        ++total;
    }
    const std::string n = " of " + std::to_string(total) + " products";
    check(same == total, "the portable kernel gives identical bits at every float level (" + std::to_string(same) + n + ")");
    check(same16 == total, std::string("AVX512-BF16 matches the portable kernel bit for bit") +
                               (has16 ? "" : " (no AVX512-BF16 here: portable only)"));
    check(within == total, "the portable sums lie within 2 P u sum|ab| of the float64 sum (worst " +
                               std::to_string(worst_ref) + " of the bound)");
    check(amx_within == total, std::string(has_amx ? "AMX" : "the best kernel here") +
                                   " lies within the same bound of the portable kernel (worst " +
                                   std::to_string(worst_amx) + " of the bound)");
    check(untouched == total, "nothing outside rows [0, M) x columns [c0, c1) is written");
    check(started == total, "a product started from given rows (init) equals those rows plus the product, on every "
                            "kernel (" + std::to_string(started) + n + ")");
    check(paired == total, "two products of one A (B2, C2) equal the two products one at a time, on every kernel (" +
                               std::to_string(paired) + n + ")");
}

#if CHARRNN_X86_DISPATCH
CHARRNN_TARGET_AVX512BF16 void pack_hw(const float* A, std::size_t rsa, std::size_t csa, std::size_t M,
                                       std::size_t P, std::size_t Q, std::size_t lda, std::size_t rows,
                                       std::uint32_t* out) {
    pack_rows_bf16_hw(A, rsa, csa, M, P, Q, lda, rows, out);
}
#endif

// A stored transposed or row by row packs to the same words, and the
// kernels run the weight gradients' (transposed) products over their whole
// depth at once but the others in depth blocks: the two must give the same
// bits, the sums being taken in the same order either way.
void test_depth_blocks() {
    std::mt19937 rng(13);
    std::normal_distribution<float> nd;
    const Isa top = detect_isa(), top16 = detect_isa16();
    const Kernels<float> k = select_kernels<float>(top, top16);
    int same = 0, total = 0;
    for (int trial = 0; trial < 20; ++trial, ++total) {
        const std::size_t M = 1 + rng() % 70, P = 257 + rng() % 500, N = 1 + rng() % 100;
        std::vector<float> A(M * P), At(P * M), Bm(P * N), C0(M * N);
        for (auto& v : A) v = nd(rng);
        for (std::size_t r = 0; r < M; ++r)
            for (std::size_t p = 0; p < P; ++p) At[p * M + r] = A[r * P + p];
        for (auto& v : Bm) v = nd(rng);
        for (auto& v : C0) v = nd(rng);
        PackedBf16 B;
        B.resize(P, N);
        pack_panels_bf16(Bm.data(), N, 1, nullptr, B, 0, B.panels());
        const bool acc = rng() % 2 == 1;
        std::vector<float> C = C0, D = C0;
        k.gemm16({M, 0, N, A.data(), P, 1, &B, C.data(), N, acc});
        k.gemm16({M, 0, N, At.data(), 1, M, &B, D.data(), N, acc});
        same += C == D;
    }
    check(same == total, std::string("the ") + isa_name(top16) + " kernel gives the same bits for A row by row " +
                             "and transposed, over depths of 257-756 (" + std::to_string(same) + " of " +
                             std::to_string(total) + ")");
}

void test_hardware_packing() {
#if CHARRNN_X86_DISPATCH
    if (!detect_bf16().avx512bf16) {
        std::printf("skip the packing with vcvtne2ps2bf16: no AVX512-BF16 here\n");
        return;
    }
    std::mt19937 rng(11);
    std::normal_distribution<float> nd;
    int same = 0, total = 0, kept = 0;
    for (int trial = 0; trial < 80; ++trial, ++total) {
        const std::size_t M = 1 + rng() % 60, P = 1 + rng() % 200, Q = bf16_depth(P), rows = M + rng() % 40;
        const std::size_t lda = bf16_row_stride(Q);
        const bool transposed = rng() % 2 == 1;
        std::vector<float> A(M * P);
        for (auto& v : A) v = nd(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 60) - 30);
        const std::size_t rsa = transposed ? 1 : P, csa = transposed ? M : 1;
        std::vector<std::uint32_t> a(rows * lda, 7u), b(rows * lda, 7u);
        pack_rows_bf16(A.data(), rsa, csa, M, P, Q, lda, rows, a.data());
        pack_hw(A.data(), rsa, csa, M, P, Q, lda, rows, b.data());
        same += a == b;
        bool gaps = true;  // the words between Q and the row stride are not written
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t q = Q; q < lda; ++q) gaps = gaps && a[r * lda + q] == 7u && b[r * lda + q] == 7u;
        kept += gaps;
    }
    check(same == total, "packing A with vcvtne2ps2bf16 gives the portable words (" + std::to_string(same) + " of " +
                             std::to_string(total) + ")");
    check(kept == total, "packing A writes nothing between a row's Q words and the next row");
#endif
}

// ---------------------------------------------------------------- the engine

void test_engine_threads() {
    // 5 streams: one step's products take the row kernel (kTileStreams); 11: the tiles
    for (std::size_t B : {5, 11})
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru}) {
        // 200 units: over three panel blocks of 64 (the AVX-512 split) and a partial one
        const NetLayout lay{cell, 23, 200, 2};
        std::mt19937 rng(3);
        std::normal_distribution<float> nd(0.0f, 0.2f);
        std::vector<std::vector<float>> params;
        std::vector<float*> p;
        for (const auto& s : lay.arrays()) {
            params.emplace_back(s.size());
            for (auto& v : params.back()) v = nd(rng);
        }
        for (auto& a : params) p.push_back(a.data());
        const std::size_t n = 6;
        std::vector<std::int32_t> X(B * n), Y(B * n);
        for (auto& v : X) v = static_cast<std::int32_t>(rng() % lay.K);
        for (auto& v : Y) v = static_cast<std::int32_t>(rng() % lay.K);
        std::vector<std::vector<float>> first;
        bool same = true;
        for (const char* split : {"units", "streams"}) {
            for (std::size_t threads : {1, 2, 3}) {
                setenv("CHARRNN_SPLIT", split, 1);
                std::vector<std::vector<float>> g;
                std::vector<float*> gp;
                for (const auto& s : lay.arrays()) g.emplace_back(s.size());
                for (auto& a : g) gp.push_back(a.data());
                std::vector<float> states(B * lay.state_size(), 0.1f);
                chunk_loss_and_grads<float>(lay, threads, p, Dropout{}, X.data(), Y.data(), B, n, states.data(), gp,
                                            Precision::bf16);
                if (first.empty()) {
                    first = g;
                } else {
                    same = same && g == first;
                }
            }
        }
        unsetenv("CHARRNN_SPLIT");
        check(same, std::string("bfloat16 gradients of a 2-layer ") + name_of(cell) + ", " + std::to_string(B) +
                        " streams, are identical for 1, 2 and 3 threads, split by units and by streams");
    }
}

// Which kernel one step's bfloat16 products take: the row kernel below
// kTileStreams streams in the chunk, the tiles from there on, for every
// thread count (a thread's share of the streams does not choose it).
void test_step_kernel() {
    const NetLayout lay{Cell::lstm, 23, 64, 2};
    const Kernels<float>& kn = kernels<float>();
    bool ok = true;
    for (std::size_t threads : {1, 2, 3}) {
        Engine<float> eng(lay, threads, Precision::bf16);
        for (std::size_t B : {std::size_t(1), kTileStreams - 1, kTileStreams, 4 * kTileStreams}) {
            eng.resize(B, 4);
            ok = ok && eng.step_kernel() == (B < kTileStreams ? kn.gemm16_rows : kn.gemm16);
        }
    }
    const bool rows_differ = kn.isa16 == Isa::amx ? kn.gemm16_rows != kn.gemm16 : kn.gemm16_rows == kn.gemm16;
    check(ok && rows_differ, std::string("one step's bfloat16 products: the row kernel below ") +
                                 std::to_string(kTileStreams) + " streams, whatever the threads (" +
                                 isa_name(kn.isa16) + (kn.isa16 == Isa::amx ? ": vdpbf16ps below, tiles above)" : ": one kernel)"));
}

}  // namespace

int main() {
    setenv("CHARRNN_TEAM", "full", 1);  // the thread test splits a small network on purpose (engine.hpp team_size)
    std::printf("float kernels: %s; bfloat16 products: %s\n", isa_name(kernels<float>().isa),
                isa_name(kernels<float>().isa16));
    test_conversion_cases();
    test_conversion_matches_the_hardware();
    test_kernels();
    test_depth_blocks();
    test_hardware_packing();
    test_engine_threads();
    test_step_kernel();
    return charrnn_test::tally.finish();
}
