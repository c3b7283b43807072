"""The C++ optimisers (adagrad, rmsprop, adam) x clip modes (elementwise,
global_norm, none) through train_steps against the NumPy reference trainer
(reference_nets.train_steps): parameters, optimiser memory, the update
counter "t", losses, state and walk bookkeeping over many steps with
wrap-arounds, one stream and B streams, with and without dropout; plus bad
arguments and bad optimiser state."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import reference_nets as ref
from charrnn_ext.layout import copy_params, init_opt_state, init_params, net_init, zeros_like_params
from helpers import max_rel_err, max_scaled_err

OPTIMIZERS = ("adagrad", "rmsprop", "adam")
CLIP_MODES = ("elementwise", "global_norm", "none")
CELL_FOR = {
    ("adagrad", "elementwise"): "lstm",
    ("adagrad", "global_norm"): "gru",
    ("adagrad", "none"): "rnn",
    ("rmsprop", "elementwise"): "gru",
    ("rmsprop", "global_norm"): "lstm",
    ("rmsprop", "none"): "rnn",
    ("adam", "elementwise"): "rnn",
    ("adam", "global_norm"): "lstm",
    ("adam", "none"): "gru",
}
HYPER = {
    "adagrad": dict(eta=0.1),
    "rmsprop": dict(eta=0.01, gamma=0.8),
    "adam": dict(eta=0.01, beta1=0.8, beta2=0.99, eps=1e-6),
}
CLIP = {"elementwise": dict(clip=0.5), "global_norm": dict(clip=2.0), "none": dict()}

# Free-running trajectories of 50 updates: single steps agree to ~1e-15; the
# optimisers divide by sqrt(M) or sqrt(v), which amplifies ulp-level
# differences of near-zero gradient entries (in the classic 100-step test up
# to 1e-7). Measured here: <= 1.3e-13 relative to each array's scale, losses
# <= 1.5e-14. 1e-9 leaves room for other compilers / ISAs and still catches
# any wrong formula (a wrong step is >= 1e-3 of the scale after one update).
TRAJ_TOL = 1e-9


def stable_seed(*parts) -> int:
    """A seed per case that does not change between processes (str hashes do)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def learnable(n, K, rng):
    """A repeating pattern with 10 % noise."""
    return np.where(rng.random(n) < 0.1, rng.integers(0, K, n), np.arange(n) % K)


@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("batch", [None, 3], ids=["single", "B3"])
@pytest.mark.parametrize("clip_mode", CLIP_MODES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_train_steps_match_reference(optimizer, clip_mode, batch, dropout):
    cell = CELL_FOR[optimizer, clip_mode]
    K, m, layers, T, n_steps = 6, 5, 2, 10, 50
    rng = np.random.default_rng(stable_seed(optimizer, clip_mode, cell, batch, dropout))
    # One stream: 137 characters are 13 chunks per pass; from pos 20 the walk
    # wraps 3 times in 50 steps. Three streams: 3 segments of 137 (411 characters).
    n_chars = 137 * (batch or 1)
    data = learnable(n_chars, K, rng)
    params = net_init(cell, K, m, layers, sig=0.1, seed=1)
    state = init_opt_state(params, optimizer)
    state["t"][...] = 3  # a run that already made 3 updates
    p_ref, s_ref = copy_params(params), copy_params(state)
    opts = dict(optimizer=optimizer, clip_mode=clip_mode, **HYPER[optimizer], **CLIP[clip_mode])
    if clip_mode == "none":
        opts["clip"] = 1e-3  # ignored when clip_mode is none (a binding that used it would fail here)
    start = [20] if batch is None else [20, 0, 130]  # 130 + 11 > 137: the last stream wraps at once
    kw = dict(pos=20) if batch is None else dict(batch_size=batch, positions=start)
    losses, h, pos, wraps, diverged = cx.train_steps(
        params, state, data, n_steps=n_steps, seq_length=T, dropout=dropout, seed=17, **kw, **opts
    )
    l_r, h_r, pos_r, wraps_r, t_r = ref.train_steps(
        cell,
        p_ref,
        s_ref,
        data,
        n_steps=n_steps,
        seq_length=T,
        batch_size=batch or 1,
        positions=start,
        t=3,
        dropout=dropout,
        seed=17,
        **opts,
    )
    assert not diverged and len(losses) == n_steps
    assert np.array_equal(np.ravel(pos), pos_r) and np.array_equal(np.ravel(wraps), wraps_r)
    assert np.ravel(wraps)[0] == 3
    assert int(state["t"]) == t_r == 53
    assert max_rel_err(losses, l_r) <= TRAJ_TOL
    assert losses[-5:].mean() < losses[:5].mean()  # it learns
    for k in params:
        assert max_scaled_err(params[k], p_ref[k]) <= TRAJ_TOL, k
    for k in state:
        if k != "t":
            assert max_scaled_err(state[k], s_ref[k]) <= TRAJ_TOL, k
    assert max_scaled_err(h, h_r.reshape(np.shape(h))) <= TRAJ_TOL


def test_the_counter_matters_for_adam_and_dropout():
    # Adam's bias correction and the dropout masks read t: the same run from
    # t = 0 and from t = 3 differ, and the reference agrees with each.
    params = net_init("gru", 5, 4, 1, sig=0.2, seed=2)
    data = np.random.default_rng(3).integers(0, 5, 60)
    out = {}
    for t0 in (0, 3):
        p, st = copy_params(params), init_opt_state(params, "adam")
        st["t"][...] = t0
        losses, *_ = cx.train_steps(
            p, st, data, n_steps=4, seq_length=10, optimizer="adam", eta=0.01, dropout=0.3, seed=1
        )
        pr, sr = copy_params(params), init_opt_state(params, "adam")
        lr_, *_, t_end = ref.train_steps(
            "gru", pr, sr, data, n_steps=4, seq_length=10, t=t0, optimizer="adam", eta=0.01, dropout=0.3, seed=1
        )
        assert int(st["t"]) == t_end == t0 + 4
        assert max_rel_err(losses, lr_) <= 1e-12
        assert all(max_scaled_err(p[k], pr[k]) <= 1e-12 for k in p)
        out[t0] = (losses, p)
    assert abs(out[0][0][0] - out[3][0][0]) > 1e-6  # the first chunk's masks differ
    assert max(np.abs(out[0][1][k] - out[3][1][k]).max() for k in params) > 1e-4


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_counter_advances_and_split_runs_equal_one_run(optimizer):
    # t advances by one per update (train_step and train_steps), so two calls
    # of 15 steps are the same run as one call of 30, masks and Adam included.
    params = net_init("lstm", 6, 4, 2, sig=0.1, seed=5)
    data = np.random.default_rng(6).integers(0, 6, 200)
    kw = dict(seq_length=12, optimizer=optimizer, eta=0.01, dropout=0.2, seed=4)
    pa, sa = copy_params(params), init_opt_state(params, optimizer)
    la, ha, posa, wa, _ = cx.train_steps(pa, sa, data, n_steps=30, **kw)
    pb, sb = copy_params(params), init_opt_state(params, optimizer)
    l1, h1, p1, w1, _ = cx.train_steps(pb, sb, data, n_steps=15, **kw)
    assert int(sb["t"]) == 15
    l2, h2, p2, w2, _ = cx.train_steps(pb, sb, data, h1, n_steps=15, pos=p1, **kw)
    assert int(sa["t"]) == int(sb["t"]) == 30
    np.testing.assert_array_equal(la, np.concatenate([l1, l2]))
    np.testing.assert_array_equal(ha, h2)
    assert (posa, wa) == (p2, w1 + w2) == (14 * 12, 1)  # 16 chunks of 12 fit in 200 characters
    assert all(np.array_equal(pa[k], pb[k]) for k in pa) and all(np.array_equal(sa[k], sb[k]) for k in sa)
    # train_step counts too.
    X, Y = data[:12], data[1:13]
    cx.train_step(pb, sb, X, Y, optimizer=optimizer, eta=0.01)
    assert int(sb["t"]) == 31


def test_global_norm_clip_is_active_and_scales_all():
    # One AdaGrad step from zero memory with a tiny global-norm clip: M is the
    # square of the gradients scaled by clip / ||g||, checked against the
    # reference clipping.
    params = net_init("gru", 5, 4, 1, sig=0.2, seed=2)
    data = np.random.default_rng(3).integers(0, 5, 30)
    _, grads, _ = ref.loss_and_grads("gru", params, data[:10], data[1:11])
    norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    assert norm > 0.1
    clipped = ref.clip_grads(grads, 0.1, "global_norm")
    assert np.isclose(np.sqrt(sum(np.sum(g**2) for g in clipped.values())), 0.1)
    p = copy_params(params)
    st = init_opt_state(p, "adagrad")
    cx.train_steps(p, st, data, n_steps=1, seq_length=10, clip=0.1, clip_mode="global_norm")
    for k in p:
        assert max_rel_err(st[f"M:{k}"], clipped[k] ** 2) <= 1e-12, k
    # elementwise clipping at 0.1 would give other memories.
    elem = ref.clip_grads(grads, 0.1, "elementwise")
    assert max(max_rel_err(st[f"M:{k}"], elem[k] ** 2) for k in p) > 1e-3


def test_zero_steps_and_wrap_semantics():
    params = net_init("rnn", 5, 3, 2, seed=6)
    st = init_opt_state(params)
    st["t"][...] = 4
    data = np.arange(20) % 5
    h0 = np.ones((2, 3))
    losses, h, pos, wraps, div = cx.train_steps(params, st, data, h0, n_steps=0, pos=7, seq_length=5)
    assert losses.shape == (0,) and np.array_equal(h, h0) and (pos, wraps, div) == (7, 0, False)
    assert int(st["t"]) == 4
    # pos = 15: 15 + 5 + 1 > 20, so the first step wraps to 0 with a zero state.
    p2, s2 = copy_params(params), copy_params(st)
    p3, s3 = copy_params(params), copy_params(st)
    _, h, pos, wraps, _ = cx.train_steps(params, st, data, h0, n_steps=1, pos=15, seq_length=5)
    _, h_r, pos_r, wraps_r, t_r = ref.train_steps("rnn", p2, s2, data, h0, n_steps=1, positions=[15], seq_length=5, t=4)
    assert (pos, wraps) == (int(pos_r[0]), int(wraps_r[0])) == (5, 1)
    assert int(st["t"]) == t_r == 5
    assert max_rel_err(h, h_r[0]) <= 1e-12
    # The zero state after the wrap: the same as starting from h0 = zeros at 0.
    _, h_zero, *_ = cx.train_steps(p3, s3, data, np.zeros((2, 3)), n_steps=1, pos=0, seq_length=5)
    assert np.array_equal(h, h_zero)


def _setup():
    params = net_init("lstm", 6, 4, 2, seed=7)
    return params, init_opt_state(params, "adam"), np.random.default_rng(0).integers(0, 6, 100)


@pytest.mark.parametrize(
    "kw,exc,msg",
    [
        (dict(optimizer="sgd"), ValueError, "unknown optimizer 'sgd'"),
        (
            dict(clip_mode="norm"),
            ValueError,
            "unknown clip_mode 'norm'; expected one of 'elementwise', 'global_norm', 'none'",
        ),
        (dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
        (dict(beta2=-0.1), ValueError, r"beta2 must be in \[0, 1\)"),
        (dict(gamma=1.5), ValueError, r"gamma must be in \[0, 1\)"),
        (dict(eta=0.0), ValueError, "eta must be a positive finite number"),
        (dict(eta=float("nan")), ValueError, "eta must be a positive finite number"),
        (dict(clip=float("inf")), ValueError, "clip must be a positive finite number"),
        (dict(eps=-1.0), ValueError, "eps must be a positive finite number"),
        (dict(seq_length=0), ValueError, "seq_length must be >= 1"),
        (dict(seq_length=100), ValueError, r"data has 100 characters; a chunk needs seq_length \+ 1 = 101"),
        (dict(pos=101), ValueError, r"pos = 101 is outside the text"),
        (dict(n_steps=-1), ValueError, "n_steps must be >= 0"),
        (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_training_arguments(kw, exc, msg):
    params, st, data = _setup()
    before, st_before = copy_params(params), copy_params(st)
    args = dict(n_steps=2, optimizer="adam")
    args.update(kw)
    with pytest.raises(exc, match=msg):
        cx.train_steps(params, st, data, **args)
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert all(np.array_equal(st[k], st_before[k]) for k in st)


def test_bad_opt_state():
    params, st, data = _setup()
    with pytest.raises(ValueError, match=r"opt_state has no 'M:l0.Wx' entry"):
        cx.train_steps(params, st, data, n_steps=1, optimizer="adagrad")
    with pytest.raises(ValueError, match=r"opt_state\['v:V'\] has shape \(3, 3\); expected \(6, 4\)"):
        cx.train_steps(params, st | {"v:V": np.zeros((3, 3))}, data, n_steps=1, optimizer="adam")
    with pytest.raises(ValueError, match="opt_state has an unexpected entry 'extra'"):
        cx.train_steps(params, st | {"extra": np.zeros(1)}, data, n_steps=1, optimizer="adam")
    with pytest.raises(TypeError, match=r"opt_state\['m:c'\] has dtype float32"):
        cx.train_steps(params, st | {"m:c": st["m:c"].astype(np.float32)}, data, n_steps=1, optimizer="adam")
    with pytest.raises(TypeError, match=r"opt_state\['t'\] must be a 0-d int64 NumPy array"):
        cx.train_steps(params, st | {"t": np.zeros((), np.int32)}, data, n_steps=1, optimizer="adam")
    with pytest.raises(TypeError, match=r"opt_state\['t'\] must be a 0-d int64 NumPy array"):
        cx.train_steps(params, st | {"t": np.zeros(1, np.int64)}, data, n_steps=1, optimizer="adam")
    with pytest.raises(TypeError, match=r"opt_state\['t'\] must be a 0-d int64 NumPy array"):
        cx.train_steps(params, st | {"t": 0}, data, n_steps=1, optimizer="adam")
    with pytest.raises(ValueError, match=r"opt_state\['t'\] must be >= 0, got -1"):
        cx.train_steps(params, st | {"t": np.full((), -1, np.int64)}, data, n_steps=1, optimizer="adam")
    ro = copy_params(st)
    ro["m:c"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        cx.train_steps(params, ro, data, n_steps=1, optimizer="adam")
    ro = copy_params(st)
    ro["t"].flags.writeable = False
    with pytest.raises(ValueError, match=r"opt_state\['t'\] is read-only"):
        cx.train_steps(params, ro, data, n_steps=1, optimizer="adam")
    neg = copy_params(st)
    neg["v:V"][0, 0] = -1.0  # a second moment is never negative
    with pytest.raises(ValueError, match=r"opt_state\['v:V'\] must hold finite values >= 0"):
        cx.train_steps(params, neg, data, n_steps=1, optimizer="adam")
    shared = copy_params(st)
    shared["m:V"] = params["V"]  # memory aliasing a parameter
    with pytest.raises(ValueError, match=r"params\['V'\] and opt_state\['m:V'\] overlap in memory"):
        cx.train_steps(params, shared, data, n_steps=1, optimizer="adam")
    with pytest.raises(ValueError, match="unknown optimizer"):
        init_opt_state(params, "sgd")
    # None of the refused calls changed anything.
    fresh = init_opt_state(params, "adam")
    assert all(np.array_equal(st[k], fresh[k]) for k in st)
    assert all(np.array_equal(params[k], v) for k, v in net_init("lstm", 6, 4, 2, seed=7).items())


def test_classic_adagrad_memory_needs_no_counter():
    # A classic AdaGrad memory {U, W, V, b, c} (no "t") still trains without
    # dropout, exactly like init_opt_state's {M:U, ..., t}.
    p1 = init_params(7, 5, seed=3)
    p2 = copy_params(p1)
    s1, s2 = zeros_like_params(p1), init_opt_state(p1, "adagrad")
    data = np.random.default_rng(4).integers(0, 7, 80)
    l1, *_ = cx.train_steps(p1, s1, data, n_steps=10, seq_length=7)
    l2, *_ = cx.train_steps(p2, s2, data, n_steps=10, seq_length=7)
    np.testing.assert_array_equal(l1, l2)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1) and int(s2["t"]) == 10


@pytest.mark.parametrize("optimizer,dropout", [("adam", 0.0), ("adagrad", 0.3), ("rmsprop", 0.3)])
def test_missing_update_counter_is_refused(optimizer, dropout):
    # Adam's bias correction and the dropout masks need "t" (API_NOTES; the
    # binding's own hint says "'t' for Adam and dropout"). Without it every
    # call would silently restart at t = 0 (the same masks and the same bias
    # correction again), so the core must refuse the state and change nothing.
    params, _, data = _setup()
    st = init_opt_state(params, optimizer)
    del st["t"]
    before, st_before = copy_params(params), copy_params(st)
    with pytest.raises(ValueError, match="opt_state has no 't' entry"):
        cx.train_steps(
            params, st, data, n_steps=2, seq_length=10, optimizer=optimizer, eta=0.01, dropout=dropout, seed=1
        )
    with pytest.raises(ValueError, match="opt_state has no 't' entry"):
        cx.train_step(params, st, data[:10], data[1:11], optimizer=optimizer, eta=0.01, dropout=dropout, seed=1)
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert all(np.array_equal(st[k], st_before[k]) for k in st)
