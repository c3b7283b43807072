// Training: one update (forward, BPTT, clipping and the optimiser) of the
// engine, and the walk of many updates through a text by B streams
// (walk.hpp). The gradients of the B streams are SUMMED (not averaged) into
// one update, and the reported loss of an update is the sum over all
// B * seq_len predictions; B = 1 is exactly the classic algorithm.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine.hpp"
#include "optim.hpp"
#include "parallel.hpp"
#include "walk.hpp"

namespace charrnn {

// Gradients kept for the global norm, in blocks of this many entries: the
// norm's partial sums are per block and added in block order, so it does
// not depend on how blocks are shared between threads.
constexpr std::size_t kNormBlock = 4096;

// What one update did: its loss, and whether it was applied (the loss and
// every gradient entry finite; if not, nothing was changed).
struct StepResult {
    double loss = 0.0;
    bool applied = false;
};

// The engine plus what one update needs besides it: the gradient arrays, the
// optimiser's slots and the blocks of the global norm. (The Python Trainer
// drives whole runs; a Learner is the C++ object that makes one update.)
template <typename T>
class Learner {
public:
    Engine<T> eng;

    // B: the streams it will train; threads: the most it may use (team_size);
    // params, s1, s2: flat lists in layout order (s2 only for adam); prec:
    // the precision of the engine's matrix products.
    Learner(const NetLayout& lay, std::size_t B, std::size_t threads, const std::vector<T*>& params,
            const std::vector<T*>& s1, const std::vector<T*>& s2, const OptConfig& cfg,
            Precision prec = Precision::full)
        : eng(lay, team_size(lay, B, threads), prec), P(lay, params), cfg_(cfg) {
        const auto specs = lay.arrays();
        std::size_t total = 0;
        for (const auto& s : specs) total += s.size();
        grad_.resize(total);
        for (std::size_t i = 0, off = 0; i < specs.size(); off += specs[i].size(), ++i) {
            g_.push_back(grad_.data() + off);
            slots_.push_back({params[i], grad_.data() + off, s1[i], s2.empty() ? nullptr : s2[i], specs[i].size()});
            for (std::size_t b = 0; b < specs[i].size(); b += kNormBlock)
                blocks_.push_back({i, b, std::min(specs[i].size(), b + kNormBlock)});
        }
        partial_.resize(blocks_.size());
    }

    // One update on the chunk loaded in the engine (inputs, targets, initial
    // states), as worker id; t is the number of updates done before it. The
    // result is the same on every worker. A finite loss can still come with an
    // infinite or NaN gradient (weights large enough for a product to
    // overflow): that update is not applied either.
    StepResult step(std::size_t id, std::uint64_t t) {
        eng.prepare(P, id);
        eng.forward(id);
        const double loss = eng.output(P, id, true);
        if (!std::isfinite(loss)) return {loss, false};
        eng.backward(g_, id);
        return {loss, update(id, t + 1)};
    }

    // The parameters as the engine reads them (benchmarks/profile_phases.cpp
    // times the engine's phases one by one with them).
    const NetParams<T>& params() const { return P; }

private:
    struct Block {
        std::size_t slot, begin, end;
    };
    NetParams<T> P;
    OptConfig cfg_;
    WorkArray<T> grad_;
    std::vector<T*> g_;
    std::vector<OptSlot<T>> slots_;
    std::vector<Block> blocks_;
    std::vector<double> partial_;

    // Clipping and the optimiser step, unless the gradient (or, for
    // global_norm clipping, its norm) is not finite: then nothing is changed.
    bool update(std::size_t id, std::uint64_t t) {
        const auto& kn = eng.kn;
        const std::size_t threads = eng.threads;
        const bool by_norm = cfg_.clip_mode == ClipMode::global_norm;
        const Range r = split_range(blocks_.size(), id, threads);
        for (std::size_t b = r.begin; b < r.end; ++b) {
            const Block& bl = blocks_[b];
            const T* g = slots_[bl.slot].grad + bl.begin;
            partial_[b] = by_norm ? kn.sum_squares(g, bl.end - bl.begin) : kn.finite_probe(g, bl.end - bl.begin);
        }
        eng.barrier.wait();
        double sum = 0.0;
        for (double p : partial_) sum += p;
        if (!std::isfinite(sum)) return false;
        const OptCoeffs<T> k = opt_coeffs<T>(cfg_, t, by_norm ? std::sqrt(sum) : 0.0);
        for (const auto& sl : slots_) {
            const Range r = split_range(sl.n, id, threads, 64);
            if (r.size()) kn.optimizer_range(cfg_.clip_mode, cfg_.opt, sl, r.begin, r.end, k);
        }
        eng.barrier.wait();
        return true;
    }
};

struct WalkResult {
    std::vector<std::size_t> pos;    // per stream: offset in its segment of the next chunk's first input
    std::vector<std::size_t> wraps;  // per stream: times it went back to the start of its segment
    std::size_t steps_done = 0;
    bool diverged = false;           // stopped on a non-finite loss or gradient (that update not applied)
};

// n_steps updates walking data[0..N) with B streams from offsets pos (B),
// states (B x state_size) updated in place, t the updates done so far
// (updated); losses[i] = summed loss of update i.
template <typename T, typename I>
WalkResult train_walk(Learner<T>& tr, const Dropout& drop, const I* data, const Segments& seg, T* states,
                      const std::size_t* pos, std::size_t n_steps, std::size_t seq_len, std::uint64_t& t,
                      T* losses) {
    Engine<T>& eng = tr.eng;
    const NetLayout& lay = eng.lay;
    const std::size_t B = seg.B, L = seg.length(), SS = lay.state_size();
    WalkResult w;
    w.pos.assign(pos, pos + B);
    w.wraps.assign(B, 0);
    eng.dropout = drop;
    eng.resize(B, seq_len);
    std::vector<ChunkPlan> plan(B);
    run_team(eng.threads, [&](std::size_t id) {
        for (std::size_t step = 0; step < n_steps; ++step) {
            if (id == 0) {
                // Where each stream's chunk starts, and its state (zeros after
                // a wrap). Positions and states change only once the update is applied.
                eng.dropout.update = t;
                for (std::size_t s = 0; s < B; ++s) {
                    plan[s] = ChunkPlan::at(w.pos[s], seq_len, L);
                    copy_chunk(data + s * L + plan[s].start, seq_len, lay.K, eng.inputs() + s, eng.targets() + s, B);
                    if (plan[s].wrap) {
                        eng.zero_state(s);
                    } else {
                        eng.set_state(s, states + s * SS);
                    }
                }
            }
            eng.barrier.wait();
            const StepResult r = tr.step(id, t);
            if (!r.applied) {
                if (id == 0) w.diverged = true;
                break;
            }
            if (id == 0) {
                losses[step] = static_cast<T>(r.loss);
                for (std::size_t s = 0; s < B; ++s) {
                    plan[s].commit(seq_len, w.pos[s], w.wraps[s]);
                    eng.get_state(s, states + s * SS);
                }
                ++t;
                ++w.steps_done;
            }
        }
    });
    return w;
}

// Loads an explicit chunk: X, Y (B x n, stream-major), states (B x state_size).
template <typename T, typename I, typename J>
void load_engine_chunk(Engine<T>& eng, const I* X, const J* Y, std::size_t B, std::size_t n, const T* states) {
    const NetLayout& lay = eng.lay;
    eng.resize(B, n);
    for (std::size_t s = 0; s < B; ++s) {
        for (std::size_t t = 0; t < n; ++t) {
            eng.inputs()[t * B + s] = safe_index(X[s * n + t], lay.K);
            eng.targets()[t * B + s] = safe_index(Y[s * n + t], lay.K);
        }
        eng.set_state(s, states + s * lay.state_size());
    }
}

// Loss and raw gradients (into g) of an explicit chunk; states replaced by the final states.
template <typename T, typename I, typename J>
double chunk_loss_and_grads(const NetLayout& lay, std::size_t threads, const std::vector<T*>& params,
                            const Dropout& drop, const I* X, const J* Y, std::size_t B, std::size_t n, T* states,
                            const std::vector<T*>& g, Precision prec = Precision::full) {
    Engine<T> eng(lay, team_size(lay, B, threads), prec);
    eng.dropout = drop;
    load_engine_chunk(eng, X, Y, B, n, states);
    const NetParams<T> P(lay, params);
    double loss = 0.0;
    run_team(eng.threads, [&](std::size_t id) {
        eng.prepare(P, id);
        eng.forward(id);
        const double l = eng.output(P, id, true);
        eng.backward(g, id);
        if (id == 0) loss = l;
    });
    for (std::size_t s = 0; s < B; ++s) eng.get_state(s, states + s * lay.state_size());
    return loss;
}

// One update on an explicit chunk; states replaced by the final states and t
// incremented when it is applied (else nothing changes).
template <typename T, typename I, typename J>
StepResult train_chunk(Learner<T>& tr, const Dropout& drop, const I* X, const J* Y, std::size_t B, std::size_t n,
                   T* states, std::uint64_t& t) {
    Engine<T>& eng = tr.eng;
    eng.dropout = drop;
    eng.dropout.update = t;
    load_engine_chunk(eng, X, Y, B, n, states);
    StepResult result;
    run_team(eng.threads, [&](std::size_t id) {
        const StepResult r = tr.step(id, t);
        if (id == 0) result = r;
    });
    if (result.applied) {
        for (std::size_t s = 0; s < B; ++s) eng.get_state(s, states + s * eng.lay.state_size());
        ++t;
    }
    return result;
}

}  // namespace charrnn
