// Training: one step (loss, BPTT, clip + AdaGrad) and a loop of steps that
// walks a text in chunks exactly as the classic training loop does.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "adagrad.hpp"
#include "rnn.hpp"

namespace charrnn {

struct AdagradConfig {
    double eta = 0.1;
    double clip = 5.0;
    double eps = 1e-8;
};

// Everything a training step needs besides the parameters, allocated once.
template <typename T>
struct Trainer {
    std::size_t K, m;
    Activations<T> act;
    BackwardScratch<T> scratch;
    std::vector<T> grad;  // all five gradients, back to back
    MutableParams<T> g;

    Trainer(std::size_t K_, std::size_t m_) : K(K_), m(m_), grad(n_params(K_, m_)) {
        T* base = grad.data();
        g.U = base;
        g.W = g.U + m * K;
        g.V = g.W + m * m;
        g.b = g.V + K * m;
        g.c = g.b + m;
    }

    // Loss and raw (unclipped) gradients into g; act keeps h_last.
    template <typename I>
    T loss_and_grads(const ParamsView<T>& P, const I* x, const I* y, std::size_t n, const T* h0) {
        const T loss = forward(P, x, y, n, h0, act);
        backward(P, x, y, act, g, scratch);
        return loss;
    }

    // theta <- AdaGrad step with the gradients currently in g.
    void apply_adagrad(MutableParams<T> theta, MutableParams<T> mem, const AdagradConfig& cfg) const {
        const T eta = static_cast<T>(cfg.eta), clip = static_cast<T>(cfg.clip), eps = static_cast<T>(cfg.eps);
        clip_adagrad(theta.U, mem.U, g.U, m * K, eta, clip, eps);
        clip_adagrad(theta.W, mem.W, g.W, m * m, eta, clip, eps);
        clip_adagrad(theta.V, mem.V, g.V, K * m, eta, clip, eps);
        clip_adagrad(theta.b, mem.b, g.b, m, eta, clip, eps);
        clip_adagrad(theta.c, mem.c, g.c, K, eta, clip, eps);
    }

    // One full step; h (length m) is replaced by the last hidden state.
    // Returns the loss; if it is not finite the parameters are left untouched.
    template <typename I>
    T step(MutableParams<T> theta, MutableParams<T> mem, const I* x, const I* y, std::size_t n, T* h,
           const AdagradConfig& cfg) {
        const ParamsView<T> P = theta.view(K, m);
        const T loss = loss_and_grads(P, x, y, n, h);
        if (!std::isfinite(loss)) return loss;
        apply_adagrad(theta, mem, cfg);
        const T* hl = act.h_last(m);
        std::copy(hl, hl + m, h);
        return loss;
    }
};

struct WalkState {
    std::size_t pos = 0;         // index of the first input character of the next chunk
    std::size_t steps_done = 0;  // steps completed in this call
    std::size_t wraps = 0;       // times the walk went back to the start of the text
    bool diverged = false;       // stopped on a non-finite loss (parameters untouched by it)
};

// Walks data[0..N) in chunks of seq_len: inputs data[pos..pos+T), targets
// data[pos+1..pos+T+1). When a full chunk no longer fits, the walk returns to
// position 0 and the hidden state is reset to zeros (a new epoch).
template <typename T, typename I>
WalkState train_steps(MutableParams<T> theta, MutableParams<T> mem, const I* data, std::size_t N, T* h,
                      std::size_t pos, std::size_t n_steps, std::size_t seq_len, const AdagradConfig& cfg,
                      T* losses, std::size_t K, std::size_t m) {
    Trainer<T> trainer(K, m);
    WalkState w;
    w.pos = pos;
    for (std::size_t s = 0; s < n_steps; ++s) {
        if (w.pos + seq_len + 1 > N) {
            w.pos = 0;
            std::fill(h, h + m, T(0));
            ++w.wraps;
        }
        const T loss = trainer.step(theta, mem, data + w.pos, data + w.pos + 1, seq_len, h, cfg);
        if (!std::isfinite(loss)) {
            w.diverged = true;
            break;
        }
        losses[s] = loss;
        w.pos += seq_len;
        ++w.steps_done;
    }
    return w;
}

}  // namespace charrnn
