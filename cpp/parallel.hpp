// A fixed team of threads running one function SPMD-style, with a barrier
// between phases. Work is split by fixed rules (gemm.hpp split_range) over
// output rows or streams, never by racing for it, so results are identical
// for any thread count.
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace charrnn {

// Sense-reversing barrier: spins briefly, then yields (the machine may have
// fewer free cores than threads).
class SpinBarrier {
public:
    explicit SpinBarrier(std::size_t n) : n_(n), waiting_(0), phase_(0) {}

    void wait() {
        if (n_ <= 1) return;
        const unsigned phase = phase_.load(std::memory_order_acquire);
        if (waiting_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
            waiting_.store(0, std::memory_order_relaxed);
            phase_.store(phase + 1, std::memory_order_release);
            return;
        }
        for (unsigned spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
            if (spins > 2000) std::this_thread::yield();
        }
    }

private:
    std::size_t n_;
    std::atomic<std::size_t> waiting_;
    std::atomic<unsigned> phase_;
};

// Runs f(id) for id = 0..n-1, id 0 on the calling thread, and joins.
template <typename F>
void run_team(std::size_t n, F&& f) {
    if (n <= 1) {
        f(std::size_t(0));
        return;
    }
    std::vector<std::thread> workers;
    workers.reserve(n - 1);
    for (std::size_t id = 1; id < n; ++id) workers.emplace_back([&f, id] { f(id); });
    f(std::size_t(0));
    for (auto& w : workers) w.join();
}

}  // namespace charrnn
