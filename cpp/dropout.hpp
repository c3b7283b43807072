// Inverted dropout masks from a counter-based generator: whether unit k of
// stream s at chunk position t is kept at dropout site `site` of update
// `update` is a pure function of (seed, update, s, t, site, k). A resumed run
// and a NumPy replay (charrnn_ext.reference_nets) therefore draw exactly the
// same masks, whatever the thread count or the order of the work.
//
//   row key  = mix(mix(mix(mix(seed + G (update + 1)) + G (s + 1)) + G (t + 1)) + G (site + 1))
//   bits     = mix(row key + G (q + 1))  for the unit pair q = k / 2;
//              unit 2q uses the low 32 bits, unit 2q + 1 the high 32 bits
//   kept     = bits >= threshold,  threshold = floor(p * 2^32)
// with G = 0x9E3779B97F4A7C15 and mix the SplitMix64 finaliser, all in
// wrapping 64-bit arithmetic. A kept unit is scaled by 1 / (1 - p).
// Sites: 1 .. L-1 are the inputs of layers 1 .. L-1, L the input of the output layer.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "simd.hpp"

namespace charrnn {

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

CHARRNN_ALWAYS_INLINE std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

struct Dropout {
    double p = 0.0;           // probability of dropping a unit, in [0, 1)
    std::uint64_t seed = 0;   // of the run
    std::uint64_t update = 0; // index of the update (the optimiser's step count before it)

    bool on() const { return p > 0.0; }
    std::uint32_t threshold() const {
        return static_cast<std::uint32_t>(std::floor(p * 4294967296.0));
    }
    template <typename T>
    T scale() const {
        return static_cast<T>(1.0 / (1.0 - p));
    }
    std::uint64_t row_key(std::size_t stream, std::size_t t, std::size_t site) const {
        std::uint64_t k = mix64(seed + kGolden * (update + 1));
        k = mix64(k + kGolden * (static_cast<std::uint64_t>(stream) + 1));
        k = mix64(k + kGolden * (static_cast<std::uint64_t>(t) + 1));
        return mix64(k + kGolden * (static_cast<std::uint64_t>(site) + 1));
    }
};

// keep[k - k0] = 1 if unit k of the row is kept, for k in [k0, k1); k0 even.
CHARRNN_ALWAYS_INLINE void dropout_keep_impl(std::uint64_t key, std::size_t k0, std::size_t k1,
                                             std::uint32_t threshold, std::uint8_t* keep) {
    for (std::size_t k = k0; k < k1; k += 2) {
        const std::uint64_t bits = mix64(key + kGolden * (static_cast<std::uint64_t>(k / 2) + 1));
        keep[k - k0] = static_cast<std::uint32_t>(bits) >= threshold;
        if (k + 1 < k1) keep[k + 1 - k0] = static_cast<std::uint32_t>(bits >> 32) >= threshold;
    }
}

}  // namespace charrnn
