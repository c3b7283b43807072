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
//    of 1, 2 and 3 worker threads are bit-identical, in float64 and float32,
//    on sizes large enough to be split between the threads.
//
// Prints one line per check and closes with "N passed, M failed"; exits 1 if
// anything failed. Built by CMake with -DCHARRNN_BUILD_TESTS=ON (see
// CMakeLists.txt) and run by ctest.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gradcheck.hpp"
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

    // The final states are those of the forward pass: a second call from them
    // continues the text, so running the chunk again from h0 gives them again.
    std::vector<double> again = h0;
    auto g2 = net.zeros();
    chunk_loss_and_grads<double>(lay, 1, net.ptrs(), drop, ch.X.data(), ch.Y.data(), ch.B, ch.n, again.data(),
                                 pointers(g2));
    check(again == h && h != h0, "states, " + describe(lay) + ": the final states are reproducible and moved");
}

// ---------------------------------------------------------------- threads

template <typename T>
bool bits_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
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
    for (std::size_t threads : {1, 2, 3}) {
        auto g = net.zeros();
        std::vector<T> h = h0;
        losses.push_back(chunk_loss_and_grads<T>(lay, threads, net.ptrs(), drop, ch.X.data(), ch.Y.data(), ch.B, ch.n,
                                                 h.data(), pointers(g)));
        grads.push_back(std::move(g));
        states.push_back(std::move(h));
    }
    for (std::size_t k = 1; k < grads.size(); ++k) {
        bool same = std::memcmp(&losses[k], &losses[0], sizeof(double)) == 0 && bits_equal(states[k], states[0]);
        for (std::size_t i = 0; i < grads[0].size(); ++i) same = same && bits_equal(grads[k][i], grads[0][i]);
        check(same, std::string("threads, ") + describe(lay) + " " + type + ", 3 streams, dropout: " +
                        std::to_string(k + 1) + " threads give bit-identical loss, gradients and states to 1");
    }
}

}  // namespace

int main() {
    std::printf("kernels: %s\n", isa_name(kernels<double>().isa));
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru})
        for (std::size_t L : {1, 2}) test_uniform_loss(cell, L);
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru}) {
        test_gradients(cell, 1, 0.0);
        test_gradients(cell, 2, 0.0);
        test_gradients(cell, 2, 0.3);
    }
    for (Cell cell : {Cell::rnn, Cell::lstm, Cell::gru}) {
        test_threads<double>(cell, "float64");
        test_threads<float>(cell, "float32");
    }
    return charrnn_test::tally.finish();
}
