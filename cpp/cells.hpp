// The three recurrent cells of the general network (network.hpp), one time
// step at a time, written next to their equations. Each cell sees
//   ax: the input-side pre-activations Wx x_t + b of its G*m gate rows
//       (computed for the whole chunk beforehand by network.hpp),
// adds the recurrent part Wh h_{t-1} itself (a 1-row matrix product), and
// overwrites ax with the gate values the backward pass needs.
//
// Gate row blocks of Wx, Wh, b (and bh) are stacked in this order:
//   rnn  (G = 1): [a]              h_t = tanh(a)
//   lstm (G = 4): [i, f, g, o]     (PyTorch's order)
//       i = s(.), f = s(.), g = tanh(.), o = s(.)   with s = logistic sigmoid
//       c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
//   gru  (G = 3): [r, z, n]        (PyTorch's form, with a separate bias bh)
//       r = s(Wx_r x + b_r + Wh_r h + bh_r)
//       z = s(Wx_z x + b_z + Wh_z h + bh_z)
//       n = tanh(Wx_n x + b_n + r * (Wh_n h + bh_n))
//       h_t = (1 - z) * n + z * h_{t-1}
// The backward functions take dh = dL/dh_t (from above and from step t+1)
// and produce the pre-activation gradients; the recurrent product
// dh_{t-1} += dAh Wh is done by the caller.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "simd.hpp"
#include "vmath.hpp"

namespace charrnn {

enum class Cell { rnn, lstm, gru };

inline std::size_t gate_count(Cell c) { return c == Cell::lstm ? 4 : c == Cell::gru ? 3 : 1; }
// Vectors per layer in the hidden state: LSTM carries (h, c), the others h.
inline std::size_t state_count(Cell c) { return c == Cell::lstm ? 2 : 1; }
inline const char* cell_name(Cell c) { return c == Cell::lstm ? "lstm" : c == Cell::gru ? "gru" : "rnn"; }

template <typename T>
CHARRNN_ALWAYS_INLINE T sigmoid(T x) {
    return T(1) / (T(1) + vexp(-x));
}

// ---------------------------------------------------------------- rnn

// a (in: pre-activation with Wh h added; out: h_t); h_t also written to h.
template <typename T>
inline void rnn_forward(T* a, T* h, std::size_t m) {
    for (std::size_t i = 0; i < m; ++i) h[i] = a[i] = vtanh(a[i]);
}

// da = (1 - h_t^2) * dh
template <typename T>
inline void rnn_backward(const T* h, const T* dh, T* da, std::size_t m) {
    for (std::size_t i = 0; i < m; ++i) da[i] = (T(1) - h[i] * h[i]) * dh[i];
}

// ---------------------------------------------------------------- lstm

// z (in: 4m pre-activations; out: gate values i, f, g, o);
// c = f * c_prev + i * g;  tc = tanh(c);  h = o * tc.
template <typename T>
inline void lstm_forward(T* z, const T* c_prev, T* c, T* tc, T* h, std::size_t m) {
    T* i_ = z;
    T* f_ = z + m;
    T* g_ = z + 2 * m;
    T* o_ = z + 3 * m;
    for (std::size_t k = 0; k < m; ++k) {
        i_[k] = sigmoid(i_[k]);
        f_[k] = sigmoid(f_[k]);
        g_[k] = vtanh(g_[k]);
        o_[k] = sigmoid(o_[k]);
        c[k] = f_[k] * c_prev[k] + i_[k] * g_[k];
        tc[k] = vtanh(c[k]);
        h[k] = o_[k] * tc[k];
    }
}

// From dh = dL/dh_t and dc (in: dL/dc_t from step t+1; out: dL/dc_{t-1}):
//   dc_t = dc + dh * o * (1 - tc^2)
//   dz_i = dc_t g i(1-i),  dz_f = dc_t c_prev f(1-f),  dz_g = dc_t i (1-g^2),  dz_o = dh tc o(1-o)
//   dc_{t-1} = dc_t f
template <typename T>
inline void lstm_backward(const T* gates, const T* c_prev, const T* tc, const T* dh, T* dc, T* dz,
                          std::size_t m) {
    const T* i_ = gates;
    const T* f_ = gates + m;
    const T* g_ = gates + 2 * m;
    const T* o_ = gates + 3 * m;
    for (std::size_t k = 0; k < m; ++k) {
        const T dct = dc[k] + dh[k] * o_[k] * (T(1) - tc[k] * tc[k]);
        dz[k] = dct * g_[k] * i_[k] * (T(1) - i_[k]);
        dz[m + k] = dct * c_prev[k] * f_[k] * (T(1) - f_[k]);
        dz[2 * m + k] = dct * i_[k] * (T(1) - g_[k] * g_[k]);
        dz[3 * m + k] = dh[k] * tc[k] * o_[k] * (T(1) - o_[k]);
        dc[k] = dct * f_[k];
    }
}

// ---------------------------------------------------------------- gru

// ax (in: Wx x + b; out: gate values r, z, n), ah = Wh h_prev + bh (3m);
// hn keeps Wh_n h_prev + bh_n for the backward pass.
template <typename T>
inline void gru_forward(T* ax, const T* ah, const T* h_prev, T* hn, T* h, std::size_t m) {
    T* r_ = ax;
    T* z_ = ax + m;
    T* n_ = ax + 2 * m;
    for (std::size_t k = 0; k < m; ++k) {
        r_[k] = sigmoid(r_[k] + ah[k]);
        z_[k] = sigmoid(z_[k] + ah[m + k]);
        hn[k] = ah[2 * m + k];
        n_[k] = vtanh(n_[k] + r_[k] * hn[k]);
        h[k] = (T(1) - z_[k]) * n_[k] + z_[k] * h_prev[k];
    }
}

// From dh = dL/dh_t: the input-side pre-activation gradients dax (3m), the
// recurrent-side ones dah (3m; differ from dax in the n block by the factor r)
// and the direct part of dL/dh_{t-1}, dh_prev = dh * z.
//   dn = dh (1 - z),  dz = dh (h_prev - n),  dan = dn (1 - n^2)
//   dar = dan hn r(1-r),  daz = dz z(1-z),  dah_n = dan r
template <typename T>
inline void gru_backward(const T* gates, const T* hn, const T* h_prev, const T* dh, T* dax, T* dah, T* dh_prev,
                         std::size_t m) {
    const T* r_ = gates;
    const T* z_ = gates + m;
    const T* n_ = gates + 2 * m;
    for (std::size_t k = 0; k < m; ++k) {
        const T dan = dh[k] * (T(1) - z_[k]) * (T(1) - n_[k] * n_[k]);
        const T dar = dan * hn[k] * r_[k] * (T(1) - r_[k]);
        const T daz = dh[k] * (h_prev[k] - n_[k]) * z_[k] * (T(1) - z_[k]);
        dax[k] = dah[k] = dar;
        dax[m + k] = dah[m + k] = daz;
        dax[2 * m + k] = dan;
        dah[2 * m + k] = dan * r_[k];
        dh_prev[k] = dh[k] * z_[k];
    }
}

}  // namespace charrnn
