// Pieces shared by the vanilla and the general-network code: reading
// character indices out of caller memory, and the bookkeeping of a walk
// through a text in chunks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace charrnn {

// v as an index into a vocabulary of K, or 0 if it is outside [0, K).
// The bindings check every index before the numerical work starts; this
// second, per-use guard only matters if another thread rewrites the index
// array during the call. The results are then unspecified, but no memory
// outside the parameter arrays is ever touched.
template <typename I>
inline std::int32_t safe_index(I v, std::size_t K) {
    const std::uint64_t u = static_cast<std::uint64_t>(v);  // negative values become huge
    return u < K ? static_cast<std::int32_t>(u) : 0;
}

// Inputs seg[0..n) into x and targets seg[1..n+1) into y, `stride` apart.
template <typename I>
inline void copy_chunk(const I* seg, std::size_t n, std::size_t K, std::int32_t* x, std::int32_t* y,
                       std::size_t stride = 1) {
    for (std::size_t t = 0; t < n; ++t) {
        x[t * stride] = safe_index(seg[t], K);
        y[t * stride] = safe_index(seg[t + 1], K);
    }
}

// Where the next chunk of a walk over a segment of length L starts: at pos,
// or back at 0 (a new epoch, from a zero hidden state) when a whole chunk of
// seq_len + 1 characters no longer fits. Nothing changes until commit(), so
// a step that is not applied (a non-finite loss) leaves the walk as it was.
struct ChunkPlan {
    std::size_t start = 0;
    bool wrap = false;

    static ChunkPlan at(std::size_t pos, std::size_t seq_len, std::size_t L) {
        const bool w = pos + seq_len + 1 > L;
        return {w ? 0 : pos, w};
    }
    void commit(std::size_t seq_len, std::size_t& pos, std::size_t& wraps) const {
        pos = start + seq_len;
        wraps += wrap ? 1 : 0;
    }
};

// The forward-only loss over a whole text (predict data[1..N) from
// data[0..N-1)) in pieces: f(t0, n) handles inputs data[t0..t0+n) and
// targets data[t0+1..t0+n+1), for consecutive pieces of at most kLossChunk.
constexpr std::size_t kLossChunk = 128;

template <typename F>
void for_each_loss_chunk(std::size_t N, F&& f) {
    for (std::size_t t0 = 0; t0 + 1 < N; t0 += kLossChunk) f(t0, std::min(kLossChunk, N - 1 - t0));
}

}  // namespace charrnn
