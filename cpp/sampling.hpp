// Text synthesis: run the network one character at a time and draw each
// next character from softmax(o / temperature), optionally filtered.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <numeric>
#include <vector>

#include "engine.hpp"
#include "kernels.hpp"
#include "parallel.hpp"
#include "walk.hpp"

namespace charrnn {

// SplitMix64: tiny, fast, and fully specified, so a seed gives the same text
// on every platform and compiler (std:: distributions do not promise that).
struct SplitMix64 {
    std::uint64_t state;
    explicit SplitMix64(std::uint64_t seed) : state(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    // Uniform double in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

// Index k drawn with probability w[k] / sum(w), by inverse CDF on u in [0, 1).
template <typename T>
inline std::size_t draw_index(const T* w, std::size_t K, double u) {
    double total = 0.0;
    for (std::size_t k = 0; k < K; ++k) total += static_cast<double>(w[k]);
    const double target = u * total;
    double cum = 0.0;
    std::size_t last_positive = 0;
    for (std::size_t k = 0; k < K; ++k) {
        if (w[k] > T(0)) {
            cum += static_cast<double>(w[k]);
            last_positive = k;
            if (target < cum) return k;
        }
    }
    return last_positive;  // only reached through rounding at the top end
}

// Optional filters on the next-character distribution p = softmax(o / temperature):
//   top_k > 0:   keep the top_k most probable characters
//   top_p < 1:   then keep the smallest set of most probable characters whose
//                (renormalised) probabilities sum to at least top_p (nucleus)
//   greedy:      take the most probable character (the first on ties), no draw
// Characters are ranked by decreasing p, ties broken by the lower index. The
// defaults (0, 1.0, false) leave p untouched, so sampling is unchanged.
struct SampleOptions {
    std::size_t top_k = 0;
    double top_p = 1.0;
    bool greedy = false;

    bool filters() const { return top_k > 0 || top_p < 1.0; }
};

// order[0..k) = the k most probable of the K characters of p, by decreasing
// p, ties broken by the lower index (the ranking of the filters below and of
// the trace's top-k); order[k..K) the others, in no particular order.
template <typename T, typename Index>
inline void rank_top(const T* p, std::size_t K, std::size_t k, std::vector<Index>& order) {
    order.resize(K);
    std::iota(order.begin(), order.end(), Index(0));
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(std::min(k, K)), order.end(),
                      [p](Index a, Index b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
}

// Zeroes the entries of p (length K) that top_k / top_p exclude; draw_index
// renormalises over the rest. `order` is scratch space.
template <typename T>
inline void filter_probs(T* p, std::size_t K, const SampleOptions& opt, std::vector<std::size_t>& order) {
    if (!opt.filters()) return;
    std::size_t keep = (opt.top_k > 0 && opt.top_k < K) ? opt.top_k : K;
    rank_top(p, K, keep, order);
    if (opt.top_p < 1.0) {
        double total = 0.0;
        for (std::size_t j = 0; j < keep; ++j) total += static_cast<double>(p[order[j]]);
        const double target = opt.top_p * total;
        double cum = 0.0;
        for (std::size_t j = 0; j < keep; ++j) {
            cum += static_cast<double>(p[order[j]]);
            if (cum >= target) {
                keep = j + 1;
                break;
            }
        }
    }
    for (std::size_t j = keep; j < K; ++j) p[order[j]] = T(0);
}

// Index of the largest entry (the first one on ties).
template <typename T>
inline std::size_t argmax_index(const T* p, std::size_t K) {
    std::size_t best = 0;
    for (std::size_t k = 1; k < K; ++k)
        if (p[k] > p[best]) best = k;
    return best;
}

// The next character from probabilities p (modified by the filters).
template <typename T>
inline std::size_t choose_index(T* p, std::size_t K, const SampleOptions& opt, SplitMix64& rng,
                                std::vector<std::size_t>& order) {
    if (opt.greedy) return argmax_index(p, K);
    filter_probs(p, K, opt, order);
    return draw_index(p, K, rng.uniform());
}

// The sampler's loop: feeds the prime characters, then draws n
// characters into out from softmax(logits / temperature). advance(x) feeds
// character x into the model's state; logits(o) writes the K output logits
// of the current state into o. The state is left as it was *before* the
// last sampled character would be fed, so calling again with
// prime = {out[n-1]} and that state continues exactly.
template <typename T, typename I, typename Advance, typename Logits>
void sample_loop(const Kernels<T>& kn, std::size_t K, const I* prime, std::size_t n_prime, std::size_t n,
                 double temperature, const SampleOptions& opt, std::uint64_t seed, std::int32_t* out,
                 Advance&& advance, Logits&& logits) {
    std::vector<T> o(K);
    std::vector<std::size_t> order;
    SplitMix64 rng(seed);
    const T inv_temp = static_cast<T>(1.0 / temperature);
    T log_z;
    for (std::size_t i = 0; i < n_prime; ++i) advance(static_cast<std::size_t>(safe_index(prime[i], K)));
    for (std::size_t i = 0; i < n; ++i) {
        if (i > 0) advance(static_cast<std::size_t>(out[i - 1]));
        logits(o.data());
        kn.softmax_rows(o.data(), 1, K, K, inv_temp, &log_z);
        out[i] = static_cast<std::int32_t>(choose_index(o.data(), K, opt, rng, order));
    }
}

// The sampler: `state` (one stream's state_size values) is updated in
// place; see sample_loop. A team of up to `threads` (stream_team) feeds the
// characters: thread 0 draws them, and before each step's barrier it either
// sets the step's input or tells the others to stop.
template <typename T, typename I>
void sample(const NetLayout& lay, const std::vector<T*>& params, T* state, const I* prime, std::size_t n_prime,
            std::size_t n, double temperature, const SampleOptions& opt, std::uint64_t seed, std::int32_t* out,
            std::size_t threads) {
    const NetParams<T> P(lay, params);
    Engine<T> eng(lay, stream_team(lay, threads, sizeof(T)));
    eng.resize(1, 1);
    eng.targets()[0] = 0;
    eng.set_state(0, state);
    std::atomic<bool> done{false};
    std::exception_ptr error;
    run_team(eng.threads, [&](std::size_t id) {
        eng.prepare(P, id);
        if (id != 0) {
            for (;;) {
                eng.barrier.wait();
                if (done.load(std::memory_order_relaxed)) return;  // the barrier orders it
                eng.forward(id);
            }
        }
        // one step: the input set, every thread's forward, then the new state
        // moved into the step's starting rows
        auto advance = [&](std::size_t x) {
            eng.inputs()[0] = static_cast<std::int32_t>(x);
            eng.barrier.wait();
            eng.forward(0);
            eng.get_state(0, state);
            eng.set_state(0, state);
        };
        auto logits = [&](T* o) { eng.logits(P, o); };
        try {
            sample_loop<T>(eng.kn, lay.K, prime, n_prime, n, temperature, opt, seed, out, advance, logits);
        } catch (...) {  // (an allocation) let the others go first, then throw
            error = std::current_exception();
        }
        done.store(true, std::memory_order_relaxed);
        eng.barrier.wait();
    });
    if (error) std::rethrow_exception(error);
}

}  // namespace charrnn
