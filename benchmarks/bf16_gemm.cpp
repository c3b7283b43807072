// One matrix product at the engine's shapes, by every kernel this CPU has:
// the float32 kernel, the portable bfloat16 kernel, AVX512-BF16 and AMX
// (cpp/bf16.hpp, cpp/bf16_x86.hpp), and, when built with oneDNN, oneDNN's
// bfloat16 matmul including the float32 -> bfloat16 conversion of A that the
// engine would have to do before calling it. One thread; GFLOP/s, best of 5
// repeats of >= 0.2 s each, interleaved so that a busy machine slows all alike.
//
//   g++ -std=c++17 -O3 -fno-math-errno -ffp-contract=fast -Wno-psabi -Icpp benchmarks/bf16_gemm.cpp -o /tmp/bf16_gemm
//   g++ ... -DCHARRNN_WITH_DNNL benchmarks/bf16_gemm.cpp -ldnnl -o /tmp/bf16_gemm   (Debian: libdnnl-dev)
//   OMP_NUM_THREADS=1 /tmp/bf16_gemm
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels.hpp"

#ifdef CHARRNN_WITH_DNNL
#include <dnnl.hpp>
#endif

using namespace charrnn;

namespace {

// The products of one update: M x P times P x N, A transposed for the weight gradients.
struct Shape {
    std::size_t M, P, N;
    bool transposed;
    const char* what;
};

double gflops(const Shape& s, const std::function<void()>& f) {
    f();
    double best = 0.0;
    for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        int calls = 0;
        double el = 0.0;
        do {
            f();
            ++calls;
            el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        } while (el < 0.2);
        best = std::max(best, 2.0 * s.M * s.P * s.N * calls / el / 1e9);
    }
    return best;
}

#if CHARRNN_X86_DISPATCH
// Multiply-adds per nanosecond of a loop of 24 independent accumulators, by
// vdpbf16ps (two a lane) and by float32 vfmadd (one a lane): what each
// instruction can do at most on this core, whatever the kernel around it.
#define CHARRNN_X24(X) \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
CHARRNN_TARGET_AVX512BF16 void instruction_rates() {
#define CHARRNN_DECL(i) __m512 a##i = _mm512_set1_ps(i * 1e-3f);
#define CHARRNN_DP(i) a##i = _mm512_dpbf16_ps(a##i, x, x);
#define CHARRNN_FMA(i) a##i = _mm512_fmadd_ps(a##i, f, f);
#define CHARRNN_SUM(i) _mm512_storeu_ps(lanes, a##i), sum += lanes[0];
    CHARRNN_X24(CHARRNN_DECL)
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3c003c00);  // pairs of 2^-7
    const __m512 f = _mm512_set1_ps(1e-7f);
    constexpr long kLoops = 20'000'000;
    double best_dp = 1e9, best_fma = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
        auto t0 = std::chrono::steady_clock::now();
        for (long n = 0; n < kLoops; ++n) {
            CHARRNN_X24(CHARRNN_DP)
            __asm__ volatile("" ::"v"(a0));
        }
        auto t1 = std::chrono::steady_clock::now();
        for (long n = 0; n < kLoops; ++n) {
            CHARRNN_X24(CHARRNN_FMA)
            __asm__ volatile("" ::"v"(a0));
        }
        auto t2 = std::chrono::steady_clock::now();
        best_dp = std::min(best_dp, std::chrono::duration<double>(t1 - t0).count());
        best_fma = std::min(best_fma, std::chrono::duration<double>(t2 - t1).count());
    }
    float sum = 0.0f, lanes[16];
    CHARRNN_X24(CHARRNN_SUM)
    const double dp = 24.0 * kLoops * 32 / best_dp / 1e9, fma = 24.0 * kLoops * 16 / best_fma / 1e9;
    std::printf("\nMultiply-adds per ns, one thread, by the instruction alone: vdpbf16ps %.1f, float32 vfmadd %.1f "
                "(%.2fx; checksum %g)\n", dp, fma, dp / fma, static_cast<double>(sum));
#undef CHARRNN_DECL
#undef CHARRNN_DP
#undef CHARRNN_FMA
#undef CHARRNN_SUM
}
#undef CHARRNN_X24
#endif

}  // namespace

int main() {
    const Shape shapes[] = {
        {32, 256, 1024, false, "LSTM 2x256 recurrence, B=32"},
        {32, 384, 1152, false, "GRU 2x384 recurrence, B=32"},
        {2048, 256, 1024, false, "LSTM input projection, 2048 rows"},
        {1024, 2048, 256, true, "LSTM weight gradient (A transposed)"},
        {2048, 1024, 256, false, "LSTM gradient to the layer below"},
        {2048, 256, 80, false, "output layer, K=80"},
    };
    const Isa top = detect_isa(), top16 = detect_isa16();
    const Kernels<float> kf = select_kernels<float>(top, top);
    const Kernels<float> kp = select_kernels<float>(top, top);  // portable bfloat16 at the float level
    const bool has16 = top16 >= Isa::avx512bf16, has_amx = top16 == Isa::amx;
    const Kernels<float> kb = select_kernels<float>(top, has16 ? Isa::avx512bf16 : top);
    const Kernels<float> ka = select_kernels<float>(top, top16);
    std::printf("float kernels %s, bfloat16 %s; GFLOP/s on one thread\n\n", isa_name(top), isa_name(top16));
    std::printf("| product | M x P x N | float32 | bf16 portable | avx512bf16 | amx | oneDNN bf16 |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|\n");
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    for (const Shape& s : shapes) {
        std::vector<float> A(s.M * s.P), B(s.P * s.N), C(s.M * s.N);
        for (auto& v : A) v = nd(rng);
        for (auto& v : B) v = nd(rng);
        const std::size_t rsa = s.transposed ? 1 : s.P, csa = s.transposed ? s.M : 1;
        PackedBf16 b16;
        b16.resize(s.P, s.N);
        pack_panels_bf16(B.data(), s.N, 1, nullptr, b16, 0, b16.panels());
        Packed<float> b32;
        b32.resize(s.P, s.N, kf.NR);
        pack_panels(B.data(), s.N, 1, nullptr, b32, 0, b32.panels());
        auto run16 = [&](const Kernels<float>& k) {
            return gflops(s, [&] { k.gemm16({s.M, 0, s.N, A.data(), rsa, csa, &b16, C.data(), s.N, false}); });
        };
        const double f32 =
            gflops(s, [&] { kf.gemm({s.M, 0, b32.panels(), A.data(), rsa, csa, &b32, C.data(), s.N, false}); });
        const double port = run16(kp);
        const std::string avx = has16 ? std::to_string(static_cast<int>(run16(kb))) : "n/a";
        const std::string amx = has_amx ? std::to_string(static_cast<int>(run16(ka))) : "n/a";
        std::string dnnl_rate = "not built";
#ifdef CHARRNN_WITH_DNNL
        {
            using namespace dnnl;
            engine eng(engine::kind::cpu, 0);
            stream st(eng);
            const memory::dims a{static_cast<long>(s.M), static_cast<long>(s.P)};
            const memory::dims b{static_cast<long>(s.P), static_cast<long>(s.N)};
            const memory::dims c{static_cast<long>(s.M), static_cast<long>(s.N)};
            const auto a32 = memory::desc(a, memory::data_type::f32, s.transposed ? memory::format_tag::ba : memory::format_tag::ab);
            const auto a16 = memory::desc(a, memory::data_type::bf16, memory::format_tag::ab);
            const auto w16 = memory::desc(b, memory::data_type::bf16, memory::format_tag::any);
            const auto c32 = memory::desc(c, memory::data_type::f32, memory::format_tag::ab);
#if DNNL_VERSION_MAJOR >= 3
            const matmul::primitive_desc pd(eng, a16, w16, c32);
#else
            const matmul::primitive_desc pd(matmul::desc(a16, w16, c32), eng);
#endif
            memory mA32(a32, eng, A.data()), mA16(a16, eng), mW(pd.weights_desc(), eng), mC(c32, eng, C.data());
            memory mB32(memory::desc(b, memory::data_type::f32, memory::format_tag::ab), eng, B.data());
            reorder(mB32, mW).execute(st, mB32, mW);
            const matmul mm(pd);
            const reorder to16(mA32, mA16);
            const double r = gflops(s, [&] {
                to16.execute(st, mA32, mA16);
                mm.execute(st, {{DNNL_ARG_SRC, mA16}, {DNNL_ARG_WEIGHTS, mW}, {DNNL_ARG_DST, mC}});
                st.wait();
            });
            dnnl_rate = std::to_string(static_cast<int>(r)) + " (" + pd.impl_info_str() + ")";
        }
#endif
        std::printf("| %s | %zu x %zu x %zu | %.0f | %.0f | %s | %s | %s |\n", s.what, s.M, s.P, s.N, f32, port,
                    avx.c_str(), amx.c_str(), dnnl_rate.c_str());
    }
#if CHARRNN_X86_DISPATCH
    if (has16) instruction_rates();
#endif
    return 0;
}
