// Bindings of the training topic: loss_and_grads, train_step, train_steps.
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>

#include "arrays.hpp"
#include "train.hpp"

namespace charrnn::binding {
namespace {

template <typename T>
py::tuple loss_and_grads_impl(py::handle params, const ParamInfo& info, py::handle X, py::handle Y, py::handle h0,
                              const Dropout& drop, std::size_t threads, Precision prec) {
    const Arrays<T> P = load_params<T>(params, info, false);
    const Chunk c = read_chunk(X, Y, info.lay.K);
    py::array_t<T> h = initial_states<T>(h0, info.lay, c.B);
    std::vector<T*> g;
    py::dict grads = new_like<T>(info, P, g);
    T* hs = h.mutable_data();
    double loss = 0.0;
    with_chunk(c, [&](auto* x, auto* y) {
        py::gil_scoped_release nogil;
        loss = chunk_loss_and_grads<T>(info.lay, threads, P.ptrs, drop, x, y, c.B, c.n, hs, g, prec);
    });
    return py::make_tuple(loss, grads, h);
}

// Adam's bias correction and the dropout masks count updates.
template <typename T>
void require_counter(const OptState<T>& st, const OptConfig& cfg, const Dropout& drop) {
    if (st.has_t() || (cfg.opt != Optimizer::adam && !drop.on())) return;
    fail_value(std::string("opt_state has no 't' entry, the update counter that ") +
               (cfg.opt == Optimizer::adam ? "Adam" : "dropout") +
               " needs; make the state with init_opt_state(params, optimizer)");
}

// The counter is stored as int64: it must not pass 2**63 - 1.
template <typename T>
void require_room(const OptState<T>& st, std::size_t updates) {
    constexpr std::uint64_t top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (st.t_value > top - std::min<std::uint64_t>(top, updates))
        fail_value("opt_state['t'] = " + std::to_string(st.t_value) + " would pass 2**63 - 1 after " +
                   std::to_string(updates) + " more update(s)");
}

template <typename T>
py::tuple train_step_impl(py::handle params, const ParamInfo& info, py::handle opt_state, py::handle X, py::handle Y,
                          py::handle h0, const OptConfig& cfg, const Dropout& drop, std::size_t threads,
                          Precision prec) {
    const Arrays<T> P = load_params<T>(params, info, true);
    const OptState<T> st = load_opt_state<T>(opt_state, info, cfg.opt, P.spans);
    require_counter(st, cfg, drop);
    require_room(st, 1);
    const Chunk c = read_chunk(X, Y, info.lay.K);
    py::array_t<T> h = initial_states<T>(h0, info.lay, c.B);
    T* hs = h.mutable_data();
    std::uint64_t t = st.t_value;
    StepResult r;
    with_chunk(c, [&](auto* x, auto* y) {
        py::gil_scoped_release nogil;
        Learner<T> tr(info.lay, c.B, threads, P.ptrs, st.s1.ptrs, st.s2.ptrs, cfg, prec);
        r = train_chunk(tr, drop, x, y, c.B, c.n, hs, t);
    });
    if (!r.applied) {
        std::ostringstream s;
        if (std::isfinite(r.loss))
            s << "the gradient (or its global norm) is not finite (the loss is " << r.loss << ")";
        else
            s << "the loss is not finite (" << r.loss << ")";
        s << "; the step was not applied and the parameters are unchanged";
        fail_value(s.str());
    }
    st.store_t(t);
    return py::make_tuple(r.loss, h);
}

template <typename T>
py::tuple train_steps_impl(py::handle params, const ParamInfo& info, py::handle opt_state, py::handle data_obj,
                           py::handle h0, std::size_t n_steps, std::size_t seq_len, std::size_t B,
                           py::handle positions, const OptConfig& cfg, const Dropout& drop, std::size_t threads,
                           Precision prec) {
    const Arrays<T> P = load_params<T>(params, info, true);
    const OptState<T> st = load_opt_state<T>(opt_state, info, cfg.opt, P.spans);
    require_counter(st, cfg, drop);
    require_room(st, n_steps);
    const py::array data = index_array(data_obj, "data", false);
    const Segments seg{static_cast<std::size_t>(data.shape(0)), B};
    if (!seg.fits(seq_len)) {
        std::ostringstream s;
        s << "data has " << seg.N << " characters";
        if (B > 1) s << ", split into batch_size = " << B << " segments of " << seg.length();
        s << "; a chunk needs seq_length + 1 = " << seq_len + 1 << (B > 1 ? " per segment" : "");
        fail_value(s.str());
    }
    std::vector<std::size_t> pos(B, 0);
    if (!positions.is_none()) {
        const py::array pa = index_array(positions, "positions", false);
        if (static_cast<std::size_t>(pa.shape(0)) != B)
            fail_value("positions has shape " + shape_str(pa) + "; expected (batch_size,) = (" + std::to_string(B) + ",)");
        with_index_type(pa, "positions", [&](auto* p) {  // each offset read in its own type
            using I = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
            for (std::size_t s = 0; s < B; ++s) {
                const bool negative = std::is_signed_v<I> && p[s] < 0;
                if (negative || static_cast<std::uint64_t>(p[s]) > seg.length()) {
                    std::ostringstream m;
                    m << "positions[" << s << "] = ";
                    if (negative) {
                        m << static_cast<long long>(p[s]);
                    } else {
                        m << static_cast<unsigned long long>(p[s]);
                    }
                    m << " is outside its segment: offsets run from 0 to the segment length " << seg.length();
                    fail_value(m.str());
                }
                pos[s] = static_cast<std::size_t>(p[s]);
            }
        });
    }
    for (std::size_t s = 0; s < B; ++s) {  // only what this call will read
        const auto w = seg.window(s, pos[s], n_steps, seq_len);
        check_index_range(data, "data", w.first, w.second, info.lay.K);
    }
    py::array_t<T> h = initial_states<T>(h0, info.lay, B);
    py::array_t<T> losses(static_cast<py::ssize_t>(n_steps));
    T* hs = h.mutable_data();
    T* loss_out = losses.mutable_data();
    std::uint64_t t = st.t_value;
    WalkResult w;
    with_index_type(data, "data", [&](auto* d) {
        py::gil_scoped_release nogil;
        Learner<T> tr(info.lay, B, threads, P.ptrs, st.s1.ptrs, st.s2.ptrs, cfg, prec);
        w = train_walk(tr, drop, d, seg, hs, pos.data(), n_steps, seq_len, t, loss_out);
    });
    st.store_t(t);
    if (w.steps_done < n_steps) losses.resize({static_cast<py::ssize_t>(w.steps_done)});
    py::array_t<std::int64_t> pos_out(static_cast<py::ssize_t>(B)), wraps_out(static_cast<py::ssize_t>(B));
    for (std::size_t s = 0; s < B; ++s) {
        pos_out.mutable_data()[s] = static_cast<std::int64_t>(w.pos[s]);
        wraps_out.mutable_data()[s] = static_cast<std::int64_t>(w.wraps[s]);
    }
    return py::make_tuple(losses, h, pos_out, wraps_out, w.diverged);
}

}  // namespace

void bind_train(py::module_& m) {
    m.def(
        "loss_and_grads",
        [](py::handle params, py::handle X, py::handle Y, py::handle h0, py::handle cell, py::handle dropout,
           py::handle seed, py::handle update, py::handle threads, py::handle precision) {
            const ParamInfo info = inspect_params(params, cell);
            Dropout drop = dropout_config(dropout, seed);
            drop.update = count(update, "update");
            const std::size_t nt = thread_count(threads);
            const Precision prec = precision_for(choice<Precision>(precision), info);
            return with_scalar(info.scalar, [&](auto v) {
                return loss_and_grads_impl<decltype(v)>(params, info, X, Y, h0, drop, nt, prec);
            });
        },
        py::arg("params"), py::arg("X"), py::arg("Y"), py::arg("h0"), py::kw_only(), py::arg("cell"),
        py::arg("dropout"), py::arg("seed"), py::arg("update"), py::arg("threads"), py::arg("precision"),
        "Loss summed over the chunk X -> Y ((T,) or (streams, T)), raw gradients keyed like params, and the "
        "final states (streams, layers, S*m). Returns (loss, grads, h).");

    m.def(
        "train_step",
        [](py::handle params, py::handle opt_state, py::handle X, py::handle Y, py::handle h0, py::handle cell,
           py::handle options, py::handle threads, py::handle precision) {
            const ParamInfo info = inspect_params(params, cell);
            const UpdateOptions u = update_options(options);
            const std::size_t nt = thread_count(threads);
            const Precision prec = precision_for(choice<Precision>(precision), info);
            return with_scalar(info.scalar, [&](auto v) {
                return train_step_impl<decltype(v)>(params, info, opt_state, X, Y, h0, u.opt, u.drop, nt, prec);
            });
        },
        py::arg("params"), py::arg("opt_state"), py::arg("X"), py::arg("Y"), py::arg("h0"), py::kw_only(),
        py::arg("cell"), py::arg("options"), py::arg("threads"), py::arg("precision"),
        "One update (forward, BPTT, clipping, optimiser) on the chunk X -> Y, in place on params and opt_state. "
        "Returns (loss, h).");

    m.def(
        "train_steps",
        [](py::handle params, py::handle opt_state, py::handle data, py::handle h0, py::handle n_steps,
           py::handle seq_length, py::handle batch_size, py::handle positions, py::handle cell,
           py::handle options, py::handle threads, py::handle precision) {
            const ParamInfo info = inspect_params(params, cell);
            const UpdateOptions u = update_options(options);
            const Precision prec = precision_for(choice<Precision>(precision), info);
            const std::size_t n = count(n_steps, "n_steps");
            if (n > kMaxCount) fail_value("n_steps is too large: " + std::to_string(n) + " is more than 2**32 updates "
                                          "in one call; split the work into several calls");
            const std::size_t T = positive_count(seq_length, "seq_length");
            const std::size_t B = positive_count(batch_size, "batch_size");
            const std::size_t nt = thread_count(threads);
            return with_scalar(info.scalar, [&](auto v) {
                return train_steps_impl<decltype(v)>(params, info, opt_state, data, h0, n, T, B, positions, u.opt,
                                                     u.drop, nt, prec);
            });
        },
        py::arg("params"), py::arg("opt_state"), py::arg("data"), py::arg("h0"), py::kw_only(), py::arg("n_steps"),
        py::arg("seq_length"), py::arg("batch_size"), py::arg("positions"), py::arg("cell"), py::arg("options"),
        py::arg("threads"), py::arg("precision"),
        "n_steps updates walking data with batch_size streams over contiguous segments. Returns (losses, h "
        "(streams, layers, S*m), positions (streams,), wraps (streams,), diverged).");
}

}  // namespace charrnn::binding
