// Bindings of the evaluation topic: evaluate_loss and numerical_grads.
#include <sstream>

#include "arrays.hpp"
#include "evaluate.hpp"
#include "gradcheck.hpp"

namespace charrnn::binding {
namespace {

template <typename T>
py::tuple evaluate_impl(py::handle params, const ParamInfo& info, py::handle data_obj, py::handle h0, std::size_t B,
                        std::size_t threads, Precision prec) {
    const Arrays<T> P = load_params<T>(params, info, false);
    const py::array data = index_array(data_obj, "data", false);
    const std::size_t N = static_cast<std::size_t>(data.shape(0));
    if (N < 2) fail_value("data has " + std::to_string(N) + " characters; the loss needs at least 2");
    check_index_range(data, "data", 0, N, info.lay.K);
    py::array_t<T> h = initial_states<T>(h0, info.lay, 1);
    T* hs = h.mutable_data();
    double loss = 0.0;
    with_index_type(data, "data", [&](auto* d) {
        py::gil_scoped_release nogil;
        loss = evaluate_text(info.lay, P.ptrs, d, N, hs, B, threads, prec);
    });
    h.resize({info.lay.L, info.lay.S() * info.lay.m});
    return py::make_tuple(loss, h);
}

template <typename T>
py::dict numerical_impl(py::handle params, const ParamInfo& info, py::handle X, py::handle Y, py::handle h0,
                        const Dropout& drop, double step, std::size_t threads) {
    const Arrays<T> P = load_params<T>(params, info, false);
    const Chunk c = read_chunk(X, Y, info.lay.K);
    py::array_t<T> h = initial_states<T>(h0, info.lay, c.B);
    const auto specs = info.lay.arrays();
    std::vector<std::vector<double>> wide(specs.size());
    std::vector<const double*> in;
    for (std::size_t i = 0; i < specs.size(); ++i) {
        wide[i].assign(P.ptrs[i], P.ptrs[i] + specs[i].size());
        in.push_back(wide[i].data());
    }
    std::vector<double> states(h.data(), h.data() + h.size());
    py::dict out;
    std::vector<double*> ptrs;
    for (std::size_t i = 0; i < specs.size(); ++i) {
        py::array_t<double> a = specs[i].cols ? py::array_t<double>({specs[i].rows, specs[i].cols})
                                              : py::array_t<double>(specs[i].rows);
        ptrs.push_back(a.mutable_data());
        out[py::str(P.keys[i])] = a;
    }
    with_chunk(c, [&](auto* x, auto* y) {
        py::gil_scoped_release nogil;
        numerical_grads(info.lay, in, drop, x, y, c.B, c.n, states.data(), step, ptrs, threads);
    });
    return out;
}

}  // namespace

void bind_eval(py::module_& m) {
    m.def(
        "evaluate_loss",
        [](py::handle params, py::handle data, py::handle h0, py::handle cell, py::handle batch_size,
           py::handle threads, py::handle precision) {
            const ParamInfo info = inspect_params(params, cell);
            const std::size_t B = positive_count(batch_size, "batch_size");
            const std::size_t nt = thread_count(threads);
            const Precision prec = precision_for(choice<Precision>(precision), info);
            return with_scalar(info.scalar, [&](auto v) {
                return evaluate_impl<decltype(v)>(params, info, data, h0, B, nt, prec);
            });
        },
        py::arg("params"), py::arg("data"), py::arg("h0"), py::kw_only(), py::arg("cell"), py::arg("batch_size"),
        py::arg("threads"), py::arg("precision"),
        "Summed loss of predicting data[1:] from data[:-1], forward only, by up to batch_size streams over "
        "contiguous segments, the matrix products in `precision` ('full' or 'bfloat16'). Returns (loss, h "
        "(layers, S*m) at the end of the text).");

    m.def(
        "numerical_grads",
        [](py::handle params, py::handle X, py::handle Y, py::handle h0, py::handle cell, py::handle h,
           py::handle dropout, py::handle seed, py::handle update, py::handle threads) {
            const ParamInfo info = inspect_params(params, cell);
            const double step = positive_finite(h, "h");
            Dropout drop = dropout_config(dropout, seed);
            drop.update = count(update, "update");
            const std::size_t nt = thread_count(threads);
            return with_scalar(info.scalar, [&](auto v) {
                return numerical_impl<decltype(v)>(params, info, X, Y, h0, drop, step, nt);
            });
        },
        py::arg("params"), py::arg("X"), py::arg("Y"), py::arg("h0"), py::kw_only(), py::arg("cell"), py::arg("h"),
        py::arg("dropout"), py::arg("seed"), py::arg("update"), py::arg("threads"),
        "Centred differences (L(p + h) - L(p - h)) / 2h of the chunk's summed loss for every parameter entry, "
        "the losses evaluated in long double, the entries shared by `threads` workers (the result does not "
        "depend on how many). Returns a dict of float64 arrays keyed like params.");
}

}  // namespace charrnn::binding
