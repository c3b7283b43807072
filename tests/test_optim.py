"""net_train_steps (C++ optimisers + the training walk) against the NumPy
reference trainer: every optimiser x clip mode over 50 steps, parameters,
optimiser memory, losses, state and walk bookkeeping; plus bad inputs."""
import zlib

import numpy as np
import pytest

from charrnn_ext import _core
from charrnn_ext import reference_nets as ref
from charrnn_ext.nets import init_opt_state, net_init

from nets_common import max_rel_err, max_scaled_err

CONFIGS = [
    ("adagrad", "elementwise", "lstm", dict(lr=0.1, clip=0.5)),
    ("adagrad", "global_norm", "gru", dict(lr=0.1, clip=2.0)),
    ("adagrad", "none", "rnn", dict(lr=0.05)),
    ("rmsprop", "elementwise", "gru", dict(lr=0.01, clip=0.5, gamma=0.8)),
    ("rmsprop", "global_norm", "lstm", dict(lr=0.01, clip=2.0, gamma=0.95)),
    ("adam", "elementwise", "rnn", dict(lr=0.01, clip=0.5, beta1=0.8, beta2=0.99)),
    ("adam", "global_norm", "lstm", dict(lr=0.01, clip=2.0)),
    ("adam", "global_norm", "gru", dict(lr=0.005, clip=1.0, eps=1e-6)),
]


@pytest.mark.parametrize("optimizer,clip_mode,cell,kw", CONFIGS)
def test_train_steps_match_reference(optimizer, clip_mode, cell, kw):
    K, m, layers, T, n_steps = 6, 5, 2, 10, 50
    # a fixed seed per case (str hashes change between processes)
    rng = np.random.default_rng(zlib.crc32(f"{optimizer}/{clip_mode}/{cell}".encode()))
    # a learnable text (a repeating pattern with some noise); 137 characters
    # are 13 chunks per pass, so the walk wraps 3 times
    data = np.where(rng.random(137) < 0.1, rng.integers(0, K, 137), np.arange(137) % K)
    params = net_init(cell, K, m, layers, sig=0.1, seed=1)
    state = init_opt_state(params, optimizer)
    p_ref = {k: v.copy() for k, v in params.items()}
    s_ref = {k: v.copy() for k, v in state.items()}
    opts = dict(optimizer=optimizer, clip_mode=clip_mode, **kw)
    losses, h, pos, wraps, diverged, t = _core.net_train_steps(
        cell, params, state, data, n_steps=n_steps, seq_length=T, pos=20, t=3, **opts)
    l_r, h_r, pos_r, wraps_r, t_r = ref.train_steps(cell, p_ref, s_ref, data, n_steps=n_steps, seq_length=T,
                                                    pos=20, t=3, **opts)
    assert not diverged and len(losses) == n_steps
    assert (pos, wraps, t) == (pos_r, wraps_r, t_r) == (pos_r, 3, 53)
    assert max_rel_err(losses, l_r) <= 1e-9
    assert losses[-5:].mean() < losses[:5].mean()  # it learns
    for k in params:
        assert max_scaled_err(params[k], p_ref[k]) <= 1e-9, k
    for k in state:
        assert max_scaled_err(state[k], s_ref[k]) <= 1e-9, k
    assert max_scaled_err(h, h_r) <= 1e-9


def test_global_norm_clip_is_active_and_scales_all():
    # One step with a tiny clip: the update is lr * g * clip/||g|| for rmsprop
    # with gamma = 0 -> sign-like steps; checked directly against the reference update.
    params = net_init("gru", 5, 4, 1, sig=0.2, seed=2)
    data = np.random.default_rng(3).integers(0, 5, 30)
    loss, grads, _ = ref.loss_and_grads("gru", params, data[:10], data[1:11])
    norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
    assert norm > 0.1
    clipped = ref.clip_grads(grads, 0.1, "global_norm")
    assert np.isclose(np.sqrt(sum(np.sum(g ** 2) for g in clipped.values())), 0.1)
    p = {k: v.copy() for k, v in params.items()}
    st = init_opt_state(p, "adagrad")
    _core.net_train_steps("gru", p, st, data, n_steps=1, seq_length=10, clip=0.1, clip_mode="global_norm")
    for k in p:
        assert max_rel_err(st[f"M:{k}"], clipped[k] ** 2) <= 1e-12


def test_float32_training_runs_close_to_float64():
    params = net_init("lstm", 8, 6, 2, sig=0.1, seed=4)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    data = np.random.default_rng(5).integers(0, 8, 300)
    out64 = _core.net_train_steps("lstm", params, init_opt_state(params, "adam"), data, n_steps=20,
                                  seq_length=12, optimizer="adam", lr=0.01)
    out32 = _core.net_train_steps("lstm", p32, init_opt_state(p32, "adam"), data, n_steps=20,
                                  seq_length=12, optimizer="adam", lr=0.01)
    assert out32[0].dtype == np.float32 and out32[1].dtype == np.float32
    # Adam normalises the step, so float32 rounding in tiny gradients moves
    # individual entries by up to ~lr * 1e-3 over 20 steps; losses stay within 1e-4.
    assert np.max(np.abs(out32[0] - out64[0]) / out64[0]) < 1e-4


def test_zero_steps_and_wrap_semantics():
    params = net_init("rnn", 5, 3, 1, seed=6)
    st = init_opt_state(params)
    data = np.arange(20) % 5
    h0 = np.ones((1, 3))
    losses, h, pos, wraps, div, t = _core.net_train_steps("rnn", params, st, data, h0, n_steps=0, pos=7, t=4,
                                                          seq_length=5)
    assert losses.shape == (0,) and np.array_equal(h, h0) and (pos, wraps, div, t) == (7, 0, False, 4)
    # pos = 15: 15 + 5 + 1 > 20, so the first step wraps to 0 with a zero state
    p2 = {k: v.copy() for k, v in params.items()}
    _, h, pos, wraps, _, _ = _core.net_train_steps("rnn", params, st, data, h0, n_steps=1, pos=15, seq_length=5)
    l_r, h_r, pos_r, wraps_r, _ = ref.train_steps("rnn", p2, init_opt_state(p2), data, h0, n_steps=1, pos=15,
                                                 seq_length=5)
    assert (pos, wraps) == (pos_r, wraps_r) == (5, 1)
    assert max_rel_err(h, h_r) <= 1e-12


def _setup():
    params = net_init("lstm", 6, 4, 2, seed=7)
    return params, init_opt_state(params, "adam"), np.random.default_rng(0).integers(0, 6, 100)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(optimizer="sgd"), ValueError, "unknown optimizer 'sgd'; expected one of 'adagrad', 'rmsprop', 'adam'"),
    (dict(clip_mode="norm"), ValueError, "unknown clip_mode 'norm'"),
    (dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
    (dict(beta2=-0.1), ValueError, r"beta2 must be in \[0, 1\)"),
    (dict(gamma=1.5), ValueError, r"gamma must be in \[0, 1\)"),
    (dict(lr=0.0), ValueError, "lr must be a positive finite number"),
    (dict(clip=float("inf")), ValueError, "clip must be a positive finite number"),
    (dict(eps=-1.0), ValueError, "eps must be a positive finite number"),
    (dict(seq_length=0), ValueError, "seq_length must be at least 1"),
    (dict(seq_length=100), ValueError, "a chunk needs seq_length"),
    (dict(pos=101), ValueError, "past the end"),
    (dict(t=-1), ValueError, "t must be >= 0"),
])
def test_bad_training_arguments(kw, exc, msg):
    params, st, data = _setup()
    args = dict(n_steps=2, optimizer="adam")
    args.update(kw)
    with pytest.raises(exc, match=msg):
        _core.net_train_steps("lstm", params, st, data, **args)


def test_bad_opt_state():
    params, st, data = _setup()
    with pytest.raises(ValueError, match=r"opt_state has no 'M:l0.Wx' entry \(optimizer 'adagrad' needs M:<name>"):
        _core.net_train_steps("lstm", params, st, data, n_steps=1, optimizer="adagrad")
    bad = dict(st)
    bad["v:V"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"opt_state\['v:V'\] has shape \(3, 3\); expected \(6, 4\)"):
        _core.net_train_steps("lstm", params, st | {"v:V": np.zeros((3, 3))}, data, n_steps=1, optimizer="adam")
    with pytest.raises(ValueError, match="opt_state has 17 entries; expected 16"):
        _core.net_train_steps("lstm", params, st | {"extra": np.zeros(1)}, data, n_steps=1, optimizer="adam")
    ro = {k: v.copy() for k, v in st.items()}
    ro["m:c"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _core.net_train_steps("lstm", params, ro, data, n_steps=1, optimizer="adam")
    with pytest.raises(ValueError, match="unknown optimizer"):
        init_opt_state(params, "sgd")
