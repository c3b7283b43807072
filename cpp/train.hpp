// Training: one step (loss, BPTT, clip + AdaGrad) over B streams, and the
// walks through a text -- the classic single walk (B = 1) and B parallel
// walks over B contiguous segments of the text.
//
// With B > 1 the gradients of the B streams are SUMMED (not averaged) and
// then clipped and applied in one AdaGrad update, and the reported loss is
// the sum over all B * seq_len predictions. B = 1 is exactly the classic
// algorithm. Threads split the streams for the recurrences and the output
// rows for everything else (rnn.hpp), so results are bit-identical for every
// thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.hpp"
#include "parallel.hpp"
#include "rnn.hpp"
#include "walk.hpp"

namespace charrnn {

struct AdagradConfig {
    double eta = 0.1;
    double clip = 5.0;
    double eps = 1e-8;
};

// Everything a training step needs besides the parameters, allocated once.
// The phase functions are called by every worker of a team of `threads`
// (id = 0..threads-1) with barriers in between; with one thread they simply
// run in order.
template <typename T>
struct Trainer {
    std::size_t K, m, B, threads;
    const Kernels<T>& kn;
    Transposed<T> tr;
    Activations<T> act;
    WorkArray<T> grad;  // all five gradients, back to back (every step overwrites all of them)
    MutableParams<T> g;
    SpinBarrier barrier;

    Trainer(std::size_t K_, std::size_t m_, std::size_t B_ = 1, std::size_t threads_ = 1)
        : K(K_), m(m_), B(B_), threads(std::max<std::size_t>(1, threads_)), kn(kernels<T>()),
          grad(n_params(K_, m_)), barrier(threads) {
        tr.resize(K, m);
        T* base = grad.data();
        g.U = base;
        g.W = g.U + m * K;
        g.V = g.W + m * m;
        g.b = g.V + K * m;
        g.c = g.b + m;
    }

    // Sets the chunk: x, y are n*B time-major indices, h0 is B x m.
    template <typename I>
    void load(const I* x, const I* y, std::size_t n, const T* h0) {
        act.resize(B, n, K, m);
        for (std::size_t r = 0; r < n * B; ++r) {
            act.x[r] = safe_index(x[r], K);
            act.y[r] = safe_index(y[r], K);
        }
        std::copy(h0, h0 + B * m, act.h.begin());
    }

    // Forward pass and loss (worker id). Returns the loss, the same on every worker.
    double forward_phase(const ParamsView<T>& P, std::size_t id) {
        tr.refresh(kn, P, id, threads);
        barrier.wait();
        const Range s = split_range(B, id, threads);
        forward_recurrence(kn, P, tr, act, s.begin, s.end);
        barrier.wait();
        // Output layer and its backward are row-local: do both for blocks of
        // rows while the block is in cache (dO, dH are computed even if the
        // loss turns out not finite; the step is then simply not applied).
        const Range r = split_range(act.n * B, id, threads, 4);
        constexpr std::size_t block = 64;
        for (std::size_t r0 = r.begin; r0 < r.end; r0 += block) {
            const std::size_t r1 = std::min(r.end, r0 + block);
            output_layer(kn, P, tr, act, r0, r1);
            output_backward(kn, P, act, r0, r1);
        }
        barrier.wait();
        return act.loss();
    }

    // Backward pass into g (worker id), after forward_phase.
    void backward_phase(const ParamsView<T>& P, std::size_t id) {
        const Range s = split_range(B, id, threads);
        backward_recurrence(kn, P, act, s.begin, s.end);
        barrier.wait();
        parameter_gradients(kn, P, act, g, id, threads);
        barrier.wait();
    }

    // theta <- AdaGrad step with the gradients in g (worker id's share of every array).
    void adagrad_phase(MutableParams<T> theta, MutableParams<T> mem, const AdagradConfig& cfg, std::size_t id) {
        const T eta = static_cast<T>(cfg.eta), clip = static_cast<T>(cfg.clip), eps = static_cast<T>(cfg.eps);
        T* th[5] = {theta.U, theta.W, theta.V, theta.b, theta.c};
        T* me[5] = {mem.U, mem.W, mem.V, mem.b, mem.c};
        const T* gr[5] = {g.U, g.W, g.V, g.b, g.c};
        const std::size_t n[5] = {m * K, m * m, K * m, m, K};
        for (int a = 0; a < 5; ++a) {
            const Range r = split_range(n[a], id, threads, 64);
            if (r.size()) kn.clip_adagrad(th[a] + r.begin, me[a] + r.begin, gr[a] + r.begin, r.size(), eta, clip, eps);
        }
        barrier.wait();
    }

    // Loss and raw (unclipped) gradients into g; act keeps h_last.
    template <typename I>
    double loss_and_grads(const ParamsView<T>& P, const I* x, const I* y, std::size_t n, const T* h0) {
        load(x, y, n, h0);
        double loss = 0.0;
        run_team(threads, [&](std::size_t id) {
            const double l = forward_phase(P, id);
            backward_phase(P, id);
            if (id == 0) loss = l;
        });
        return loss;
    }

    // One full step on worker id; h (B x m) is replaced by the last hidden
    // states by worker 0. If the loss is not finite the parameters are left
    // untouched (on every worker).
    double step_phase(MutableParams<T> theta, MutableParams<T> mem, T* h, const AdagradConfig& cfg, std::size_t id) {
        const ParamsView<T> P = theta.view(K, m);
        const double loss = forward_phase(P, id);
        if (!std::isfinite(loss)) return loss;
        backward_phase(P, id);
        adagrad_phase(theta, mem, cfg, id);
        if (id == 0) std::copy(act.h_last(), act.h_last() + B * m, h);
        return loss;
    }

    // One full step with the whole team.
    template <typename I>
    double step(MutableParams<T> theta, MutableParams<T> mem, const I* x, const I* y, std::size_t n, T* h,
                const AdagradConfig& cfg) {
        load(x, y, n, h);
        double loss = 0.0;
        run_team(threads, [&](std::size_t id) {
            const double l = step_phase(theta, mem, h, cfg, id);
            if (id == 0) loss = l;
        });
        return loss;
    }
};

struct WalkState {
    std::vector<std::size_t> pos;    // per stream: offset in its segment of the next chunk's first input
    std::vector<std::size_t> wraps;  // per stream: times it went back to the start of its segment
    std::size_t steps_done = 0;      // steps completed in this call
    bool diverged = false;           // stopped on a non-finite loss (parameters untouched by it)
};

// B walks through data[0..N): stream s owns the segment [s*L, (s+1)*L) with
// L = N / B (the last N - B*L characters are not used when B > 1). Each step
// takes inputs seg[pos..pos+n) and targets seg[pos+1..pos+n+1) from every
// stream; when a full chunk no longer fits in a stream's segment, that stream
// returns to offset 0 with a zero hidden state (a new epoch). With B = 1 this
// is the classic walk. h is B x m, pos holds B offsets.
template <typename T, typename I>
WalkState train_walk(MutableParams<T> theta, MutableParams<T> mem, const I* data, std::size_t N, T* h,
                     const std::size_t* pos, std::size_t B, std::size_t n_steps, std::size_t seq_len,
                     const AdagradConfig& cfg, T* losses, std::size_t K, std::size_t m, std::size_t threads) {
    Trainer<T> trainer(K, m, B, threads);
    const std::size_t L = N / B;
    WalkState w;
    w.pos.assign(pos, pos + B);
    w.wraps.assign(B, 0);
    trainer.act.resize(B, seq_len, K, m);
    std::vector<ChunkPlan> plan(B);
    run_team(trainer.threads, [&](std::size_t id) {
        for (std::size_t step = 0; step < n_steps; ++step) {
            if (id == 0) {
                // Bookkeeping on one worker: where each stream's chunk starts
                // and its initial state (zeros after a wrap). h, pos and wraps
                // change only once the step has been applied.
                for (std::size_t s = 0; s < B; ++s) {
                    plan[s] = ChunkPlan::at(w.pos[s], seq_len, L);
                    copy_chunk(data + s * L + plan[s].start, seq_len, K, trainer.act.x.data() + s,
                               trainer.act.y.data() + s, B);
                    T* h0 = trainer.act.h.data() + s * m;
                    if (plan[s].wrap) {
                        std::fill(h0, h0 + m, T(0));
                    } else {
                        std::copy(h + s * m, h + (s + 1) * m, h0);
                    }
                }
            }
            trainer.barrier.wait();
            const double loss = trainer.step_phase(theta, mem, h, cfg, id);
            if (!std::isfinite(loss)) {
                if (id == 0) w.diverged = true;
                break;
            }
            if (id == 0) {
                losses[step] = static_cast<T>(loss);
                for (std::size_t s = 0; s < B; ++s) plan[s].commit(seq_len, w.pos[s], w.wraps[s]);
                ++w.steps_done;
            }
        }
    });
    return w;
}

// The classic single walk (B = 1): see train_walk.
template <typename T, typename I>
WalkState train_steps(MutableParams<T> theta, MutableParams<T> mem, const I* data, std::size_t N, T* h,
                      std::size_t pos, std::size_t n_steps, std::size_t seq_len, const AdagradConfig& cfg,
                      T* losses, std::size_t K, std::size_t m) {
    return train_walk(theta, mem, data, N, h, &pos, 1, n_steps, seq_len, cfg, losses, K, m, 1);
}

}  // namespace charrnn
