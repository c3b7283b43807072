// A stack of L recurrent layers (rnn, lstm or gru cells; cells.hpp) with a
// softmax output layer, forward and backward over a chunk of n steps.
//
//   layer 0 input:   the one-hot character x_t, so Wx x_t is column x_t of Wx
//   layer l>0 input: h_t of layer l-1
//   output:          o_t = V h_t^{top} + c,  p_t = softmax(o_t)
//   loss = sum_t -log p_t[y_t]
//
// Parameters per layer l (G = gate_count(cell), in_0 = K, in_l = m):
//   Wx (G*m x in_l), Wh (G*m x m), b (G*m), and for gru bh (G*m);
// then V (K x m) and c (K). They are addressed through a flat list of
// pointers in exactly that order (NetLayout::arrays()).
// Hidden state: L rows of S*m (S = 2 for lstm: h then c; otherwise 1).
//
// Matrix-matrix work wherever the dependencies allow: the input projection
// of layer l over all n steps once layer l-1 is done, the output layer, the
// gradient passed down to layer l-1 and all weight gradients are single
// matrix products over the chunk; only the recurrences Wh h_{t-1} (forward)
// and dA_t Wh (backward) are sequential 1-row products.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cells.hpp"
#include "kernels.hpp"
#include "linalg.hpp"
#include "walk.hpp"

namespace charrnn {

// Names and shapes of the parameter arrays, in the flat order.
struct ArraySpec {
    std::string name;
    std::size_t rows, cols;  // cols == 0: a vector of `rows`
    std::size_t size() const { return cols ? rows * cols : rows; }
};

struct NetLayout {
    Cell cell;
    std::size_t K, m, L;

    std::size_t G() const { return gate_count(cell); }
    std::size_t S() const { return state_count(cell); }
    std::size_t per_layer() const { return cell == Cell::gru ? 4 : 3; }
    std::size_t state_size() const { return L * S() * m; }

    std::vector<ArraySpec> arrays() const {
        std::vector<ArraySpec> out;
        const std::size_t Gm = G() * m;
        for (std::size_t l = 0; l < L; ++l) {
            const std::string p = "l" + std::to_string(l) + ".";
            out.push_back({p + "Wx", Gm, l == 0 ? K : m});
            out.push_back({p + "Wh", Gm, m});
            out.push_back({p + "b", Gm, 0});
            if (cell == Cell::gru) out.push_back({p + "bh", Gm, 0});
        }
        out.push_back({"V", K, m});
        out.push_back({"c", K, 0});
        return out;
    }
};

// Read-only view of one layer / the whole network, from the flat pointer list.
template <typename T>
struct LayerView {
    const T *Wx, *Wh, *b, *bh;  // bh is null except for gru
};

template <typename T>
struct NetView {
    NetLayout lay;
    std::vector<LayerView<T>> layers;
    const T* V;
    const T* c;

    NetView(const NetLayout& l, const std::vector<T*>& ptrs) : lay(l) {
        const std::size_t A = l.per_layer();
        for (std::size_t i = 0; i < l.L; ++i) {
            T* const* p = ptrs.data() + i * A;
            layers.push_back({p[0], p[1], p[2], l.cell == Cell::gru ? p[3] : nullptr});
        }
        V = ptrs[l.L * A];
        c = ptrs[l.L * A + 1];
    }
};

// Per-layer activations of a chunk.
template <typename T>
struct LayerActs {
    std::vector<T> WxT, WhT;  // in x Gm and m x Gm: the forward products run along rows
    std::vector<T> A;         // n x Gm: Wx x_t + b, then the gate values
    std::vector<T> Hn;        // gru: n x m, Wh_n h_{t-1} + bh_n
    std::vector<T> H;         // (n+1) x m: row 0 is the initial state, row t+1 is h_t
    std::vector<T> C, TC;     // lstm: (n+1) x m cell states, n x m tanh(c_t)
    std::vector<T> dA, dAh;   // n x Gm: input-side / recurrent-side pre-activation gradients (gru only differs)
    std::vector<T> dH;        // n x m: dL/dh_t from the layer above (or the output)
};

template <typename T>
struct Network {
    NetLayout lay;
    const Kernels<T>& kn;
    std::size_t n = 0;
    std::vector<LayerActs<T>> acts;
    std::vector<T> VT;             // m x K
    std::vector<T> P;              // n x K: p_t, then dL/do_t
    std::vector<T> log_z, row_loss;
    std::vector<std::int32_t> x, y;
    std::vector<T> ah, dh, dh_next, dc;  // per-step scratch

    explicit Network(const NetLayout& l) : lay(l), kn(kernels<T>()), acts(l.L) {
        const std::size_t Gm = l.G() * l.m;
        for (std::size_t i = 0; i < l.L; ++i) {
            acts[i].WxT.resize(i == 0 ? 0 : l.m * Gm);
            acts[i].WhT.resize(l.m * Gm);
        }
        VT.resize(l.m * l.K);
        ah.resize(Gm);
        dh.resize(l.m);
        dh_next.resize(l.m);
        dc.resize(l.m);
    }

    // Transposed weights for the forward products; call after every parameter change.
    void prepare(const NetView<T>& P_) {
        const std::size_t m = lay.m, Gm = lay.G() * m;
        for (std::size_t l = 0; l < lay.L; ++l) {
            if (l > 0) kn.transpose(P_.layers[l].Wx, Gm, m, acts[l].WxT.data(), 0, Gm);
            kn.transpose(P_.layers[l].Wh, Gm, m, acts[l].WhT.data(), 0, Gm);
        }
        kn.transpose(P_.V, lay.K, m, VT.data(), 0, lay.K);
    }

    void resize(std::size_t steps) {
        n = steps;
        const std::size_t m = lay.m, Gm = lay.G() * m;
        for (auto& a : acts) {
            a.A.resize(n * Gm);
            a.H.resize((n + 1) * m);
            a.dA.resize(n * Gm);
            a.dH.resize(n * m);
            if (lay.cell == Cell::lstm) {
                a.C.resize((n + 1) * m);
                a.TC.resize(n * m);
            }
            if (lay.cell == Cell::gru) {
                a.Hn.resize(n * m);
                a.dAh.resize(n * Gm);
            }
        }
        P.resize(n * lay.K);
        log_z.resize(n);
        row_loss.resize(n);
        x.resize(n);
        y.resize(n);
    }

    // ------------------------------------------------------------ forward

    // All layers over the n steps of x, from the initial state `state` (L x S*m).
    void forward_hidden(const NetView<T>& Pv, const T* state) {
        const std::size_t m = lay.m, K = lay.K, Gm = lay.G() * m, S = lay.S();
        for (std::size_t l = 0; l < lay.L; ++l) {
            LayerActs<T>& a = acts[l];
            const LayerView<T>& W = Pv.layers[l];
            const T* s0 = state + l * S * m;
            std::copy(s0, s0 + m, a.H.begin());
            if (lay.cell == Cell::lstm) std::copy(s0 + m, s0 + 2 * m, a.C.begin());
            // Input side for all steps: A = X Wx^T + b
            T* A = a.A.data();
            for (std::size_t t = 0; t < n; ++t) std::copy(W.b, W.b + Gm, A + t * Gm);
            if (l == 0) {
                for (std::size_t t = 0; t < n; ++t) {
                    const std::size_t xt = static_cast<std::size_t>(x[t]);
                    for (std::size_t j = 0; j < Gm; ++j) A[t * Gm + j] += W.Wx[j * K + xt];
                }
            } else {
                kn.gemm({n, Gm, m, acts[l - 1].H.data() + m, m, 1, a.WxT.data(), Gm, A, Gm, true});
            }
            // The recurrence
            for (std::size_t t = 0; t < n; ++t) {
                const T* hp = a.H.data() + t * m;
                T* h = a.H.data() + (t + 1) * m;
                T* z = A + t * Gm;
                switch (lay.cell) {
                    case Cell::rnn:
                        kn.gemm({1, Gm, m, hp, m, 1, a.WhT.data(), Gm, z, Gm, true});
                        rnn_forward(z, h, m);
                        break;
                    case Cell::lstm:
                        kn.gemm({1, Gm, m, hp, m, 1, a.WhT.data(), Gm, z, Gm, true});
                        lstm_forward(z, a.C.data() + t * m, a.C.data() + (t + 1) * m, a.TC.data() + t * m, h, m);
                        break;
                    case Cell::gru:
                        std::copy(W.bh, W.bh + Gm, ah.begin());
                        kn.gemm({1, Gm, m, hp, m, 1, a.WhT.data(), Gm, ah.data(), Gm, true});
                        gru_forward(z, ah.data(), hp, a.Hn.data() + t * m, h, m);
                        break;
                }
            }
        }
    }

    // Output layer over the chunk: P = softmax(H_top V^T + c) and the row losses. Returns the summed loss.
    double output_loss(const NetView<T>& Pv) {
        const std::size_t m = lay.m, K = lay.K;
        T* O = P.data();
        for (std::size_t t = 0; t < n; ++t) std::copy(Pv.c, Pv.c + K, O + t * K);
        kn.gemm({n, K, m, acts[lay.L - 1].H.data() + m, m, 1, VT.data(), K, O, K, true});
        for (std::size_t t = 0; t < n; ++t) row_loss[t] = O[t * K + static_cast<std::size_t>(y[t])];
        kn.softmax_rows(O, n, K, K, T(1), log_z.data());
        double loss = 0.0;
        for (std::size_t t = 0; t < n; ++t) {
            row_loss[t] = log_z[t] - row_loss[t];
            loss += static_cast<double>(row_loss[t]);
        }
        return loss;
    }

    // The state after the last step (L x S*m).
    void final_state(T* state) const {
        const std::size_t m = lay.m, S = lay.S();
        for (std::size_t l = 0; l < lay.L; ++l) {
            const LayerActs<T>& a = acts[l];
            std::copy(a.H.begin() + n * m, a.H.begin() + (n + 1) * m, state + l * S * m);
            if (lay.cell == Cell::lstm) std::copy(a.C.begin() + n * m, a.C.begin() + (n + 1) * m, state + l * S * m + m);
        }
    }

    // ------------------------------------------------------------ backward

    // Gradients of the summed loss into the flat gradient list g (same order
    // as the parameters), after forward_hidden and output_loss.
    void backward(const NetView<T>& Pv, const std::vector<T*>& g) {
        const std::size_t m = lay.m, K = lay.K, Gm = lay.G() * m, L = lay.L, A_ = lay.per_layer();
        // dO = P - onehot(y);  dV = dO^T H_top;  dc = sum_t dO;  dH_top = dO V
        T* dO = P.data();
        for (std::size_t t = 0; t < n; ++t) dO[t * K + static_cast<std::size_t>(y[t])] -= T(1);
        const T* Htop = acts[L - 1].H.data() + m;
        kn.gemm({K, m, n, dO, 1, K, Htop, m, g[L * A_], m, false});
        column_sums(dO, n, K, 0, K, g[L * A_ + 1]);
        kn.gemm({n, m, K, dO, K, 1, Pv.V, m, acts[L - 1].dH.data(), m, false});

        for (std::size_t l = L; l-- > 0;) {
            LayerActs<T>& a = acts[l];
            const LayerView<T>& W = Pv.layers[l];
            T* dA = a.dA.data();
            T* dAh = lay.cell == Cell::gru ? a.dAh.data() : dA;
            std::fill(dh_next.begin(), dh_next.end(), T(0));
            std::fill(dc.begin(), dc.end(), T(0));
            for (std::size_t t = n; t-- > 0;) {
                for (std::size_t k = 0; k < m; ++k) dh[k] = a.dH[t * m + k] + dh_next[k];
                const T* gates = a.A.data() + t * Gm;
                switch (lay.cell) {
                    case Cell::rnn:
                        rnn_backward(a.H.data() + (t + 1) * m, dh.data(), dA + t * Gm, m);
                        if (t > 0) kn.gemm({1, m, Gm, dA + t * Gm, Gm, 1, W.Wh, m, dh_next.data(), m, false});
                        break;
                    case Cell::lstm:
                        lstm_backward(gates, a.C.data() + t * m, a.TC.data() + t * m, dh.data(), dc.data(),
                                      dA + t * Gm, m);
                        if (t > 0) kn.gemm({1, m, Gm, dA + t * Gm, Gm, 1, W.Wh, m, dh_next.data(), m, false});
                        break;
                    case Cell::gru:
                        gru_backward(gates, a.Hn.data() + t * m, a.H.data() + t * m, dh.data(), dA + t * Gm,
                                     dAh + t * Gm, dh_next.data(), m);
                        if (t > 0) kn.gemm({1, m, Gm, dAh + t * Gm, Gm, 1, W.Wh, m, dh_next.data(), m, true});
                        break;
                }
            }
            T* gWx = g[l * A_];
            T* gWh = g[l * A_ + 1];
            // dWh = dAh^T H_prev,  db = sum dA,  dbh = sum dAh
            kn.gemm({Gm, m, n, dAh, 1, Gm, a.H.data(), m, gWh, m, false});
            column_sums(dA, n, Gm, 0, Gm, g[l * A_ + 2]);
            if (lay.cell == Cell::gru) column_sums(dAh, n, Gm, 0, Gm, g[l * A_ + 3]);
            if (l == 0) {
                // dWx[:, x_t] += dA_t
                std::fill(gWx, gWx + Gm * K, T(0));
                for (std::size_t t = 0; t < n; ++t) {
                    const std::size_t xt = static_cast<std::size_t>(x[t]);
                    for (std::size_t j = 0; j < Gm; ++j) gWx[j * K + xt] += dA[t * Gm + j];
                }
            } else {
                // dWx = dA^T H_{l-1};  dH_{l-1} = dA Wx
                kn.gemm({Gm, m, n, dA, 1, Gm, acts[l - 1].H.data() + m, m, gWx, m, false});
                kn.gemm({n, m, Gm, dA, Gm, 1, W.Wx, m, acts[l - 1].dH.data(), m, false});
            }
        }
    }

    // ------------------------------------------------------------ chunks

    template <typename I>
    void load(const I* xs, const I* ys, std::size_t steps) {
        resize(steps);
        for (std::size_t t = 0; t < steps; ++t) {
            x[t] = safe_index(xs[t], lay.K);
            y[t] = safe_index(ys[t], lay.K);
        }
    }

    // Loss and gradients of one chunk; state (L x S*m) is replaced by the final state.
    template <typename I>
    double loss_and_grads(const NetView<T>& Pv, const I* xs, const I* ys, std::size_t steps, T* state,
                          const std::vector<T*>& g) {
        load(xs, ys, steps);
        prepare(Pv);
        forward_hidden(Pv, state);
        const double loss = output_loss(Pv);
        backward(Pv, g);
        final_state(state);
        return loss;
    }
};

// Summed loss of predicting data[1..N) from data[0..N-1), chunks
// (for_each_loss_chunk), carrying state (updated in place). Forward only.
template <typename T, typename I>
double net_sequence_loss(const NetLayout& lay, const NetView<T>& Pv, const I* data, std::size_t N, T* state) {
    Network<T> net(lay);
    net.prepare(Pv);
    double loss = 0.0;
    for_each_loss_chunk(N, [&](std::size_t t0, std::size_t steps) {
        net.load(data + t0, data + t0 + 1, steps);
        net.forward_hidden(Pv, state);
        loss += net.output_loss(Pv);
        net.final_state(state);
    });
    return loss;
}

}  // namespace charrnn
