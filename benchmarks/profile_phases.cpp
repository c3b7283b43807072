// Per-phase timing of one update of the engine (cpp/engine.hpp), for the
// profile table in benchmarks/README.md. Built and run by
// `python -m benchmarks.profile` with the extension's compiler flags.
//
//   profile_phases CELL LAYERS M B T THREADS DTYPE   (DTYPE float32, float64 or bfloat16)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "train.hpp"

using namespace charrnn;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <typename T>
int run(Cell cell, std::size_t L, std::size_t m, std::size_t B, std::size_t n, std::size_t threads, Precision prec) {
    const std::size_t K = 80;
    const NetLayout lay{cell, K, m, L};
    std::mt19937 rng(1);
    std::normal_distribution<double> nd(0.0, 0.05);
    std::vector<std::vector<T>> arrays, grads, s1, s2;
    std::vector<T*> p, g, q1, q2;
    for (const auto& s : lay.arrays()) {
        arrays.emplace_back(s.size());
        for (auto& v : arrays.back()) v = static_cast<T>(nd(rng));
        grads.emplace_back(s.size());
        s1.emplace_back(s.size(), T(0));
        s2.emplace_back(s.size(), T(0));
    }
    for (std::size_t i = 0; i < arrays.size(); ++i) {
        p.push_back(arrays[i].data());
        g.push_back(grads[i].data());
        q1.push_back(s1[i].data());
        q2.push_back(s2[i].data());
    }
    OptConfig cfg;
    cfg.opt = Optimizer::adam;
    cfg.clip_mode = ClipMode::global_norm;
    cfg.eta = 2e-3;
    cfg.clip = 5.0;
    cfg.beta1 = 0.9;
    cfg.beta2 = 0.999;
    cfg.eps = 1e-8;
    Learner<T> tr(lay, B, threads, p, q1, q2, cfg, prec);
    Engine<T>& eng = tr.eng;
    if (eng.threads != threads)
        std::printf("(a step of this size is too small to share: the engine runs %zu thread(s), team_size in engine.hpp)\n\n",
                    eng.threads);
    eng.resize(B, n);
    for (std::size_t i = 0; i < B * n; ++i) {
        eng.inputs()[i] = static_cast<std::int32_t>(rng() % K);
        eng.targets()[i] = static_cast<std::int32_t>(rng() % K);
    }
    for (std::size_t s = 0; s < B; ++s) eng.zero_state(s);
    const NetParams<T>& P = tr.params();
    const int warm = 5, reps = 101;
    std::vector<double> t_prep, t_fwd, t_out, t_bwd, t_all;
    run_team(eng.threads, [&](std::size_t id) {
        for (int i = 0; i < warm + reps; ++i) {
            const double t0 = now();
            eng.prepare(P, id);
            const double t1 = now();
            eng.forward(id);
            const double t2 = now();
            eng.output(P, id, true);
            const double t3 = now();
            eng.backward(g, id);
            const double t4 = now();
            if (id == 0 && i >= warm) {
                t_prep.push_back(t1 - t0);
                t_fwd.push_back(t2 - t1);
                t_out.push_back(t3 - t2);
                t_bwd.push_back(t4 - t3);
                t_all.push_back(t4 - t0);
            }
        }
    });
    auto med = [](std::vector<double> v) {  // milliseconds
        std::sort(v.begin(), v.end());
        return v[v.size() / 2] * 1e3;
    };
    const double Gm = static_cast<double>(lay.Gm()), chars = static_cast<double>(B * n);
    // multiply-adds of the products: recurrences, input projections of layers > 0, output layer
    const double fwd = 2.0 * chars * (Gm * m * L + Gm * m * (L - 1) + K * m);
    std::printf("| prepare (pack weights) | %.4f | |\n", med(t_prep));
    std::printf("| forward (all layers) | %.4f | %.0f |\n", med(t_fwd), (fwd - 2.0 * chars * K * m) / med(t_fwd) / 1e6);
    std::printf("| output layer, softmax, dL/dh | %.4f | %.0f |\n", med(t_out), 4.0 * chars * K * m / med(t_out) / 1e6);
    std::printf("| backward (all layers, weight gradients) | %.4f | %.0f |\n", med(t_bwd),
                (2.0 * fwd - 4.0 * chars * K * m) / med(t_bwd) / 1e6);
    std::printf("| **one update without the optimiser** | **%.4f** | %.0f |\n", med(t_all), 3.0 * fwd / med(t_all) / 1e6);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::string(argv[1]) == "--machine") {
        std::string model = "unknown CPU";
        if (std::FILE* f = std::fopen("/proc/cpuinfo", "r")) {
            char line[512];
            while (std::fgets(line, sizeof line, f))
                if (std::string(line).rfind("model name", 0) == 0) {
                    model = std::string(line).substr(std::string(line).find(':') + 2);
                    model.erase(model.find_last_not_of("\n") + 1);
                    break;
                }
            std::fclose(f);
        }
        std::printf("Machine: %s; kernels: float %s, bfloat16 products %s\n", model.c_str(),
                    isa_name(kernels<float>().isa), isa_name(kernels<float>().isa16));
        return 0;
    }
    if (argc != 8) {
        std::fprintf(stderr, "usage: %s CELL LAYERS M B T THREADS float32|float64|bfloat16\n", argv[0]);
        return 2;
    }
    const std::string c = argv[1];
    const Cell cell = c == "lstm" ? Cell::lstm : c == "gru" ? Cell::gru : Cell::rnn;
    const std::size_t L = std::strtoul(argv[2], nullptr, 10), m = std::strtoul(argv[3], nullptr, 10),
                      B = std::strtoul(argv[4], nullptr, 10), n = std::strtoul(argv[5], nullptr, 10),
                      threads = std::strtoul(argv[6], nullptr, 10);
    const std::string dtype = argv[7];
    if (dtype == "float64") return run<double>(cell, L, m, B, n, threads, Precision::full);
    return run<float>(cell, L, m, B, n, threads, dtype == "bfloat16" ? Precision::bf16 : Precision::full);
}
