// The vanilla RNN: forward pass with softmax cross-entropy loss, and its
// backward pass (backpropagation through time).
//
// Shapes (row-major): K vocabulary size, m hidden size,
//   U (m x K), W (m x m), V (K x m), b (m), c (K).
// For t = 0..n-1, with x_t and y_t character indices:
//   a_t = W h_{t-1} + U[:, x_t] + b      h_t = tanh(a_t)
//   o_t = V h_t + c                       p_t = softmax(o_t)
//   loss = sum_t -log p_t[y_t]
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "linalg.hpp"

namespace charrnn {

// Read-only view of the five parameter arrays.
template <typename T>
struct ParamsView {
    const T* U;
    const T* W;
    const T* V;
    const T* b;
    const T* c;
    std::size_t K;
    std::size_t m;
};

// Writable arrays with the parameters' layout: gradients, optimiser memory,
// or the parameters themselves during an update.
template <typename T>
struct MutableParams {
    T* U;
    T* W;
    T* V;
    T* b;
    T* c;

    ParamsView<T> view(std::size_t K, std::size_t m) const { return {U, W, V, b, c, K, m}; }
};

inline std::size_t n_params(std::size_t K, std::size_t m) { return m * K + m * m + K * m + m + K; }

// What the forward pass keeps for the backward pass.
template <typename T>
struct Activations {
    std::size_t n = 0;
    std::vector<T> h;  // (n + 1) x m; row 0 is h0, row t + 1 is h_t
    std::vector<T> p;  // n x K; row t is p_t

    void resize(std::size_t steps, std::size_t K, std::size_t m) {
        n = steps;
        h.resize((steps + 1) * m);
        p.resize(steps * K);
    }
    const T* h_last(std::size_t m) const { return h.data() + n * m; }
};

// One recurrence step: h = tanh(W h_prev + U[:, x] + b).
template <typename T>
inline void rnn_cell(const ParamsView<T>& P, const T* h_prev, std::size_t x, T* h) {
    const std::size_t m = P.m, K = P.K;
    for (std::size_t i = 0; i < m; ++i) {
        h[i] = std::tanh(P.b[i] + P.U[i * K + x] + dot(P.W + i * m, h_prev, m));
    }
}

// o = V h + c
template <typename T>
inline void output_logits(const ParamsView<T>& P, const T* h, T* o) {
    for (std::size_t k = 0; k < P.K; ++k) o[k] = P.c[k] + dot(P.V + k * P.m, h, P.m);
}

// Replaces logits o (length K) by softmax(o) and returns log(sum(exp(o - max))) + max,
// the log-partition function, so that -log p[y] = logZ - o[y] without log(0).
template <typename T>
inline T softmax_inplace(T* o, std::size_t K) {
    T mx = o[0];
    for (std::size_t k = 1; k < K; ++k) mx = std::max(mx, o[k]);
    T sum = T(0);
    for (std::size_t k = 0; k < K; ++k) {
        o[k] = std::exp(o[k] - mx);
        sum += o[k];
    }
    const T inv = T(1) / sum;
    for (std::size_t k = 0; k < K; ++k) o[k] *= inv;
    return std::log(sum) + mx;
}

// Forward pass over n steps starting from hidden state h0; returns the summed loss.
template <typename T, typename I>
T forward(const ParamsView<T>& P, const I* x, const I* y, std::size_t n, const T* h0,
          Activations<T>& act) {
    const std::size_t m = P.m, K = P.K;
    act.resize(n, K, m);
    std::copy(h0, h0 + m, act.h.begin());
    for (std::size_t t = 0; t < n; ++t) {
        rnn_cell(P, act.h.data() + t * m, static_cast<std::size_t>(x[t]), act.h.data() + (t + 1) * m);
    }
    T loss = T(0);
    for (std::size_t t = 0; t < n; ++t) {
        T* p = act.p.data() + t * K;
        output_logits(P, act.h.data() + (t + 1) * m, p);
        const T o_y = p[static_cast<std::size_t>(y[t])];
        loss += softmax_inplace(p, K) - o_y;
    }
    return loss;
}

// Loss of predicting data[1..N) from data[0..N-1) in one pass, carrying the
// hidden state h (updated in place) and keeping no activations. The sum is
// accumulated in double whatever T is.
template <typename T, typename I>
double sequence_loss(const ParamsView<T>& P, const I* data, std::size_t N, T* h) {
    std::vector<T> h_next(P.m), o(P.K);
    double loss = 0.0;
    for (std::size_t t = 0; t + 1 < N; ++t) {
        rnn_cell(P, h, static_cast<std::size_t>(data[t]), h_next.data());
        std::copy(h_next.begin(), h_next.end(), h);
        output_logits(P, h, o.data());
        const T o_y = o[static_cast<std::size_t>(data[t + 1])];
        loss += static_cast<double>(softmax_inplace(o.data(), P.K) - o_y);
    }
    return loss;
}

// Scratch space for the backward pass, reused across calls.
template <typename T>
struct BackwardScratch {
    std::vector<T> dh, dh_next, da;
    void resize(std::size_t m) {
        dh.resize(m);
        dh_next.resize(m);
        da.resize(m);
    }
};

// Backward pass: writes (overwrites) the gradients of the loss of the last
// forward() call with respect to U, W, V, b, c into g.
template <typename T, typename I>
void backward(const ParamsView<T>& P, const I* x, const I* y, const Activations<T>& act,
              MutableParams<T> g, BackwardScratch<T>& s) {
    const std::size_t m = P.m, K = P.K, n = act.n;
    std::fill(g.U, g.U + m * K, T(0));
    std::fill(g.W, g.W + m * m, T(0));
    std::fill(g.V, g.V + K * m, T(0));
    std::fill(g.b, g.b + m, T(0));
    std::fill(g.c, g.c + K, T(0));
    s.resize(m);
    std::fill(s.dh_next.begin(), s.dh_next.end(), T(0));
    T* dh = s.dh.data();
    T* da = s.da.data();
    T* dh_next = s.dh_next.data();
    for (std::size_t t = n; t-- > 0;) {
        const T* h = act.h.data() + (t + 1) * m;
        const T* h_prev = act.h.data() + t * m;
        const T* p = act.p.data() + t * K;
        const std::size_t yt = static_cast<std::size_t>(y[t]);
        // dL/do_t = p_t - onehot(y_t); flows into V, c and h_t.
        std::copy(dh_next, dh_next + m, dh);
        for (std::size_t k = 0; k < K; ++k) {
            const T dok = (k == yt) ? p[k] - T(1) : p[k];
            g.c[k] += dok;
            axpy(dok, h, g.V + k * m, m);   // dV += do_t h_t^T
            axpy(dok, P.V + k * m, dh, m);  // dh += V^T do_t
        }
        // through tanh: da = (1 - h^2) * dh
        for (std::size_t i = 0; i < m; ++i) da[i] = (T(1) - h[i] * h[i]) * dh[i];
        std::fill(dh_next, dh_next + m, T(0));
        const std::size_t xt = static_cast<std::size_t>(x[t]);
        for (std::size_t i = 0; i < m; ++i) {
            g.b[i] += da[i];
            g.U[i * K + xt] += da[i];
            axpy(da[i], h_prev, g.W + i * m, m);   // dW += da h_{t-1}^T
            axpy(da[i], P.W + i * m, dh_next, m);  // dh_{t-1} = W^T da
        }
    }
}

}  // namespace charrnn
