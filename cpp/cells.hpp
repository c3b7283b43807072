// The three recurrent cells, one time step of one stream over a block of n
// units, forward and backward side by side, written next to their equations.
// s is the logistic sigmoid. The engine (engine.hpp) computes the
// pre-activations as matrix products for all streams and units first.
//
//   rnn  [a]:           h = tanh(a)
//   lstm [i, f, g, o]:  i = s(.), f = s(.), g = tanh(.), o = s(.)
//                       c = f * c_prev + i * g,   h = o * tanh(c)
//   gru  [r, z, n]:     r = s(ax_r + ah_r),  z = s(ax_z + ah_z)
//                       n = tanh(ax_n + r * ah_n),   h = (1 - z) * n + z * h_prev
//                       with ax = Wx x + b and ah = Wh h_prev + bh
//
// Forward, the gate arrays hold the pre-activations on entry and the gate
// values (which the backward pass needs) on return. Backward, dh = dL/dh_t
// (from the layer above or the output, plus what step t+1 passed back) gives
// the pre-activation gradients; the caller adds the recurrent part
// dh_prev += dAh Wh.
//
// No two arrays of a call overlap, which the pointers declare
// (CHARRNN_RESTRICT) so that the loops vectorise.
#pragma once

#include <cstddef>

#include "simd.hpp"
#include "vmath.hpp"

#define R_ CHARRNN_RESTRICT

namespace charrnn {

template <typename T>
CHARRNN_ALWAYS_INLINE T sigmoid(T x) {
    return T(1) / (T(1) + vexp(-x));
}

// ---------------------------------------------------------------- rnn

// a: in, the pre-activation; out, h (the gate value the backward pass uses).
template <typename T>
CHARRNN_ALWAYS_INLINE void rnn_forward(T* R_ a, T* R_ h, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) h[k] = a[k] = vtanh(a[k]);
}

// da = (1 - h^2) dh
template <typename T>
CHARRNN_ALWAYS_INLINE void rnn_backward(const T* R_ h, const T* R_ dh, T* R_ da, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) da[k] = (T(1) - h[k] * h[k]) * dh[k];
}

// ---------------------------------------------------------------- lstm

template <typename T>
CHARRNN_ALWAYS_INLINE void lstm_forward(T* R_ i, T* R_ f, T* R_ g, T* R_ o, const T* R_ c_prev, T* R_ c, T* R_ tc,
                                        T* R_ h, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
        i[k] = sigmoid(i[k]);
        f[k] = sigmoid(f[k]);
        g[k] = vtanh(g[k]);
        o[k] = sigmoid(o[k]);
        c[k] = f[k] * c_prev[k] + i[k] * g[k];
        tc[k] = vtanh(c[k]);
        h[k] = o[k] * tc[k];
    }
}

// dc: in, dL/dc_t from step t+1; out, dL/dc_{t-1}.
//   dc_t = dc + dh o (1 - tc^2)
//   dz_i = dc_t g i(1-i),  dz_f = dc_t c_prev f(1-f),  dz_g = dc_t i (1-g^2),  dz_o = dh tc o(1-o)
//   dc_{t-1} = dc_t f
template <typename T>
CHARRNN_ALWAYS_INLINE void lstm_backward(const T* R_ i, const T* R_ f, const T* R_ g, const T* R_ o,
                                         const T* R_ c_prev, const T* R_ tc, const T* R_ dh, T* R_ dc, T* R_ dz_i,
                                         T* R_ dz_f, T* R_ dz_g, T* R_ dz_o, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
        const T dct = dc[k] + dh[k] * o[k] * (T(1) - tc[k] * tc[k]);
        dz_i[k] = dct * g[k] * i[k] * (T(1) - i[k]);
        dz_f[k] = dct * c_prev[k] * f[k] * (T(1) - f[k]);
        dz_g[k] = dct * i[k] * (T(1) - g[k] * g[k]);
        dz_o[k] = dh[k] * tc[k] * o[k] * (T(1) - o[k]);
        dc[k] = dct * f[k];
    }
}

// ---------------------------------------------------------------- gru

// r, z, n: in, ax; out, the gate values. ah_*: Wh h_prev + bh. hn keeps ah_n.
template <typename T>
CHARRNN_ALWAYS_INLINE void gru_forward(T* R_ r, T* R_ z, T* R_ nn, const T* R_ ah_r, const T* R_ ah_z,
                                       const T* R_ ah_n, const T* R_ h_prev, T* R_ hn, T* R_ h, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
        r[k] = sigmoid(r[k] + ah_r[k]);
        z[k] = sigmoid(z[k] + ah_z[k]);
        hn[k] = ah_n[k];
        nn[k] = vtanh(nn[k] + r[k] * hn[k]);
        h[k] = (T(1) - z[k]) * nn[k] + z[k] * h_prev[k];
    }
}

// dax / dah: the input-side / recurrent-side pre-activation gradients (they
// differ in the n block by the factor r); dh_prev = dh z is the direct part
// of dL/dh_{t-1}.
//   dan = dh (1 - z)(1 - n^2),  dar = dan hn r(1-r),  daz = dh (h_prev - n) z(1-z),  dah_n = dan r
template <typename T>
CHARRNN_ALWAYS_INLINE void gru_backward(const T* R_ r, const T* R_ z, const T* R_ nn, const T* R_ hn,
                                        const T* R_ h_prev, const T* R_ dh, T* R_ dax_r, T* R_ dax_z, T* R_ dax_n,
                                        T* R_ dah_r, T* R_ dah_z, T* R_ dah_n, T* R_ dh_prev, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
        const T dan = dh[k] * (T(1) - z[k]) * (T(1) - nn[k] * nn[k]);
        const T dar = dan * hn[k] * r[k] * (T(1) - r[k]);
        const T daz = dh[k] * (h_prev[k] - nn[k]) * z[k] * (T(1) - z[k]);
        dax_r[k] = dar;
        dah_r[k] = dar;
        dax_z[k] = daz;
        dah_z[k] = daz;
        dax_n[k] = dan;
        dah_n[k] = dan * r[k];
        dh_prev[k] = dh[k] * z[k];
    }
}

}  // namespace charrnn

#undef R_
