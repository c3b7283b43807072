// A fixed team of threads running one function SPMD-style, with a barrier
// between phases. Work is split by fixed rules (gemm.hpp split_range) over
// output rows or streams, never by racing for it, so results are identical
// for any thread count.
#pragma once

#include <atomic>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <system_error>
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

// Runs f(id) for id = 0..n-1, id 0 on the calling thread, and joins. The
// workers wait at a gate until the whole team exists: a thread that cannot be
// started (a process or system limit) is then an exception for the caller,
// with no worker left waiting at a barrier for a team member that never came.
template <typename F>
void run_team(std::size_t n, F&& f) {
    if (n <= 1) {
        f(std::size_t(0));
        return;
    }
    enum : int { wait = 0, go = 1, stand_down = 2 };
    std::atomic<int> gate{wait};
    auto member = [&f, &gate](std::size_t id) {
        int g;
        while ((g = gate.load(std::memory_order_acquire)) == wait) std::this_thread::yield();
        if (g == go) f(id);
    };
    std::vector<std::thread> workers;
    workers.reserve(n - 1);
    try {
        for (std::size_t id = 1; id < n; ++id) workers.emplace_back(member, id);
    } catch (const std::system_error& e) {
        gate.store(stand_down, std::memory_order_release);
        for (auto& w : workers) w.join();
        throw std::runtime_error("could not start worker thread " + std::to_string(workers.size() + 1) + " of " +
                                 std::to_string(n) + " (" + e.what() + "); nothing was changed, try fewer threads");
    } catch (...) {
        gate.store(stand_down, std::memory_order_release);
        for (auto& w : workers) w.join();
        throw;
    }
    gate.store(go, std::memory_order_release);
    f(std::size_t(0));
    for (auto& w : workers) w.join();
}

}  // namespace charrnn
