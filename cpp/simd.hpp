// Compiler plumbing for the hot kernels: forced (and forbidden) inlining, the
// x86-64 instruction-set levels the kernels are compiled for, and the size of
// the L1 data cache.
//
// The kernels (linalg.hpp, vmath.hpp, ...) are plain C++ written so that the
// compiler vectorises them. kernels.hpp instantiates each one several times
// with __attribute__((target(...))) -- AVX-512, AVX2+FMA, and the baseline
// of the build -- and picks one at run time from what the CPU supports, so a
// default build runs on any x86-64 yet uses the wide units where present.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define CHARRNN_ALWAYS_INLINE inline __attribute__((always_inline))
#define CHARRNN_NOINLINE __attribute__((noinline))
#define CHARRNN_RESTRICT __restrict__
#else
#define CHARRNN_ALWAYS_INLINE inline
#define CHARRNN_NOINLINE
#define CHARRNN_RESTRICT
#endif

// Run-time dispatch needs GCC/Clang on x86-64 (target attributes and
// __builtin_cpu_supports). CHARRNN_NATIVE builds (-march=native) and other
// compilers or architectures compile one baseline version only.
#if !defined(CHARRNN_NO_DISPATCH) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(_M_X64))
#define CHARRNN_X86_DISPATCH 1
#define CHARRNN_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2")))
#define CHARRNN_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2")))
#else
#define CHARRNN_X86_DISPATCH 0
#endif

#include <cstdlib>
#include <string>
#if defined(__unix__)
#include <unistd.h>
#endif

namespace charrnn {

// Instruction-set levels, lowest first. The last two add bfloat16 products
// (bf16_x86.hpp) to the AVX-512 float kernels.
enum class Isa { baseline, avx2, avx512, avx512bf16, amx };

inline const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::amx: return "amx";
        case Isa::avx512bf16: return "avx512bf16";
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default:
            // The build's own target: plain x86-64 (SSE2) unless compiled
            // with -march flags (e.g. CHARRNN_NATIVE=ON).
#if defined(__AVX512F__)
            return "baseline-avx512";
#elif defined(__AVX2__)
            return "baseline-avx2";
#else
            return "baseline";
#endif
    }
}

// The level the environment variable CHARRNN_ISA asks for, or `best` when it
// is unset (it can only lower the choice, for testing the other variants on
// one machine). A value that names no level means baseline: a misspelt
// request for a lower path must not enable a higher one
// (charrnn_ext.engine warns about it).
inline Isa isa_cap(Isa best) {
    const char* want = std::getenv("CHARRNN_ISA");
    if (!want || !*want) return best;
    const std::string w(want);
    static constexpr const char* levels[] = {"baseline", "avx2", "avx512", "avx512bf16", "amx"};
    for (int i = 0; i < 5; ++i)
        if (w == levels[i]) return static_cast<Isa>(i) < best ? static_cast<Isa>(i) : best;
    return Isa::baseline;
}

// The widest float vector level this CPU (and OS) supports among those
// compiled in, capped by CHARRNN_ISA (bf16_x86.hpp detects the two above it).
inline Isa detect_isa() {
    Isa best = Isa::baseline;
#if CHARRNN_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
        best = Isa::avx512;
    }
#endif
    return isa_cap(best);
}

// This core's L1 data cache in bytes, as glibc reports it; 0 where the C
// library does not say (musl, macOS, the BSDs, Windows), which keeps the
// kernels' default depth blocks there (kernels.hpp).
inline std::size_t l1d_bytes() {
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    const long v = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    return v > 0 ? static_cast<std::size_t>(v) : 0;
#else
    return 0;
#endif
}

}  // namespace charrnn
