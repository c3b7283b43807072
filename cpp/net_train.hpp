// Training walks and sampling for the general network (network.hpp), with
// the optimisers of optim.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "network.hpp"
#include "optim.hpp"
#include "sampling.hpp"

namespace charrnn {

struct NetWalk {
    std::size_t pos = 0, wraps = 0, steps_done = 0;
    bool diverged = false;  // stopped on a non-finite loss (that step not applied)
};

// The classic walk through data[0..N): chunk data[pos..pos+T) -> data[pos+1..pos+T+1);
// when a whole chunk no longer fits, restart at 0 with a zero state.
// params/s1/s2 are flat pointer lists in NetLayout order (s2 only for adam);
// state (L x S*m) is updated in place; t is the optimiser's step count.
template <typename T, typename I>
NetWalk net_train_walk(const NetLayout& lay, const std::vector<T*>& params, const std::vector<T*>& s1,
                       const std::vector<T*>& s2, const I* data, std::size_t N, T* state, std::size_t pos,
                       std::size_t n_steps, std::size_t seq_len, const OptConfig& cfg, std::uint64_t& t,
                       T* losses) {
    const std::vector<ArraySpec> specs = lay.arrays();
    std::size_t total = 0;
    for (const auto& s : specs) total += s.size();
    std::vector<T> grad(total);
    std::vector<T*> g;
    std::vector<OptSlot<T>> slots;
    for (std::size_t i = 0, off = 0; i < specs.size(); off += specs[i].size(), ++i) {
        g.push_back(grad.data() + off);
        slots.push_back({params[i], grad.data() + off, s1[i], s2.empty() ? nullptr : s2[i], specs[i].size()});
    }
    const NetView<T> Pv(lay, params);
    Network<T> net(lay);
    NetWalk w;
    w.pos = pos;
    std::vector<T> next_state(lay.state_size());
    for (std::size_t step = 0; step < n_steps; ++step) {
        // The state and the walk change only once the step is applied.
        const ChunkPlan plan = ChunkPlan::at(w.pos, seq_len, N);
        if (plan.wrap) {
            std::fill(next_state.begin(), next_state.end(), T(0));
        } else {
            std::copy(state, state + lay.state_size(), next_state.begin());
        }
        const I* chunk = data + plan.start;
        const double loss = net.loss_and_grads(Pv, chunk, chunk + 1, seq_len, next_state.data(), g);
        if (!std::isfinite(loss)) {
            w.diverged = true;
            break;
        }
        optimizer_update(slots, cfg, t);
        std::copy(next_state.begin(), next_state.end(), state);
        losses[step] = static_cast<T>(loss);
        plan.commit(seq_len, w.pos, w.wraps);
        ++w.steps_done;
    }
    return w;
}

// The general-network sampler: state (L x S*m) is updated in place; see sample_loop.
template <typename T, typename I>
void net_sample(const NetLayout& lay, const NetView<T>& Pv, T* state, const I* prime, std::size_t n_prime,
                std::size_t n, double temperature, const SampleOptions& opt, std::uint64_t seed,
                std::int32_t* out) {
    const std::size_t K = lay.K, m = lay.m;
    Network<T> net(lay);
    net.prepare(Pv);
    net.resize(1);
    auto advance = [&](std::size_t x) {
        net.x[0] = static_cast<std::int32_t>(x);
        net.forward_hidden(Pv, state);
        net.final_state(state);
    };
    // o = V h_top + c
    auto logits = [&](T* o) {
        const T* h = state + (lay.L - 1) * lay.S() * m;
        std::copy(Pv.c, Pv.c + K, o);
        net.kn.gemm({1, K, m, h, m, 1, net.VT.data(), K, o, K, true});
    };
    sample_loop<T>(net.kn, K, prime, n_prime, n, temperature, opt, seed, out, advance, logits);
}

}  // namespace charrnn
