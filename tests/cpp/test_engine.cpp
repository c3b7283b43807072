// The network engine tested without Python, the way the bindings use it:
// chunk_loss_and_grads (train.hpp) for the loss and the backward pass,
// numerical_grads (gradcheck.hpp, losses in long double) for centred
// differences of the same loss.
//
//  - forward: with all-zero parameters every prediction is uniform, so the
//    summed loss is exactly B * n * ln K;
//  - backward: the gradients of rnn, lstm and gru stacks of 1 and 2 layers,
//    over several streams, with and without dropout, agree with the centred
//    differences to a relative error below 1e-6 (the truncation error at
//    h = 1e-4 is O(h^2) relative, ~1e-8; rounding in double adds ~1e-12);
//  - the final states agree with a second forward pass over the same chunk;
//  - thread-count independence: the loss, the gradients and the final states
//    of 1, 2 and 3 worker threads, splitting the recurrences by units and by
//    streams, are bit-identical, in float64 and float32, on sizes large
//    enough to be split between the threads;
//  - the paired product of the weight gradients (two products of one A, B2
//    and C2 in GemmArgs) gives the bits of the two products one at a time,
//    on every float kernel this CPU has;
//  - depth blocks of KC and of KC / 2 (half_depth_blocks, gemm.hpp) give the
//    same bits on every float kernel this CPU has, and the AVX-512 float32
//    table takes the per-shape choice exactly where the L1 holds 48 KB;
//  - the trace (trace.hpp): its row losses sum to evaluate_text's loss, its
//    states at position i are bit for bit the final states of evaluating the
//    text up to i, its top-k is every character ranked, and 1, 2 and 3
//    threads give bit-identical traces;
//  - sampling (sampling.hpp): stream_team's rule, and 1, 2 and 3 threads draw
//    the same characters and leave the same state, with and without filters;
//    so do a shorter call (the same first characters) and n = 0.
//
// Prints one line per check and closes with "N passed, M failed"; exits 1 if
// anything failed. Built by CMake with -DCHARRNN_BUILD_TESTS=ON (see
// CMakeLists.txt) and run by ctest.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "evaluate.hpp"
#include "gradcheck.hpp"
#include "sampling.hpp"
#include "trace.hpp"
#include "train.hpp"

#include "check.hpp"

using namespace charrnn;

namespace {

void check(bool ok, const std::string& what) { charrnn_test::tally.check(ok, what); }

std::string describe(const NetLayout& lay) {
    return std::string(name_of(lay.cell)) + " K=" + std::to_string(lay.K) + " m=" + std::to_string(lay.m) +
           " layers=" + std::to_string(lay.L);
}

// A network's parameters as one flat buffer per array, in layout order.
template <typename T>
struct Net {
    NetLayout lay;
    std::vector<std::vector<T>> arrays;

    Net(const NetLayout& l, std::uint64_t seed, double sig, double bias) : lay(l) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<double> w(0.0, sig);
        std::uniform_real_distribution<double> b(-bias, bias);
        for (const auto& spec : lay.arrays()) {
            std::vector<T> a(spec.size());
            for (auto& v : a) v = static_cast<T>(spec.cols ? w(rng) : b(rng));
            arrays.push_back(std::move(a));
        }
    }
    std::vector<T*> ptrs() {
        std::vector<T*> p;
        for (auto& a : arrays) p.push_back(a.data());
        return p;
    }
    std::vector<const T*> const_ptrs() const {
        std::vector<const T*> p;
        for (const auto& a : arrays) p.push_back(a.data());
        return p;
    }
    std::vector<std::vector<T>> zeros() const {
        std::vector<std::vector<T>> z;
        for (const auto& a : arrays) z.emplace_back(a.size(), T(0));
        return z;
    }
};

template <typename T>
std::vector<T*> pointers(std::vector<std::vector<T>>& arrays) {
    std::vector<T*> p;
    for (auto& a : arrays) p.push_back(a.data());
    return p;
}

struct Chunk {
    std::size_t B, n;
    std::vector<int> X, Y;  // B x n, stream-major
};

Chunk random_chunk(std::size_t K, std::size_t B, std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> c(0, static_cast<int>(K) - 1);
    Chunk ch{B, n, std::vector<int>(B * n), std::vector<int>(B * n)};
    for (auto& x : ch.X) x = c(rng);
    for (auto& y : ch.Y) y = c(rng);
    return ch;
}

template <typename T>
std::vector<T> random_states(const NetLayout& lay, std::size_t B, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-0.5, 0.5);
    std::vector<T> h(B * lay.state_size());
    for (auto& v : h) v = static_cast<T>(u(rng));
    return h;
}

// ---------------------------------------------------------------- forward

void test_uniform_loss(Cell cell, std::size_t L) {
    const NetLayout lay{cell, 11, 6, L};
    Net<double> net(lay, 1, 0.0, 0.0);  // every weight and bias 0
    const Chunk ch = random_chunk(lay.K, 2, 9, 2);
    std::vector<double> h = random_states<double>(lay, ch.B, 3);
    auto g = net.zeros();
    const double loss = chunk_loss_and_grads<double>(lay, 1, net.ptrs(), Dropout{}, ch.X.data(), ch.Y.data(), ch.B,
                                                     ch.n, h.data(), pointers(g));
    const double want = static_cast<double>(ch.B * ch.n) * std::log(static_cast<double>(lay.K));
    check(std::fabs(loss - want) <= 1e-12 * want,
          "forward, " + describe(lay) + ": zero parameters give the uniform loss B n ln K");
}

// ---------------------------------------------------------------- backward

double max_rel_err(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
    double worst = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i)
        for (std::size_t j = 0; j < a[i].size(); ++j) {
            const double den = std::fabs(a[i][j]) + std::fabs(b[i][j]);
            // entries below 1e-9 in both are at the differences' noise floor, not gradients to compare
            if (den > 1e-9) worst = std::max(worst, std::fabs(a[i][j] - b[i][j]) / den);
        }
    return worst;
}

void test_gradients(Cell cell, std::size_t L, double dropout) {
    const NetLayout lay{cell, 7, 5, L};
    // Weights and biases large enough that every gate's gradient is well above
    // the differences' noise floor (at the training scale, 0.01, many are not).
    Net<double> net(lay, 10 + L, 0.15, 0.2);
    const Chunk ch = random_chunk(lay.K, 2, 6, 20 + L);
    const std::vector<double> h0 = random_states<double>(lay, ch.B, 30 + L);
    Dropout drop;
    drop.p = dropout;
    drop.seed = 1234;
    drop.update = 5;

    auto analytic = net.zeros();
    std::vector<double> h = h0;
    const double loss = chunk_loss_and_grads<double>(lay, 1, net.ptrs(), drop, ch.X.data(), ch.Y.data(), ch.B, ch.n,
                                                     h.data(), pointers(analytic));
    auto numeric = net.zeros();
    numerical_grads(lay, net.const_ptrs(), drop, ch.X.data(), ch.Y.data(), ch.B, ch.n, h0.data(), 1e-4,
                    pointers(numeric));
    const double err = max_rel_err(analytic, numeric);
    char line[160];
    std::snprintf(line, sizeof line, "backward, %s, 2 streams, dropout %.1f: max relative error %.2e < 1e-6 (loss %.4f)",
                  describe(lay).c_str(), dropout, err, loss);
    check(std::isfinite(loss) && err < 1e-6, line);

    // Workers share the entries, each computing its own as one thread would:
    // 2 and 3 of them (3 splits inside arrays) give every entry bit for bit.
    for (std::size_t threads : {2, 3}) {
        auto shared = net.zeros();
        numerical_grads(lay, net.const_ptrs(), drop, ch.X.data(), ch.Y.data(), ch.B, ch.n, h0.data(), 1e-4,
                        pointers(shared), threads);
        check(shared == numeric, "numerical gradients, " + describe(lay) + ", " + std::to_string(threads) +
                                     " threads: bit for bit those of one thread");
    }

    // The final states are those of the forward pass: a second call from them
    // continues the text, so running the chunk again from h0 gives them again.
    std::vector<double> again = h0;
    auto g2 = net.zeros();
    chunk_loss_and_grads<double>(lay, 1, net.ptrs(), drop, ch.X.data(), ch.Y.data(), ch.B, ch.n, again.data(),
                                 pointers(g2));
    check(again == h && h != h0, "states, " + describe(lay) + ": the final states are reproducible and moved");
}

// The gate arrays' rows get one cache line more exactly where G*m values
// fill a multiple of 2 KB. An LSTM of 64 units has such rows in float64 and
// not in float32: the two engines, given the same parameters (float32
// values), must agree to float32 rounding. Rows misplaced by the padding
// would give gradients wrong by their own size, not by 1e-6 of it.
void test_gate_stride() {
    check(gate_stride<float>(1024) == 1040 && gate_stride<float>(512) == 528 && gate_stride<double>(256) == 264,
          "gate stride: rows of 4 KB and 2 KB get 64 bytes more (LSTM 256 and 128 in float32, 64 in float64)");
    check(gate_stride<float>(1152) == 1152 && gate_stride<double>(100) == 100 && gate_stride<float>(256) == 256,
          "gate stride: other rows keep G*m (GRU 384, the classic m = 100, LSTM 64 in float32)");

    const NetLayout lay{Cell::lstm, 7, 64, 2};
    Net<float> nf(lay, 41, 0.15, 0.2);
    Net<double> nd(lay, 41, 0.15, 0.2);
    for (std::size_t i = 0; i < nf.arrays.size(); ++i)
        std::copy(nf.arrays[i].begin(), nf.arrays[i].end(), nd.arrays[i].begin());
    const Chunk ch = random_chunk(lay.K, 3, 20, 42);
    const std::vector<float> h0 = random_states<float>(lay, ch.B, 43);
    std::vector<float> hf = h0;
    std::vector<double> hd(h0.begin(), h0.end());
    auto gf = nf.zeros();
    auto gd = nd.zeros();
    for (const char* split : {"units", "streams"}) {
        setenv("CHARRNN_SPLIT", split, 1);
        const double lf = chunk_loss_and_grads<float>(lay, 2, nf.ptrs(), Dropout{}, ch.X.data(), ch.Y.data(), ch.B,
                                                      ch.n, hf.data(), pointers(gf));
        const double ld = chunk_loss_and_grads<double>(lay, 2, nd.ptrs(), Dropout{}, ch.X.data(), ch.Y.data(), ch.B,
                                                       ch.n, hd.data(), pointers(gd));
        double worst = 0.0;  // the largest of the arrays' relative errors, in the 2-norm
        for (std::size_t i = 0; i < gd.size(); ++i) {
            double diff = 0.0, norm = 0.0;
            for (std::size_t j = 0; j < gd[i].size(); ++j) {
                diff += (gd[i][j] - gf[i][j]) * (gd[i][j] - gf[i][j]);
                norm += gd[i][j] * gd[i][j];
            }
            worst = std::max(worst, std::sqrt(diff / norm));
        }
        char line[200];
        std::snprintf(line, sizeof line, "gate stride, %s, 2 threads split by %s: padded float64 rows and unpadded "
                      "float32 rows agree (loss %.2e, gradients %.2e, relative, < 1e-5)",
                      describe(lay).c_str(), split, std::fabs(lf - ld) / ld, worst);
        check(std::fabs(lf - ld) < 1e-5 * ld && worst < 1e-5, line);
    }
    unsetenv("CHARRNN_SPLIT");
}

// ---------------------------------------------------------------- threads

// team_size: one thread per kStepWorkPerThread multiply-adds of a step's
// recurrence, never more than asked, at least one; CHARRNN_TEAM=full gives
// every thread asked for (as main sets it for the thread tests below).
void test_team_size() {
    unsetenv("CHARRNN_TEAM");
    const NetLayout classic{Cell::rnn, 80, 100, 1}, wide{Cell::rnn, 80, 256, 1}, lstm{Cell::lstm, 80, 256, 2};
    struct Case {
        const NetLayout& lay;
        std::size_t B, threads, want;
    };
    const Case cases[] = {
        {classic, 16, 2, 1},  // 160,000 multiply-adds a step
        {classic, 32, 2, 1},  // 320,000: still under two threads' worth
        {classic, 64, 2, 2},  // 640,000
        {classic, 64, 3, 2},
        {wide, 16, 3, 3},     // 1,048,576
        {lstm, 32, 2, 2},     // 8,388,608
        {lstm, 32, 1, 1},
        {lstm, 32, 0, 1},
        {lstm, 1, 2, 1},      // one stream: sampling and single-stream evaluation
    };
    bool ok = true;
    for (const Case& c : cases) ok = ok && team_size(c.lay, c.B, c.threads) == c.want;
    check(ok, "team_size: one thread per 2^18 multiply-adds of a step, at most the threads asked for, at least 1");
    setenv("CHARRNN_TEAM", "full", 1);
    check(team_size(classic, 16, 3) == 3 && team_size(classic, 1, 2) == 2,
          "team_size: CHARRNN_TEAM=full uses every thread asked for");
}


template <typename T>
bool bits_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

template <typename T>
void test_threads(Cell cell, const char* type) {
    const NetLayout lay{cell, 40, 48, 2};
    Net<T> net(lay, 77, 0.1, 0.1);
    const Chunk ch = random_chunk(lay.K, 3, 20, 78);
    const std::vector<T> h0 = random_states<T>(lay, ch.B, 79);
    Dropout drop;
    drop.p = 0.25;
    drop.seed = 9;

    std::vector<std::vector<std::vector<T>>> grads;
    std::vector<std::vector<T>> states;
    std::vector<double> losses;
    std::vector<std::string> runs;
    for (const char* split : {"units", "streams"})
        for (std::size_t threads : {1, 2, 3}) {
            setenv("CHARRNN_SPLIT", split, 1);
            auto g = net.zeros();
            std::vector<T> h = h0;
            losses.push_back(chunk_loss_and_grads<T>(lay, threads, net.ptrs(), drop, ch.X.data(), ch.Y.data(), ch.B,
                                                     ch.n, h.data(), pointers(g)));
            grads.push_back(std::move(g));
            states.push_back(std::move(h));
            runs.push_back(std::to_string(threads) + " threads split by " + split);
        }
    unsetenv("CHARRNN_SPLIT");
    for (std::size_t k = 1; k < grads.size(); ++k) {
        bool same = std::memcmp(&losses[k], &losses[0], sizeof(double)) == 0 && bits_equal(states[k], states[0]);
        for (std::size_t i = 0; i < grads[0].size(); ++i) same = same && bits_equal(grads[k][i], grads[0][i]);
        check(same, std::string("threads, ") + describe(lay) + " " + type + ", 3 streams, dropout: " + runs[k] +
                        " give bit-identical loss, gradients and states to 1 thread");
    }
}

// ---------------------------------------------------------------- trace

// A trace's arrays, owned.
template <typename T>
struct Trace {
    std::vector<double> nll;
    std::vector<T> prob, top_prob, hidden, cell;
    std::vector<std::int32_t> top_index;
    std::vector<T> state;
    double loss = 0.0;

    bool operator==(const Trace& o) const {
        return bits_equal(nll, o.nll) && bits_equal(prob, o.prob) && bits_equal(top_prob, o.top_prob) &&
               bits_equal(hidden, o.hidden) && bits_equal(cell, o.cell) && bits_equal(top_index, o.top_index) &&
               bits_equal(state, o.state) && std::memcmp(&loss, &o.loss, sizeof loss) == 0;
    }
};

template <typename T>
Trace<T> run_trace(Net<T>& net, const std::vector<int>& data, const std::vector<T>& h0, std::size_t k,
                   std::size_t B, std::size_t threads) {
    const NetLayout& lay = net.lay;
    const std::size_t rows = data.size() - 1, states = lay.L * rows * lay.m;
    Trace<T> tr{std::vector<double>(rows), std::vector<T>(rows), std::vector<T>(rows * k), std::vector<T>(states),
                std::vector<T>(lay.S() == 2 ? states : 0), std::vector<std::int32_t>(rows * k), h0};
    TraceOut<T> out;
    out.top_k = k;
    out.nll = tr.nll.data();
    out.prob = tr.prob.data();
    out.top_index = tr.top_index.data();
    out.top_prob = tr.top_prob.data();
    out.hidden = tr.hidden.data();
    out.cell = lay.S() == 2 ? tr.cell.data() : nullptr;
    tr.loss = trace_text(lay, net.ptrs(), data.data(), data.size(), tr.state.data(), B, threads, out);
    return tr;
}

template <typename T>
void test_trace(Cell cell, const char* type, std::size_t m_units = 70) {
    // 70 units: more than one panel of units for the threads to share
    const NetLayout lay{cell, 13, m_units, 2};
    Net<T> net(lay, 5, 0.2, 0.3);
    std::mt19937_64 rng(6);
    std::uniform_int_distribution<int> c(0, static_cast<int>(lay.K) - 1);
    std::vector<int> data(150);  // 149 positions: chunks of 64, 64 and 21 steps
    for (auto& x : data) x = c(rng);
    const std::vector<T> h0 = random_states<T>(lay, 1, 7);
    const std::string what = describe(lay) + " " + type;
    const std::size_t rows = data.size() - 1, m = lay.m, SS = lay.state_size();

    for (std::size_t B : {1, 3}) {
        const Trace<T> tr = run_trace(net, data, h0, lay.K, B, 1);
        std::vector<T> h = h0;
        const double loss = evaluate_text(lay, net.ptrs(), data.data(), data.size(), h.data(), B, 1);
        double sum = 0.0;
        for (double v : tr.nll) sum += v;
        check(std::memcmp(&loss, &tr.loss, sizeof loss) == 0 && std::fabs(sum - loss) <= 1e-12 * loss &&
                  bits_equal(h, tr.state),
              "trace, " + what + ", " + std::to_string(B) + " stream(s): the row losses sum to evaluate_text's "
              "loss, the final states are its own");
        // every character ranked: a permutation, by decreasing probability, summing to 1
        bool ranked = true, consistent = true;
        for (std::size_t i = 0; i < rows; ++i) {
            std::vector<bool> seen(lay.K, false);
            double total = 0.0;
            for (std::size_t j = 0; j < lay.K; ++j) {
                const std::int32_t idx = tr.top_index[i * lay.K + j];
                const T p = tr.top_prob[i * lay.K + j];
                ranked = ranked && idx >= 0 && idx < static_cast<std::int32_t>(lay.K) && !seen[idx];
                if (idx >= 0 && idx < static_cast<std::int32_t>(lay.K)) seen[idx] = true;
                if (j > 0) ranked = ranked && p <= tr.top_prob[i * lay.K + j - 1];
                if (idx == data[i + 1]) consistent = consistent && p == tr.prob[i];
                total += static_cast<double>(p);
            }
            ranked = ranked && std::fabs(total - 1.0) < (sizeof(T) == 8 ? 1e-12 : 1e-5);
            const double rel = std::fabs(std::exp(-tr.nll[i]) - static_cast<double>(tr.prob[i])) / tr.prob[i];
            consistent = consistent && rel < (sizeof(T) == 8 ? 1e-12 : 1e-5);
        }
        const std::string streams = ", " + std::to_string(B) + " stream(s): ";
        check(ranked, "trace, " + what + streams + "top-k with k = K ranks every character once, by decreasing "
              "probability");
        check(consistent, "trace, " + what + streams + "p(next) is the ranked probability of the next character "
              "and exp(-row loss)");
    }

    // One stream: the states at position i are those of evaluating data[0..i+2) (i+1 inputs).
    const Trace<T> tr = run_trace(net, data, h0, 3, 1, 1);
    bool same = true;
    for (std::size_t i : {std::size_t(0), std::size_t(1), std::size_t(63), std::size_t(64), std::size_t(100), rows - 1}) {
        std::vector<T> h = h0;
        evaluate_text(lay, net.ptrs(), data.data(), i + 2, h.data(), 1, 1);
        for (std::size_t l = 0; l < lay.L; ++l) {
            const T* want = h.data() + l * lay.S() * m;
            same = same && std::memcmp(want, tr.hidden.data() + (l * rows + i) * m, m * sizeof(T)) == 0;
            if (lay.S() == 2) same = same && std::memcmp(want + m, tr.cell.data() + (l * rows + i) * m, m * sizeof(T)) == 0;
        }
    }
    check(same && SS > 0, "trace, " + what + ": the states at position i are bit for bit those of evaluating the "
          "text up to i");

    // An evaluation is training's forward pass: over one chunk of one stream, the same loss and final state.
    {
        const std::size_t n = 40;
        std::vector<T> he = h0, ht = h0;
        const double le = evaluate_text(lay, net.ptrs(), data.data(), n + 1, he.data(), 1, 1);
        auto g = net.zeros();
        const double lt = chunk_loss_and_grads<T>(lay, 1, net.ptrs(), Dropout{}, data.data(), data.data() + 1, 1, n,
                                                  ht.data(), pointers(g));
        check(std::memcmp(&le, &lt, sizeof le) == 0 && bits_equal(he, ht),
              "trace, " + what + ": evaluating 40 steps gives the loss and final state of training's forward pass");
    }

    const Trace<T> one = run_trace(net, data, h0, 5, 1, 1), three = run_trace(net, data, h0, 5, 3, 1);
    for (const char* split : {"units", "streams"})
        for (std::size_t threads : {2, 3}) {
            setenv("CHARRNN_SPLIT", split, 1);
            check(run_trace(net, data, h0, 5, 1, threads) == one && run_trace(net, data, h0, 5, 3, threads) == three,
                  "trace, " + what + ": " + std::to_string(threads) + " threads split by " + split +
                      " give a bit-identical trace to 1");
        }
    unsetenv("CHARRNN_SPLIT");
}

// ---------------------------------------------------------------- sampling

// stream_team: one thread per kStreamBytesPerThread of the largest layer's
// weights, never more than asked, at least one. Leaves CHARRNN_TEAM=full.
void test_stream_team() {
    unsetenv("CHARRNN_TEAM");
    const NetLayout classic{Cell::rnn, 80, 100, 1}, small{Cell::lstm, 80, 128, 1}, two{Cell::lstm, 80, 128, 2},
        lstm{Cell::lstm, 80, 256, 2};
    struct Case {
        const NetLayout& lay;
        std::size_t threads, bytes, want;
    };
    const Case cases[] = {
        {classic, 2, 8, 1},  // 80 KB of W_h
        {small, 2, 4, 1},    // 256 KB: one thread's worth
        {two, 2, 4, 2},      // W_x and W_h of layer 1: 512 KB
        {two, 3, 4, 2},
        {lstm, 2, 4, 2},     // 2 MB
        {lstm, 16, 4, 8},
        {lstm, 1, 4, 1},
        {lstm, 0, 4, 1},
    };
    bool ok = true;
    for (const Case& c : cases) ok = ok && stream_team(c.lay, c.threads, c.bytes) == c.want;
    check(ok, "stream_team: one thread per 256 KB of the largest layer's weights, at most the threads asked for, "
              "at least 1");
    setenv("CHARRNN_TEAM", "full", 1);
    check(stream_team(classic, 3, 8) == 3, "stream_team: CHARRNN_TEAM=full uses every thread asked for");
}

// The characters and final state of one sampling call.
template <typename T>
struct Drawn {
    std::vector<std::int32_t> out;
    std::vector<T> state;
    bool operator==(const Drawn& o) const { return bits_equal(out, o.out) && bits_equal(state, o.state); }
};

template <typename T>
Drawn<T> draw(Net<T>& net, const std::vector<T>& h0, const std::vector<int>& prime, std::size_t n,
              const SampleOptions& opt, std::size_t threads) {
    Drawn<T> d{std::vector<std::int32_t>(n), h0};
    sample(net.lay, net.ptrs(), d.state.data(), prime.data(), prime.size(), n, 0.8, opt, 12345, d.out.data(), threads);
    return d;
}

// A team draws what one thread draws: the same characters and the same
// state; a shorter call the same first characters; with n = 0, the state
// after the prime alone.
template <typename T>
void test_sampling_threads(Cell cell, const char* type) {
    const NetLayout lay{cell, 13, 70, 2};  // 70 units: more than one panel of units for the threads to share
    Net<T> net(lay, 21, 0.4, 0.3);
    const std::vector<T> h0 = random_states<T>(lay, 1, 22);
    const std::vector<int> prime{3, 1, 4, 1, 5};
    SampleOptions filtered;
    filtered.top_k = 6;
    filtered.top_p = 0.9;
    SampleOptions greedy;
    greedy.greedy = true;
    const std::string what = "sampling, " + describe(lay) + " " + type;
    for (const SampleOptions& opt : {SampleOptions{}, filtered, greedy}) {
        const std::string how = what + (opt.greedy ? ", greedy" : opt.filters() ? ", top-k and top-p" : "");
        const Drawn<T> one = draw(net, h0, prime, 150, opt, 1);
        std::set<std::int32_t> chars(one.out.begin(), one.out.end());
        check(chars.size() >= (opt.greedy ? 1u : 4u) && one.state != h0,
              how + ": the draws vary and the state moved (the comparison below has something to compare)");
        for (std::size_t threads : {2, 3}) {
            const Drawn<T> team = draw(net, h0, prime, 150, opt, threads);
            const Drawn<T> shorter = draw(net, h0, prime, 60, opt, threads);
            const bool prefix = bits_equal(shorter.out, std::vector<std::int32_t>(one.out.begin(), one.out.begin() + 60));
            const bool primed = draw(net, h0, prime, 0, opt, threads) == draw(net, h0, prime, 0, opt, 1);
            check(team == one && prefix && primed,
                  how + ": " + std::to_string(threads) + " threads draw the characters and leave the state of 1");
        }
    }
}

template <typename T>
void test_paired_products(const char* type) {
    std::mt19937 rng(11);
    std::normal_distribution<double> nd;
    std::vector<Isa> isas{Isa::baseline};
#if CHARRNN_X86_DISPATCH
    if (detect_isa() >= Isa::avx2) isas.push_back(Isa::avx2);
    if (detect_isa() >= Isa::avx512) isas.push_back(Isa::avx512);
#endif
    int same = 0, total = 0;
    for (Isa isa : isas) {
        const Kernels<T> k = select_kernels<T>(isa);
        for (int trial = 0; trial < 40; ++trial, ++total) {
            // sizes on both sides of the copied-A path (transposed, M and P >= 2 MR)
            const std::size_t M = 1 + rng() % 70, P = 1 + rng() % 300, N = 1 + rng() % 150, ldc = N + rng() % 9;
            const bool transposed = rng() % 2 == 1, acc = rng() % 2 == 1;
            auto random = [&](std::size_t n) {
                std::vector<T> v(n);
                for (auto& x : v) x = static_cast<T>(nd(rng));
                return v;
            };
            const std::vector<T> A = random(M * P), S1 = random(P * N), S2 = random(P * N), C0 = random(M * ldc),
                                 C20 = random(M * ldc);
            Packed<T> B1, B2;
            B1.resize(P, N, k.NR);
            B2.resize(P, N, k.NR);
            k.pack(S1.data(), N, 1, nullptr, B1, 0, B1.panels());
            k.pack(S2.data(), N, 1, nullptr, B2, 0, B2.panels());
            const std::size_t rsa = transposed ? 1 : P, csa = transposed ? M : 1, j1 = B1.panels();
            std::vector<T> C = C0, C2 = C20, D = C0, D2 = C20;
            k.gemm({M, 0, j1, A.data(), rsa, csa, &B1, C.data(), ldc, acc, &B2, C2.data()});
            k.gemm({M, 0, j1, A.data(), rsa, csa, &B1, D.data(), ldc, acc});
            k.gemm({M, 0, j1, A.data(), rsa, csa, &B2, D2.data(), ldc, acc});
            same += C == D && C2 == D2;
        }
    }
    check(same == total, std::string(type) + ": two products of one A equal the two one at a time, bit for bit (" +
                             std::to_string(same) + " of " + std::to_string(total) + ", every float level here)");
}

// The depth blocks of the float products (KC, or KC / 2 for some shapes on
// a core with a larger L1: half_depth_blocks in gemm.hpp) never change a
// sum's order, so every kernel set must give the same bits either way, on
// depths that span several blocks of both sizes, single and paired (B2, C2).
template <typename T>
void test_depth_blocks(const char* type) {
    struct Variants {
        Isa isa;
        void (*full)(const GemmArgs<T>&);
        void (*half)(const GemmArgs<T>&);
        void (*large_l1)(const GemmArgs<T>&);
    };
    std::vector<Variants> sets{{Isa::baseline, &KernelSet_baseline<T>::gemm, &KernelSet_baseline<T>::gemm_half_depth,
                                &KernelSet_baseline<T>::gemm_large_l1}};
#if CHARRNN_X86_DISPATCH
    if (detect_isa() >= Isa::avx2)
        sets.push_back({Isa::avx2, &KernelSet_avx2<T>::gemm, &KernelSet_avx2<T>::gemm_half_depth,
                        &KernelSet_avx2<T>::gemm_large_l1});
    if (detect_isa() >= Isa::avx512) {
        sets.push_back({Isa::avx512, &KernelSet_avx512<T>::gemm, &KernelSet_avx512<T>::gemm_half_depth,
                        &KernelSet_avx512<T>::gemm_large_l1});
        const bool per_shape = std::is_same_v<T, float> && l1d_bytes() >= kLargeL1;
        check(select_kernels<T>(Isa::avx512).gemm ==
                  (per_shape ? &KernelSet_avx512<T>::gemm_large_l1 : &KernelSet_avx512<T>::gemm),
              std::string(type) + ": the AVX-512 table takes " + (per_shape ? "the per-shape depth blocks" : "KC") +
                  " (L1 of " + std::to_string(l1d_bytes()) + " bytes)");
    }
#endif
    std::mt19937 rng(13);
    std::normal_distribution<double> nd;
    int same = 0, total = 0;
    for (const Variants& v : sets) {
        const std::size_t NR = select_kernels<T>(v.isa).NR;
        for (int trial = 0; trial < 40; ++trial, ++total) {
            // rows on both sides of 32 and of the copied-A path; depths from 0 to five blocks of 128;
            // every third trial paired, every fourth from the second panel on
            const std::size_t M = 1 + rng() % 70, P = rng() % 640, N = 1 + rng() % 150, ldc = N + rng() % 5;
            const bool transposed = rng() % 2 == 1, acc = rng() % 2 == 1, paired = trial % 3 == 0;
            std::vector<T> A(M * P), S(P * N), S2(P * N), C0(M * ldc);
            for (auto* vec : {&A, &S, &S2, &C0})
                for (auto& x : *vec) x = static_cast<T>(nd(rng));
            Packed<T> B, B2;
            B.resize(P, N, NR);
            B2.resize(P, N, NR);
            pack_panels(S.data(), N, 1, nullptr, B, 0, B.panels());
            pack_panels(S2.data(), N, 1, nullptr, B2, 0, B2.panels());
            const std::size_t rsa = transposed ? 1 : P, csa = transposed ? M : 1;
            const std::size_t j0 = trial % 4 == 1 && B.panels() > 1 ? 1 : 0;
            std::vector<T> out[3][2];
            void (*fns[3])(const GemmArgs<T>&) = {v.full, v.half, v.large_l1};
            for (int f = 0; f < 3; ++f) {
                out[f][0] = C0;
                out[f][1] = C0;
                GemmArgs<T> g{M, j0, B.panels(), A.data(), rsa, csa, &B, out[f][0].data(), ldc, acc};
                if (paired) {
                    g.B2 = &B2;
                    g.C2 = out[f][1].data();
                }
                fns[f](g);
            }
            const std::size_t bytes = M * ldc * sizeof(T);
            bool ok = true;
            for (int f = 1; f < 3; ++f)
                for (int c = 0; c < 2; ++c) ok = ok && std::memcmp(out[0][c].data(), out[f][c].data(), bytes) == 0;
            same += ok;
        }
    }
    check(same == total, std::string(type) + ": depth blocks of KC and of KC / 2 give the same bits (" +
                             std::to_string(same) + " of " + std::to_string(total) +
                             ", single and paired products, every float level here)");
}

}  // namespace

// Evaluation with bfloat16 products: the same loss and final state whatever
// the thread count, and a loss that differs from float32's by rounding only
// (bfloat16 keeps 8 significant bits: unit roundoff u = 2^-8; each product
// term carries at most 2u, far more than float32's ~1e-7, far less than a
// wrong index).
void test_bf16_evaluation(Cell cell, std::size_t m = 70) {
    const NetLayout lay{cell, 13, m, 2};
    Net<float> net(lay, 5, 0.2, 0.3);
    std::mt19937_64 rng(8);
    std::uniform_int_distribution<int> c(0, static_cast<int>(lay.K) - 1);
    std::vector<int> data(400);
    for (auto& x : data) x = c(rng);
    const std::vector<float> h0 = random_states<float>(lay, 1, 9);
    std::vector<float> full = h0, one = h0, two = h0;
    const double l32 = evaluate_text(lay, net.ptrs(), data.data(), data.size(), full.data(), 5, 1);
    const double l1 = evaluate_text(lay, net.ptrs(), data.data(), data.size(), one.data(), 5, 1, Precision::bf16);
    const double l2 = evaluate_text(lay, net.ptrs(), data.data(), data.size(), two.data(), 5, 2, Precision::bf16);
    const double u = std::ldexp(1.0, -8), gap = std::fabs(l1 - l32);
    const std::string what = describe(lay) + " float32, 5 streams";
    check(std::memcmp(&l1, &l2, sizeof l1) == 0 && bits_equal(one, two),
          "bfloat16 evaluation, " + what + ": 1 and 2 threads give the same bits");
    check(gap > 1e-6 * l32 && gap <= 2 * u * l32,
          "bfloat16 evaluation, " + what + ": differs from float32 by rounding only (" + std::to_string(gap) + ")");
}

int main() {
    std::printf("kernels: %s\n", isa_name(kernels<double>().isa));
    test_team_size();  // leaves CHARRNN_TEAM=full: the tests below split small networks on purpose
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru})
        for (std::size_t L : {1, 2}) test_uniform_loss(cell, L);
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru}) {
        test_gradients(cell, 1, 0.0);
        test_gradients(cell, 2, 0.0);
        test_gradients(cell, 2, 0.3);
    }
    test_gate_stride();
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru}) {
        test_threads<double>(cell, "float64");
        test_threads<float>(cell, "float32");
    }
    test_paired_products<double>("float64");
    test_paired_products<float>("float32");
    test_depth_blocks<double>("float64");
    test_depth_blocks<float>("float32");
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru}) {
        test_trace<double>(cell, "float64");
        test_trace<float>(cell, "float32");
        test_bf16_evaluation(cell);
    }
    // padded gate rows (gate_stride): LSTM 128 in float32, 64 in float64
    test_trace<float>(Cell::lstm, "float32", 128);
    test_trace<double>(Cell::lstm, "float64", 64);
    test_bf16_evaluation(Cell::lstm, 128);
    test_stream_team();
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru}) {
        test_sampling_threads<double>(cell, "float64");
        test_sampling_threads<float>(cell, "float32");
    }
    return charrnn_test::tally.finish();
}
