// The extension module charrnn_ext._core: one bind_* per topic (train, eval,
// sample, trace; arrays.hpp holds the checked-array helper they share), the layout
// of a network and the names of the choices the core understands.
#include <string>

#include "arrays.hpp"
#include "kernels.hpp"

namespace py = pybind11;
using namespace charrnn;
using namespace charrnn::binding;

namespace {

template <typename E>
py::tuple names() {
    py::list out;
    for (const char* n : Names<E>::list) out.append(n);
    return py::tuple(out);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() =
        "C++ core of charrnn_ext: one engine for stacks of rnn, lstm or gru layers with a softmax output, "
        "trained over B streams by a thread team with AdaGrad, RMSProp or Adam, evaluated and sampled. "
        "Every argument is required here; charrnn_ext's functions give the defaults.";
    bind_train(m);
    bind_eval(m);
    bind_sample(m);
    bind_trace(m);

    m.attr("CELLS") = names<Cell>();
    m.attr("OPTIMIZERS") = names<Optimizer>();
    m.attr("CLIP_MODES") = names<ClipMode>();

    m.def(
        "layout",
        [](py::handle cell, py::handle K, py::handle m_, py::handle layers) {
            const NetLayout lay{choice<Cell>(cell), positive_count(K, "K"), positive_count(m_, "m"),
                                positive_count(layers, "layers")};
            if (lay.K > 0x110000) fail_value("K must be at most 1114112 (the Unicode code points), got " + std::to_string(lay.K));
            if (lay.m > 65536) fail_value("m must be at most 65536, got " + std::to_string(lay.m));
            if (lay.L > 64) fail_value("layers must be at most 64, got " + std::to_string(lay.L));
            py::list out;
            for (const auto& s : lay.arrays()) {
                py::tuple shape = s.cols ? py::tuple(py::make_tuple(s.rows, s.cols)) : py::tuple(py::make_tuple(s.rows));
                out.append(py::make_tuple(s.name, s.alias.empty() ? py::object(py::none()) : py::str(s.alias), shape));
            }
            return out;
        },
        py::arg("cell"), py::arg("K"), py::arg("m"), py::arg("layers"),
        "The parameter arrays of a network, in the core's order: a list of (name, classic name or None, shape).");

    m.def(
        "simd_level", [] { return std::string(isa_name(kernels<double>().isa)); },
        "Instruction set of the kernels chosen for this CPU: 'avx512', 'avx2' or 'baseline'.");

    m.def(
        "bf16_path", [] { return std::string(isa_name(kernels<float>().isa16)); },
        "Kernel of the bfloat16 matrix products on this CPU: 'amx' (AMX-BF16 tiles), 'avx512bf16', or the float "
        "level ('avx512', 'avx2', 'baseline') when the portable kernel computes them.");

    m.def(
        "cpu_vendor", [] { return cpu_vendor(); },
        "The CPU's vendor as CPUID spells it ('GenuineIntel', 'AuthenticAMD', ...); '' on other architectures.");
}
