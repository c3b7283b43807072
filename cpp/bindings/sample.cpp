// Bindings of the sampling topic: sample.
#include <cmath>
#include <limits>
#include <sstream>

#include "arrays.hpp"
#include "sampling.hpp"

namespace charrnn::binding {
namespace {

template <typename T>
py::tuple sample_impl(py::handle params, const ParamInfo& info, py::handle h0, py::handle prime_obj, std::size_t n,
                      double temperature, std::uint64_t seed, const SampleOptions& opt, std::size_t threads) {
    if (!std::isfinite(static_cast<T>(1.0 / temperature))) {
        std::ostringstream s;
        s << "temperature = " << temperature << " is too small for the parameters' float type: 1/temperature "
          << "overflows; the smallest allowed is about " << 1.0 / static_cast<double>(std::numeric_limits<T>::max());
        fail_value(s.str());
    }
    const Arrays<T> P = load_params<T>(params, info, false);
    const py::array prime = index_array(prime_obj, "prime", false);
    const std::size_t n_prime = static_cast<std::size_t>(prime.shape(0));
    if (n_prime == 0) fail_value("prime is empty; give at least one character index to start from");
    check_index_range(prime, "prime", 0, n_prime, info.lay.K);
    py::array_t<T> h = initial_states<T>(h0, info.lay, 1);
    py::array_t<std::int32_t> out(static_cast<py::ssize_t>(n));
    T* hs = h.mutable_data();
    std::int32_t* idx = out.mutable_data();
    with_index_type(prime, "prime", [&](auto* x) {
        py::gil_scoped_release nogil;
        sample(info.lay, P.ptrs, hs, x, n_prime, n, temperature, opt, seed, idx, threads);
    });
    h.resize({info.lay.L, info.lay.S() * info.lay.m});
    return py::make_tuple(out, h);
}

}  // namespace

void bind_sample(py::module_& m) {
    m.def(
        "sample",
        [](py::handle params, py::handle h0, py::handle prime, py::handle n, py::handle cell, py::handle temperature,
           py::handle seed, py::handle top_k, py::handle top_p, py::handle greedy, py::handle threads) {
            const ParamInfo info = inspect_params(params, cell);
            const std::size_t count_ = count(n, "n");
            if (count_ > kMaxCount) fail_value("n is too large: " + std::to_string(count_) + " is more than 2**32 "
                                               "characters in one call; draw them in several calls");
            const double temp = positive_finite(temperature, "temperature");
            const std::uint64_t s = seed_value(seed, "seed");
            const SampleOptions opt = sample_options(top_k, top_p, greedy);
            const std::size_t nt = thread_count(threads);
            return with_scalar(info.scalar, [&](auto v) {
                return sample_impl<decltype(v)>(params, info, h0, prime, count_, temp, s, opt, nt);
            });
        },
        py::arg("params"), py::arg("h0"), py::arg("prime"), py::kw_only(), py::arg("n"), py::arg("cell"),
        py::arg("temperature"), py::arg("seed"), py::arg("top_k"), py::arg("top_p"), py::arg("greedy"),
        py::arg("threads"),
        "Feed prime from h0 (None: zeros), then draw n characters from softmax(o / temperature), filtered by "
        "top_k (0: off), top_p (1: off) or greedy, by up to `threads` threads (one where the weights are small). "
        "Returns (indices (n,) int32, h (layers, S*m)).");
}

}  // namespace charrnn::binding
