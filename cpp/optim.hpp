// First-order optimisers over a list of parameter arrays, with gradient
// clipping. With g the (clipped) gradient of one entry:
//   adagrad:  M <- M + g^2;                         theta <- theta - lr g / sqrt(M + eps)
//   rmsprop:  M <- gamma M + (1 - gamma) g^2;       theta <- theta - lr g / sqrt(M + eps)
//   adam:     t <- t + 1
//             m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
//             theta <- theta - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// AdaGrad is the same code as adagrad.hpp's (adagrad_entry, clip_value).
// Clipping, before the update:
//   elementwise:  g <- min(max(g, -clip), clip)
//   global_norm:  g <- g * min(1, clip / ||g||_2), the norm over ALL arrays
//   none:         g unchanged
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "adagrad.hpp"

namespace charrnn {

enum class Optimizer { adagrad, rmsprop, adam };
enum class ClipMode { elementwise, global_norm, none };

struct OptConfig {
    Optimizer opt = Optimizer::adagrad;
    double lr = 0.1;
    double clip = 5.0;
    ClipMode clip_mode = ClipMode::elementwise;
    double gamma = 0.9;   // rmsprop decay
    double beta1 = 0.9;   // adam
    double beta2 = 0.999;
    double eps = 1e-8;
};

// One parameter array, its gradient and its optimiser memory (s2 is adam's v only).
template <typename T>
struct OptSlot {
    T* theta;
    const T* grad;
    T* s1;
    T* s2;
    std::size_t n;
};

// sqrt(sum of g^2 over every slot), accumulated in double in slot order.
template <typename T>
double global_grad_norm(const std::vector<OptSlot<T>>& slots) {
    double s = 0.0;
    for (const auto& sl : slots)
        for (std::size_t i = 0; i < sl.n; ++i) s += static_cast<double>(sl.grad[i]) * static_cast<double>(sl.grad[i]);
    return std::sqrt(s);
}

// Per-step constants of an update, in T.
template <typename T>
struct OptCoeffs {
    T clip, scale, lr, eps, gamma, one_m_gamma, b1, one_m_b1, b2, one_m_b2, bc1, bc2;
};

// One slot's update with the clipping mode and the optimiser fixed at
// compile time, so the element loop has no branches left but the clamps.
template <ClipMode C, Optimizer O, typename T>
void update_slot(const OptSlot<T>& sl, const OptCoeffs<T>& k) {
    T* const theta = sl.theta;
    const T* const grad = sl.grad;
    T* const s1 = sl.s1;
    T* const s2 = sl.s2;
    for (std::size_t i = 0; i < sl.n; ++i) {
        T g = grad[i];
        if constexpr (C == ClipMode::elementwise) g = clip_value(g, k.clip);
        if constexpr (C == ClipMode::global_norm) g = g * k.scale;
        if constexpr (O == Optimizer::adagrad) {
            adagrad_entry(theta[i], s1[i], g, k.lr, k.eps);
        } else if constexpr (O == Optimizer::rmsprop) {
            const T mi = k.gamma * s1[i] + k.one_m_gamma * (g * g);
            s1[i] = mi;
            theta[i] -= k.lr * g / std::sqrt(mi + k.eps);
        } else {
            const T mi = k.b1 * s1[i] + k.one_m_b1 * g;
            const T vi = k.b2 * s2[i] + k.one_m_b2 * (g * g);
            s1[i] = mi;
            s2[i] = vi;
            theta[i] -= k.lr * (mi / k.bc1) / (std::sqrt(vi / k.bc2) + k.eps);
        }
    }
}

template <ClipMode C, Optimizer O, typename T>
void update_slots(const std::vector<OptSlot<T>>& slots, const OptCoeffs<T>& k) {
    for (const auto& sl : slots) update_slot<C, O>(sl, k);
}

template <ClipMode C, typename T>
void update_slots_for(Optimizer opt, const std::vector<OptSlot<T>>& slots, const OptCoeffs<T>& k) {
    switch (opt) {
        case Optimizer::adagrad: return update_slots<C, Optimizer::adagrad>(slots, k);
        case Optimizer::rmsprop: return update_slots<C, Optimizer::rmsprop>(slots, k);
        case Optimizer::adam: return update_slots<C, Optimizer::adam>(slots, k);
    }
}

// Applies one update to every slot; t is the step count (incremented here).
template <typename T>
void optimizer_update(const std::vector<OptSlot<T>>& slots, const OptConfig& cfg, std::uint64_t& t) {
    ++t;
    OptCoeffs<T> k;
    k.clip = static_cast<T>(cfg.clip);
    k.scale = T(1);
    if (cfg.clip_mode == ClipMode::global_norm) {
        const double norm = global_grad_norm(slots);
        if (norm > cfg.clip) k.scale = static_cast<T>(cfg.clip / norm);
    }
    k.lr = static_cast<T>(cfg.lr);
    k.eps = static_cast<T>(cfg.eps);
    k.gamma = static_cast<T>(cfg.gamma);
    k.one_m_gamma = static_cast<T>(1.0 - cfg.gamma);
    k.b1 = static_cast<T>(cfg.beta1);
    k.one_m_b1 = static_cast<T>(1.0 - cfg.beta1);
    k.b2 = static_cast<T>(cfg.beta2);
    k.one_m_b2 = static_cast<T>(1.0 - cfg.beta2);
    const double td = static_cast<double>(t);
    k.bc1 = static_cast<T>(1.0 - std::pow(cfg.beta1, td));
    k.bc2 = static_cast<T>(1.0 - std::pow(cfg.beta2, td));
    switch (cfg.clip_mode) {
        case ClipMode::elementwise: return update_slots_for<ClipMode::elementwise>(cfg.opt, slots, k);
        case ClipMode::global_norm: return update_slots_for<ClipMode::global_norm>(cfg.opt, slots, k);
        case ClipMode::none: return update_slots_for<ClipMode::none>(cfg.opt, slots, k);
    }
}

}  // namespace charrnn
