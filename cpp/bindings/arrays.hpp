// The checked-array helper of the binding layer: everything the C++ core
// receives from Python passes through here. Arrays are checked (type, dtype,
// shape, contiguity, writability, values) and viewed in place without
// copying; scalars are checked against their allowed ranges; problems become
// TypeError / ValueError / IndexError with a message that names the argument
// and says what was expected. No numerical work and no default values live
// in the binding layer.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bf16.hpp"
#include "checks.hpp"
#include "dropout.hpp"
#include "layout.hpp"
#include "optim.hpp"
#include "sampling.hpp"
#include "walk.hpp"

namespace charrnn::binding {

namespace py = pybind11;

[[noreturn]] void fail_type(const std::string& msg);
[[noreturn]] void fail_value(const std::string& msg);
[[noreturn]] void fail_index(const std::string& msg);

std::string shape_str(const py::array& a);
std::string type_name(py::handle h);
std::string dtype_name(const py::array& a);

// ---------------------------------------------------------------- scalars

// The most updates or characters one call produces (its output array is allocated up front).
constexpr std::size_t kMaxCount = std::size_t(1) << 32;

std::size_t count(py::handle obj, const char* name, long long low = 0);  // an integer >= low (not a bool)
std::size_t positive_count(py::handle obj, const char* name);     // an integer >= 1
std::size_t thread_count(py::handle obj);                         // 1 .. 256
bool flag(py::handle obj, const char* name);                      // True or False (Python's or NumPy's)
std::uint64_t seed_value(py::handle obj, const char* name);       // an integer in [0, 2**64)
double positive_finite(py::handle obj, const char* name);         // a number > 0, finite
double unit_interval(py::handle obj, const char* name);           // a number in [0, 1)

template <typename E>
E choice(py::handle obj) {
    std::string allowed;
    for (std::size_t i = 0; i < std::size(Names<E>::list); ++i)
        allowed += (i ? ", '" : "'") + std::string(Names<E>::list[i]) + "'";
    if (!py::isinstance<py::str>(obj))
        fail_type(std::string(Names<E>::what) + " must be a string (" + allowed + "), got " + type_name(obj));
    const std::string v = obj.cast<std::string>();
    for (std::size_t i = 0; i < std::size(Names<E>::list); ++i)
        if (v == Names<E>::list[i]) return static_cast<E>(i);
    fail_value("unknown " + std::string(Names<E>::what) + " '" + v + "'; expected one of " + allowed);
}

Dropout dropout_config(py::handle p, py::handle seed);

// What one update reads besides the arrays: the optimiser, its learning rate
// and constants, the clipping and the dropout. Python passes them as one
// mapping, `options`, built from the option table by
// charrnn_ext.config.update_options; they are read in update_options() and
// nowhere else. Adding an option: its row in the table (update=True) and one
// read there; a key the mapping has and the reads do not is refused.
struct UpdateOptions {
    OptConfig opt;
    Dropout drop;
};
UpdateOptions update_options(py::handle options);
SampleOptions sample_options(py::handle top_k, py::handle top_p, py::handle greedy);

// ---------------------------------------------------------------- parameters

enum class Scalar { f32, f64 };

// What a parameter dict describes: the network's layout, whether its keys are
// the classic names (U, W, V, b, c) or the network ones (l0.Wx, ...), and the
// float type. `cell` None, or a cell name the parameters must match.
struct ParamInfo {
    NetLayout lay;
    bool classic_names = false;
    Scalar scalar = Scalar::f64;
};
ParamInfo inspect_params(py::handle params, py::handle cell);

// The precision of the matrix products, checked against the parameters:
// bfloat16 products need float32 parameters.
Precision precision_for(Precision p, const ParamInfo& info);

// A set of arrays in layout order (parameters, gradients, optimiser slots).
template <typename T>
struct Arrays {
    std::vector<py::array> keep;
    std::vector<T*> ptrs;
    std::vector<std::string> keys;
    std::vector<Span> spans;
};

enum class Values { finite, non_negative };  // non_negative: finite and >= 0

template <typename T>
Arrays<T> load_params(py::handle params, const ParamInfo& info, bool writable);

// Optimiser memory: "M:<key>" (adagrad, rmsprop; the bare parameter keys are
// accepted too, as in a classic AdaGrad memory dict) or "m:<key>" and
// "v:<key>" (adam), plus an optional update counter "t" (0-d int64), which
// Adam and dropout need. No array may share memory with another or with the
// parameters (their spans come in `spans`).
template <typename T>
struct OptState {
    Arrays<T> s1, s2;
    py::array t;             // the dict's "t", if it has one
    bool counter = false;    // whether it has one (a default py::array is an empty array, not a null handle)
    std::uint64_t t_value = 0;
    bool has_t() const { return counter; }
    void store_t(std::uint64_t v) const;
};
template <typename T>
OptState<T> load_opt_state(py::handle state, const ParamInfo& info, Optimizer opt, std::vector<Span> spans);

// Fresh arrays shaped like the parameters, keyed as the caller keyed them.
template <typename T>
py::dict new_like(const ParamInfo& info, const Arrays<T>& params, std::vector<T*>& ptrs);

// The recurrent states of B streams as a new (B, L, S*m) array: zeros for
// None, else a checked copy of h0 in any of the shapes (B, L, S*m), and
// (L, S*m) when B = 1, (B, S*m) when L = 1, (S*m,) when both are 1.
template <typename T>
py::array_t<T> initial_states(py::handle h0, const NetLayout& lay, std::size_t B);

// ---------------------------------------------------------------- indices

// An integer array (any native integer dtype; sequences are converted) of
// ndim 1 (or 1 or 2 when allow_2d), C-contiguous.
py::array index_array(py::handle obj, const char* name, bool allow_2d);

// Calls f(static_cast<const I*>(data)) with I the array's integer type.
template <typename F>
decltype(auto) with_index_type(const py::array& a, const char* name, F&& f) {
#define CHARRNN_TRY(I) \
    if (py::isinstance<py::array_t<I>>(a)) return f(static_cast<const I*>(a.data()));
    CHARRNN_TRY(std::uint8_t)
    CHARRNN_TRY(std::uint16_t)
    CHARRNN_TRY(std::uint32_t)
    CHARRNN_TRY(std::uint64_t)
    CHARRNN_TRY(std::int8_t)
    CHARRNN_TRY(std::int16_t)
    CHARRNN_TRY(std::int32_t)
    CHARRNN_TRY(std::int64_t)
#undef CHARRNN_TRY
    fail_type(std::string(name) + " has unsupported integer dtype " + dtype_name(a) + " (use native byte order)");
}

// Every index of a[begin, end) lies in [0, K), or IndexError naming it.
void check_index_range(const py::array& a, const char* name, std::size_t begin, std::size_t end, std::size_t K);

// X and Y of a chunk: equal shapes (T,) or (B, T), T >= 1, indices in [0, K).
struct Chunk {
    py::array X, Y;
    std::size_t B = 1, n = 0;
};
Chunk read_chunk(py::handle X, py::handle Y, std::size_t K);

// Calls f(x, y) with typed pointers to X and Y: their own type when they
// share a dtype, else both widened to int64 (never narrowed).
template <typename F>
void with_chunk(const Chunk& c, F&& f) {
    bool same = false;
    with_index_type(c.X, "X", [&](auto* x) {
        using I = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
        if (py::isinstance<py::array_t<I>>(c.Y)) {
            same = true;
            f(x, static_cast<const I*>(c.Y.data()));
        }
    });
    if (same) return;
    using Wide = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
    const Wide X = Wide::ensure(c.X), Y = Wide::ensure(c.Y);
    if (!X || !Y) throw py::error_already_set();
    f(X.data(), Y.data());
}

// Calls f(T()) with T the parameters' float type (double or float): f's
// generic parameter carries the type, the value is unused.
template <typename F>
decltype(auto) with_scalar(Scalar s, F&& f) {
    if (s == Scalar::f64) return f(double());
    return f(float());
}

void bind_train(py::module_& m);
void bind_eval(py::module_& m);
void bind_sample(py::module_& m);
void bind_trace(py::module_& m);

}  // namespace charrnn::binding
