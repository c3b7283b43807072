// Scans the bindings run over caller data before any work starts: finiteness,
// signs, index ranges and overlapping memory. Each returns what it found, so
// that the caller can name the offending argument and position.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "simd.hpp"

namespace charrnn {

// x - x is +0 for finite x and NaN for inf or NaN; eight lane sums of it stay
// 0 exactly unless some element is not finite. No early exit, so the loop
// vectorises: this runs on every call and on every training step's gradient
// (inlined into each instruction-set variant of the kernels), so it must stay cheap.
template <typename T>
CHARRNN_ALWAYS_INLINE bool all_finite(const T* p, std::size_t n) {
    T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (std::size_t l = 0; l < 8; ++l) acc[l] += p[i + l] - p[i + l];
    for (; i < n; ++i) acc[0] += p[i] - p[i];
    T total = T(0);
    for (std::size_t l = 0; l < 8; ++l) total += acc[l];
    return total == T(0);
}

// all_finite, and no entry below zero (NaN compares false and is caught by the finiteness sum).
template <typename T>
bool all_finite_non_negative(const T* p, std::size_t n) {
    T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    T low[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (std::size_t l = 0; l < 8; ++l) {
            const T v = p[i + l];
            acc[l] += v - v;
            low[l] = v < low[l] ? v : low[l];
        }
    for (; i < n; ++i) {
        acc[0] += p[i] - p[i];
        low[0] = p[i] < low[0] ? p[i] : low[0];
    }
    T total = T(0), lowest = T(0);
    for (std::size_t l = 0; l < 8; ++l) {
        total += acc[l];
        lowest = low[l] < lowest ? low[l] : lowest;
    }
    return total == T(0) && !(lowest < T(0));
}

// The first i in [begin, end) with data[i] outside [0, K), or end.
template <typename I>
std::size_t first_out_of_range(const I* data, std::size_t begin, std::size_t end, std::size_t K) {
    for (std::size_t i = begin; i < end; ++i) {
        const I v = data[i];
        bool bad;
        if constexpr (std::is_signed_v<I>) {
            bad = v < 0 || static_cast<std::uint64_t>(v) >= K;
        } else {
            bad = static_cast<std::uint64_t>(v) >= K;
        }
        if (bad) return i;
    }
    return end;
}

// Byte ranges of the arrays a call writes: no two may share a byte, or an
// in-place update would read values it has already changed.
struct Span {
    const char* lo;
    const char* hi;
    std::string name;
};

// The names of two overlapping spans (in the order they were given), or an empty pair.
inline std::pair<std::string, std::string> find_overlap(const std::vector<Span>& spans) {
    std::vector<std::size_t> order(spans.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return spans[a].lo < spans[b].lo; });
    std::size_t widest = 0;  // the span reaching furthest so far
    for (std::size_t k = 1; k < order.size(); ++k) {
        const Span& s = spans[order[k]];
        const Span& w = spans[order[widest]];
        if (s.lo < w.hi && s.lo < s.hi) {
            return order[widest] < order[k] ? std::make_pair(w.name, s.name) : std::make_pair(s.name, w.name);
        }
        if (s.hi > w.hi) widest = k;
    }
    return {};
}

}  // namespace charrnn
