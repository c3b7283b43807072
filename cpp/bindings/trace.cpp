// Bindings of the trace topic: trace.
#include "arrays.hpp"
#include "trace.hpp"

namespace charrnn::binding {
namespace {

template <typename T>
py::tuple trace_impl(py::handle params, const ParamInfo& info, py::handle data_obj, py::handle h0, std::size_t k,
                     bool states, std::size_t B, std::size_t threads, Precision prec) {
    const NetLayout& lay = info.lay;
    const Arrays<T> P = load_params<T>(params, info, false);
    const py::array data = index_array(data_obj, "data", false);
    const std::size_t N = static_cast<std::size_t>(data.shape(0));
    if (N < 2) fail_value("data has " + std::to_string(N) + " characters; a trace needs at least 2");
    check_index_range(data, "data", 0, N, lay.K);
    if (k > lay.K)
        fail_value("top_k must be at most the vocabulary size K = " + std::to_string(lay.K) + ", got " +
                   std::to_string(k));
    py::array_t<T> h = initial_states<T>(h0, lay, 1);
    const std::size_t rows = N - 1;
    py::array_t<double> nll(static_cast<py::ssize_t>(rows));
    py::array_t<T> prob(static_cast<py::ssize_t>(rows));
    py::array_t<std::int32_t> top_index({rows, k});
    py::array_t<T> top_prob({rows, k});
    py::object hidden = py::none(), cell = py::none();
    TraceOut<T> out;
    out.top_k = k;
    out.nll = nll.mutable_data();
    out.prob = prob.mutable_data();
    out.top_index = top_index.mutable_data();
    out.top_prob = top_prob.mutable_data();
    if (states) {
        py::array_t<T> hs({lay.L, rows, lay.m});
        out.hidden = hs.mutable_data();
        hidden = hs;
        if (lay.S() == 2) {
            py::array_t<T> cs({lay.L, rows, lay.m});
            out.cell = cs.mutable_data();
            cell = cs;
        }
    }
    T* state = h.mutable_data();
    with_index_type(data, "data", [&](auto* d) {
        py::gil_scoped_release nogil;
        trace_text(lay, P.ptrs, d, N, state, B, threads, out, prec);
    });
    h.resize({lay.L, lay.S() * lay.m});
    return py::make_tuple(nll, prob, top_index, top_prob, hidden, cell, h);
}

}  // namespace

void bind_trace(py::module_& m) {
    m.def(
        "trace",
        [](py::handle params, py::handle data, py::handle h0, py::handle cell, py::handle top_k, py::handle states,
           py::handle batch_size, py::handle threads, py::handle precision) {
            const ParamInfo info = inspect_params(params, cell);
            const std::size_t k = count(top_k, "top_k");
            const bool keep_states = flag(states, "states");
            const std::size_t B = positive_count(batch_size, "batch_size");
            const std::size_t nt = thread_count(threads);
            const Precision prec = precision_for(choice<Precision>(precision), info);
            return with_scalar(info.scalar, [&](auto v) {
                return trace_impl<decltype(v)>(params, info, data, h0, k, keep_states, B, nt, prec);
            });
        },
        py::arg("params"), py::arg("data"), py::arg("h0"), py::kw_only(), py::arg("cell"), py::arg("top_k"),
        py::arg("states"), py::arg("batch_size"), py::arg("threads"), py::arg("precision"),
        "The forward pass of evaluate_loss over data (its matrix products in `precision`, as there), kept at "
        "every position i (having read data[i], predicting data[i+1]). Returns (nll (N-1,) float64: "
        "-log p(data[i+1]); prob (N-1,): p(data[i+1]); top_index (N-1, top_k) int32 and top_prob (N-1, "
        "top_k): the most probable next characters, ties by the lower index; hidden (layers, N-1, m) or "
        "None unless states; cell (layers, N-1, m) for an lstm, else None; h (layers, S*m) at the end of "
        "the text).");
}

}  // namespace charrnn::binding
