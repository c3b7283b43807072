"""B streams through the one engine: X, Y of shape (B, T) (loss and gradients
summed over the streams), train_steps with batch_size (B streams walking B
contiguous segments, one update from the summed gradients), evaluate_loss with
batch_size, and thread counts.

The NumPy yardsticks are the sums of per-stream reference gradients
(charrnn_ext.reference for the classic RNN, charrnn_ext.reference_nets for
every network) and reference_nets.train_steps for the walk. Work is split
between threads by fixed rules, so results must be bit-identical for every
thread count (API_NOTES: "bit-identical for any thread count")."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import reference
from charrnn_ext import reference_nets as ref
from charrnn_ext.layout import (
    PARAM_NAMES,
    copy_params,
    from_classic,
    init_opt_state,
    init_params,
    net_init,
    zeros_like_params,
)
from helpers import CELLS, max_rel_err, max_scaled_err, net_problem

# C++ float64 against NumPy float64 (same expressions, other summation order).
TOL64 = 1e-10


def ref_classic_batched(params, X, Y, h0):
    """Sum of per-stream classic reference losses and gradients; stacked final states."""
    loss, grads, hs = 0.0, {k: np.zeros(params[k].shape) for k in PARAM_NAMES}, []
    for s in range(X.shape[0]):
        l, g, h = reference.loss_and_grads(params, X[s], Y[s], h0[s])
        loss += l
        for k in PARAM_NAMES:
            grads[k] += g[k]
        hs.append(h)
    return loss, grads, np.array(hs)


def random_classic_case(rng, K, m, B, T, dtype=np.float64):
    p = init_params(K, m, seed=int(rng.integers(1 << 30)), dtype=dtype)
    p["b"][:] = 0.01 * rng.standard_normal(m)
    p["c"][:] = 0.01 * rng.standard_normal(K)
    X = rng.integers(0, K, (B, T))
    Y = rng.integers(0, K, (B, T))
    h0 = np.tanh(rng.standard_normal((B, m))).astype(dtype)
    return p, X, Y, h0


def net_case(cell, K, m, layers, T, seed, streams=None, sig=0.15):
    """helpers.net_problem with C-contiguous X and Y (the engine refuses strided index arrays)."""
    params, X, Y, h0 = net_problem(cell, K, m, layers, T, seed=seed, sig=sig, streams=streams)
    return params, np.ascontiguousarray(X), np.ascontiguousarray(Y), h0


def learnable_text(n, K, seed):
    """A repeating pattern with 10 % noise: losses fall quickly, so wraps and resets matter."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.1, rng.integers(0, K, n), np.arange(n) * 7 % K).astype(np.int64)


def same_dicts(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- summed streams


@pytest.mark.parametrize(
    "K,m,B,T", [(2, 1, 1, 1), (2, 1, 3, 1), (5, 7, 4, 3), (30, 17, 6, 9), (80, 100, 8, 25), (72, 50, 33, 25)]
)
def test_classic_streams_are_the_sum_of_reference_streams(K, m, B, T):
    rng = np.random.default_rng(K * 1000 + m * 10 + B)
    p, X, Y, h0 = random_classic_case(rng, K, m, B, T)
    loss, grads, h = cx.loss_and_grads(p, X, Y, h0)
    rloss, rgrads, rh = ref_classic_batched(p, X, Y, h0)
    assert h.shape == (B, m)
    assert max_rel_err(loss, rloss) <= TOL64
    assert max_rel_err(h, rh) <= TOL64
    for k in PARAM_NAMES:
        assert max_rel_err(grads[k], rgrads[k]) <= TOL64, k


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_network_streams_are_the_sum_of_single_streams(cell, layers):
    # Each stream alone through the engine, summed, equals the (B, T) call;
    # and both equal the NumPy reference's per-stream sum.
    B = 4
    params, X, Y, h0 = net_case(cell, 8, 6, layers, 12, seed=layers, streams=B)
    loss, grads, h = cx.loss_and_grads(params, X, Y, h0)
    assert h.shape == (B, layers, (2 if cell == "lstm" else 1) * 6)
    singles = [cx.loss_and_grads(params, X[s], Y[s], h0[s]) for s in range(B)]
    assert max_rel_err(loss, sum(r[0] for r in singles)) <= 1e-12
    assert max_rel_err(h, np.stack([r[2] for r in singles])) <= 1e-12
    for k in params:
        assert max_rel_err(grads[k], sum(r[1][k] for r in singles)) <= 1e-12, k
    loss_r, grads_r, h_r = ref.loss_and_grads(cell, params, X, Y, h0)
    assert max_rel_err(loss, loss_r) <= TOL64 and max_rel_err(h, h_r) <= TOL64
    assert all(max_rel_err(grads[k], grads_r[k]) <= TOL64 for k in params)


@pytest.mark.parametrize("cell", ("classic",) + CELLS)
def test_batch_of_one_is_the_single_stream(cell):
    rng = np.random.default_rng(7)
    if cell == "classic":
        p, X, Y, h0 = random_classic_case(rng, 40, 30, 1, 25)
        h_single = h0[0]
    else:
        p, X, Y, h0 = net_case(cell, 12, 9, 2, 25, seed=7, streams=1)
        h_single = h0[0]
    l1, g1, h1 = cx.loss_and_grads(p, X, Y, h0)
    l2, g2, h2 = cx.loss_and_grads(p, X[0], Y[0], h_single)
    assert l1 == l2
    assert h1.shape == (1, *h2.shape)
    np.testing.assert_array_equal(h1[0], h2)
    assert same_dicts(g1, g2)


@pytest.mark.parametrize("cell", ("classic",) + CELLS)
def test_train_steps_batch_size_1_is_the_single_stream_walk(cell):
    # batch_size=1, batch_size None and positions=[0] (the batched form of one
    # stream) take the same steps, bit for bit.
    K, m = 30, 24
    data = np.random.default_rng(3).integers(0, K, 700)
    base = init_params(K, m, seed=5) if cell == "classic" else net_init(cell, K, m, 2, sig=0.1, seed=5)
    runs = []
    for kw in (dict(), dict(batch_size=1), dict(batch_size=1, positions=[0])):
        p = copy_params(base)
        st = init_opt_state(p, "adam")
        out = cx.train_steps(
            p, st, data, n_steps=40, seq_length=25, optimizer="adam", eta=0.01, dropout=0.2, seed=9, **kw
        )
        runs.append((out, p, st))
    (L1, h1, pos1, w1, d1), p1, s1 = runs[0]
    assert isinstance(pos1, int) and isinstance(w1, int)
    assert w1 == 1 and pos1 == (40 - 27) * 25  # 27 chunks of 25 fit in 700 characters
    for (L2, h2, pos2, w2, d2), p2, s2 in runs[1:]:
        np.testing.assert_array_equal(L1, L2)
        np.testing.assert_array_equal(h1, np.asarray(h2).reshape(h1.shape))
        assert (pos1, w1, d1) == (int(np.ravel(pos2)[0]), int(np.ravel(w2)[0]), d2)
        assert same_dicts(p1, p2) and same_dicts(s1, s2)
    # The batched form keeps the stream axis.
    (_, hb, posb, wb, _), _, _ = runs[2]
    assert posb.shape == wb.shape == (1,) and hb.shape[0] == 1
    # And one stream through train_steps is repeated train_step on the same chunks
    # (a zero state after the wrap), for the classic walk.
    if cell == "classic":
        p = copy_params(base)
        st = init_opt_state(p, "adam")
        h, pos, losses = None, 0, []
        for _ in range(40):
            if pos + 26 > len(data):
                pos, h = 0, None
            loss, h = cx.train_step(
                p,
                st,
                data[pos : pos + 25],
                data[pos + 1 : pos + 26],
                h,
                optimizer="adam",
                eta=0.01,
                dropout=0.2,
                seed=9,
            )
            losses.append(loss)
            pos += 25
        np.testing.assert_array_equal(L1, losses)
        assert same_dicts(p1, p) and same_dicts(s1, st)


# ---------------------------------------------------------------- threads

THREAD_CASES = [(cell, dt, m) for cell in CELLS for dt, m in ((np.float64, 100), (np.float32, 130))]


@pytest.mark.parametrize("cell,dtype,m", THREAD_CASES, ids=[f"{c}-{d.__name__}" for c, d, _ in THREAD_CASES])
def test_thread_count_does_not_change_results(cell, dtype, m, monkeypatch):
    # m > NR (32 float64 / 64 float32 columns per panel) and B >= 3, so 2 and
    # 3 threads really split the units, or the streams (API_NOTES); the engine
    # chooses between the two (engine.hpp split_by_streams), and both are run.
    K, L, B, T = 40, 2, 5, 16
    data = learnable_text(6000, K, seed=11)
    base = net_init(cell, K, m, L, sig=0.08, seed=2, dtype=dtype)
    X = np.ascontiguousarray(data[: B * T].reshape(B, T))
    Y = np.ascontiguousarray(data[1 : B * T + 1].reshape(B, T))
    results = []
    for split, threads in [("units", 1), ("units", 2), ("units", 3), ("streams", 2), ("streams", 3)]:
        monkeypatch.setenv("CHARRNN_SPLIT", split)
        p = copy_params(base)
        st = init_opt_state(p, "adam")
        lg = cx.loss_and_grads(p, X, Y, dropout=0.3, seed=4, update=6, threads=threads)
        tr = cx.train_steps(
            p,
            st,
            data,
            n_steps=8,
            seq_length=T,
            batch_size=B,
            optimizer="adam",
            eta=0.01,
            clip_mode="global_norm",
            dropout=0.3,
            seed=4,
            threads=threads,
        )
        ev_b = cx.evaluate_loss(p, data[:2001], batch_size=B, threads=threads)
        ev_1 = cx.evaluate_loss(p, data[:301], threads=threads)
        results.append((lg, tr, p, st, ev_b, ev_1))
    lg0, tr0, p0, st0, evb0, ev10 = results[0]
    assert lg0[2].dtype == dtype and tr0[0].dtype == dtype
    assert not tr0[4] and len(tr0[0]) == 8
    for lg, tr, p, st, ev_b, ev_1 in results[1:]:
        assert lg[0] == lg0[0] and np.array_equal(lg[2], lg0[2]) and same_dicts(lg[1], lg0[1])
        for a, b in zip(tr, tr0):
            np.testing.assert_array_equal(a, b)
        assert same_dicts(p, p0) and same_dicts(st, st0)
        assert ev_b[0] == evb0[0] and np.array_equal(ev_b[1], evb0[1])
        assert ev_1[0] == ev10[0] and np.array_equal(ev_1[1], ev10[1])
    # The runs did real work (so equality is not that of untouched arrays).
    assert not same_dicts(p0, base) and int(st0["t"]) == 8


def _threads_while(call) -> int:
    """The most threads that ``call()`` added at one time, seen in
    /proc/self/task while it ran (the engine releases the GIL, so a watcher
    thread can look). Threads are told apart by id: one left by an earlier
    test that ends meanwhile does not hide a new one."""
    tasks = Path("/proc/self/task")
    before = set(os.listdir(tasks))
    most = 0
    done = threading.Event()

    def watch():
        nonlocal most
        me = str(threading.get_native_id())
        while not done.is_set():
            most = max(most, len(set(os.listdir(tasks)) - before - {me}))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        call()
    finally:
        done.set()
        watcher.join()
    return most


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc/self/task (Linux)")
@pytest.mark.parametrize(
    "cell,m,batch,team",
    [("rnn", 100, 16, 1), ("lstm", 256, 32, 2)],
    ids=["classic-m100-B16-one-thread", "lstm-m256-B32-two-threads"],
)
def test_the_engine_uses_a_second_thread_only_for_work_worth_sharing(monkeypatch, cell, m, batch, team):
    # Asked for 2 threads, the classic network's steps with 16 streams (160,000
    # multiply-adds) run on one, an LSTM 2 x 256 with 32 streams (8.4 M) on two; with
    # CHARRNN_TEAM=full, as the rest of the suite runs, both use two. Either
    # way the numbers are the same.
    K = 80
    data = np.random.default_rng(3).integers(0, K, 200_000).astype(np.uint8)
    p0 = net_init(cell, K, m, 1 if cell == "rnn" else 2, 0.01, seed=4, dtype=np.float32)

    def run(steps):
        p = copy_params(p0)
        st = init_opt_state(p, "adagrad")
        losses, *_ = cx.train_steps(p, st, data, n_steps=steps, seq_length=25, batch_size=batch, threads=2, eta=0.1)
        return losses, p

    steps = 400 if cell == "rnn" else 6
    out = {}
    for mode in ("capped", "full"):
        if mode == "capped":
            monkeypatch.delenv("CHARRNN_TEAM", raising=False)
        else:
            monkeypatch.setenv("CHARRNN_TEAM", "full")
        added = _threads_while(lambda mode=mode: out.__setitem__(mode, run(steps)))
        assert added == (team if mode == "capped" else 2) - 1, (mode, added)
    assert np.array_equal(out["capped"][0], out["full"][0])
    for k in p0:
        assert np.array_equal(out["capped"][1][k], out["full"][1][k]), k


@pytest.mark.parametrize(
    "cell, m, layers, dtype, team", [("rnn", 100, 1, np.float64, 1), ("lstm", 128, 2, np.float32, 2)]
)
def test_sampling_uses_a_second_thread_only_for_large_weights(monkeypatch, cell, m, layers, dtype, team):
    # One stream, asked for 2 threads: the classic network's 80 KB of W_h stay
    # on one thread, an LSTM 2 x 128 in float32 (512 KB in layer 1, W_x and
    # W_h) takes two (stream_team in cpp/engine.hpp). The text is the same.
    monkeypatch.delenv("CHARRNN_TEAM", raising=False)
    p = net_init(cell, 40, m, layers, 0.3, seed=2, dtype=dtype)
    out = {}
    added = _threads_while(lambda: out.__setitem__("two", cx.sample(p, None, [0], 20_000, seed=1, threads=2)))
    assert added == team - 1
    one, h_one = cx.sample(p, None, [0], 20_000, seed=1, threads=1)
    assert np.array_equal(one, out["two"][0]) and np.array_equal(h_one, out["two"][1])


def test_threads_more_than_streams_and_units():
    # More threads than streams or panels: still the one-thread result.
    p, X, Y, h0 = random_classic_case(np.random.default_rng(12), 9, 5, 2, 7)
    a = cx.loss_and_grads(p, X, Y, h0, threads=1)
    b = cx.loss_and_grads(p, X, Y, h0, threads=8)
    assert a[0] == b[0] and np.array_equal(a[2], b[2]) and same_dicts(a[1], b[1])


# ---------------------------------------------------------------- the segment walk

# Free-running training trajectories: the C++ and NumPy runs each take their
# own steps; single-step results agree to ~1e-15, but the optimisers divide by
# sqrt(M) and amplify ulp differences in near-zero gradient entries (the
# classic 100-step test sees up to 1e-7). Measured here: <= 3.2e-13; 1e-8
# leaves room for other ISAs, while a wrong walk or update is >= 1e-3 off.
TRAJ_TOL = 1e-8


@pytest.mark.parametrize("cell,layers", [("classic", 1), ("rnn", 2), ("lstm", 2), ("gru", 1)])
def test_train_steps_batched_matches_reference_walk(cell, layers):
    s_ = ("the quick brown fox jumps over the lazy dog. " * 3 + "pack my box with five dozen liquor jugs! ") * 12
    chars = sorted(set(s_))
    data = np.array([chars.index(c) for c in s_])
    K, m, B, T = len(chars), 12, 4, 25
    assert len(data) == 2112
    n = 30 if cell != "classic" else 60
    # 2112 characters: 4 segments of 528 hold 21 chunks of 25 (offsets 0, 25,
    # ..., 500). Streams starting at 0 and 3 wrap after 21 steps, the one at
    # 500 after 1 and the one at 509 at once (509 + 26 > 528).
    if cell == "classic":
        p1 = init_params(K, m, seed=1)
    else:
        p1 = net_init(cell, K, m, layers, sig=0.1, seed=1)
    p2 = from_classic(copy_params(p1)) if cell == "classic" else copy_params(p1)
    s1 = zeros_like_params(p1) if cell == "classic" else init_opt_state(p1, "adagrad")
    s2 = init_opt_state(p2, "adagrad")
    rng = np.random.default_rng(5)
    h_shape = (B, m) if cell == "classic" else (B, layers, (2 if cell == "lstm" else 1) * m)
    h0 = 0.5 * np.tanh(rng.standard_normal(h_shape))
    positions = np.array([0, 3, 500, 509])
    L1, h1, pos1, w1, d1 = cx.train_steps(
        p1, s1, data, h0, n_steps=n, batch_size=B, positions=positions, seq_length=T, threads=2, eta=0.1
    )
    cell_r = "rnn" if cell == "classic" else cell
    L2, h2, pos2, w2, t2 = ref.train_steps(
        cell_r,
        p2,
        s2,
        data,
        h0.reshape(B, layers, -1),
        n_steps=n,
        seq_length=T,
        batch_size=B,
        positions=positions,
        eta=0.1,
    )
    assert not d1
    assert pos1.dtype == np.int64 and w1.dtype == np.int64
    np.testing.assert_array_equal(pos1, pos2)
    np.testing.assert_array_equal(w1, w2)
    wraps_expected = {30: [1, 1, 2, 2], 60: [2, 2, 3, 3]}[n]
    assert w1.tolist() == wraps_expected
    assert h1.shape == h_shape
    assert max_rel_err(L1, L2) <= TRAJ_TOL
    assert max_scaled_err(h1, h2.reshape(h_shape)) <= TRAJ_TOL
    p1n = from_classic(p1) if cell == "classic" else p1
    for k in p2:
        assert max_scaled_err(p1n[k], p2[k]) <= TRAJ_TOL, k
    if cell != "classic":
        assert int(s1["t"]) == t2 == n
    assert L1[-5:].mean() < L1[:5].mean()  # it learns


def test_positions_continue_a_walk():
    rng = np.random.default_rng(1)
    K, m, B = 20, 16, 3
    data = rng.integers(0, K, 3000)
    p1 = net_init("gru", K, m, 2, sig=0.1, seed=4)
    p2 = copy_params(p1)
    s1, s2 = init_opt_state(p1, "adam"), init_opt_state(p2, "adam")
    kw = dict(batch_size=B, optimizer="adam", eta=0.01, dropout=0.25, seed=3)
    La, ha, posa, wa, _ = cx.train_steps(p1, s1, data, n_steps=25, **kw)
    Lb, hb, posb, wb, _ = cx.train_steps(p1, s1, data, ha, n_steps=25, positions=posa, **kw)
    Lc, hc, posc, wc, _ = cx.train_steps(p2, s2, data, n_steps=50, **kw)
    np.testing.assert_array_equal(np.concatenate([La, Lb]), Lc)
    np.testing.assert_array_equal(hb, hc)
    np.testing.assert_array_equal(posb, posc)
    np.testing.assert_array_equal(wa + wb, wc)
    assert wc.tolist() == [1, 1, 1]  # 1000-character segments hold 39 chunks of 25
    assert same_dicts(p1, p2) and same_dicts(s1, s2)


# ---------------------------------------------------------------- evaluate_loss over segments


def ref_segment_losses(cell, params, data, h0, B):
    """API_NOTES: B contiguous segments of (N-1)//B inputs (stream 0 from h0,
    the others from zeros); the remainder is read by the last stream
    continuing its state. Returns (summed loss, the last stream's final state)."""
    inputs = len(data) - 1
    B = max(1, min(B, inputs))
    E = inputs // B
    total, h = 0.0, None
    for s in range(B):
        end = (s + 1) * E if s < B - 1 else inputs
        loss, h = ref.evaluate_loss(cell, params, data[s * E : end + 1], h0 if s == 0 else None)
        total += loss
    return total, h


@pytest.mark.parametrize("cell", CELLS)
def test_evaluate_loss_over_segments(cell):
    params, _, _, h0 = net_case(cell, 6, 5, 2, 1, seed=8, sig=0.4)
    data = np.random.default_rng(1).integers(0, 6, 103)  # 102 inputs
    one, h_one = cx.evaluate_loss(params, data, h0)
    # B = 1 is exactly one pass: the forward pass of loss_and_grads.
    lg, _, h_lg = cx.loss_and_grads(params, data[:-1], data[1:], h0)
    assert max_rel_err(one, lg) <= 1e-12 and max_rel_err(h_one, h_lg) <= 1e-12
    one_b, h_one_b = cx.evaluate_loss(params, data, h0, batch_size=1)
    assert one_b == one and np.array_equal(h_one_b, h_one)
    losses = {}
    for B in (2, 3, 4, 5, 10, 101, 102, 500):  # 102 / 4 leaves a remainder of 2; B > 102 inputs clamps
        loss, h = cx.evaluate_loss(params, data, h0, batch_size=B, threads=2)
        loss_r, h_r = ref_segment_losses(cell, params, data, h0, B)
        assert max_rel_err(loss, loss_r) <= TOL64, B
        assert h.shape == h0.shape and max_rel_err(h, h_r) <= TOL64, B
        losses[B] = loss
    # Streams that start from zeros see less context: the losses really differ.
    assert abs(losses[4] - one) > 1e-6
    assert losses[102] == losses[500]  # at most one stream per input
    # 102 streams of one input each, all but the first from a zero state:
    zero_state_losses = sum(ref.evaluate_loss(cell, params, data[i : i + 2], None)[0] for i in range(1, 102))
    first = ref.evaluate_loss(cell, params, data[:2], h0)[0]
    assert max_rel_err(losses[102], first + zero_state_losses) <= TOL64


def test_evaluate_loss_classic_over_segments():
    params = init_params(9, 7, sig=0.3, seed=2)
    data = np.random.default_rng(3).integers(0, 9, 200)
    h0 = np.linspace(-0.5, 0.5, 7)
    for B in (1, 3, 8):
        loss, h = cx.evaluate_loss(params, data, h0, batch_size=B)
        loss_r, h_r = ref_segment_losses("rnn", from_classic(params), data, h0.reshape(1, 7), B)
        assert h.shape == (7,)
        assert max_rel_err(loss, loss_r) <= TOL64 and max_rel_err(h, h_r[0]) <= TOL64, B


# ---------------------------------------------------------------- bad arguments


def test_batched_validation_messages():
    K, m = 10, 8
    p = init_params(K, m, seed=0)
    s = zeros_like_params(p)
    data = np.arange(100) % K
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        cx.train_steps(p, s, data, n_steps=1, batch_size=0)
    with pytest.raises(
        ValueError,
        match=r"split into batch_size = 10 segments of 10; a chunk needs seq_length "
        r"\+ 1 = 26 per segment",
    ):
        cx.train_steps(p, s, data, n_steps=1, batch_size=10, seq_length=25)
    with pytest.raises(ValueError, match=r"h0 has shape \(8,\); expected \(2, 1, 8\)"):
        cx.train_steps(p, s, data, np.zeros(m), n_steps=1, batch_size=2)
    with pytest.raises(TypeError, match="h0 has dtype float32"):
        cx.train_steps(p, s, data, np.zeros((2, m), np.float32), n_steps=1, batch_size=2)
    with pytest.raises(ValueError, match=r"positions has shape \(3,\); expected \(batch_size,\) = \(2,\)"):
        cx.train_steps(p, s, data, n_steps=1, batch_size=2, positions=[0, 0, 0])
    with pytest.raises(ValueError, match=r"positions\[1\] = 51 is outside its segment"):
        cx.train_steps(p, s, data, n_steps=1, batch_size=2, positions=[0, 51])
    with pytest.raises(ValueError, match=r"positions\[1\] = -1 is outside its segment"):
        cx.train_steps(p, s, data, n_steps=1, batch_size=2, positions=[0, -1])
    with pytest.raises(ValueError, match="pos is for one stream"):
        cx.train_steps(p, s, data, n_steps=1, batch_size=2, pos=3)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        cx.train_steps(p, s, data, n_steps=1, batch_size=2, threads=0)
    with pytest.raises(TypeError, match="threads must be an integer"):
        cx.train_steps(p, s, data, n_steps=1, batch_size=2, threads=1.5)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        cx.evaluate_loss(p, data, batch_size=0)
    with pytest.raises(IndexError, match=r"X\[1, 2\] = 10 is outside the vocabulary range \[0, 10\)"):
        cx.loss_and_grads(p, [[0, 0, 0], [0, 0, 10]], [[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="X and Y must have the same shape"):
        cx.loss_and_grads(p, [[0, 0, 0]], [[0, 0]])
    with pytest.raises(ValueError, match=r"X must be 1-D \(T,\) or 2-D \(streams, T\)"):
        cx.loss_and_grads(p, np.zeros((1, 1, 3), int), np.zeros((1, 1, 3), int))
    with pytest.raises(ValueError, match=r"h0 has shape \(3, 8\); expected \(2, 1, 8\)"):
        cx.loss_and_grads(p, [[0, 1], [1, 0]], [[1, 0], [0, 1]], np.zeros((3, m)))
    # Nothing was changed by the refused calls.
    assert all(not s[k].any() for k in PARAM_NAMES)
    assert same_dicts(p, init_params(K, m, seed=0))
    # The batched classic state comes back as (B, m).
    _, h, pos, wraps, _ = cx.train_steps(p, s, data, n_steps=1, batch_size=2, positions=[0, 50], seq_length=5)
    assert h.shape == (2, m) and pos.tolist() == [5, 5] and wraps.tolist() == [0, 1]
