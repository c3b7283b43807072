// The Python face of the C++ core. This is the only file that knows about
// Python: it checks every argument (type, dtype, shape, contiguity, range,
// finiteness), views NumPy memory without copying, releases the GIL around
// the numerical work and turns problems into Python exceptions.
#include <pybind11/gil_safe_call_once.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "net_train.hpp"
#include "network.hpp"
#include "optim.hpp"
#include "rnn.hpp"
#include "sampling.hpp"
#include "train.hpp"

namespace py = pybind11;
using charrnn::MutableParams;
using charrnn::ParamsView;

namespace {

constexpr const char* kNames[5] = {"U", "W", "V", "b", "c"};

// ---------------------------------------------------------------- messages

[[noreturn]] void fail_type(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void fail_value(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] void fail_index(const std::string& msg) { throw py::index_error(msg); }

std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

std::string type_name(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")); }

std::string dtype_name(const py::array& a) { return py::str(a.dtype()); }

// ---------------------------------------------------------------- parameters

enum class Scalar { f32, f64 };

bool is_c_contiguous(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }

// dicts, and any other collections.abc.Mapping. The Mapping class is looked
// up once and kept for the life of the interpreter.
bool is_mapping(py::handle obj) {
    if (PyDict_Check(obj.ptr())) return true;
    PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> mapping_class;
    const py::object& cls =
        mapping_class
            .call_once_and_store_result([] { return py::module_::import("collections.abc").attr("Mapping"); })
            .get_stored();
    return py::isinstance(obj, cls);
}

// detail goes between "a dict of NumPy arrays" and the type found.
void require_mapping(py::handle mapping, const char* what, const char* detail = ",") {
    if (!is_mapping(mapping)) {
        fail_type(std::string(what) + " must be a dict of NumPy arrays" + detail + " got " + type_name(mapping));
    }
}

// mapping[key], which must exist and be a NumPy array; hint says what keys are expected.
py::array dict_array(py::handle mapping, const char* what, const std::string& key, const std::string& hint) {
    py::object value;
    try {
        value = mapping[py::str(key)];
    } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_KeyError)) throw;
        fail_value(std::string(what) + " has no '" + key + "' entry (" + hint + ")");
    }
    if (!py::isinstance<py::array>(value)) {
        fail_type(std::string(what) + "['" + key + "'] must be a NumPy array, got " + type_name(value));
    }
    return py::reinterpret_borrow<py::array>(value);
}

py::array lookup(py::handle mapping, const char* what, const char* key) {
    require_mapping(mapping, what, " with keys U, W, V, b, c;");
    return dict_array(mapping, what, key, "expected keys U, W, V, b, c");
}

Scalar scalar_of(py::handle params) {
    py::array U = lookup(params, "params", "U");
    if (py::isinstance<py::array_t<double>>(U)) return Scalar::f64;
    if (py::isinstance<py::array_t<float>>(U)) return Scalar::f32;
    fail_type("params['U'] has dtype " + dtype_name(U) + "; expected float64 or float32 (native byte order)");
}

// The five arrays of a parameter-shaped dict, checked and viewed in place.
template <typename T>
struct ParamArrays {
    py::array arrays[5];
    std::size_t K = 0, m = 0;

    T* ptr(int i) const { return static_cast<T*>(const_cast<void*>(arrays[i].data())); }
    ParamsView<T> view() const { return {ptr(0), ptr(1), ptr(2), ptr(3), ptr(4), K, m}; }
    MutableParams<T> mut() const { return {ptr(0), ptr(1), ptr(2), ptr(3), ptr(4)}; }
};

const char* float_name(float) { return "float32"; }
const char* float_name(double) { return "float64"; }

// x - x is +0 for finite x and NaN for inf or NaN; eight lane sums of it stay
// 0 exactly unless some element is not finite. No early exit, so the loop
// vectorises: this check runs on every call and must stay cheap.
template <typename T>
bool all_finite(const T* p, std::size_t n) {
    T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (std::size_t l = 0; l < 8; ++l) acc[l] += p[i + l] - p[i + l];
    for (; i < n; ++i) acc[0] += p[i] - p[i];
    T total = T(0);
    for (std::size_t l = 0; l < 8; ++l) total += acc[l];
    return total == T(0);
}

// Like all_finite, and also no entry below zero (NaN compares false and is
// caught by the finiteness sum). One pass, no early exit.
template <typename T>
bool all_finite_non_negative(const T* p, std::size_t n) {
    T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    T low[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (std::size_t l = 0; l < 8; ++l) {
            const T v = p[i + l];
            acc[l] += v - v;
            low[l] = v < low[l] ? v : low[l];
        }
    for (; i < n; ++i) {
        acc[0] += p[i] - p[i];
        low[0] = p[i] < low[0] ? p[i] : low[0];
    }
    T total = T(0), lowest = T(0);
    for (std::size_t l = 0; l < 8; ++l) {
        total += acc[l];
        lowest = low[l] < lowest ? low[l] : lowest;
    }
    return total == T(0) && !(lowest < T(0));
}

// What the values of an array must satisfy.
enum class Values { any, finite, non_negative };  // non_negative: finite and >= 0

template <typename T>
void check_values(const py::array& a, std::size_t n, Values need, const std::string& name) {
    const T* p = static_cast<const T*>(a.data());
    if (need == Values::finite && !all_finite(p, n)) fail_value(name + " contains NaN or infinity");
    if (need == Values::non_negative && !all_finite_non_negative(p, n)) {
        fail_value(name + " must hold finite values >= 0 (accumulated squared gradients); it contains a "
                          "negative entry, NaN or infinity");
    }
}

// The memory of arrays that a call writes: no two may share any byte, or
// an in-place update would read values it has already changed.
struct Span {
    const char* lo;
    const char* hi;
    std::string name;
};

void add_span(std::vector<Span>& spans, const py::array& a, std::string name) {
    const char* lo = static_cast<const char*>(a.data());
    spans.push_back({lo, lo + a.nbytes(), std::move(name)});
}

void reject_overlaps(std::vector<Span> spans) {
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.lo < b.lo; });
    std::size_t widest = 0;  // the span reaching furthest so far
    for (std::size_t i = 1; i < spans.size(); ++i) {
        if (spans[i].lo < spans[widest].hi) {
            fail_value(spans[widest].name + " and " + spans[i].name +
                       " overlap in memory; every parameter and optimiser-state array must be a separate array");
        }
        if (spans[i].hi > spans[widest].hi) widest = i;
    }
}

// what: "params" or "state". When K, m are 0 they are taken from U's shape.
template <typename T>
ParamArrays<T> load_params(py::handle mapping, const char* what, bool writable, Values need,
                           std::size_t K = 0, std::size_t m = 0) {
    ParamArrays<T> pa;
    for (int i = 0; i < 5; ++i) pa.arrays[i] = lookup(mapping, what, kNames[i]);
    const py::array& U = pa.arrays[0];
    if (K == 0 && m == 0) {
        if (U.ndim() != 2) {
            fail_value(std::string(what) + "['U'] must be 2-D with shape (m, K), got shape " + shape_str(U));
        }
        m = static_cast<std::size_t>(U.shape(0));
        K = static_cast<std::size_t>(U.shape(1));
        if (m == 0) fail_value(std::string(what) + "['U'] has shape " + shape_str(U) + ": the hidden size m must be at least 1");
        if (K == 0) fail_value(std::string(what) + "['U'] has shape " + shape_str(U) + ": the vocabulary size K must be at least 1");
    }
    pa.K = K;
    pa.m = m;
    const std::size_t expected[5][2] = {{m, K}, {m, m}, {K, m}, {m, 0}, {K, 0}};
    const char* expected_sym[5] = {"(m, K)", "(m, m)", "(K, m)", "(m,)", "(K,)"};
    for (int i = 0; i < 5; ++i) {
        const py::array& a = pa.arrays[i];
        const std::string name = std::string(what) + "['" + kNames[i] + "']";
        if (!py::isinstance<py::array_t<T>>(a)) {
            fail_type(name + " has dtype " + dtype_name(a) + "; expected " + float_name(T()) +
                      " like params['U'] (all arrays must share one dtype)");
        }
        const py::ssize_t nd = expected[i][1] ? 2 : 1;
        bool ok = a.ndim() == nd && static_cast<std::size_t>(a.shape(0)) == expected[i][0];
        if (ok && nd == 2) ok = static_cast<std::size_t>(a.shape(1)) == expected[i][1];
        if (!ok) {
            std::ostringstream s;
            s << name << " has shape " << shape_str(a) << "; expected " << expected_sym[i] << " = (" << expected[i][0]
              << (nd == 2 ? ", " + std::to_string(expected[i][1]) : std::string(",")) << ") with K=" << K
              << ", m=" << m;
            fail_value(s.str());
        }
        if (!is_c_contiguous(a)) {
            fail_value(name + " is not C-contiguous; pass np.ascontiguousarray(...) (arrays are used in place)");
        }
        if (writable && !a.writeable()) fail_value(name + " is read-only; it must be writable to be updated in place");
        check_values<T>(a, static_cast<std::size_t>(a.size()), need, name);
    }
    return pa;
}

// params and state of a call that updates both in place must not share memory.
template <typename T>
void reject_aliasing(const ParamArrays<T>& P, const ParamArrays<T>& S) {
    std::vector<Span> spans;
    for (int i = 0; i < 5; ++i) {
        add_span(spans, P.arrays[i], std::string("params['") + kNames[i] + "']");
        add_span(spans, S.arrays[i], std::string("state['") + kNames[i] + "']");
    }
    reject_overlaps(std::move(spans));
}

// ---------------------------------------------------------------- index arrays

// obj as a NumPy array of integers (any integer dtype). what describes the
// expected argument for the TypeError ("an array of integer character indices").
py::array as_int_array(py::handle obj, const char* name, const std::string& what) {
    py::array a;
    if (py::isinstance<py::array>(obj)) {
        a = py::reinterpret_borrow<py::array>(obj);
    } else {
        if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj)) {
            fail_type(std::string(name) + " must be " + what + ", got " + type_name(obj) +
                      " (encode text with a Vocabulary first)");
        }
        try {
            a = py::module_::import("numpy").attr("asarray")(obj);
            // An empty list becomes float64; it is still an empty index sequence.
            if (a.size() == 0) a = py::module_::import("numpy").attr("asarray")(obj, "int64");
        } catch (py::error_already_set&) {
            fail_type(std::string(name) + " must be " + what + ", got " + type_name(obj));
        }
    }
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u') {
        fail_type(std::string(name) + " must hold integer" + (what.find("character") != std::string::npos
                                                                   ? " character indices"
                                                                   : "s") +
                  ", got dtype " + dtype_name(a));
    }
    return a;
}

py::array as_index_array(py::handle obj, const char* name) {
    py::array a = as_int_array(obj, name, "an array of integer character indices");
    if (a.ndim() != 1) {
        fail_value(std::string(name) + " must be 1-D, got shape " + shape_str(a));
    }
    if (!is_c_contiguous(a)) {
        fail_value(std::string(name) + " is not contiguous; pass np.ascontiguousarray(...)");
    }
    return a;
}

// The part of a text of length N that a walk of n_steps chunks of seq_len
// from pos reads: the chunks ahead of pos, or all of it when the walk may
// wrap around. [begin, end) is what the range check must cover.
struct Window {
    std::size_t begin, end;
};

Window walk_window(std::size_t N, std::size_t pos, std::size_t n_steps, std::size_t seq_len) {
    if (n_steps <= N / seq_len) {
        const std::size_t stop = pos + n_steps * seq_len + 1;
        if (stop <= N) return {pos, stop};
    }
    return {0, N};
}

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

// Every index in data[begin, end) must lie in [0, K).
template <typename I>
void check_index_range(const I* data, std::size_t begin, std::size_t end, std::size_t K, const char* name) {
    for (std::size_t i = begin; i < end; ++i) {
        const I v = data[i];
        bool bad;
        if constexpr (std::is_signed_v<I>) {
            bad = v < 0 || static_cast<std::uint64_t>(v) >= K;
        } else {
            bad = static_cast<std::uint64_t>(v) >= K;
        }
        if (bad) {
            std::ostringstream s;
            s << name << "[" << i << "] = " << static_cast<long long>(v) << " is outside the vocabulary range [0, "
              << K << ")";
            fail_index(s.str());
        }
    }
}

// ---------------------------------------------------------------- scalars and vectors

double positive_finite(double v, const char* name) {
    if (!std::isfinite(v) || v <= 0.0) {
        std::ostringstream s;
        s << name << " must be a positive finite number, got " << v;
        fail_value(s.str());
    }
    return v;
}

// 1 / temperature must be finite in T, or the softmax turns into NaN.
template <typename T>
void check_temperature(double temperature) {
    positive_finite(temperature, "temperature");
    if (!std::isfinite(static_cast<T>(1.0 / temperature))) {
        std::ostringstream s;
        s << "temperature = " << temperature << " is too small for " << float_name(T())
          << ": 1/temperature overflows; the smallest allowed is about " << 1.0 / static_cast<double>(std::numeric_limits<T>::max());
        fail_value(s.str());
    }
}

// A count: a Python int or anything with __index__, but not a bool.
std::size_t non_negative_int(py::handle obj, const char* name) {
    if (PyBool_Check(obj.ptr())) fail_type(std::string(name) + " must be an integer, got bool");
    if (!py::isinstance<py::int_>(obj) && !py::hasattr(obj, "__index__")) {
        fail_type(std::string(name) + " must be an integer, got " + type_name(obj));
    }
    py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
    if (!v) throw py::error_already_set();
    if (v < py::int_(0)) fail_value(std::string(name) + " must be >= 0, got " + std::string(py::str(v)));
    if (v > py::int_(std::numeric_limits<std::int64_t>::max())) {
        fail_value(std::string(name) + " is too large: " + std::string(py::str(v)));
    }
    return static_cast<std::size_t>(v.cast<std::int64_t>());
}

std::uint64_t seed_value(py::handle obj) {
    if (!py::isinstance<py::int_>(obj) && !py::hasattr(obj, "__index__")) {
        fail_type("seed must be an integer in [0, 2**64), got " + type_name(obj));
    }
    py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
    if (!v) throw py::error_already_set();
    if (v < py::int_(0) || v >= py::int_(py::module_::import("builtins").attr("pow")(2, 64))) {
        fail_value("seed must be an integer in [0, 2**64), got " + std::string(py::str(v)));
    }
    return v.cast<std::uint64_t>();
}

// A fresh hidden state of the given shape: zeros when h0 is None, otherwise
// a checked copy. expect spells the shape for messages ("(m,) = (4,)").
template <typename T>
py::array_t<T> initial_state(py::handle h0, std::initializer_list<std::size_t> dims, const std::string& expect) {
    const std::vector<py::ssize_t> shape(dims.begin(), dims.end());
    std::size_t n = 1;
    for (std::size_t d : dims) n *= d;
    py::array_t<T> h(shape);
    T* out = h.mutable_data();
    if (h0.is_none()) {
        std::fill(out, out + n, T(0));
        return h;
    }
    if (!py::isinstance<py::array>(h0)) {
        fail_type("h0 must be a NumPy array of shape " + expect + " or None, got " + type_name(h0));
    }
    auto a = py::reinterpret_borrow<py::array>(h0);
    if (!py::isinstance<py::array_t<T>>(a)) {
        fail_type("h0 has dtype " + dtype_name(a) + "; expected " + float_name(T()) + " like the parameters");
    }
    bool ok = static_cast<std::size_t>(a.ndim()) == shape.size();
    for (std::size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
    if (!ok) fail_value("h0 has shape " + shape_str(a) + "; expected " + expect);
    if (!is_c_contiguous(a)) fail_value("h0 is not C-contiguous; pass np.ascontiguousarray(...)");
    const T* src = static_cast<const T*>(a.data());
    if (!all_finite(src, n)) fail_value("h0 contains NaN or infinity");
    std::copy(src, src + n, out);
    return h;
}

// The vanilla RNN's state (m,).
template <typename T>
py::array_t<T> hidden_state(py::handle h0, std::size_t m) {
    return initial_state<T>(h0, {m}, "(m,) = (" + std::to_string(m) + ",)");
}

// B streams of the vanilla RNN: (B, m).
template <typename T>
py::array_t<T> batch_hidden_state(py::handle h0, std::size_t B, std::size_t m) {
    return initial_state<T>(h0, {B, m},
                            "(batch_size, m) = (" + std::to_string(B) + ", " + std::to_string(m) + ")");
}

charrnn::AdagradConfig adagrad_config(double eta, double clip, double eps) {
    charrnn::AdagradConfig cfg;
    cfg.eta = positive_finite(eta, "eta");
    cfg.clip = positive_finite(clip, "clip");
    cfg.eps = positive_finite(eps, "eps");
    return cfg;
}

// X and Y: same length T >= 1, indices in [0, K).
struct Chunk {
    py::array X, Y;
    std::size_t n;
};

Chunk load_chunk(py::handle X_obj, py::handle Y_obj, std::size_t K) {
    Chunk c{as_index_array(X_obj, "X"), as_index_array(Y_obj, "Y"), 0};
    if (c.X.shape(0) != c.Y.shape(0)) {
        fail_value("X and Y must have the same length, got " + std::to_string(c.X.shape(0)) + " and " +
                   std::to_string(c.Y.shape(0)));
    }
    c.n = static_cast<std::size_t>(c.X.shape(0));
    if (c.n == 0) fail_value("X and Y are empty; a sequence needs at least one character (T >= 1)");
    with_index_type(c.X, "X", [&](auto* p) { check_index_range(p, 0, c.n, K, "X"); });
    with_index_type(c.Y, "Y", [&](auto* p) { check_index_range(p, 0, c.n, K, "Y"); });
    return c;
}

// Both arrays of a chunk as one index type: their own when X and Y share a
// dtype, otherwise both widened to int64. Widening never changes a checked
// index (every integer dtype's values in [0, K) fit in int64); converting one
// to the other's type could (uint8 200 is int8 -56).
template <typename T, typename F>
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

py::dict as_dict(const py::array* arrays) {
    py::dict d;
    for (int i = 0; i < 5; ++i) d[py::str(kNames[i])] = arrays[i];
    return d;
}

// ---------------------------------------------------------------- API

template <typename T>
py::array_t<T> new_array(std::initializer_list<std::size_t> dims) {
    std::vector<py::ssize_t> shape(dims.begin(), dims.end());
    return py::array_t<T>(shape);
}

template <typename T>
py::tuple loss_and_grads_impl(py::handle params, py::handle X, py::handle Y, py::handle h0) {
    auto P = load_params<T>(params, "params", false, Values::finite);
    Chunk chunk = load_chunk(X, Y, P.K);
    py::array_t<T> h = hidden_state<T>(h0, P.m);
    py::array grads[5] = {new_array<T>({P.m, P.K}), new_array<T>({P.m, P.m}), new_array<T>({P.K, P.m}),
                          new_array<T>({P.m}), new_array<T>({P.K})};
    T* gout[5];
    for (int i = 0; i < 5; ++i) gout[i] = static_cast<T*>(grads[i].mutable_data());
    T* h_out = h.mutable_data();
    double loss = 0.0;
    with_chunk<T>(chunk, [&](auto* x, auto* y) {
        py::gil_scoped_release nogil;
        charrnn::Trainer<T> tr(P.K, P.m);
        loss = static_cast<double>(tr.loss_and_grads(P.view(), x, y, chunk.n, h_out));
        const std::size_t sizes[5] = {P.m * P.K, P.m * P.m, P.K * P.m, P.m, P.K};
        T* src[5] = {tr.g.U, tr.g.W, tr.g.V, tr.g.b, tr.g.c};
        for (int i = 0; i < 5; ++i) {
            std::copy(src[i], src[i] + sizes[i], gout[i]);
        }
        const T* hl = tr.act.h_last();
        std::copy(hl, hl + P.m, h_out);
    });
    return py::make_tuple(loss, as_dict(grads), h);
}

template <typename T>
py::tuple train_step_impl(py::handle params, py::handle state, py::handle X, py::handle Y, py::handle h0,
                          const charrnn::AdagradConfig& cfg) {
    auto P = load_params<T>(params, "params", true, Values::finite);
    auto S = load_params<T>(state, "state", true, Values::non_negative, P.K, P.m);
    reject_aliasing(P, S);
    Chunk chunk = load_chunk(X, Y, P.K);
    py::array_t<T> h = hidden_state<T>(h0, P.m);
    T* h_out = h.mutable_data();
    double loss = 0.0;
    with_chunk<T>(chunk, [&](auto* x, auto* y) {
        py::gil_scoped_release nogil;
        charrnn::Trainer<T> tr(P.K, P.m);
        loss = static_cast<double>(tr.step(P.mut(), S.mut(), x, y, chunk.n, h_out, cfg));
    });
    if (!std::isfinite(loss)) {
        throw py::value_error("the loss is not finite (" + std::to_string(loss) +
                              "); the step was not applied and the parameters are unchanged");
    }
    return py::make_tuple(loss, h);
}

// The text walk of train_steps / net_train_steps: returns len(data) after
// checking that a chunk fits and pos lies within the text.
std::size_t check_walk(const py::array& data, std::size_t seq_len, std::size_t pos) {
    const std::size_t N = static_cast<std::size_t>(data.shape(0));
    if (seq_len == 0) fail_value("seq_length must be at least 1");
    if (N < seq_len + 1) {
        fail_value("data has " + std::to_string(N) + " characters; a chunk needs seq_length + 1 = " +
                   std::to_string(seq_len + 1));
    }
    if (pos > N) fail_value("pos = " + std::to_string(pos) + " is past the end of data (length " + std::to_string(N) + ")");
    return N;
}

template <typename T>
py::tuple train_steps_impl(py::handle params, py::handle state, py::handle data_obj, py::handle h0,
                           std::size_t n_steps, std::size_t seq_len, std::size_t pos,
                           const charrnn::AdagradConfig& cfg) {
    auto P = load_params<T>(params, "params", true, Values::finite);
    auto S = load_params<T>(state, "state", true, Values::non_negative, P.K, P.m);
    reject_aliasing(P, S);
    py::array data = as_index_array(data_obj, "data");
    const std::size_t N = check_walk(data, seq_len, pos);
    py::array_t<T> h = hidden_state<T>(h0, P.m);
    py::array_t<T> losses(static_cast<py::ssize_t>(n_steps));
    charrnn::WalkState w;
    T* h_out = h.mutable_data();
    T* loss_out = losses.mutable_data();
    with_index_type(data, "data", [&](auto* d) {
        const Window win = walk_window(N, pos, n_steps, seq_len);  // only what this call reads
        if (n_steps > 0) check_index_range(d, win.begin, win.end, P.K, "data");
        py::gil_scoped_release nogil;
        w = charrnn::train_steps(P.mut(), S.mut(), d, N, h_out, pos, n_steps, seq_len, cfg, loss_out, P.K, P.m);
    });
    if (w.steps_done < n_steps) losses.resize({static_cast<py::ssize_t>(w.steps_done)});
    return py::make_tuple(losses, h, w.pos[0], w.wraps[0], w.diverged);
}

// ---------------------------------------------------------------- batched API

std::size_t thread_count(py::handle obj) {
    const std::size_t n = non_negative_int(obj, "threads");
    if (n == 0) fail_value("threads must be at least 1, got 0");
    if (n > 256) fail_value("threads must be at most 256, got " + std::to_string(n));
    return n;
}

// A (B, T) integer array of indices in [0, K), returned as time-major int32 (T*B).
std::vector<std::int32_t> batch_indices(py::handle obj, const char* name, std::size_t K, std::size_t& B,
                                        std::size_t& n) {
    py::array a = as_int_array(obj, name, "a 2-D array of integer character indices");
    if (a.ndim() != 2) fail_value(std::string(name) + " must be 2-D with shape (batch_size, T), got shape " + shape_str(a));
    B = static_cast<std::size_t>(a.shape(0));
    n = static_cast<std::size_t>(a.shape(1));
    if (B == 0 || n == 0) fail_value(std::string(name) + " has shape " + shape_str(a) + "; batch_size and T must be at least 1");
    auto a64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    const std::int64_t* v = a64.data();
    std::vector<std::int32_t> out(B * n);
    for (std::size_t s = 0; s < B; ++s) {
        for (std::size_t t = 0; t < n; ++t) {
            const std::int64_t x = v[s * n + t];
            if (x < 0 || static_cast<std::uint64_t>(x) >= K) {
                std::ostringstream msg;
                msg << name << "[" << s << ", " << t << "] = " << x << " is outside the vocabulary range [0, " << K << ")";
                fail_index(msg.str());
            }
            out[t * B + s] = static_cast<std::int32_t>(x);
        }
    }
    return out;
}

template <typename T>
py::tuple loss_and_grads_batched_impl(py::handle params, py::handle X, py::handle Y, py::handle h0,
                                      std::size_t threads) {
    auto P = load_params<T>(params, "params", false, Values::finite);
    std::size_t B = 0, n = 0, By = 0, ny = 0;
    std::vector<std::int32_t> x = batch_indices(X, "X", P.K, B, n);
    std::vector<std::int32_t> y = batch_indices(Y, "Y", P.K, By, ny);
    if (B != By || n != ny) {
        fail_value("X and Y must have the same shape, got (" + std::to_string(B) + ", " + std::to_string(n) + ") and (" +
                   std::to_string(By) + ", " + std::to_string(ny) + ")");
    }
    py::array_t<T> h = batch_hidden_state<T>(h0, B, P.m);
    py::array grads[5] = {new_array<T>({P.m, P.K}), new_array<T>({P.m, P.m}), new_array<T>({P.K, P.m}),
                          new_array<T>({P.m}), new_array<T>({P.K})};
    T* gout[5];
    for (int i = 0; i < 5; ++i) gout[i] = static_cast<T*>(grads[i].mutable_data());
    T* h_out = h.mutable_data();
    double loss = 0.0;
    {
        py::gil_scoped_release nogil;
        charrnn::Trainer<T> tr(P.K, P.m, B, threads);
        loss = tr.loss_and_grads(P.view(), x.data(), y.data(), n, h_out);
        const std::size_t sizes[5] = {P.m * P.K, P.m * P.m, P.K * P.m, P.m, P.K};
        T* src[5] = {tr.g.U, tr.g.W, tr.g.V, tr.g.b, tr.g.c};
        for (int i = 0; i < 5; ++i) std::copy(src[i], src[i] + sizes[i], gout[i]);
        std::copy(tr.act.h_last(), tr.act.h_last() + B * P.m, h_out);
    }
    return py::make_tuple(loss, as_dict(grads), h);
}

template <typename T>
py::tuple train_steps_batched_impl(py::handle params, py::handle state, py::handle data_obj, py::handle h0,
                                   std::size_t n_steps, std::size_t B, std::size_t seq_len, py::handle positions,
                                   std::size_t threads, const charrnn::AdagradConfig& cfg) {
    auto P = load_params<T>(params, "params", true, Values::finite);
    auto S = load_params<T>(state, "state", true, Values::non_negative, P.K, P.m);
    reject_aliasing(P, S);
    py::array data = as_index_array(data_obj, "data");
    const std::size_t N = static_cast<std::size_t>(data.shape(0));
    if (B == 0) fail_value("batch_size must be at least 1");
    if (seq_len == 0) fail_value("seq_length must be at least 1");
    const std::size_t L = N / B;
    if (L < seq_len + 1) {
        fail_value("data has " + std::to_string(N) + " characters: split into batch_size = " + std::to_string(B) +
                   " segments of " + std::to_string(L) + ", but a chunk needs seq_length + 1 = " +
                   std::to_string(seq_len + 1) + " per segment");
    }
    std::vector<std::size_t> pos(B, 0);
    if (!positions.is_none()) {
        py::array pa = as_int_array(positions, "positions", "an integer array of shape (batch_size,) or None");
        if (pa.ndim() != 1 || static_cast<std::size_t>(pa.shape(0)) != B) {
            fail_value("positions has shape " + shape_str(pa) + "; expected (batch_size,) = (" + std::to_string(B) + ",)");
        }
        auto p64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(pa);
        for (std::size_t s = 0; s < B; ++s) {
            const std::int64_t v = p64.data()[s];
            if (v < 0 || static_cast<std::uint64_t>(v) > L) {
                fail_value("positions[" + std::to_string(s) + "] = " + std::to_string(v) +
                           " is outside its segment: offsets run from 0 to the segment length " + std::to_string(L));
            }
            pos[s] = static_cast<std::size_t>(v);
        }
    }
    py::array_t<T> h = batch_hidden_state<T>(h0, B, P.m);
    py::array_t<T> losses(static_cast<py::ssize_t>(n_steps));
    charrnn::WalkState w;
    T* h_out = h.mutable_data();
    T* loss_out = losses.mutable_data();
    with_index_type(data, "data", [&](auto* d) {
        if (n_steps > 0) check_index_range(d, 0, B * L, P.K, "data");
        py::gil_scoped_release nogil;
        w = charrnn::train_walk(P.mut(), S.mut(), d, N, h_out, pos.data(), B, n_steps, seq_len, cfg, loss_out, P.K,
                                P.m, threads);
    });
    if (w.steps_done < n_steps) losses.resize({static_cast<py::ssize_t>(w.steps_done)});
    py::array_t<std::int64_t> pos_out(static_cast<py::ssize_t>(B)), wraps_out(static_cast<py::ssize_t>(B));
    for (std::size_t s = 0; s < B; ++s) {
        pos_out.mutable_data()[s] = static_cast<std::int64_t>(w.pos[s]);
        wraps_out.mutable_data()[s] = static_cast<std::int64_t>(w.wraps[s]);
    }
    return py::make_tuple(losses, h, pos_out, wraps_out, w.diverged);
}

template <typename T>
py::tuple sample_impl(py::handle params, py::handle h0, py::handle prime_obj, std::size_t n, double temperature,
                      std::uint64_t seed, const charrnn::SampleOptions& opt) {
    auto P = load_params<T>(params, "params", false, Values::finite);
    py::array prime = as_index_array(prime_obj, "prime");
    const std::size_t n_prime = static_cast<std::size_t>(prime.shape(0));
    if (n_prime == 0) fail_value("prime is empty; give at least one character index to start from");
    check_temperature<T>(temperature);
    py::array_t<T> h = hidden_state<T>(h0, P.m);
    py::array_t<std::int32_t> out(static_cast<py::ssize_t>(n));
    T* h_out = h.mutable_data();
    std::int32_t* idx_out = out.mutable_data();
    with_index_type(prime, "prime", [&](auto* x) {
        check_index_range(x, 0, n_prime, P.K, "prime");
        py::gil_scoped_release nogil;
        charrnn::sample(P.view(), h_out, x, n_prime, n, temperature, seed, idx_out, opt);
    });
    return py::make_tuple(out, h);
}

template <typename T>
py::tuple evaluate_loss_impl(py::handle params, py::handle data_obj, py::handle h0) {
    auto P = load_params<T>(params, "params", false, Values::finite);
    py::array data = as_index_array(data_obj, "data");
    const std::size_t N = static_cast<std::size_t>(data.shape(0));
    if (N < 2) fail_value("data has " + std::to_string(N) + " characters; the loss needs at least 2");
    py::array_t<T> h = hidden_state<T>(h0, P.m);
    T* h_out = h.mutable_data();
    double loss = 0.0;
    with_index_type(data, "data", [&](auto* d) {
        check_index_range(d, 0, N, P.K, "data");
        py::gil_scoped_release nogil;
        loss = charrnn::sequence_loss(P.view(), d, N, h_out);
    });
    return py::make_tuple(loss, h);
}

template <template <typename> class Impl, typename... Args>
py::tuple dispatch(py::handle params, Args&&... args) {
    if (scalar_of(params) == Scalar::f64) return Impl<double>::run(params, std::forward<Args>(args)...);
    return Impl<float>::run(params, std::forward<Args>(args)...);
}

template <typename T> struct LossAndGrads { template <typename... A> static py::tuple run(A&&... a) { return loss_and_grads_impl<T>(a...); } };
template <typename T> struct TrainStep { template <typename... A> static py::tuple run(A&&... a) { return train_step_impl<T>(a...); } };
template <typename T> struct TrainSteps { template <typename... A> static py::tuple run(A&&... a) { return train_steps_impl<T>(a...); } };
template <typename T> struct EvaluateLoss { template <typename... A> static py::tuple run(A&&... a) { return evaluate_loss_impl<T>(a...); } };
template <typename T> struct LossAndGradsBatched { template <typename... A> static py::tuple run(A&&... a) { return loss_and_grads_batched_impl<T>(a...); } };
template <typename T> struct TrainStepsBatched { template <typename... A> static py::tuple run(A&&... a) { return train_steps_batched_impl<T>(a...); } };
template <typename T> struct Sample { template <typename... A> static py::tuple run(A&&... a) { return sample_impl<T>(a...); } };

// ================================================================ general networks
//
// rnn / lstm / gru stacks (network.hpp), the optimisers of optim.hpp and
// filtered sampling. Parameters are a flat dict: per layer l "l{l}.Wx",
// "l{l}.Wh", "l{l}.b" (and "l{l}.bh" for gru), then "V" and "c"; the number
// of layers is the number of consecutive "l{l}.Wx" keys. Hidden states are
// (layers, S*m) arrays, S = 2 for lstm (h then c), 1 otherwise.

// One of a fixed set of names, e.g. the cell or optimiser.
template <typename E, std::size_t N>
E parse_choice(py::handle obj, const char* what, const std::pair<const char*, E> (&choices)[N]) {
    std::string allowed;
    for (std::size_t i = 0; i < N; ++i) allowed += (i ? ", '" : "'") + std::string(choices[i].first) + "'";
    if (!py::isinstance<py::str>(obj)) fail_type(std::string(what) + " must be a string (" + allowed + "), got " + type_name(obj));
    const std::string v = obj.cast<std::string>();
    for (const auto& c : choices) {
        if (v == c.first) return c.second;
    }
    fail_value("unknown " + std::string(what) + " '" + v + "'; expected one of " + allowed);
}

charrnn::Cell parse_cell(py::handle obj) {
    static constexpr std::pair<const char*, charrnn::Cell> kCells[] = {
        {"rnn", charrnn::Cell::rnn}, {"lstm", charrnn::Cell::lstm}, {"gru", charrnn::Cell::gru}};
    return parse_choice(obj, "cell", kCells);
}

charrnn::Optimizer parse_optimizer(py::handle obj) {
    static constexpr std::pair<const char*, charrnn::Optimizer> kOptimizers[] = {
        {"adagrad", charrnn::Optimizer::adagrad}, {"rmsprop", charrnn::Optimizer::rmsprop},
        {"adam", charrnn::Optimizer::adam}};
    return parse_choice(obj, "optimizer", kOptimizers);
}

charrnn::ClipMode parse_clip_mode(py::handle obj) {
    static constexpr std::pair<const char*, charrnn::ClipMode> kModes[] = {
        {"elementwise", charrnn::ClipMode::elementwise}, {"global_norm", charrnn::ClipMode::global_norm},
        {"none", charrnn::ClipMode::none}};
    return parse_choice(obj, "clip_mode", kModes);
}

// A number in [0, 1) (decay rates).
double unit_interval(double v, const char* name) {
    if (!std::isfinite(v) || v < 0.0 || v >= 1.0) {
        std::ostringstream s;
        s << name << " must be in [0, 1), got " << v;
        fail_value(s.str());
    }
    return v;
}

charrnn::SampleOptions sample_options(py::handle top_k, double top_p, bool greedy) {
    charrnn::SampleOptions opt;
    if (!py::isinstance<py::int_>(top_k) && !py::hasattr(top_k, "__index__")) {
        fail_type("top_k must be an integer (0 = off), got " + type_name(top_k));
    }
    opt.top_k = non_negative_int(top_k, "top_k");
    if (!(top_p > 0.0 && top_p <= 1.0)) {
        std::ostringstream s;
        s << "top_p must be in (0, 1] (1 = off), got " << top_p;
        fail_value(s.str());
    }
    opt.top_p = top_p;
    opt.greedy = greedy;
    return opt;
}

bool has_key(py::handle mapping, const std::string& key) {
    const int r = PyMapping_HasKeyString(mapping.ptr(), key.c_str());
    return r == 1;
}

std::string net_keys_hint(charrnn::Cell cell) {
    return std::string("a '") + charrnn::cell_name(cell) + "' network has keys l{l}.Wx, l{l}.Wh, l{l}.b" +
           (cell == charrnn::Cell::gru ? ", l{l}.bh" : "") + " per layer l = 0, 1, ..., then V and c";
}

// The layout of a params dict: layers from the "l{l}.Wx" keys, K and m from V.
charrnn::NetLayout net_layout(charrnn::Cell cell, py::handle params) {
    require_mapping(params, "params");
    const std::string hint = net_keys_hint(cell);
    py::array V = dict_array(params, "params", "V", hint);
    if (V.ndim() != 2) fail_value("params['V'] must be 2-D with shape (K, m), got shape " + shape_str(V));
    charrnn::NetLayout lay{cell, static_cast<std::size_t>(V.shape(0)), static_cast<std::size_t>(V.shape(1)), 0};
    if (lay.K == 0 || lay.m == 0) {
        fail_value("params['V'] has shape " + shape_str(V) + "; K and m must be at least 1");
    }
    while (has_key(params, "l" + std::to_string(lay.L) + ".Wx")) ++lay.L;
    if (lay.L == 0) fail_value("params has no 'l0.Wx' entry: a network needs at least one layer (" + hint + ")");
    return lay;
}

Scalar net_scalar(py::handle params) {
    require_mapping(params, "params");
    py::array V = dict_array(params, "params", "V", "the output weights, shape (K, m)");
    if (py::isinstance<py::array_t<double>>(V)) return Scalar::f64;
    if (py::isinstance<py::array_t<float>>(V)) return Scalar::f32;
    fail_type("params['V'] has dtype " + dtype_name(V) + "; expected float64 or float32 (native byte order)");
}

std::string expected_shape(const charrnn::ArraySpec& s) {
    return s.cols ? "(" + std::to_string(s.rows) + ", " + std::to_string(s.cols) + ")"
                  : "(" + std::to_string(s.rows) + ",)";
}

// One array of a dict, checked against its spec and viewed in place.
template <typename T>
T* checked_array(py::handle mapping, const char* what, const std::string& key, const charrnn::ArraySpec& spec,
                 const charrnn::NetLayout& lay, const std::string& hint, bool writable, Values need,
                 std::vector<py::array>& keep, std::vector<Span>& spans) {
    py::array a = dict_array(mapping, what, key, hint);
    const std::string name = std::string(what) + "['" + key + "']";
    if (!py::isinstance<py::array_t<T>>(a)) {
        fail_type(name + " has dtype " + dtype_name(a) + "; expected " + float_name(T()) +
                  " like params['V'] (all arrays must share one dtype)");
    }
    const py::ssize_t nd = spec.cols ? 2 : 1;
    bool ok = a.ndim() == nd && static_cast<std::size_t>(a.shape(0)) == spec.rows;
    if (ok && nd == 2) ok = static_cast<std::size_t>(a.shape(1)) == spec.cols;
    if (!ok) {
        std::ostringstream s;
        s << name << " has shape " << shape_str(a) << "; expected " << expected_shape(spec) << " for a '"
          << charrnn::cell_name(lay.cell) << "' network with K=" << lay.K << ", m=" << lay.m << ", "
          << lay.L << " layer(s), " << lay.G() << " gate block(s) of m rows";
        fail_value(s.str());
    }
    if (!is_c_contiguous(a)) fail_value(name + " is not C-contiguous; pass np.ascontiguousarray(...) (arrays are used in place)");
    if (writable && !a.writeable()) fail_value(name + " is read-only; it must be writable to be updated in place");
    check_values<T>(a, spec.size(), need, name);
    keep.push_back(a);
    add_span(spans, a, name);
    // Calls that only read (writable == false) accept read-only arrays; the
    // kernels never write through these pointers then.
    return writable ? static_cast<T*>(a.mutable_data()) : static_cast<T*>(const_cast<void*>(a.data()));
}

// All parameter arrays of a network, in NetLayout order.
template <typename T>
struct NetArrays {
    charrnn::NetLayout lay;
    std::vector<py::array> keep;
    std::vector<Span> spans;  // of the arrays, for the aliasing check
    std::vector<T*> ptrs;
    charrnn::NetView<T> view() const { return charrnn::NetView<T>(lay, ptrs); }
};

template <typename T>
NetArrays<T> load_net_params(charrnn::Cell cell, py::handle params, bool writable) {
    NetArrays<T> na{net_layout(cell, params), {}, {}, {}};
    const std::string hint = net_keys_hint(cell);
    const auto specs = na.lay.arrays();
    for (const auto& sp : specs) {
        na.ptrs.push_back(checked_array<T>(params, "params", sp.name, sp, na.lay, hint, writable, Values::finite, na.keep,
                                            na.spans));
    }
    // Anything else in the dict is a mistake (a gru bias given to an lstm, a layer after a gap, ...).
    if (static_cast<std::size_t>(py::len(params)) != specs.size()) {
        for (auto item : py::reinterpret_borrow<py::object>(params).attr("keys")()) {
            const std::string k = py::str(item);
            bool known = false;
            for (const auto& sp : specs) known = known || sp.name == k;
            if (!known) {
                fail_value("params has an unexpected entry '" + k + "' for a " + std::to_string(na.lay.L) +
                           "-layer '" + charrnn::cell_name(cell) + "' network (" + hint + ")");
            }
        }
    }
    return na;
}

// Optimiser memory: "M:<name>" (adagrad, rmsprop) or "m:<name>" and "v:<name>" (adam).
template <typename T>
// The first moment m of adam may be any finite value; the squared-gradient
// memories (M, v) must also be >= 0. None may share memory with the
// parameters (whose spans come in `spans`) or with each other.
void load_opt_state(py::handle state, const charrnn::NetLayout& lay, charrnn::Optimizer opt, std::vector<T*>& s1,
                    std::vector<T*>& s2, std::vector<py::array>& keep, std::vector<Span> spans) {
    require_mapping(state, "opt_state");
    const bool adam = opt == charrnn::Optimizer::adam;
    const std::string hint = std::string("optimizer '") +
                             (adam ? "adam" : opt == charrnn::Optimizer::rmsprop ? "rmsprop" : "adagrad") +
                             "' needs " + (adam ? "m:<name> and v:<name>" : "M:<name>") +
                             " for every parameter; make it with init_opt_state(params, optimizer)";
    const auto specs = lay.arrays();
    for (const auto& sp : specs) {
        s1.push_back(checked_array<T>(state, "opt_state", (adam ? "m:" : "M:") + sp.name, sp, lay, hint, true,
                                      adam ? Values::finite : Values::non_negative, keep, spans));
        if (adam) {
            s2.push_back(checked_array<T>(state, "opt_state", "v:" + sp.name, sp, lay, hint, true,
                                          Values::non_negative, keep, spans));
        }
    }
    const std::size_t expect = specs.size() * (adam ? 2 : 1);
    if (static_cast<std::size_t>(py::len(state)) != expect) {
        fail_value("opt_state has " + std::to_string(py::len(state)) + " entries; expected " + std::to_string(expect) +
                   " (" + hint + ")");
    }
    reject_overlaps(std::move(spans));
}

// A general network's state (layers, S*m).
template <typename T>
py::array_t<T> net_hidden_state(py::handle h0, const charrnn::NetLayout& lay) {
    const std::size_t cols = lay.S() * lay.m;
    return initial_state<T>(h0, {lay.L, cols},
                            "(layers, " + std::string(lay.S() == 2 ? "2*m" : "m") + ") = (" +
                                std::to_string(lay.L) + ", " + std::to_string(cols) + ")" +
                                (lay.S() == 2 ? " (each row: h then c)" : ""));
}

template <typename T>
py::tuple net_loss_and_grads_impl(charrnn::Cell cell, py::handle params, py::handle X, py::handle Y, py::handle h0) {
    auto P = load_net_params<T>(cell, params, false);
    Chunk chunk = load_chunk(X, Y, P.lay.K);
    py::array_t<T> h = net_hidden_state<T>(h0, P.lay);
    py::dict grads;
    std::vector<T*> g;
    for (const auto& sp : P.lay.arrays()) {
        py::array_t<T> a = sp.cols ? new_array<T>({sp.rows, sp.cols}) : new_array<T>({sp.rows});
        g.push_back(a.mutable_data());
        grads[py::str(sp.name)] = a;
    }
    T* h_out = h.mutable_data();
    double loss = 0.0;
    with_chunk<T>(chunk, [&](auto* x, auto* y) {
        py::gil_scoped_release nogil;
        charrnn::Network<T> net(P.lay);
        loss = net.loss_and_grads(P.view(), x, y, chunk.n, h_out, g);
    });
    return py::make_tuple(loss, grads, h);
}

template <typename T>
py::tuple net_train_steps_impl(charrnn::Cell cell, py::handle params, py::handle opt_state, py::handle data_obj,
                               py::handle h0, std::size_t n_steps, std::size_t seq_len, std::size_t pos,
                               const charrnn::OptConfig& cfg, std::uint64_t t) {
    auto P = load_net_params<T>(cell, params, true);
    std::vector<T*> s1, s2;
    std::vector<py::array> keep;
    load_opt_state<T>(opt_state, P.lay, cfg.opt, s1, s2, keep, P.spans);
    py::array data = as_index_array(data_obj, "data");
    const std::size_t N = check_walk(data, seq_len, pos);
    py::array_t<T> h = net_hidden_state<T>(h0, P.lay);
    py::array_t<T> losses(static_cast<py::ssize_t>(n_steps));
    charrnn::NetWalk w;
    T* h_out = h.mutable_data();
    T* loss_out = losses.mutable_data();
    with_index_type(data, "data", [&](auto* d) {
        const Window win = walk_window(N, pos, n_steps, seq_len);  // only what this call reads
        if (n_steps > 0) check_index_range(d, win.begin, win.end, P.lay.K, "data");
        py::gil_scoped_release nogil;
        w = charrnn::net_train_walk(P.lay, P.ptrs, s1, s2, d, N, h_out, pos, n_steps, seq_len, cfg, t, loss_out);
    });
    if (w.steps_done < n_steps) losses.resize({static_cast<py::ssize_t>(w.steps_done)});
    return py::make_tuple(losses, h, w.pos, w.wraps, w.diverged, t);
}

template <typename T>
py::tuple net_sample_impl(charrnn::Cell cell, py::handle params, py::handle h0, py::handle prime_obj, std::size_t n,
                          double temperature, const charrnn::SampleOptions& opt, std::uint64_t seed) {
    auto P = load_net_params<T>(cell, params, false);
    py::array prime = as_index_array(prime_obj, "prime");
    const std::size_t n_prime = static_cast<std::size_t>(prime.shape(0));
    if (n_prime == 0) fail_value("prime is empty; give at least one character index to start from");
    check_temperature<T>(temperature);
    py::array_t<T> h = net_hidden_state<T>(h0, P.lay);
    py::array_t<std::int32_t> out(static_cast<py::ssize_t>(n));
    T* h_out = h.mutable_data();
    std::int32_t* idx_out = out.mutable_data();
    with_index_type(prime, "prime", [&](auto* x) {
        check_index_range(x, 0, n_prime, P.lay.K, "prime");
        py::gil_scoped_release nogil;
        charrnn::net_sample(P.lay, P.view(), h_out, x, n_prime, n, temperature, opt, seed, idx_out);
    });
    return py::make_tuple(out, h);
}

template <typename T>
py::tuple net_evaluate_loss_impl(charrnn::Cell cell, py::handle params, py::handle data_obj, py::handle h0) {
    auto P = load_net_params<T>(cell, params, false);
    py::array data = as_index_array(data_obj, "data");
    const std::size_t N = static_cast<std::size_t>(data.shape(0));
    if (N < 2) fail_value("data has " + std::to_string(N) + " characters; the loss needs at least 2");
    py::array_t<T> h = net_hidden_state<T>(h0, P.lay);
    T* h_out = h.mutable_data();
    double loss = 0.0;
    with_index_type(data, "data", [&](auto* d) {
        check_index_range(d, 0, N, P.lay.K, "data");
        py::gil_scoped_release nogil;
        loss = charrnn::net_sequence_loss(P.lay, P.view(), d, N, h_out);
    });
    return py::make_tuple(loss, h);
}

template <template <typename> class Impl, typename... Args>
py::tuple net_dispatch(charrnn::Cell cell, py::handle params, Args&&... args) {
    if (net_scalar(params) == Scalar::f64) return Impl<double>::run(cell, params, std::forward<Args>(args)...);
    return Impl<float>::run(cell, params, std::forward<Args>(args)...);
}

template <typename T> struct NetLossAndGrads { template <typename... A> static py::tuple run(A&&... a) { return net_loss_and_grads_impl<T>(a...); } };
template <typename T> struct NetTrainSteps { template <typename... A> static py::tuple run(A&&... a) { return net_train_steps_impl<T>(a...); } };
template <typename T> struct NetSample { template <typename... A> static py::tuple run(A&&... a) { return net_sample_impl<T>(a...); } };
template <typename T> struct NetEvaluateLoss { template <typename... A> static py::tuple run(A&&... a) { return net_evaluate_loss_impl<T>(a...); } };

}  // namespace

PYBIND11_MODULE(_core, mod) {
    mod.doc() =
        "C++ kernels of charrnn_ext. The vanilla RNN (params U, W, V, b, c): loss and gradients by BPTT, "
        "training with clipped AdaGrad (single walk or minibatched over B streams and threads), loss "
        "evaluation and sampling. General networks (net_*): stacks of rnn, lstm or gru layers trained "
        "with adagrad, rmsprop or adam and elementwise, global-norm or no gradient clipping, with "
        "temperature, top-k, top-p and greedy sampling.";

    mod.def(
        "loss_and_grads",
        [](py::handle params, py::handle X, py::handle Y, py::handle h0) {
            return dispatch<LossAndGrads>(params, X, Y, h0);
        },
        py::arg("params"), py::arg("X"), py::arg("Y"), py::arg("h0") = py::none(),
        "Loss summed over the sequence, raw (unclipped) gradients as a dict, and the last hidden state.");

    mod.def(
        "train_step",
        [](py::handle params, py::handle state, py::handle X, py::handle Y, py::handle h0, double eta, double clip,
           double eps) {
            const auto cfg = adagrad_config(eta, clip, eps);
            return dispatch<TrainStep>(params, state, X, Y, h0, cfg);
        },
        py::arg("params"), py::arg("state"), py::arg("X"), py::arg("Y"), py::arg("h0") = py::none(),
        py::arg("eta") = 0.1, py::arg("clip") = 5.0, py::arg("eps") = 1e-8,
        "One step of BPTT + clipped AdaGrad, in place on params and state. Returns (loss, h_last).");

    mod.def(
        "train_steps",
        [](py::handle params, py::handle state, py::handle data, py::handle h0, py::handle n_steps,
           py::handle seq_length, py::handle pos, double eta, double clip, double eps) {
            const auto cfg = adagrad_config(eta, clip, eps);
            const std::size_t n = non_negative_int(n_steps, "n_steps");
            const std::size_t T = non_negative_int(seq_length, "seq_length");
            const std::size_t p = non_negative_int(pos, "pos");
            return dispatch<TrainSteps>(params, state, data, h0, n, T, p, cfg);
        },
        py::arg("params"), py::arg("state"), py::arg("data"), py::arg("h0") = py::none(), py::kw_only(),
        py::arg("n_steps"), py::arg("seq_length") = 25, py::arg("pos") = 0, py::arg("eta") = 0.1,
        py::arg("clip") = 5.0, py::arg("eps") = 1e-8,
        "Many training steps walking data in chunks. Returns (losses, h, pos, wraps, diverged).");

    mod.def(
        "loss_and_grads_batched",
        [](py::handle params, py::handle X, py::handle Y, py::handle h0, py::handle threads) {
            const std::size_t nt = thread_count(threads);
            return dispatch<LossAndGradsBatched>(params, X, Y, h0, nt);
        },
        py::arg("params"), py::arg("X"), py::arg("Y"), py::arg("h0") = py::none(), py::kw_only(),
        py::arg("threads") = 1,
        "Loss and raw gradients of B streams at once: X, Y (batch_size, T), h0 (batch_size, m) or None. "
        "Loss and gradients are SUMS over the streams. Returns (loss, grads, h_last (batch_size, m)).");

    mod.def(
        "train_steps_batched",
        [](py::handle params, py::handle state, py::handle data, py::handle h0, py::handle n_steps,
           py::handle batch_size, py::handle seq_length, py::handle positions, py::handle threads, double eta,
           double clip, double eps) {
            const auto cfg = adagrad_config(eta, clip, eps);
            const std::size_t n = non_negative_int(n_steps, "n_steps");
            const std::size_t B = non_negative_int(batch_size, "batch_size");
            const std::size_t T = non_negative_int(seq_length, "seq_length");
            const std::size_t nt = thread_count(threads);
            return dispatch<TrainStepsBatched>(params, state, data, h0, n, B, T, positions, nt, cfg);
        },
        py::arg("params"), py::arg("state"), py::arg("data"), py::arg("h0") = py::none(), py::kw_only(),
        py::arg("n_steps"), py::arg("batch_size"), py::arg("seq_length") = 25, py::arg("positions") = py::none(),
        py::arg("threads") = 1, py::arg("eta") = 0.1, py::arg("clip") = 5.0, py::arg("eps") = 1e-8,
        "Minibatched training: data is split into batch_size contiguous segments of len(data) // batch_size, "
        "stream s walks segment s with its own hidden state h[s]; per step the gradients of all streams are "
        "summed, then clipped and applied in one AdaGrad update. Returns (losses, h (batch_size, m), "
        "positions (batch_size,) int64 offsets within the segments, wraps (batch_size,) int64, diverged).");

    mod.def(
        "simd_level", [] { return std::string(charrnn::isa_name(charrnn::kernels<double>().isa)); },
        "Instruction set of the kernels chosen for this CPU: 'avx512', 'avx2' or 'baseline'.");

    mod.def(
        "evaluate_loss",
        [](py::handle params, py::handle data, py::handle h0) { return dispatch<EvaluateLoss>(params, data, h0); },
        py::arg("params"), py::arg("data"), py::arg("h0") = py::none(),
        "Summed loss of predicting data[1:] from data[:-1] in one pass (no gradients). Returns (loss, h_last).");

    mod.def(
        "sample",
        [](py::handle params, py::handle h0, py::handle prime, py::handle n, double temperature, py::handle seed,
           py::handle top_k, double top_p, bool greedy) {
            const std::size_t count = non_negative_int(n, "n");
            const std::uint64_t s = seed_value(seed);
            const auto opt = sample_options(top_k, top_p, greedy);
            return dispatch<Sample>(params, h0, prime, count, temperature, s, opt);
        },
        py::arg("params"), py::arg("h0"), py::arg("prime"), py::arg("n"), py::arg("temperature") = 1.0,
        py::arg("seed") = 0, py::kw_only(), py::arg("top_k") = 0, py::arg("top_p") = 1.0, py::arg("greedy") = false,
        "Feed prime through the network from h0, then draw n characters. Returns (indices, h). "
        "top_k > 0 keeps the k most probable characters, top_p < 1 the nucleus of cumulative probability >= top_p "
        "(after top_k), greedy takes the argmax; the defaults leave sampling unchanged.");

    // ------------------------------------------------------------ general networks

    mod.def(
        "net_loss_and_grads",
        [](py::handle cell, py::handle params, py::handle X, py::handle Y, py::handle h0) {
            const auto c = parse_cell(cell);
            return net_dispatch<NetLossAndGrads>(c, params, X, Y, h0);
        },
        py::arg("cell"), py::arg("params"), py::arg("X"), py::arg("Y"), py::arg("h0") = py::none(),
        "Loss summed over the chunk X -> Y, raw gradients (dict keyed like params) and the final state "
        "(layers, S*m) for cell 'rnn', 'lstm' or 'gru'. Returns (loss, grads, h_last).");

    mod.def(
        "net_train_steps",
        [](py::handle cell, py::handle params, py::handle opt_state, py::handle data, py::handle h0,
           py::handle n_steps, py::handle seq_length, py::handle pos, py::handle optimizer, double lr, double clip,
           py::handle clip_mode, double gamma, double beta1, double beta2, double eps, py::handle t) {
            const auto c = parse_cell(cell);
            charrnn::OptConfig cfg;
            cfg.opt = parse_optimizer(optimizer);
            cfg.lr = positive_finite(lr, "lr");
            cfg.clip = positive_finite(clip, "clip");
            cfg.clip_mode = parse_clip_mode(clip_mode);
            cfg.gamma = unit_interval(gamma, "gamma");
            cfg.beta1 = unit_interval(beta1, "beta1");
            cfg.beta2 = unit_interval(beta2, "beta2");
            cfg.eps = positive_finite(eps, "eps");
            const std::size_t n = non_negative_int(n_steps, "n_steps");
            const std::size_t T = non_negative_int(seq_length, "seq_length");
            const std::size_t p = non_negative_int(pos, "pos");
            const std::uint64_t t0 = static_cast<std::uint64_t>(non_negative_int(t, "t"));
            return net_dispatch<NetTrainSteps>(c, params, opt_state, data, h0, n, T, p, cfg, t0);
        },
        py::arg("cell"), py::arg("params"), py::arg("opt_state"), py::arg("data"), py::arg("h0") = py::none(),
        py::kw_only(), py::arg("n_steps"), py::arg("seq_length") = 25, py::arg("pos") = 0,
        py::arg("optimizer") = "adagrad", py::arg("lr") = 0.1, py::arg("clip") = 5.0,
        py::arg("clip_mode") = "elementwise", py::arg("gamma") = 0.9, py::arg("beta1") = 0.9,
        py::arg("beta2") = 0.999, py::arg("eps") = 1e-8, py::arg("t") = 0,
        "Training steps walking data in chunks (as train_steps), updating params and opt_state in place. "
        "Returns (losses, h, pos, wraps, diverged, t).");

    mod.def(
        "net_sample",
        [](py::handle cell, py::handle params, py::handle h0, py::handle prime, py::handle n, double temperature,
           py::handle top_k, double top_p, bool greedy, py::handle seed) {
            const auto c = parse_cell(cell);
            const std::size_t count = non_negative_int(n, "n");
            const auto opt = sample_options(top_k, top_p, greedy);
            const std::uint64_t s = seed_value(seed);
            return net_dispatch<NetSample>(c, params, h0, prime, count, temperature, opt, s);
        },
        py::arg("cell"), py::arg("params"), py::arg("h0"), py::arg("prime"), py::arg("n"),
        py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0, py::arg("greedy") = false,
        py::arg("seed") = 0,
        "Feed prime through the network from h0 (or zeros if None), then draw n characters. Returns (indices, h).");

    mod.def(
        "net_evaluate_loss",
        [](py::handle cell, py::handle params, py::handle data, py::handle h0) {
            const auto c = parse_cell(cell);
            return net_dispatch<NetEvaluateLoss>(c, params, data, h0);
        },
        py::arg("cell"), py::arg("params"), py::arg("data"), py::arg("h0") = py::none(),
        "Summed loss of predicting data[1:] from data[:-1] in one forward pass. Returns (loss, h_last).");
}
