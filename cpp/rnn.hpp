// The vanilla RNN: forward pass with softmax cross-entropy loss, and its
// backward pass (backpropagation through time), for B independent streams of
// n steps at once (B = 1 is the classic single sequence).
//
// Shapes (row-major): K vocabulary size, m hidden size,
//   U (m x K), W (m x m), V (K x m), b (m), c (K).
// For each stream and t = 0..n-1, with x_t and y_t character indices:
//   a_t = W h_{t-1} + U[:, x_t] + b      h_t = tanh(a_t)
//   o_t = V h_t + c                       p_t = softmax(o_t)
//   loss = sum over streams and t of -log p_t[y_t]
//
// Only the two recurrences (W h forward, W^T da backward) are done step by
// step, as B-row matrix products; everything else is one matrix product over
// all n*B rows. Rows are time-major: row t*B + s belongs to stream s at step t.
// Work is split into phases; each phase takes (id, count) and handles a fixed
// slice -- of the streams for the recurrences, of the output rows for the
// rest -- so the numbers do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.hpp"
#include "linalg.hpp"
#include "walk.hpp"

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

// W^T (m x m) and V^T (m x K): the layouts in which the forward products
// h W^T and h V^T run along unit-stride rows.
template <typename T>
struct Transposed {
    WorkArray<T> WT, VT;

    void resize(std::size_t K, std::size_t m) {
        WT.resize(m * m);
        VT.resize(m * K);
    }
    // Rows [0, m) of both transposes split between workers.
    void refresh(const Kernels<T>& kn, const ParamsView<T>& P, std::size_t id, std::size_t count) {
        const Range r = split_range(P.m, id, count, 8);
        if (r.size()) kn.transpose(P.W, P.m, P.m, WT.data(), r.begin, r.end);
        const Range rv = split_range(P.K, id, count, 8);
        if (rv.size()) kn.transpose(P.V, P.K, P.m, VT.data(), rv.begin, rv.end);
    }
};

// Everything the forward pass keeps for the backward pass, for B streams of n steps.
template <typename T>
struct Activations {
    std::size_t B = 0, n = 0, K = 0, m = 0;
    WorkArray<std::int32_t> x, y;  // n*B, time-major
    WorkArray<T> h;                // (n+1)*B x m; block 0 is h0, block t+1 is h_t
    WorkArray<T> p;                // n*B x K; p_t, then dL/do_t = p_t - onehot(y_t)
    WorkArray<T> dh;               // n*B x m; dL/dh_t from the output, then dL/da_t
    WorkArray<T> dh_next;          // B x m; dL/dh_{t-1} carried back through W
    WorkArray<T> log_z, row_loss;  // n*B each

    void resize(std::size_t B_, std::size_t steps, std::size_t K_, std::size_t m_) {
        B = B_;
        n = steps;
        K = K_;
        m = m_;
        x.resize(n * B);
        y.resize(n * B);
        h.resize((n + 1) * B * m);
        p.resize(n * B * K);
        dh.resize(n * B * m);
        dh_next.resize(B * m);
        log_z.resize(n * B);
        row_loss.resize(n * B);
    }
    T* h_block(std::size_t t) { return h.data() + t * B * m; }
    const T* h_block(std::size_t t) const { return h.data() + t * B * m; }
    const T* h_last() const { return h_block(n); }

    // Summed loss of all n*B rows, added in row order.
    double loss() const {
        double s = 0.0;
        for (std::size_t r = 0; r < n * B; ++r) s += static_cast<double>(row_loss[r]);
        return s;
    }
};

// ---------------------------------------------------------------- forward

// h_t = tanh(W h_{t-1} + U[:, x_t] + b) for t = 1..n, for streams [s0, s1).
template <typename T>
void forward_recurrence(const Kernels<T>& kn, const ParamsView<T>& P, const Transposed<T>& tr,
                        Activations<T>& act, std::size_t s0, std::size_t s1) {
    const std::size_t m = P.m, K = P.K, B = act.B;
    if (s0 >= s1) return;
    for (std::size_t t = 0; t < act.n; ++t) {
        const T* h_prev = act.h_block(t) + s0 * m;
        T* a = act.h_block(t + 1) + s0 * m;
        for (std::size_t s = s0; s < s1; ++s) {
            const std::size_t xt = static_cast<std::size_t>(act.x[t * B + s]);
            T* as = a + (s - s0) * m;
            for (std::size_t i = 0; i < m; ++i) as[i] = P.b[i] + P.U[i * K + xt];
        }
        // a += h_{t-1} W^T
        kn.gemm({s1 - s0, m, m, h_prev, m, 1, tr.WT.data(), m, a, m, true});
        kn.tanh_inplace(a, (s1 - s0) * m);
    }
}

// o_t = V h_t + c, p_t = softmax(o_t) and the row losses, for rows [r0, r1) of n*B.
template <typename T>
void output_layer(const Kernels<T>& kn, const ParamsView<T>& P, const Transposed<T>& tr, Activations<T>& act,
                  std::size_t r0, std::size_t r1) {
    const std::size_t m = P.m, K = P.K;
    if (r0 >= r1) return;
    T* o = act.p.data() + r0 * K;
    for (std::size_t r = r0; r < r1; ++r) std::copy(P.c, P.c + K, act.p.data() + r * K);
    // O += H V^T over all rows at once
    kn.gemm({r1 - r0, K, m, act.h_block(1) + r0 * m, m, 1, tr.VT.data(), K, o, K, true});
    // row_loss first holds o_t[y_t], then -log p_t[y_t] = log_z - o_t[y_t]
    for (std::size_t r = r0; r < r1; ++r) act.row_loss[r] = act.p[r * K + static_cast<std::size_t>(act.y[r])];
    kn.softmax_rows(o, r1 - r0, K, K, T(1), act.log_z.data() + r0);
    for (std::size_t r = r0; r < r1; ++r) act.row_loss[r] = act.log_z[r] - act.row_loss[r];
}

// ---------------------------------------------------------------- backward

// dL/do_t = p_t - onehot(y_t) (in place in act.p) and dL/dh_t from the output,
// dH = dO V, for rows [r0, r1).
template <typename T>
void output_backward(const Kernels<T>& kn, const ParamsView<T>& P, Activations<T>& act, std::size_t r0,
                     std::size_t r1) {
    const std::size_t m = P.m, K = P.K;
    if (r0 >= r1) return;
    for (std::size_t r = r0; r < r1; ++r) act.p[r * K + static_cast<std::size_t>(act.y[r])] -= T(1);
    kn.gemm({r1 - r0, m, K, act.p.data() + r0 * K, K, 1, P.V, m, act.dh.data() + r0 * m, m, false});
}

// Backward through the recurrence for streams [s0, s1), t = n-1..0:
//   dh = dh_out_t + W^T da_{t+1};  da_t = (1 - h_t^2) * dh   (stored over dh)
template <typename T>
void backward_recurrence(const Kernels<T>& kn, const ParamsView<T>& P, Activations<T>& act, std::size_t s0,
                         std::size_t s1) {
    const std::size_t m = P.m, B = act.B;
    if (s0 >= s1) return;
    T* dh_next = act.dh_next.data() + s0 * m;
    for (std::size_t t = act.n; t-- > 0;) {
        T* da = act.dh.data() + (t * B + s0) * m;
        const T* h = act.h_block(t + 1) + s0 * m;
        kn.tanh_backward(da, h, t + 1 < act.n ? dh_next : nullptr, (s1 - s0) * m);
        // dh_{t-1} = da_t W  (row-vector form of W^T da_t)
        if (t > 0) kn.gemm({s1 - s0, m, m, da, m, 1, P.W, m, dh_next, m, false});
    }
}

// Parameter gradients from the stored dO and dA, summed over all n*B rows;
// rows of each gradient split between workers:
//   dV = dO^T H,  dc = sum dO,  dW = dA^T H_prev,  db = sum dA,  dU[:, x] += da
template <typename T>
void parameter_gradients(const Kernels<T>& kn, const ParamsView<T>& P, const Activations<T>& act,
                         MutableParams<T> g, std::size_t id, std::size_t count) {
    const std::size_t m = P.m, K = P.K, rows = act.n * act.B;
    const T* dO = act.p.data();
    const T* dA = act.dh.data();
    const Range rk = split_range(K, id, count, 4);
    if (rk.size()) {
        kn.gemm({rk.size(), m, rows, dO + rk.begin, 1, K, act.h_block(1), m, g.V + rk.begin * m, m, false});
        column_sums(dO, rows, K, rk.begin, rk.end, g.c);
    }
    const Range ri = split_range(m, id, count, 4);
    if (ri.size()) {
        kn.gemm({ri.size(), m, rows, dA + ri.begin, 1, m, act.h_block(0), m, g.W + ri.begin * m, m, false});
        column_sums(dA, rows, m, ri.begin, ri.end, g.b);
        std::fill(g.U + ri.begin * K, g.U + ri.end * K, T(0));
        for (std::size_t r = 0; r < rows; ++r) {
            const std::size_t xr = static_cast<std::size_t>(act.x[r]);
            const T* da = dA + r * m;
            for (std::size_t i = ri.begin; i < ri.end; ++i) g.U[i * K + xr] += da[i];
        }
    }
}

// ---------------------------------------------------------------- forward only

// Loss of predicting data[1..N) from data[0..N-1) in one pass, carrying the
// hidden state h (updated in place), in chunks (for_each_loss_chunk). The sum is
// accumulated in double whatever T is.
template <typename T, typename I>
double sequence_loss(const ParamsView<T>& P, const I* data, std::size_t N, T* h) {
    const Kernels<T>& kn = kernels<T>();
    Transposed<T> tr;
    tr.resize(P.K, P.m);
    tr.refresh(kn, P, 0, 1);
    Activations<T> act;
    double loss = 0.0;
    for_each_loss_chunk(N, [&](std::size_t t0, std::size_t n) {
        act.resize(1, n, P.K, P.m);
        copy_chunk(data + t0, n, P.K, act.x.data(), act.y.data());
        std::copy(h, h + P.m, act.h.begin());
        forward_recurrence(kn, P, tr, act, 0, 1);
        output_layer(kn, P, tr, act, 0, n);
        loss += act.loss();
        std::copy(act.h_last(), act.h_last() + P.m, h);
    });
    return loss;
}

}  // namespace charrnn
