// exp and tanh written as straight-line code (no branches, no libm calls) so
// that loops over arrays vectorise; accurate to a few ulp in float64 and
// float32, which is far inside the 1e-10 agreement the core promises.
//
//   exp(x)   = 2^n * (1 + q(r)),  x = n ln2 + r,  |r| <= ln2 / 2
//   expm1(y) = 2^n q(r) + (2^n - 1)                (y >= 0)
//   tanh(x)  = sign(x) * e / (e + 2),  e = expm1(2 |x|)
// where q(r) = r + r^2/2! + ... + r^D/D! is the Taylor polynomial of expm1,
// long enough (D = 13 for double, 7 for float) for the truncation to be
// below half an ulp on |r| <= ln2 / 2. Cody-Waite splitting of ln2 keeps r
// exact to working precision.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "simd.hpp"

namespace charrnn {

template <typename T>
struct ExpTraits;

template <>
struct ExpTraits<double> {
    using Bits = std::int64_t;
    static constexpr int kDegree = 13;
    static constexpr int kMantissa = 52;
    static constexpr Bits kBias = 1023;
    static constexpr double kShift = 0x1.8p52;  // adding it rounds to an integer
    static constexpr double kLog2e = 1.4426950408889634;
    static constexpr double kLn2Hi = 6.93147180369123816490e-01;  // trailing zero bits: n * hi is exact
    static constexpr double kLn2Lo = 1.90821492927058770002e-10;
    static constexpr double kMin = -746.0;  // exp underflows to 0 below this
    static constexpr double kMax = 710.0;   // and overflows to inf above this
    static constexpr double kTanhSat = 20.0;  // tanh(x) rounds to 1 for |x| >= this
};

template <>
struct ExpTraits<float> {
    using Bits = std::int32_t;
    static constexpr int kDegree = 7;
    static constexpr int kMantissa = 23;
    static constexpr Bits kBias = 127;
    static constexpr float kShift = 0x1.8p23f;
    static constexpr float kLog2e = 1.44269502f;
    static constexpr float kLn2Hi = 6.9313812256e-01f;
    static constexpr float kLn2Lo = 9.0580006145e-06f;
    static constexpr float kMin = -105.0f;
    static constexpr float kMax = 89.0f;
    static constexpr float kTanhSat = 10.0f;
};

template <typename To, typename From>
CHARRNN_ALWAYS_INLINE To bit_cast_to(From v) {
    static_assert(sizeof(To) == sizeof(From), "size mismatch");
    To out;
    std::memcpy(&out, &v, sizeof(To));
    return out;
}

// 1/k! for k = 0..D, evaluated in double at compile time and rounded once to T.
template <typename T>
struct InverseFactorials {
    static constexpr int D = ExpTraits<T>::kDegree;
    T c[D + 1];
    constexpr InverseFactorials() : c() {
        double f = 1.0;
        for (int k = 0; k <= D; ++k) {
            if (k > 0) f *= k;
            c[k] = static_cast<T>(1.0 / f);
        }
    }
};

// q(r) = expm1(r) for |r| <= ln2/2: Horner on 1/2! + r/3! + ..., then r + r^2 * that.
template <typename T>
CHARRNN_ALWAYS_INLINE T expm1_poly(T r) {
    constexpr InverseFactorials<T> inv{};
    constexpr int D = ExpTraits<T>::kDegree;
    T acc = inv.c[D];
    for (int k = D - 1; k >= 2; --k) acc = acc * r + inv.c[k];
    return r + (r * r) * acc;
}

// Splits x into n (returned as the bits of 2^n's exponent offset) and r.
template <typename T>
struct Reduced {
    T r;
    typename ExpTraits<T>::Bits n;
};

template <typename T>
CHARRNN_ALWAYS_INLINE Reduced<T> reduce_ln2(T x) {
    using E = ExpTraits<T>;
    using Bits = typename E::Bits;
    const T k = x * E::kLog2e + E::kShift;
    const T n = k - E::kShift;
    const Bits ni = bit_cast_to<Bits>(k) - bit_cast_to<Bits>(E::kShift);
    const T r = (x - n * E::kLn2Hi) - n * E::kLn2Lo;
    return {r, ni};
}

template <typename T>
CHARRNN_ALWAYS_INLINE T pow2_bits(typename ExpTraits<T>::Bits n) {
    using E = ExpTraits<T>;
    return bit_cast_to<T>(static_cast<typename E::Bits>((n + E::kBias) << E::kMantissa));
}

// exp(x), including overflow to inf, gradual underflow and NaN propagation.
template <typename T>
CHARRNN_ALWAYS_INLINE T vexp(T x) {
    using E = ExpTraits<T>;
    using Bits = typename E::Bits;
    // A NaN is evaluated as 0 and returned unchanged at the end, so that the
    // integer exponent arithmetic below only ever sees values in range (a
    // NaN's bits would make it shift a negative number: undefined behaviour).
    const bool nan = !(x == x);
    T xc = nan ? T(0) : x;
    xc = xc < E::kMin ? E::kMin : xc;
    xc = xc > E::kMax ? E::kMax : xc;
    const Reduced<T> red = reduce_ln2(xc);
    const T q = expm1_poly(red.r);
    // 2^n applied in two halves so that neither factor leaves the normal range.
    const Bits off = Bits(2) * E::kBias;  // makes the shift operand non-negative
    const Bits n1 = ((red.n + off) >> 1) - E::kBias;
    const Bits n2 = red.n - n1;
    const T e = ((T(1) + q) * pow2_bits<T>(n1)) * pow2_bits<T>(n2);
    return nan ? x : e;
}

// tanh(x) via expm1(2|x|); exact +-1 beyond the saturation point, NaN stays NaN.
template <typename T>
CHARRNN_ALWAYS_INLINE T vtanh(T x) {
    using E = ExpTraits<T>;
    const bool nan = !(x == x);  // as in vexp: keep NaN bits away from the exponent arithmetic
    const T ax = nan ? T(0) : (x < T(0) ? -x : x);
    const T y = T(2) * (ax > E::kTanhSat ? E::kTanhSat : ax);
    const Reduced<T> red = reduce_ln2(y);
    const T q = expm1_poly(red.r);
    const T s = pow2_bits<T>(red.n);  // n >= 0 and small here
    const T em1 = s * q + (s - T(1));
    const T t = em1 / (em1 + T(2));
    return nan ? x : (x < T(0) ? -t : t);
}

// long double (numerical gradients only) uses the C library.
inline long double vexp(long double x) { return std::exp(x); }
inline long double vtanh(long double x) { return std::tanh(x); }

}  // namespace charrnn
