// First-order optimisers over a list of parameter arrays, with gradient
// clipping. With g the (clipped) gradient of one entry:
//   adagrad:  M <- M + g^2;                         theta <- theta - lr g / sqrt(M + eps)
//   rmsprop:  M <- gamma M + (1 - gamma) g^2;       theta <- theta - lr g / sqrt(M + eps)
//   adam:     t <- t + 1
//             m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
//             theta <- theta - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// AdaGrad is the same arithmetic, in the same order, as adagrad.hpp.
// Clipping, before the update:
//   elementwise:  g <- min(max(g, -clip), clip)
//   global_norm:  g <- g * min(1, clip / ||g||_2), the norm over ALL arrays
//   none:         g unchanged
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

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

// Applies one update to every slot; t is the step count (incremented here).
template <typename T>
void optimizer_update(const std::vector<OptSlot<T>>& slots, const OptConfig& cfg, std::uint64_t& t) {
    ++t;
    const T clip = static_cast<T>(cfg.clip);
    T scale = T(1);
    if (cfg.clip_mode == ClipMode::global_norm) {
        const double norm = global_grad_norm(slots);
        if (norm > cfg.clip) scale = static_cast<T>(cfg.clip / norm);
    }
    const T lr = static_cast<T>(cfg.lr), eps = static_cast<T>(cfg.eps);
    const T gamma = static_cast<T>(cfg.gamma), one_m_gamma = static_cast<T>(1.0 - cfg.gamma);
    const T b1 = static_cast<T>(cfg.beta1), one_m_b1 = static_cast<T>(1.0 - cfg.beta1);
    const T b2 = static_cast<T>(cfg.beta2), one_m_b2 = static_cast<T>(1.0 - cfg.beta2);
    const double td = static_cast<double>(t);
    const T bc1 = static_cast<T>(1.0 - std::pow(cfg.beta1, td));
    const T bc2 = static_cast<T>(1.0 - std::pow(cfg.beta2, td));
    for (const auto& sl : slots) {
        for (std::size_t i = 0; i < sl.n; ++i) {
            T g = sl.grad[i];
            if (cfg.clip_mode == ClipMode::elementwise) {
                g = g < -clip ? -clip : g;
                g = g > clip ? clip : g;
            } else if (cfg.clip_mode == ClipMode::global_norm) {
                g = g * scale;
            }
            switch (cfg.opt) {
                case Optimizer::adagrad: {
                    const T mi = sl.s1[i] + g * g;
                    sl.s1[i] = mi;
                    sl.theta[i] -= lr * g / std::sqrt(mi + eps);
                    break;
                }
                case Optimizer::rmsprop: {
                    const T mi = gamma * sl.s1[i] + one_m_gamma * (g * g);
                    sl.s1[i] = mi;
                    sl.theta[i] -= lr * g / std::sqrt(mi + eps);
                    break;
                }
                case Optimizer::adam: {
                    const T mi = b1 * sl.s1[i] + one_m_b1 * g;
                    const T vi = b2 * sl.s2[i] + one_m_b2 * (g * g);
                    sl.s1[i] = mi;
                    sl.s2[i] = vi;
                    sl.theta[i] -= lr * (mi / bc1) / (std::sqrt(vi / bc2) + eps);
                    break;
                }
            }
        }
    }
}

}  // namespace charrnn
