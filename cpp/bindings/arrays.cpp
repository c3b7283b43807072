// The checked-array helper (arrays.hpp).
#include "arrays.hpp"

#include <pybind11/gil_safe_call_once.h>

#include <cmath>
#include <limits>
#include <sstream>

namespace charrnn::binding {

void fail_type(const std::string& msg) { throw py::type_error(msg); }
void fail_value(const std::string& msg) { throw py::value_error(msg); }
void fail_index(const std::string& msg) { throw py::index_error(msg); }

std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

std::string type_name(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")); }

std::string dtype_name(const py::array& a) { return py::str(a.dtype()); }

namespace {

const char* float_name(float) { return "float32"; }
const char* float_name(double) { return "float64"; }

// The kernels index every array as a plain T*: it must be in C order and aligned for its type (an array
// viewed from a buffer at an odd offset is neither a crash nor a slow path here, but a refusal).
// An array the call updates in place is updated in the copy the message suggests: it says so.
void check_layout(const py::array& a, const std::string& name, bool updated_in_place = false) {
    const std::string keep = updated_in_place ? " (it is updated in place: keep the copy)" : "";
    if ((a.flags() & py::array::c_style) == 0)
        fail_value(name + " is not C-contiguous; pass np.ascontiguousarray(" + name + ")" + keep);
    if ((a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) == 0)
        fail_value(name + " is not aligned in memory for its dtype (a view at an odd byte offset?); pass an "
                          "aligned copy, np.array(" + name + ")" + keep);
}

std::string tuple_str(std::initializer_list<std::size_t> dims) {
    std::string s = "(";
    std::size_t i = 0;
    for (std::size_t d : dims) s += (i++ ? ", " : "") + std::to_string(d);
    return s + (dims.size() == 1 ? ",)" : ")");
}

// Python's bool or NumPy's.
bool is_bool(py::handle obj) {
    if (PyBool_Check(obj.ptr())) return true;
    PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> numpy_bool;
    const py::object& cls =
        numpy_bool.call_once_and_store_result([] { return py::module_::import("numpy").attr("bool_"); })
            .get_stored();
    return py::isinstance(obj, cls);
}

// Python int (or anything with __index__), not a bool, as a Python int.
py::int_ integer(py::handle obj, const char* name) {
    if (is_bool(obj)) fail_type(std::string(name) + " must be an integer, got bool");
    if (!py::isinstance<py::int_>(obj) && !py::hasattr(obj, "__index__"))
        fail_type(std::string(name) + " must be an integer, got " + type_name(obj));
    py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
    if (!v) {
        PyErr_Clear();  // e.g. a NumPy array of several integers
        fail_type(std::string(name) + " must be an integer, got " + type_name(obj));
    }
    return v;
}

// A real number (int or float, not a bool, not a string).
double real(py::handle obj, const char* name) {
    if (is_bool(obj) || !(PyFloat_Check(obj.ptr()) || py::hasattr(obj, "__index__") ||
                          py::hasattr(obj, "__float__")) ||
        py::isinstance<py::str>(obj))
        fail_type(std::string(name) + " must be a number, got " + type_name(obj));
    const double v = PyFloat_AsDouble(obj.ptr());
    if (v == -1.0 && PyErr_Occurred()) {
        const bool overflow = PyErr_ExceptionMatches(PyExc_OverflowError);
        PyErr_Clear();
        if (overflow) fail_value(std::string(name) + " is too large to be a float64 number");
        fail_type(std::string(name) + " must be a number, got " + type_name(obj));  // e.g. an array of several
    }
    return v;
}

// dicts, and any other collections.abc.Mapping (the class looked up once).
bool is_mapping(py::handle obj) {
    if (PyDict_Check(obj.ptr())) return true;
    PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> mapping_class;
    const py::object& cls =
        mapping_class
            .call_once_and_store_result([] { return py::module_::import("collections.abc").attr("Mapping"); })
            .get_stored();
    return py::isinstance(obj, cls);
}

bool has_key(py::handle mapping, const std::string& key) {
    return PyMapping_HasKeyString(mapping.ptr(), key.c_str()) == 1;
}

void require_mapping(py::handle mapping, const char* what) {
    if (!is_mapping(mapping)) fail_type(std::string(what) + " must be a dict of NumPy arrays, got " + type_name(mapping));
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
    if (!py::isinstance<py::array>(value))
        fail_type(std::string(what) + "['" + key + "'] must be a NumPy array, got " + type_name(value));
    return py::reinterpret_borrow<py::array>(value);
}

std::string keys_hint(const NetLayout& lay, bool classic_names) {
    if (classic_names) return "a vanilla RNN has keys U, W, V, b, c";
    return std::string("a '") + name_of(lay.cell) + "' network has keys l{l}.Wx, l{l}.Wh, l{l}.b" +
           (lay.cell == Cell::gru ? ", l{l}.bh" : "") + " per layer l = 0, 1, ..., then V and c";
}

std::string spec_shape(const ArraySpec& s) {
    return s.cols ? tuple_str({s.rows, s.cols}) : tuple_str({s.rows});
}

const std::string& key_of(const ArraySpec& s, bool classic_names) { return classic_names ? s.alias : s.name; }

// One array of a dict, checked against its spec and viewed in place; hint
// says what keys the dict should have.
template <typename T>
T* checked_array(py::handle mapping, const char* what, const std::string& key, const ArraySpec& spec,
                 const ParamInfo& info, bool writable, Values need, Arrays<T>& out, const std::string& hint) {
    py::array a = dict_array(mapping, what, key, hint);
    const std::string name = std::string(what) + "['" + key + "']";
    if (!py::isinstance<py::array_t<T>>(a))
        fail_type(name + " has dtype " + dtype_name(a) + "; expected " + float_name(T()) +
                  " like the other parameters (all arrays share one dtype)");
    const py::ssize_t nd = spec.cols ? 2 : 1;
    bool ok = a.ndim() == nd && static_cast<std::size_t>(a.shape(0)) == spec.rows;
    if (ok && nd == 2) ok = static_cast<std::size_t>(a.shape(1)) == spec.cols;
    if (!ok) {
        const NetLayout& l = info.lay;
        std::ostringstream s;
        s << name << " has shape " << shape_str(a) << "; expected " << spec_shape(spec) << " for a '"
          << name_of(l.cell) << "' network with K=" << l.K << ", m=" << l.m << ", " << l.L << " layer(s)";
        fail_value(s.str());
    }
    check_layout(a, name, writable);
    if (writable && !a.writeable()) fail_value(name + " is read-only; it must be writable to be updated in place");
    const T* p = static_cast<const T*>(a.data());
    if (need == Values::finite && !all_finite(p, spec.size())) fail_value(name + " contains NaN or infinity");
    if (need == Values::non_negative && !all_finite_non_negative(p, spec.size()))
        fail_value(name + " must hold finite values >= 0 (accumulated squared gradients); it contains a negative "
                          "entry, NaN or infinity");
    out.keep.push_back(a);
    out.keys.push_back(key);
    const char* lo = static_cast<const char*>(a.data());
    out.spans.push_back({lo, lo + a.nbytes(), name});
    // Calls that only read accept read-only arrays; the kernels never write through these pointers then.
    T* ptr = writable ? static_cast<T*>(a.mutable_data()) : static_cast<T*>(const_cast<void*>(a.data()));
    out.ptrs.push_back(ptr);
    return ptr;
}

// Anything in the dict besides `expected` keys (and `extra`) is a mistake.
void reject_unknown_keys(py::handle mapping, const char* what, const std::vector<std::string>& expected,
                         const char* extra, const std::string& hint) {
    const std::size_t n = expected.size() + (extra && has_key(mapping, extra) ? 1 : 0);
    if (static_cast<std::size_t>(py::len(mapping)) == n) return;
    for (auto item : py::reinterpret_borrow<py::object>(mapping).attr("keys")()) {
        const std::string k = py::str(item);
        bool known = extra && k == extra;
        for (const auto& e : expected) known = known || e == k;
        if (!known) fail_value(std::string(what) + " has an unexpected entry '" + k + "' (" + hint + ")");
    }
}

void reject_overlaps(const std::vector<Span>& spans) {
    const auto hit = find_overlap(spans);
    if (!hit.first.empty())
        fail_value(hit.first + " and " + hit.second +
                   " overlap in memory; every parameter and optimiser-state array must be a separate array");
}

}  // namespace

// ---------------------------------------------------------------- scalars

std::size_t count(py::handle obj, const char* name, long long low) {
    py::int_ v = integer(obj, name);
    if (v < py::int_(low))
        fail_value(std::string(name) + " must be >= " + std::to_string(low) + ", got " + std::string(py::str(v)));
    if (v > py::int_(std::numeric_limits<std::int64_t>::max()))
        fail_value(std::string(name) + " is too large: " + std::string(py::str(v)));
    return static_cast<std::size_t>(v.cast<std::int64_t>());
}

std::size_t positive_count(py::handle obj, const char* name) {
    return count(obj, name, 1);
}

std::size_t thread_count(py::handle obj) {
    const std::size_t n = positive_count(obj, "threads");
    if (n > 256) fail_value("threads must be at most 256, got " + std::to_string(n));
    return n;
}

bool flag(py::handle obj, const char* name) {
    if (!is_bool(obj)) fail_type(std::string(name) + " must be a bool, got " + type_name(obj));
    return PyObject_IsTrue(obj.ptr()) == 1;
}

std::uint64_t seed_value(py::handle obj, const char* name) {
    if (is_bool(obj) || (!py::isinstance<py::int_>(obj) && !py::hasattr(obj, "__index__")))
        fail_type(std::string(name) + " must be an integer in [0, 2**64), got " + type_name(obj));
    py::int_ v = integer(obj, name);
    if (v < py::int_(0) || v >= py::int_(py::module_::import("builtins").attr("pow")(2, 64)))
        fail_value(std::string(name) + " must be an integer in [0, 2**64), got " + std::string(py::str(v)));
    return v.cast<std::uint64_t>();
}

double positive_finite(py::handle obj, const char* name) {
    const double v = real(obj, name);
    if (!std::isfinite(v) || v <= 0.0) {
        std::ostringstream s;
        s << name << " must be a positive finite number, got " << v;
        fail_value(s.str());
    }
    return v;
}

double unit_interval(py::handle obj, const char* name) {
    const double v = real(obj, name);
    if (!std::isfinite(v) || v < 0.0 || v >= 1.0) {
        std::ostringstream s;
        s << name << " must be in [0, 1), got " << v;
        fail_value(s.str());
    }
    return v;
}

Dropout dropout_config(py::handle p, py::handle seed) {
    Dropout d;
    d.p = unit_interval(p, "dropout");
    d.seed = seed_value(seed, "seed");
    return d;
}

UpdateOptions update_options(py::handle options) {
    if (!is_mapping(options))
        fail_type("options must be a dict of the update's option values (charrnn_ext.config.update_options), got " +
                  type_name(options));
    std::vector<std::string> read;  // the keys read below, in order: the ones the mapping may have
    auto get = [&](const char* key) -> py::object {
        read.emplace_back(key);
        try {
            return options[py::str(key)];
        } catch (py::error_already_set& e) {
            if (!e.matches(PyExc_KeyError)) throw;
            fail_value(std::string("options has no '") + key +
                       "' entry (build the mapping with charrnn_ext.config.update_options)");
        }
    };
    UpdateOptions u;
    u.opt.opt = choice<Optimizer>(get("optimizer"));
    u.opt.eta = positive_finite(get("eta"), "eta");
    u.opt.clip = positive_finite(get("clip"), "clip");
    u.opt.clip_mode = choice<ClipMode>(get("clip_mode"));
    u.opt.gamma = unit_interval(get("gamma"), "gamma");
    u.opt.beta1 = unit_interval(get("beta1"), "beta1");
    u.opt.beta2 = unit_interval(get("beta2"), "beta2");
    u.opt.eps = positive_finite(get("eps"), "eps");
    u.drop = dropout_config(get("dropout"), get("seed"));
    std::string known;
    for (const auto& k : read) known += (known.empty() ? "" : ", ") + k;
    reject_unknown_keys(options, "options", read, nullptr, "an update reads " + known);
    return u;
}

SampleOptions sample_options(py::handle top_k, py::handle top_p, py::handle greedy) {
    SampleOptions o;
    o.top_k = count(top_k, "top_k");
    const double p = real(top_p, "top_p");
    if (!(p > 0.0 && p <= 1.0)) {
        std::ostringstream s;
        s << "top_p must be in (0, 1] (1 = off), got " << p;
        fail_value(s.str());
    }
    o.top_p = p;
    o.greedy = flag(greedy, "greedy");
    return o;
}

// ---------------------------------------------------------------- parameters

ParamInfo inspect_params(py::handle params, py::handle cell) {
    require_mapping(params, "params");
    ParamInfo info;
    const bool classic = has_key(params, "U");
    if (classic && has_key(params, "l0.Wx"))
        fail_value("params mixes the classic names (U, W, V, b, c) and the network names (l0.Wx, ...); use one set");
    py::array ref;
    if (classic) {
        ref = dict_array(params, "params", "U", "a vanilla RNN has keys U, W, V, b, c");
        if (ref.ndim() != 2) fail_value("params['U'] must be 2-D with shape (m, K), got shape " + shape_str(ref));
        info.lay = {Cell::rnn, static_cast<std::size_t>(ref.shape(1)), static_cast<std::size_t>(ref.shape(0)), 1};
        info.classic_names = true;
    } else {
        const std::string hint = "a network has keys l{l}.Wx, l{l}.Wh, l{l}.b (and l{l}.bh for gru) per layer, "
                                 "then V and c; a vanilla RNN may use U, W, V, b, c";
        ref = dict_array(params, "params", "V", hint);
        if (ref.ndim() != 2) fail_value("params['V'] must be 2-D with shape (K, m), got shape " + shape_str(ref));
        info.lay.K = static_cast<std::size_t>(ref.shape(0));
        info.lay.m = static_cast<std::size_t>(ref.shape(1));
        if (info.lay.K == 0 || info.lay.m == 0)
            fail_value("params['V'] has shape " + shape_str(ref) +
                       ": the vocabulary size K and the hidden size m must be at least 1");
        while (has_key(params, "l" + std::to_string(info.lay.L) + ".Wx")) ++info.lay.L;
        if (info.lay.L == 0) fail_value("params has no 'l0.Wx' entry: a network needs at least one layer (" + hint + ")");
        py::array Wh = dict_array(params, "params", "l0.Wh", hint);
        const std::size_t m = info.lay.m, rows = Wh.ndim() == 2 ? static_cast<std::size_t>(Wh.shape(0)) : 0;
        if (m > 0 && rows == m) {
            info.lay.cell = Cell::rnn;
        } else if (m > 0 && rows == 4 * m) {
            info.lay.cell = Cell::lstm;
        } else if (m > 0 && rows == 3 * m) {
            info.lay.cell = Cell::gru;
        } else {
            fail_value("params['l0.Wh'] has shape " + shape_str(Wh) + "; expected (G*m, m) with m = " +
                       std::to_string(m) + " (from params['V']) and G = 1 (rnn), 4 (lstm) or 3 (gru)");
        }
    }
    if (info.lay.K == 0 || info.lay.m == 0)
        fail_value("params['" + std::string(classic ? "U" : "V") + "'] has shape " + shape_str(ref) +
                   ": the vocabulary size K and the hidden size m must be at least 1");
    if (py::isinstance<py::array_t<double>>(ref)) {
        info.scalar = Scalar::f64;
    } else if (py::isinstance<py::array_t<float>>(ref)) {
        info.scalar = Scalar::f32;
    } else {
        fail_type("params['" + std::string(classic ? "U" : "V") + "'] has dtype " + dtype_name(ref) +
                  "; expected float64 or float32 (native byte order)");
    }
    if (!cell.is_none()) {
        const Cell want = choice<Cell>(cell);
        if (want != info.lay.cell)
            fail_value(std::string("cell is '") + name_of(want) + "' but the parameters describe a '" +
                       name_of(info.lay.cell) + "' network");
    }
    return info;
}

Precision precision_for(Precision p, const ParamInfo& info) {
    if (p == Precision::bf16 && info.scalar != Scalar::f32)
        fail_value("precision 'bfloat16' needs float32 parameters (bfloat16 products with float32 master weights); "
                   "these are float64");
    return p;
}

template <typename T>
Arrays<T> load_params(py::handle params, const ParamInfo& info, bool writable) {
    Arrays<T> out;
    std::vector<std::string> keys;
    for (const auto& spec : info.lay.arrays()) {
        checked_array<T>(params, "params", key_of(spec, info.classic_names), spec, info, writable, Values::finite, out,
                         keys_hint(info.lay, info.classic_names));
    }
    reject_unknown_keys(params, "params", out.keys, nullptr, keys_hint(info.lay, info.classic_names));
    return out;
}

template <typename T>
void OptState<T>::store_t(std::uint64_t v) const {
    if (has_t()) *static_cast<std::int64_t*>(const_cast<void*>(t.data())) = static_cast<std::int64_t>(v);
}

template <typename T>
OptState<T> load_opt_state(py::handle state, const ParamInfo& info, Optimizer opt, std::vector<Span> spans) {
    require_mapping(state, "opt_state");
    OptState<T> st;
    const bool adam = opt == Optimizer::adam;
    const std::string hint = std::string("optimizer '") + name_of(opt) + "' needs " +
                             (adam ? "m:<name> and v:<name>" : "M:<name>") +
                             " for every parameter, and 't' for Adam and dropout; make it with "
                             "init_opt_state(params, optimizer)";
    std::vector<std::string> keys;
    for (const auto& spec : info.lay.arrays()) {
        const std::string& k = key_of(spec, info.classic_names);
        if (adam) {
            checked_array<T>(state, "opt_state", "m:" + k, spec, info, true, Values::finite, st.s1, hint);
            checked_array<T>(state, "opt_state", "v:" + k, spec, info, true, Values::non_negative, st.s2, hint);
        } else {
            // a classic AdaGrad memory dict keys the arrays by the bare parameter names
            const std::string key = has_key(state, "M:" + k) || !has_key(state, k) ? "M:" + k : k;
            checked_array<T>(state, "opt_state", key, spec, info, true, Values::non_negative, st.s1, hint);
        }
    }
    keys = st.s1.keys;
    keys.insert(keys.end(), st.s2.keys.begin(), st.s2.keys.end());
    reject_unknown_keys(state, "opt_state", keys, "t", hint);
    if (has_key(state, "t")) {
        py::object v = state["t"];
        if (!py::isinstance<py::array_t<std::int64_t>>(v) || py::reinterpret_borrow<py::array>(v).ndim() != 0)
            fail_type("opt_state['t'] must be a 0-d int64 NumPy array (the update counter), got " +
                      (py::isinstance<py::array>(v) ? "an array of dtype " + dtype_name(py::reinterpret_borrow<py::array>(v)) +
                                                          " and shape " + shape_str(py::reinterpret_borrow<py::array>(v))
                                                    : type_name(v)));
        st.t = py::reinterpret_borrow<py::array>(v);
        st.counter = true;
        if (!st.t.writeable()) fail_value("opt_state['t'] is read-only; it must be writable to be updated in place");
        check_layout(st.t, "opt_state['t']", true);
        const std::int64_t t = *static_cast<const std::int64_t*>(st.t.data());
        if (t < 0) fail_value("opt_state['t'] must be >= 0, got " + std::to_string(t));
        st.t_value = static_cast<std::uint64_t>(t);
        const char* lo = static_cast<const char*>(st.t.data());
        spans.push_back({lo, lo + st.t.nbytes(), "opt_state['t']"});
    }
    spans.insert(spans.end(), st.s1.spans.begin(), st.s1.spans.end());
    spans.insert(spans.end(), st.s2.spans.begin(), st.s2.spans.end());
    reject_overlaps(spans);
    return st;
}

template <typename T>
py::dict new_like(const ParamInfo& info, const Arrays<T>& params, std::vector<T*>& ptrs) {
    py::dict d;
    const auto specs = info.lay.arrays();
    for (std::size_t i = 0; i < specs.size(); ++i) {
        py::array_t<T> a = specs[i].cols ? py::array_t<T>({specs[i].rows, specs[i].cols}) : py::array_t<T>(specs[i].rows);
        ptrs.push_back(a.mutable_data());
        d[py::str(params.keys[i])] = a;
    }
    return d;
}

template <typename T>
py::array_t<T> initial_states(py::handle h0, const NetLayout& lay, std::size_t B) {
    const std::size_t L = lay.L, W = lay.S() * lay.m, n = B * L * W;
    py::array_t<T> h({B, L, W});
    T* out = h.mutable_data();
    if (h0.is_none()) {
        std::fill(out, out + n, T(0));
        return h;
    }
    std::string expect = tuple_str({B, L, W}) + " (streams, layers, " + (lay.S() == 2 ? "2*m: h then c" : "m") + ")";
    if (B == 1) expect += " or " + tuple_str({L, W});
    if (L == 1 && B > 1) expect += " or " + tuple_str({B, W});
    if (B == 1 && L == 1) expect += " or " + tuple_str({W});
    if (!py::isinstance<py::array>(h0))
        fail_type("h0 must be a NumPy array of shape " + expect + ", or None, got " + type_name(h0));
    auto a = py::reinterpret_borrow<py::array>(h0);
    if (!py::isinstance<py::array_t<T>>(a))
        fail_type("h0 has dtype " + dtype_name(a) + "; expected " + float_name(T()) + " like the parameters");
    std::vector<std::size_t> shape(static_cast<std::size_t>(a.ndim()));
    for (std::size_t i = 0; i < shape.size(); ++i) shape[i] = static_cast<std::size_t>(a.shape(static_cast<py::ssize_t>(i)));
    const bool ok = shape == std::vector<std::size_t>{B, L, W} || (B == 1 && shape == std::vector<std::size_t>{L, W}) ||
                    (L == 1 && shape == std::vector<std::size_t>{B, W}) ||
                    (B == 1 && L == 1 && shape == std::vector<std::size_t>{W});
    if (!ok) fail_value("h0 has shape " + shape_str(a) + "; expected " + expect);
    check_layout(a, "h0");
    const T* src = static_cast<const T*>(a.data());
    if (!all_finite(src, n)) fail_value("h0 contains NaN or infinity");
    std::copy(src, src + n, out);
    return h;
}

// ---------------------------------------------------------------- indices

py::array index_array(py::handle obj, const char* name, bool allow_2d) {
    const std::string what = allow_2d ? "a 1-D or 2-D array of integer character indices"
                                      : "a 1-D array of integer character indices";
    py::array a;
    if (py::isinstance<py::array>(obj)) {
        a = py::reinterpret_borrow<py::array>(obj);
    } else {
        if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj))
            fail_type(std::string(name) + " must be " + what + ", got " + type_name(obj) +
                      " (encode text with a Vocabulary first)");
        try {
            a = py::module_::import("numpy").attr("asarray")(obj);
            // An empty list becomes float64; it is still an empty index sequence.
            if (a.size() == 0) a = py::module_::import("numpy").attr("asarray")(obj, "int64");
        } catch (py::error_already_set&) {
            fail_type(std::string(name) + " must be " + what + ", got " + type_name(obj));
        }
    }
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u')
        fail_type(std::string(name) + " must hold integer character indices, got dtype " + dtype_name(a));
    if (a.ndim() != 1 && !(allow_2d && a.ndim() == 2))
        fail_value(std::string(name) + " must be " + (allow_2d ? "1-D (T,) or 2-D (streams, T)" : "1-D") +
                   ", got shape " + shape_str(a));
    check_layout(a, name);
    return a;
}

void check_index_range(const py::array& a, const char* name, std::size_t begin, std::size_t end, std::size_t K) {
    with_index_type(a, name, [&](auto* p) {
        const std::size_t i = first_out_of_range(p, begin, end, K);
        if (i == end) return;
        std::ostringstream s;
        s << name;
        if (a.ndim() == 2) {
            const std::size_t n = static_cast<std::size_t>(a.shape(1));
            s << "[" << i / n << ", " << i % n << "]";
        } else {
            s << "[" << i << "]";
        }
        using I = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
        s << " = ";
        if constexpr (std::is_signed_v<I>) {
            s << static_cast<long long>(p[i]);
        } else {
            s << static_cast<unsigned long long>(p[i]);
        }
        s << " is outside the vocabulary range [0, " << K << ")";
        fail_index(s.str());
    });
}

Chunk read_chunk(py::handle X_obj, py::handle Y_obj, std::size_t K) {
    Chunk c{index_array(X_obj, "X", true), index_array(Y_obj, "Y", true)};
    if (c.X.ndim() != c.Y.ndim() || c.X.shape(0) != c.Y.shape(0) ||
        (c.X.ndim() == 2 && c.X.shape(1) != c.Y.shape(1)))
        fail_value("X and Y must have the same shape, got " + shape_str(c.X) + " and " + shape_str(c.Y));
    c.B = c.X.ndim() == 2 ? static_cast<std::size_t>(c.X.shape(0)) : 1;
    c.n = static_cast<std::size_t>(c.X.shape(c.X.ndim() - 1));
    if (c.B == 0 || c.n == 0)
        fail_value("X and Y have shape " + shape_str(c.X) + "; a chunk needs at least one stream and one step (T >= 1)");
    check_index_range(c.X, "X", 0, c.B * c.n, K);
    check_index_range(c.Y, "Y", 0, c.B * c.n, K);
    return c;
}

// ---------------------------------------------------------------- instantiations

#define CHARRNN_INSTANTIATE(T)                                                                                    \
    template Arrays<T> load_params<T>(py::handle, const ParamInfo&, bool);                                       \
    template struct OptState<T>;                                                                                  \
    template OptState<T> load_opt_state<T>(py::handle, const ParamInfo&, Optimizer, std::vector<Span>);          \
    template py::dict new_like<T>(const ParamInfo&, const Arrays<T>&, std::vector<T*>&);                         \
    template py::array_t<T> initial_states<T>(py::handle, const NetLayout&, std::size_t);
CHARRNN_INSTANTIATE(float)
CHARRNN_INSTANTIATE(double)
#undef CHARRNN_INSTANTIATE

}  // namespace charrnn::binding
