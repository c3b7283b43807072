// The one engine: a stack of L recurrent layers (rnn, lstm or gru) and a
// softmax output, run forward and backward over a chunk of n steps of B
// independent streams, by a team of threads. Every training, evaluation and
// sampling path goes through it; the classic experiment is its special case
// (rnn, one layer, B = 1, one thread).
//
// Rows of the activation buffers are time-major: row t*B + s is stream s at
// step t. Only the recurrences are sequential in t, and they are B-row matrix
// products; the input projections of layers l > 0, the output layer and every
// weight gradient are single products over all n*B rows (gemm.hpp).
//
// Threads (SPMD, ids 0..threads-1, barriers between phases) split the work by
// fixed rules -- units (in panel-aligned ranges) or streams for the
// recurrences (split_by_streams), rows or panels for the other products --
// and every number is computed by the same code in the same order whatever
// the split, so results are bit-identical for every thread count.
//
// Loss: sum over streams and steps of -log softmax(o_t)[y_t] (accumulated in
// double in row order); gradients are of that sum.
//
// Precision: a float engine can run every matrix product with bfloat16
// operands and float32 sums (bf16.hpp); everything else, and every number
// it keeps, stays float32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "bf16.hpp"
#include "dropout.hpp"
#include "gemm.hpp"
#include "kernels.hpp"
#include "layout.hpp"
#include "parallel.hpp"
#include "walk.hpp"

namespace charrnn {

// Multiply-adds of one step's recurrence (all B streams, one layer) that
// each thread must have before a team pays. Split by units, every step ends
// at a barrier; below this, a second thread waits there longer than it works,
// and when other programs hold the cores each wait becomes a trip through the
// scheduler. The classic network (m = 100) with 16 streams, 160,000
// multiply-adds a step, trained no faster on two threads of an idle Intel Xeon
// and 14 times slower on two busy cores; with 64 streams (640,000) two threads
// gained 1.5x on AMD EPYC and nothing on the Xeon (1.4-1.6x there since the
// recurrences of such small networks are split by streams, with no barrier
// per step); m = 256 with 16 streams (1.05 M) gains on both.
constexpr std::size_t kStepWorkPerThread = std::size_t(1) << 18;

// The threads worth using for B streams: at most `threads`, and one per
// kStepWorkPerThread multiply-adds of a step. Results do not depend on it.
// CHARRNN_TEAM=full uses every thread asked for, however small the work (the
// tests of the thread splits run small networks).
inline std::size_t team_size(const NetLayout& lay, std::size_t B, std::size_t threads) {
    threads = std::max<std::size_t>(1, threads);
    const char* team = std::getenv("CHARRNN_TEAM");
    if (team != nullptr && std::strcmp(team, "full") == 0) return threads;
    const std::size_t work = std::max<std::size_t>(1, B) * lay.Gm() * lay.m;
    return std::max<std::size_t>(1, std::min(threads, work / kStepWorkPerThread));
}

// The threads worth using for a single stream (sampling, a one-stream
// evaluation or trace), more than team_size gives it. Its step multiplies
// each layer's weights by one row, so it reads every weight once a character
// and waits on memory, not arithmetic: a team of k splits the gate columns,
// and each thread reads 1/k of every layer, from its own core's cache once
// that share fits there. One thread per whole kStreamBytesPerThread of the
// largest layer's packed weights (`bytes` each; W_x and W_h above layer 0),
// at most `threads`: a second thread from 512 KB. Sampling on an idle Intel
// Xeon, two threads against one: 3.5x faster at 2 MB (LSTM 2 x 256, float32),
// 1.2x at 512 KB and 1.2x at 256 KB, slower at 80 KB (the classic m = 100);
// with the other core busy, an LSTM 2 x 256 drew 2-3.3x slower on two threads,
// so the rule asks for weights worth it. Never fewer than team_size.
// CHARRNN_TEAM=full uses every thread asked for. Results do not depend on it.
constexpr std::size_t kStreamBytesPerThread = std::size_t(1) << 18;

inline std::size_t stream_team(const NetLayout& lay, std::size_t threads, std::size_t bytes) {
    threads = std::max<std::size_t>(1, threads);
    const char* team = std::getenv("CHARRNN_TEAM");
    if (team != nullptr && std::strcmp(team, "full") == 0) return threads;
    const std::size_t depth = lay.L > 1 ? 2 * lay.m : lay.m;  // W_h, and W_x above layer 0
    const std::size_t layer_bytes = depth * lay.Gm() * bytes;
    return std::max(team_size(lay, 1, threads), std::min(threads, layer_bytes / kStreamBytesPerThread));
}

// Whether a team splits the recurrences of B streams by streams rather than
// by units (Engine::share). By streams, each thread runs its streams through
// a whole chunk without meeting the others, but multiplies by the whole
// recurrent weight matrix at every step; by units, the threads share the
// weights, and meet at a barrier after each step. Measured on an Intel Xeon
// (2 threads, B = 32 or 64): streams were faster for every bfloat16 network
// (LSTM 2 x 256: 23 against 28 ms an update) and for float32 networks whose
// matrix W_h is at most 1 MB (classic m = 100: 1.46 against 2.03 ms); GRU
// 2 x 384 in float32 (1.7 MB) was faster by units (96 against 107 ms).
// Results do not depend on the choice. CHARRNN_SPLIT=units or =streams
// forces one (the tests of the splits).
inline bool split_by_streams(const NetLayout& lay, std::size_t B, std::size_t threads, Precision prec,
                             std::size_t bytes) {
    const char* split = std::getenv("CHARRNN_SPLIT");
    if (split != nullptr && std::strcmp(split, "streams") == 0) return true;
    if (split != nullptr && std::strcmp(split, "units") == 0) return false;
    if (threads < 2 || B < 2 * threads) return false;  // too few streams to share
    return prec == Precision::bf16 || lay.m * lay.Gm() * bytes <= (std::size_t(1) << 20);
}

// Fewest streams a chunk has for one step's bfloat16 products to use AMX
// tiles. A tile computes 16 rows whatever the count; below this the steps'
// products (their rows: a thread's streams) take the row kernel,
// Kernels::gemm16_rows (vdpbf16ps), and so does the input projection of the
// layers above the first, which a split by units computes for the whole
// chunk at once and a split by streams step by step. Measured on an Intel
// Xeon, LSTM 2 x 256: validation on one thread, microseconds a character
// with the tiles against vdpbf16ps, 1 stream 119 / 33, 4 streams 33 / 21,
// 8 streams 18 / 21; a chunk of 64 steps' gradients on two threads, 1
// stream 9.2 / 4.3 ms, 4 streams 14 / 6.3 ms, 8 streams 15-23 / 16 ms (and
// 20 / 25 on one thread, so 8 streams keep the tiles). The rule reads the
// chunk's streams, never a thread's share of them, so no result depends on
// the thread count (the two kernels may round differently).
constexpr std::size_t kTileStreams = 8;

// Read-only view of the parameter arrays (flat list in NetLayout::arrays() order).
template <typename T>
struct NetParams {
    struct Layer {
        const T *Wx, *Wh, *b, *bh;  // bh: gru only
    };
    std::vector<Layer> layers;
    const T* V;
    const T* c;

    NetParams(const NetLayout& lay, const std::vector<T*>& p) {
        const std::size_t A = lay.per_layer();
        for (std::size_t l = 0; l < lay.L; ++l) {
            T* const* q = p.data() + l * A;
            layers.push_back({q[0], q[1], q[2], lay.cell == Cell::gru ? q[3] : nullptr});
        }
        V = p[lay.L * A];
        c = p[lay.L * A + 1];
    }
};

// A B operand of the products, packed for the engine's precision: float
// panels (gemm.hpp) or bfloat16 panels (bf16.hpp).
template <typename T>
struct Operand {
    Packed<T> f;
    PackedBf16 h;
};

// The row stride of an engine's gate arrays (Engine::ldg).
template <typename T>
constexpr std::size_t gate_stride(std::size_t Gm) {
    return Gm * sizeof(T) % 2048 == 0 ? Gm + 64 / sizeof(T) : Gm;
}

template <typename T>
class Engine {
public:
    // Sums of losses: double, or long double for the numerical gradients.
    using Sum = std::conditional_t<(sizeof(T) > sizeof(double)), long double, double>;

    const NetLayout lay;
    const Kernels<T>& kn;
    const std::size_t threads;
    const Precision precision;
    SpinBarrier barrier;
    Dropout dropout;  // p = 0: off (evaluation and sampling)
    // No backward pass follows (evaluation, traces). Each step's gate values
    // (and an LSTM's tanh(c), a GRU's ah_n) then go to one step's worth of
    // rows, reused every step and so kept in cache, instead of the chunk's
    // rows the backward pass reads. The same sums either way.
    bool forward_only = false;
    // Row stride of the gate arrays (Z, AH, dA, dAh): G*m, and one cache line
    // more when G*m values fill a multiple of 2 KB (an LSTM of 256 units in
    // float32: 4 KB). Rows that far apart fall in one or two L1 sets, so the
    // 16 rows of a product's C tile, or the 32 of a transposed A panel, would
    // need more lines of a set than it has ways (12 on the Xeon).
    const std::size_t ldg;

    Engine(const NetLayout& l, std::size_t n_threads, Precision prec = Precision::full)
        : lay(l), kn(kernels<T>()), threads(std::max<std::size_t>(1, n_threads)), precision(checked(prec)),
          barrier(threads), ldg(gate_stride<T>(l.Gm())), order(l.G(), l.m, kn.NR), col_rows(order.rows_of_columns()),
          layers(l.L) {
        const std::size_t m = l.m, Gm = l.Gm();
        for (std::size_t i = 0; i < l.L; ++i) {
            Layer& a = layers[i];
            resize_operand(a.WhT, m, Gm);
            resize_operand(a.Wh, Gm, m);
            if (i == 0) {
                a.XB.resize(l.K * Gm);
            } else {
                resize_operand(a.WxT, m, Gm);
                resize_operand(a.Wx, Gm, m);
                a.b.resize(Gm);
            }
            if (l.cell == Cell::gru) a.bh.resize(Gm);
        }
        resize_operand(VT, m, l.K);
        resize_operand(Vp, l.K, m);
        dWx0T.resize(l.K * Gm);
    }

    // ------------------------------------------------------------ chunk set-up (one thread)

    // Streams and steps of the next chunk; buffers grow as needed.
    void resize(std::size_t streams, std::size_t steps) {
        B = streams;
        n = steps;
        by_streams = split_by_streams(lay, B, threads, precision, sizeof(T));
        step16 = B < kTileStreams ? kn.gemm16_rows : kn.gemm16;
        const std::size_t m = lay.m, rows = n * B;
        for (std::size_t i = 0; i < lay.L; ++i) {
            Layer& a = layers[i];
            a.Z.resize(rows * ldg);
            a.H.resize((n + 1) * B * m);
            a.dA.resize(rows * ldg);
            a.dH.resize(rows * m);
            a.dh_next.resize(B * m);
            a.dh.resize(B * m);
            if (lay.cell == Cell::lstm) {
                a.C.resize((n + 1) * B * m);
                a.TC.resize(rows * m);
                a.dc.resize(B * m);
            }
            if (lay.cell == Cell::gru) {
                a.HN.resize(rows * m);
                a.AH.resize(B * ldg);
                a.dAh.resize(rows * ldg);
            }
            a.Zs.resize(B * ldg);  // (one step's rows, whatever forward_only says now: it may change)
            if (lay.cell == Cell::lstm) a.TS.resize(B * m);
            if (lay.cell == Cell::gru) a.HS.resize(B * m);
            resize_operand(a.Hprev_pk, rows, m);
            if (i > 0) resize_operand(a.X_pk, rows, m);
            // the dropped input of the layer above (or of the output layer)
            if (dropout.on()) {
                a.Xd.resize(rows * m);
                a.keep.resize(rows * m);
            }
        }
        resize_operand(Xo_pk, rows, m);
        O.resize(rows * lay.K);
        log_z.resize(rows);
        row_loss.resize(rows);
        x.resize(rows);
        y.resize(rows);
        dXo.resize(rows * m);
    }

    std::int32_t* inputs() { return x.data(); }   // n*B, time-major
    std::int32_t* targets() { return y.data(); }  // n*B, time-major

    // Initial state of stream s (L x S*m) in, and final state out.
    void set_state(std::size_t s, const T* state) {
        const std::size_t m = lay.m, S = lay.S();
        for (std::size_t l = 0; l < lay.L; ++l) {
            const T* src = state + l * S * m;
            std::copy(src, src + m, layers[l].H.data() + s * m);
            if (S == 2) std::copy(src + m, src + 2 * m, layers[l].C.data() + s * m);
        }
    }
    void zero_state(std::size_t s) {
        const std::size_t m = lay.m;
        for (auto& a : layers) {
            std::fill(a.H.data() + s * m, a.H.data() + (s + 1) * m, T(0));
            if (lay.S() == 2) std::fill(a.C.data() + s * m, a.C.data() + (s + 1) * m, T(0));
        }
    }
    void get_state(std::size_t s, T* state) const {
        const std::size_t m = lay.m, S = lay.S();
        for (std::size_t l = 0; l < lay.L; ++l) {
            T* dst = state + l * S * m;
            const T* h = layers[l].H.data() + (n * B + s) * m;
            std::copy(h, h + m, dst);
            if (S == 2) {
                const T* c = layers[l].C.data() + (n * B + s) * m;
                std::copy(c, c + m, dst + m);
            }
        }
    }

    // ------------------------------------------------------------ phases (every thread, SPMD)

    // Packs the weights for the products; after every parameter change.
    void prepare(const NetParams<T>& P, std::size_t id) {
        const std::size_t m = lay.m, K = lay.K, Gm = lay.Gm();
        for (std::size_t l = 0; l < lay.L; ++l) {
            Layer& a = layers[l];
            const auto& W = P.layers[l];
            pack_split(W.Wh, 1, m, col_rows.data(), a.WhT, id);  // WhT(p, col) = Wh[row(col), p]
            pack_split(W.Wh, m, 1, nullptr, a.Wh, id);           // Wh(p, n), p a natural gate row
            if (l == 0) {
                // XB[x, col] = b[row(col)] + Wx[row(col), x]: the input side of a one-hot x
                const Range r = split_range(K, id, threads);
                for (std::size_t xi = r.begin; xi < r.end; ++xi)
                    for (std::size_t c = 0; c < Gm; ++c)
                        a.XB[xi * Gm + c] = W.b[col_rows[c]] + W.Wx[col_rows[c] * K + xi];
            } else {
                pack_split(W.Wx, 1, m, col_rows.data(), a.WxT, id);
                pack_split(W.Wx, m, 1, nullptr, a.Wx, id);
                if (id == 0)
                    for (std::size_t c = 0; c < Gm; ++c) a.b[c] = W.b[col_rows[c]];
            }
            if (lay.cell == Cell::gru && id == 0)
                for (std::size_t c = 0; c < Gm; ++c) a.bh[c] = W.bh[col_rows[c]];
        }
        pack_split(P.V, 1, m, nullptr, VT, id);  // VT(p, k) = V[k, p]
        pack_split(P.V, m, 1, nullptr, Vp, id);
        barrier.wait();
    }

    // All layers over the chunk (inputs x, states set). Ends with a barrier.
    void forward(std::size_t id) {
        const std::size_t m = lay.m, Gm = lay.Gm(), G = lay.G(), rows = n * B;
        const Share w = share(id);
        const std::size_t c0 = w.u.begin * G, c1 = w.u.end * G, s0 = w.s.begin, Bs = w.s.size();
        const bool one_step = forward_only;  // write the step rows of Zs, TS, HS (s0 on)
        for (std::size_t l = 0; l < lay.L; ++l) {
            Layer& a = layers[l];
            if (l > 0 && !by_streams && !one_step && w.u.size()) {
                // Z = b + X W_x^T for this thread's gate columns, all steps at once (by the
                // kernel of the steps, which compute it step by step when split by streams)
                for (std::size_t r = 0; r < rows; ++r) std::copy(a.b.data() + c0, a.b.data() + c1, a.Z.data() + r * ldg + c0);
                mm(rows, c0, c1, input(l), m, 1, a.WxT, a.Z.data(), ldg, true, nullptr, nullptr, step16);
            }
            for (std::size_t t = 0; t < n; ++t) {
                if (w.size()) {
                    const std::size_t r0 = t * B + s0;  // this thread's first row at step t
                    T* Zt = one_step ? a.Zs.data() + s0 * ldg : a.Z.data() + r0 * ldg;
                    const T* Hp = a.H.data() + r0 * m;
                    // Z_t = (layer 0) XB[x_t] or (above) b + X_t W_x^T, the latter for this thread's
                    // share here (the same sums as above); then, but for the GRU, + H_{t-1} W_h^T
                    const bool gru = lay.cell == Cell::gru;
                    const std::int32_t* xt = x.data() + r0;
                    if (l == 0 && gru) {
                        for (std::size_t s = 0; s < Bs; ++s) {
                            const T* xb = a.XB.data() + static_cast<std::size_t>(xt[s]) * Gm;
                            std::copy(xb + c0, xb + c1, Zt + s * ldg + c0);
                        }
                    } else if (l == 0) {
                        mm_init(Bs, c0, c1, Hp, m, 1, a.WhT, Zt, ldg, a.XB.data(), xt, Gm, step16);
                    } else if (by_streams || one_step) {
                        mm_init(Bs, c0, c1, input(l) + r0 * m, m, 1, a.WxT, Zt, ldg, a.b.data(), nullptr, 0, step16);
                    }
                    CellStep<T> cs{lay.cell, Bs, m, order, Zt, nullptr, Hp, a.H.data() + (r0 + B) * m,
                                   nullptr, nullptr, nullptr, nullptr, w.u.begin, w.u.end, ldg};
                    if (gru) {
                        // AH_t = bh + H_{t-1} W_h^T
                        T* AH = a.AH.data() + s0 * ldg;
                        mm_init(Bs, c0, c1, Hp, m, 1, a.WhT, AH, ldg, a.bh.data(), nullptr, 0, step16);
                        cs.AH = AH;
                        cs.HN = one_step ? a.HS.data() + s0 * m : a.HN.data() + r0 * m;
                    } else if (l > 0) {
                        mm(Bs, c0, c1, Hp, m, 1, a.WhT, Zt, ldg, true, nullptr, nullptr, step16);
                    }
                    if (lay.cell == Cell::lstm) {
                        cs.Cprev = a.C.data() + r0 * m;
                        cs.C = a.C.data() + (r0 + B) * m;
                        cs.TC = one_step ? a.TS.data() + s0 * m : a.TC.data() + r0 * m;
                    }
                    kn.cell_forward[static_cast<int>(lay.cell)](cs);
                    if (dropout.on()) drop_outputs(l, t, w);
                }
                if (!by_streams) barrier.wait();
            }
        }
        if (by_streams) barrier.wait();
    }

    // Output layer for this thread's rows: logits, softmax, row losses and,
    // with grad, dL/do = p - onehot(y) (in O) and dL/dh of the top layer.
    // Ends with a barrier; returns the summed loss (the same on every thread).
    Sum output(const NetParams<T>& P, std::size_t id, bool grad) {
        const std::size_t m = lay.m, K = lay.K, rows = n * B;
        const T* Xo = input(lay.L);
        const Range r = split_range(rows, id, threads, 8);
        constexpr std::size_t block = 64;
        for (std::size_t r0 = r.begin; r0 < r.end; r0 += block) {
            const std::size_t r1 = std::min(r.end, r0 + block), nr = r1 - r0;
            T* o = O.data() + r0 * K;
            for (std::size_t i = r0; i < r1; ++i) std::copy(P.c, P.c + K, O.data() + i * K);
            mm(nr, 0, K, Xo + r0 * m, m, 1, VT, o, K, true);
            for (std::size_t i = r0; i < r1; ++i) row_loss[i] = O[i * K + static_cast<std::size_t>(y[i])];
            kn.softmax_rows(o, nr, K, K, T(1), log_z.data() + r0);
            for (std::size_t i = r0; i < r1; ++i) row_loss[i] = log_z[i] - row_loss[i];
            if (!grad) continue;
            for (std::size_t i = r0; i < r1; ++i) O[i * K + static_cast<std::size_t>(y[i])] -= T(1);
            T* dtop = layers[lay.L - 1].dH.data() + r0 * m;
            // dL/dXo = dO V, then back through the dropout of the output's input
            mm(nr, 0, m, o, K, 1, Vp, dropout.on() ? dXo.data() + r0 * m : dtop, m, false);
            if (dropout.on()) undrop(layers[lay.L - 1], dXo.data(), layers[lay.L - 1].dH.data(), r0, r1);
        }
        barrier.wait();
        Sum loss = 0;
        for (std::size_t i = 0; i < rows; ++i) loss += static_cast<Sum>(row_loss[i]);
        return loss;
    }

    // Gradients of the summed loss into g (flat list in layout order), after
    // forward and output(grad = true). Ends with a barrier.
    void backward(const std::vector<T*>& g, std::size_t id) {
        const std::size_t m = lay.m, K = lay.K, Gm = lay.Gm(), L = lay.L, A_ = lay.per_layer(), rows = n * B;
        // dV = dO^T Xo,  dc = sum_t dO
        pack_split(input(L), m, 1, nullptr, Xo_pk, id);
        barrier.wait();
        const Range rk = split_range(K, id, threads, 4);
        if (rk.size()) {
            mm(rk.size(), 0, m, O.data() + rk.begin, 1, K, Xo_pk, g[L * A_] + rk.begin * m, m, false);
            kn.column_sums(O.data(), rows, K, rk.begin, rk.end, g[L * A_ + 1]);
        }
        const Share w = share(id);
        const std::size_t s0 = w.s.begin, Bs = w.s.size();
        const Range rg = split_range(Gm, id, threads, 8);
        for (std::size_t l = L; l-- > 0;) {
            Layer& a = layers[l];
            T* dAh = lay.cell == Cell::gru ? a.dAh.data() : a.dA.data();
            for (std::size_t s = w.s.begin; s < w.s.end; ++s) {
                std::fill(a.dh_next.data() + s * m + w.u.begin, a.dh_next.data() + s * m + w.u.end, T(0));
                if (lay.cell == Cell::lstm) std::fill(a.dc.data() + s * m + w.u.begin, a.dc.data() + s * m + w.u.end, T(0));
            }
            for (std::size_t t = n; t-- > 0;) {
                const std::size_t r0 = t * B + s0, hb = r0 * m;  // this thread's first row at step t
                if (w.size()) {
                    CellBackStep<T> cs{lay.cell, Bs, m, order, a.Z.data() + r0 * ldg, a.H.data() + hb,
                                       a.H.data() + hb + B * m, nullptr, nullptr, nullptr, a.dH.data() + hb,
                                       a.dh_next.data() + s0 * m, a.dc.data() + s0 * m, a.dh.data() + s0 * m,
                                       a.dA.data() + r0 * ldg, nullptr, w.u.begin, w.u.end, ldg};
                    if (lay.cell == Cell::lstm) {
                        cs.Cprev = a.C.data() + hb;
                        cs.TC = a.TC.data() + hb;
                    }
                    if (lay.cell == Cell::gru) {
                        cs.HN = a.HN.data() + hb;
                        cs.dAh = a.dAh.data() + r0 * ldg;
                    }
                    kn.cell_backward[static_cast<int>(lay.cell)](cs);
                }
                if (!by_streams) barrier.wait();
                // dh_{t-1} (+)= dAh_t Wh for this thread's share (gru: on top of the direct part)
                if (t > 0 && w.size())
                    mm(Bs, w.u.begin, w.u.end, dAh + r0 * ldg, ldg, 1, a.Wh, a.dh_next.data() + s0 * m, m,
                       lay.cell == Cell::gru, nullptr, nullptr, step16);
            }
            // Weight gradients from the whole chunk:
            //   dWh = dAh^T H_prev,  db = sum dA,  dbh = sum dAh
            //   l > 0: dWx = dA^T X_l,  dX_l = dA Wx (to the layer below, through its dropout)
            //   l = 0: dWx[:, x] += dA
            pack_split(a.H.data(), m, 1, nullptr, a.Hprev_pk, id);
            if (l > 0) pack_split(input(l), m, 1, nullptr, a.X_pk, id);
            barrier.wait();
            T* gWx = g[l * A_];
            T* gWh = g[l * A_ + 1];
            if (rg.size()) {
                if (l > 0 && dAh == a.dA.data()) {
                    // dWh and dWx share A = dA: one product reads it for both
                    mm(rg.size(), 0, m, dAh + rg.begin, 1, ldg, a.Hprev_pk, gWh + rg.begin * m, m, false, &a.X_pk,
                       gWx + rg.begin * m);
                } else {
                    mm(rg.size(), 0, m, dAh + rg.begin, 1, ldg, a.Hprev_pk, gWh + rg.begin * m, m, false);
                    if (l > 0) mm(rg.size(), 0, m, a.dA.data() + rg.begin, 1, ldg, a.X_pk, gWx + rg.begin * m, m, false);
                }
                kn.column_sums(a.dA.data(), rows, ldg, rg.begin, rg.end, g[l * A_ + 2]);
                if (lay.cell == Cell::gru) kn.column_sums(a.dAh.data(), rows, ldg, rg.begin, rg.end, g[l * A_ + 3]);
                if (l == 0) {
                    // sum the rows of dA by input character (contiguous rows of dWx^T), then transpose
                    T* acc = dWx0T.data();
                    for (std::size_t xi = 0; xi < K; ++xi) std::fill(acc + xi * Gm + rg.begin, acc + xi * Gm + rg.end, T(0));
                    for (std::size_t i = 0; i < rows; ++i) {
                        const T* da = a.dA.data() + i * ldg;
                        T* dst = acc + static_cast<std::size_t>(x[i]) * Gm;
                        for (std::size_t j = rg.begin; j < rg.end; ++j) dst[j] += da[j];
                    }
                    for (std::size_t j = rg.begin; j < rg.end; ++j)
                        for (std::size_t xi = 0; xi < K; ++xi) gWx[j * K + xi] = acc[xi * Gm + j];
                }
            }
            if (l > 0) {
                Layer& below = layers[l - 1];
                const Range rr = split_range(rows, id, threads, 8);
                if (rr.size()) {
                    T* dst = dropout.on() ? dXo.data() + rr.begin * m : below.dH.data() + rr.begin * m;
                    mm(rr.size(), 0, m, a.dA.data() + rr.begin * ldg, ldg, 1, a.Wx, dst, m, false);
                    if (dropout.on()) undrop(below, dXo.data(), below.dH.data(), rr.begin, rr.end);
                }
            }
            barrier.wait();
        }
    }

    // What a forward pass left, for readers of the states themselves
    // (trace.hpp). Rows t*B + s of the chunk, time-major as everywhere here:
    // layer l's hidden state after step t (m per row; with dropout on, the
    // state before its mask) and an LSTM's cell state; after
    // output(grad = false), the softmax probabilities (K per row) and the row
    // losses -log p(y). Valid until the next resize.
    std::size_t streams() const { return B; }
    Gemm16Fn step_kernel() const { return step16; }  // the kernel of one step's bfloat16 products
    std::size_t steps() const { return n; }
    const T* hidden(std::size_t l) const { return layers[l].H.data() + B * lay.m; }
    const T* cell_state(std::size_t l) const { return layers[l].C.data() + B * lay.m; }
    const T* probabilities() const { return O.data(); }
    const T* row_losses() const { return row_loss.data(); }

    // Logits o (K) of the top layer's state after the last step of stream 0 (one thread).
    void logits(const NetParams<T>& P, T* o) const {
        const std::size_t m = lay.m, K = lay.K;
        const T* h = layers[lay.L - 1].H.data() + n * B * m;
        std::copy(P.c, P.c + K, o);
        mm(1, 0, K, h, m, 1, VT, o, K, true);
    }

private:
    struct Layer {
        Operand<T> WhT, Wh, WxT, Wx;  // forward (gate-order columns) and backward (natural rows) copies
        WorkArray<T> XB;             // layer 0: K x G*m, input side of each character, b included
        WorkArray<T> b, bh;          // gate order
        WorkArray<T> Z, H, C, TC, HN, AH;
        WorkArray<T> Zs, TS, HS;     // forward_only: one step's Z, TC, HN
        WorkArray<T> Xd;             // dropout on: this layer's output as the next one reads it
        WorkArray<std::uint8_t> keep;
        WorkArray<T> dA, dAh, dH, dh_next, dh, dc;
        Operand<T> Hprev_pk, X_pk;    // B operands of the weight gradients
    };

    std::size_t B = 0, n = 0;
    bool by_streams = false;  // how the recurrences are split (share())
    Gemm16Fn step16 = nullptr;  // the bfloat16 kernel of the steps' products (kTileStreams)
    GateOrder order;
    std::vector<std::uint32_t> col_rows;  // gate-order column -> natural row
    std::vector<Layer> layers;
    Operand<T> VT, Vp, Xo_pk;
    WorkArray<T> O, log_z, row_loss, dXo;
    WorkArray<T> dWx0T;  // K x G*m: layer 0's input-weight gradient, transposed
    WorkArray<std::int32_t> x, y;

    // The part of every step's recurrence that a thread computes: streams s
    // times units u. By units, each thread takes whole panels of NR units of
    // every stream, and the threads meet at a barrier after each step; by
    // streams, each takes every unit of its own streams and runs through the
    // chunk without waiting (resize() chooses).
    struct Share {
        Range s, u;
        std::size_t size() const { return s.size() * u.size(); }
    };
    Share share(std::size_t id) const {
        if (by_streams) return {split_range(B, id, threads), {0, lay.m}};
        return {{0, B}, split_range(lay.m, id, threads, kn.NR)};
    }

    // What layer l (l = L: the output layer) reads, rows 0..n*B: the output of
    // the layer below at steps 1..n, after dropout if it is on.
    const T* input(std::size_t l) const {
        const Layer& below = layers[l - 1];
        return dropout.on() ? below.Xd.data() : below.H.data() + B * lay.m;
    }

    static Precision checked(Precision p) {
        if (p == Precision::bf16 && !std::is_same_v<T, float>)
            throw std::invalid_argument("bfloat16 products need float32 parameters");
        return p;
    }
    bool bf16() const { return precision == Precision::bf16; }

    void resize_operand(Operand<T>& B, std::size_t P, std::size_t N) {
        if (bf16()) {
            B.h.resize(P, N);
        } else {
            B.f.resize(P, N, kn.NR);
        }
    }

    // Packs B(p, c) = src[p*rs + col(c)*cs] into this thread's share of the panels.
    void pack_split(const T* src, std::size_t rs, std::size_t cs, const std::uint32_t* map, Operand<T>& B,
                    std::size_t id) {
        if constexpr (std::is_same_v<T, float>) {
            if (bf16()) {
                const Range r = split_range(B.h.panels(), id, threads);
                if (r.size()) kn.pack16(src, rs, cs, map, B.h, r.begin, r.end);
                return;
            }
        }
        const Range r = split_range(B.f.panels(), id, threads);
        if (r.size()) kn.pack(src, rs, cs, map, B.f, r.begin, r.end);
    }

    // C[0..M) x [c0, c1) (+)= A B, A(r, p) = A[r*rsa + p*csa]; c0 on a panel boundary.
    // With B2, also C2 (+)= A B2 (same depth, width and ldc), A read once.
    // g16: the bfloat16 kernel (null: kn.gemm16).
    void mm(std::size_t M, std::size_t c0, std::size_t c1, const T* A, std::size_t rsa, std::size_t csa,
            const Operand<T>& B, T* C, std::size_t ldc, bool accumulate, const Operand<T>* B2 = nullptr,
            T* C2 = nullptr, [[maybe_unused]] Gemm16Fn g16 = nullptr) const {
        if constexpr (std::is_same_v<T, float>) {
            if (bf16()) {
                const Gemm16Fn kernel = g16 ? g16 : kn.gemm16;
                kernel({M, c0, c1, A, rsa, csa, &B.h, C, ldc, accumulate, B2 ? &B2->h : nullptr, C2});
                return;
            }
        }
        kn.gemm({M, c0 / kn.NR, (c1 + kn.NR - 1) / kn.NR, A, rsa, csa, &B.f, C, ldc, accumulate, B2 ? &B2->f : nullptr,
                 C2});
    }

    // C[0..M) x [c0, c1) = I + A B, row r of I being init + (rows ? rows[r] : r) * ld_init
    // (ld_init = 0: the same row for all). The bfloat16 kernels start their
    // accumulators from I; the float ones from I copied into C first.
    void mm_init(std::size_t M, std::size_t c0, std::size_t c1, const T* A, std::size_t rsa, std::size_t csa,
                 const Operand<T>& B, T* C, std::size_t ldc, const T* init, const std::int32_t* rows,
                 std::size_t ld_init, [[maybe_unused]] Gemm16Fn g16 = nullptr) const {
        if constexpr (std::is_same_v<T, float>) {
            if (bf16()) {
                const Gemm16Fn kernel = g16 ? g16 : kn.gemm16;
                kernel({M, c0, c1, A, rsa, csa, &B.h, C, ldc, false, nullptr, nullptr, init, rows, ld_init});
                return;
            }
        }
        for (std::size_t r = 0; r < M; ++r) {
            const T* src = init + (rows ? static_cast<std::size_t>(rows[r]) : r) * ld_init;
            std::copy(src + c0, src + c1, C + r * ldc + c0);
        }
        mm(M, c0, c1, A, rsa, csa, B, C, ldc, true);
    }

    // Dropout of layer l's output at step t for a thread's share (site l + 1).
    void drop_outputs(std::size_t l, std::size_t t, const Share& w) {
        Layer& a = layers[l];
        const std::size_t m = lay.m;
        const Range& u = w.u;
        const T scale = dropout.scale<T>();
        const std::uint32_t th = dropout.threshold();
        for (std::size_t s = w.s.begin; s < w.s.end; ++s) {
            const std::size_t row = (t * B + s) * m;
            std::uint8_t* keep = a.keep.data() + row + u.begin;
            kn.dropout_keep(dropout.row_key(s, t, l + 1), u.begin, u.end, th, keep);
            const T* h = a.H.data() + row + B * m;
            T* xd = a.Xd.data() + row;
            for (std::size_t k = u.begin; k < u.end; ++k) xd[k] = keep[k - u.begin] ? h[k] * scale : T(0);
        }
    }

    // dst rows [r0, r1) = src * (kept ? scale : 0), with the masks of `a`'s output.
    void undrop(const Layer& a, const T* src, T* dst, std::size_t r0, std::size_t r1) const {
        const std::size_t m = lay.m;
        const T scale = dropout.scale<T>();
        for (std::size_t i = r0 * m; i < r1 * m; ++i) dst[i] = a.keep[i] ? src[i] * scale : T(0);
    }
};

}  // namespace charrnn
