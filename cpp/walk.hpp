// Where the chunks of a walk through a text come from. B streams walk B
// contiguous segments of the text, stream s owning [s*L, (s+1)*L) with
// L = N / B (the last N - B*L characters are not used when B > 1; B = 1 is
// the classic single walk). A step takes inputs seg[pos..pos+T) and targets
// seg[pos+1..pos+T+1) from every stream; when a whole chunk no longer fits in
// a stream's segment, that stream returns to offset 0 with a zero state (a
// new epoch).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace charrnn {

// v as an index into a vocabulary of K, or 0 if it is outside [0, K). The
// bindings check every index before the work starts; this second guard only
// matters if another thread rewrites the index array during a call. The
// results are then unspecified, but no memory outside the arrays is touched.
template <typename I>
inline std::int32_t safe_index(I v, std::size_t K) {
    const std::uint64_t u = static_cast<std::uint64_t>(v);  // negative values become huge
    return u < K ? static_cast<std::int32_t>(u) : 0;
}

// Inputs seg[0..n) into x and targets seg[1..n+1) into y, `stride` apart.
template <typename I>
inline void copy_chunk(const I* seg, std::size_t n, std::size_t K, std::int32_t* x, std::int32_t* y,
                       std::size_t stride) {
    for (std::size_t t = 0; t < n; ++t) {
        x[t * stride] = safe_index(seg[t], K);
        y[t * stride] = safe_index(seg[t + 1], K);
    }
}

// Where a stream's next chunk starts: at pos, or back at 0 when a chunk of
// seq_len + 1 characters no longer fits in its segment of length L. Nothing
// changes until commit(), so a step that is not applied (a non-finite loss)
// leaves the walk as it was.
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

// The segments of B streams over a text of N characters.
struct Segments {
    std::size_t N = 0, B = 1;
    std::size_t length() const { return N / B; }
    // Enough characters that every stream has one chunk of seq_len + 1.
    bool fits(std::size_t seq_len) const { return B >= 1 && length() >= seq_len + 1; }
    // The characters [begin, end) of the text that stream s reads in n_steps
    // steps from offset pos: the chunks ahead, or its whole segment if it may wrap.
    std::pair<std::size_t, std::size_t> window(std::size_t s, std::size_t pos, std::size_t n_steps,
                                               std::size_t seq_len) const {
        const std::size_t L = length(), base = s * L;
        if (n_steps == 0) return {base, base};
        if (n_steps <= L / seq_len && pos + n_steps * seq_len + 1 <= L) {
            return {base + pos, base + pos + n_steps * seq_len + 1};
        }
        return {base, base + L};
    }
};

// Forward-only evaluation of a whole text (predict data[1..N) from
// data[0..N-1)) by B streams: stream s reads inputs [s*E, (s+1)*E) with
// E = (N - 1) / B, starting from a zero state except stream 0; the last
// (N - 1) - B*E inputs are read after that by stream B-1, continuing its
// state, so every prediction is counted once and the final state is the one
// at the end of the text. B = 1 is a single pass.
struct EvalSplit {
    std::size_t B = 1, E = 0, tail = 0;

    static EvalSplit of(std::size_t N, std::size_t B) {
        const std::size_t inputs = N > 0 ? N - 1 : 0;
        EvalSplit e;
        e.B = std::max<std::size_t>(1, std::min(B, inputs));
        e.E = inputs / e.B;
        e.tail = inputs - e.B * e.E;
        return e;
    }
};

}  // namespace charrnn
