"""Mixed-precision training (dtype 'bfloat16'): the engine's matrix products
take bfloat16 operands and sum in float32. Checked against the float64
engine (a gradient check with a bfloat16 tolerance), across the kernels this
CPU has (AMX tiles, AVX512-BF16, and the portable kernel every CPU runs,
forced with CHARRNN_ISA), across thread counts, and through the model, the
checkpoint and the CLI. The kernels themselves, product by product, are
tested without Python in tests/cpp/test_bf16.cpp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import engine
from charrnn_ext.data import corpus_from_string
from charrnn_ext.layout import copy_params, init_opt_state, net_init
from helpers import CELLS, max_scaled_err, net_problem

# bfloat16 keeps 8 significant bits: rounding to nearest has a unit roundoff
# of u = 2**-8. Each product term a*b then carries a relative error of at
# most 2u from its two rounded operands, while the float32 sums add only
# ~1e-7. A gradient entry is a sum of such terms after a chain of products
# through the layers and steps; with the contracting weights of net_problem
# the chain damps earlier errors, so the error of an array, relative to its
# own scale, is a small multiple of 2u (measured: 2e-3 to 1e-2 with the
# problems below). 4 * 2u = 0.031 leaves room; a real defect -- a wrong index,
# a missing term -- changes gradients by far more than that.
U_BF16 = 2.0**-8
TOL_GRAD = 4 * 2 * U_BF16
# ... and it must be visibly bfloat16: float32 products give ~5e-7 here, so
# an error below 1e-5 would mean the rounding never happened.
MIN_BF16_EFFECT = 1e-5


def _problem(cell, layers, streams=4, T=16, K=30, m=48, seed=3):
    p, X, Y, h0 = net_problem(cell, K, m, layers, T, seed=seed, streams=streams)
    return p, np.ascontiguousarray(X), np.ascontiguousarray(Y), h0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_bfloat16_gradients_pass_a_check_against_float64(cell, layers):
    p64, X, Y, h0 = _problem(cell, layers)
    loss64, g64, h64 = engine.loss_and_grads(p64, X, Y, h0)
    p32 = copy_params(p64, np.float32)
    loss16, g16, h16 = engine.loss_and_grads(p32, X, Y, h0.astype(np.float32), precision="bfloat16")
    # Each logit o = V h + c moves by at most ~4u sum|V h| (both operands of
    # every term rounded, and h itself carries the rounding of the layers
    # below); with these small weights that is far below 1, and the loss,
    # a sum of T*B terms of size ~ln K, moves by much less than 2u of itself.
    assert abs(loss16 - loss64) <= 2 * U_BF16 * loss64
    assert h16.dtype == np.float32 and max_scaled_err(h16, h64) <= TOL_GRAD
    worst = 0.0
    for name, g in g64.items():
        assert g16[name].dtype == np.float32
        err = max_scaled_err(g16[name], g)
        assert err <= TOL_GRAD, (name, err)
        worst = max(worst, err)
    assert worst >= MIN_BF16_EFFECT


@pytest.mark.parametrize("cell", CELLS)
def test_bfloat16_results_do_not_depend_on_the_thread_count(cell, monkeypatch):
    # 200 units: more than three panel blocks of 64 (the AVX-512 width the
    # threads split units by) and a partial one, so every thread owns columns
    # that start and end inside the products; 8 streams, which 3 threads
    # split unevenly when the engine splits by streams
    data = np.random.default_rng(5).integers(0, 40, 20_000).astype(np.uint8)
    finals = []
    for split, threads in [("units", 1), ("units", 2), ("units", 3), ("streams", 2), ("streams", 3)]:
        monkeypatch.setenv("CHARRNN_SPLIT", split)
        p = net_init(cell, 40, 200, 2, 0.1, seed=2, dtype=np.float32)
        st = init_opt_state(p, "adam")
        losses, h, *_ = engine.train_steps(
            p,
            st,
            data,
            n_steps=3,
            seq_length=12,
            batch_size=8,
            optimizer="adam",
            clip_mode="global_norm",
            dropout=0.1,
            threads=threads,
            precision="bfloat16",
        )
        finals.append((losses, h, p))
    for losses, h, p in finals[1:]:
        assert np.array_equal(losses, finals[0][0])
        assert np.array_equal(h, finals[0][1])
        for k in p:
            assert np.array_equal(p[k], finals[0][2][k]), k


@pytest.mark.parametrize("cell", CELLS)
def test_bfloat16_evaluation_is_the_forward_pass_of_bfloat16_training(cell):
    """evaluate_loss(precision='bfloat16') runs the very forward pass that
    bfloat16 training runs (the validation of a bfloat16 run), whatever the
    thread count, and differs from the float32 evaluation by rounding only."""
    p64, X, Y, h0 = _problem(cell, 2, streams=None, T=60)
    p32, h32 = copy_params(p64, np.float32), h0.astype(np.float32)
    data = np.append(X, Y[-1])  # 61 characters: one chunk of the evaluation's 64 steps
    loss16, h16 = engine.evaluate_loss(p32, data, h32, batch_size=1, precision="bfloat16")
    train16, _, htrain16 = engine.loss_and_grads(p32, X, Y, h32, precision="bfloat16")
    # the same products, cell steps and summation of the row losses (in double)
    assert loss16 == train16 and np.array_equal(h16, htrain16)
    loss32, _ = engine.evaluate_loss(p32, data, h32, batch_size=1)
    assert MIN_BF16_EFFECT * loss32 <= abs(loss16 - loss32) <= 2 * U_BF16 * loss32
    long = np.random.default_rng(9).integers(0, 30, 5_000)
    by_threads = {t: engine.evaluate_loss(p32, long, h32, batch_size=8, threads=t, precision="bfloat16")
                  for t in (1, 2, 3)}  # fmt: skip
    for t in (2, 3):
        assert by_threads[t][0] == by_threads[1][0] and np.array_equal(by_threads[t][1], by_threads[1][1])
    with pytest.raises(ValueError, match=r"precision 'bfloat16' needs float32 parameters"):
        engine.evaluate_loss(p64, data, h0, precision="bfloat16")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("streams", [5, 8])
def test_an_evaluation_of_b_streams_is_their_training_forward(cell, streams, monkeypatch):
    """With an AMX machine's kernels, 5 streams take the row kernel for their
    steps' products and 8 the tiles (kTileStreams in engine.hpp): an
    evaluation of exactly B streams (stream 0 from the given state, the others
    from zeros) gives the loss and last stream's state of bfloat16 training's
    forward pass on them, bit for bit, on either split and 1-3 threads."""
    p64, _, _, h0 = _problem(cell, 2, streams=None)
    p32, h32 = copy_params(p64, np.float32), h0.astype(np.float32)
    E = 40  # steps a stream: one chunk
    data = np.random.default_rng(5).integers(0, 30, streams * E + 1)
    X = np.stack([data[s * E : (s + 1) * E] for s in range(streams)])
    Y = np.stack([data[s * E + 1 : (s + 1) * E + 1] for s in range(streams)])
    H0 = np.zeros((streams, *h32.shape), np.float32)
    H0[0] = h32
    train, _, htrain = engine.loss_and_grads(p32, X, Y, H0, precision="bfloat16")
    monkeypatch.setenv("CHARRNN_TEAM", "full")  # share this small network's steps too
    for split, threads in [("units", 1), ("units", 2), ("streams", 2), ("streams", 3)]:
        monkeypatch.setenv("CHARRNN_SPLIT", split)
        loss, h = engine.evaluate_loss(p32, data, h32, batch_size=streams, threads=threads, precision="bfloat16")
        assert loss == train and np.array_equal(h, htrain[-1]), (split, threads)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("precision", ["full", "bfloat16"])
def test_evaluation_split_by_streams_keeps_one_step_and_the_same_bits(cell, precision, monkeypatch):
    """Split by streams, an evaluation keeps only one step of gate values (no
    backward pass follows); split by units, the layers above the first keep
    the chunk's. Both give the bits of one thread."""
    p, _, _, h0 = _problem(cell, 2, streams=None)
    p32, h32 = copy_params(p, np.float32), h0.astype(np.float32)
    text = np.random.default_rng(11).integers(0, 30, 3_000)  # 8 streams of 375: chunks of 64 and a rest
    results = []
    for split, threads in [("units", 1), ("streams", 2), ("units", 2), ("streams", 3)]:
        monkeypatch.setenv("CHARRNN_SPLIT", split)
        results.append(engine.evaluate_loss(p32, text, h32, batch_size=8, threads=threads, precision=precision))
    for loss, h in results[1:]:
        assert loss == results[0][0] and np.array_equal(h, results[0][1])


def test_bfloat16_training_differs_from_float32_only_by_rounding():
    """The same updates in float32 and bfloat16 from the same start: close,
    and not identical (bfloat16 products really ran)."""
    data = np.random.default_rng(1).integers(0, 30, 10_000).astype(np.uint8)
    out = {}
    for precision in ("full", "bfloat16"):
        p = net_init("lstm", 30, 64, 2, 0.1, seed=4, dtype=np.float32)
        st = init_opt_state(p, "adam")
        losses, *_ = engine.train_steps(
            p, st, data, n_steps=20, seq_length=16, batch_size=4, optimizer="adam", precision=precision
        )
        out[precision] = (losses, p)
    l32, p32 = out["full"]
    l16, p16 = out["bfloat16"]
    assert not np.array_equal(l32, l16)
    assert np.max(np.abs(l16 - l32) / l32) <= 2 * TOL_GRAD
    # Adam moves a weight by about eta per update whatever the gradient's
    # size, so where rounding flips a tiny gradient's sign the two runs part
    # by up to 2 eta per update: 20 updates at eta 2e-3 bound the gap by 0.08
    # in absolute terms (measured: 0.0073).
    for k in p32:
        assert np.max(np.abs(p16[k] - p32[k])) <= 2 * 20 * 2e-3, k


def test_bfloat16_needs_float32_parameters_and_a_known_precision():
    p, X, Y, h0 = _problem("gru", 1)
    with pytest.raises(ValueError, match=r"precision 'bfloat16' needs float32 parameters"):
        engine.loss_and_grads(p, X, Y, h0, precision="bfloat16")
    with pytest.raises(ValueError, match=r"unknown precision 'bf8'; expected one of 'full', 'bfloat16'"):
        engine.loss_and_grads(copy_params(p, np.float32), X, Y, h0.astype(np.float32), precision="bf8")
    with pytest.raises(TypeError, match=r"precision must be a string"):
        engine.loss_and_grads(copy_params(p, np.float32), X, Y, h0.astype(np.float32), precision=16)


# ---------------------------------------------------------------- every kernel this CPU has

_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from charrnn_ext import engine
    from charrnn_ext.layout import copy_params
    from helpers import net_problem
    out = {{"path": engine.bf16_path(), "runs": []}}
    for cell in ("rnn", "lstm", "gru"):
        p, X, Y, h0 = net_problem(cell, 30, 48, 2, 12, seed=7, streams=5)
        X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
        loss, g, h = engine.loss_and_grads(copy_params(p, np.float32), X, Y, h0.astype(np.float32),
                                           precision="bfloat16")
        out["runs"].append({{"loss": loss, "grads": {{k: v.tolist() for k, v in g.items()}}}})
    print(json.dumps(out))
    """
)


def _run_at(level: str | None) -> dict:
    env = dict(os.environ)
    env.pop("CHARRNN_ISA", None)
    if level is not None:
        env["CHARRNN_ISA"] = level
    code = _PROBE.format(tests=os.path.dirname(__file__))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def by_level():
    """The probe's results at every level up to this CPU's own, keyed by the
    bfloat16 path that ran."""
    seen = {}
    for level in ("amx", "avx512bf16", "avx512", "avx2", "baseline", None):
        r = _run_at(level)
        seen.setdefault(r["path"], r)
    return seen


def _max_grad_diff(a, b):
    worst = 0.0
    for ra, rb in zip(a["runs"], b["runs"]):
        for k in ra["grads"]:
            worst = max(worst, max_scaled_err(np.array(ra["grads"][k]), np.array(rb["grads"][k])))
    return worst


def test_the_bf16_path_names_the_hardware_or_the_portable_level(by_level):
    # (a CHARRNN_NATIVE build compiles one kernel set: 'baseline-avx512' and the like)
    assert all(p in engine.ISA_LEVELS or p.startswith("baseline-") for p in by_level)
    assert any(p.startswith("baseline") for p in by_level)  # CHARRNN_ISA=baseline: the portable kernel
    if engine.has_bf16_units():
        assert engine.bf16_path() in by_level


def test_cpu_vendor_is_the_one_the_os_reports():
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    vendors = {line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("vendor_id")}
    if not vendors:
        pytest.skip("/proc/cpuinfo names no vendor (not an x86 CPU)")
    assert engine._core.cpu_vendor().strip() in vendors  # (some vendors pad their 12 characters with spaces)


@pytest.mark.parametrize(
    ("path", "vendor", "faster"),
    [
        ("amx", "GenuineIntel", True),
        # AMX absent, refused by the OS or masked: vdpbf16ps alone trained 1.3x slower than float32 on a Xeon
        ("avx512bf16", "GenuineIntel", False),
        ("avx512bf16", "AuthenticAMD", True),  # Zen 4 and 5
        ("avx512", "AuthenticAMD", False),  # the portable kernel, slower than float32
        ("avx2", "GenuineIntel", False),
        ("baseline", "", False),
    ],
)
def test_the_quality_preset_takes_bfloat16_where_it_trains_faster(monkeypatch, path, vendor, faster):
    from charrnn_ext.trainplan import plan_options

    monkeypatch.setattr(engine._core, "bf16_path", lambda: path)
    monkeypatch.setattr(engine._core, "cpu_vendor", lambda: vendor)
    assert engine.bf16_trains_faster() is faster
    assert engine.has_bf16_units() is (path in ("amx", "avx512bf16"))
    assert plan_options({"preset": "quality"})[1]["dtype"] == ("bfloat16" if faster else "float32")
    # an explicit --dtype wins either way
    for dtype in ("bfloat16", "float32"):
        assert plan_options({"preset": "quality", "dtype": dtype})[1]["dtype"] == dtype


def test_avx512bf16_matches_the_portable_kernel_bit_for_bit(by_level):
    """vdpbf16ps adds the two products of a pair in the order the portable
    kernel does, and each bfloat16 product is exact in float32, so with the
    same float kernels around them (level avx512) the results are identical."""
    if "avx512bf16" not in by_level or "avx512" not in by_level:
        pytest.skip("this CPU has no AVX512-BF16")
    assert by_level["avx512bf16"]["runs"] == by_level["avx512"]["runs"]


def test_amx_agrees_with_the_portable_kernel(by_level):
    """AMX tiles take the same pairs in the same order but may round inside a
    pair differently: each product differs by at most the float32 summation
    bound 2 P u32 sum|ab| (u32 = 2**-24; P <= 192 here, the LSTM's gate rows
    of dh, or 60, the rows of a weight gradient), ~1e-5 of its scale. Through
    the network that stays far below bfloat16's own rounding; 1e-3 of each
    array's scale is generous and still 30x below TOL_GRAD."""
    if "amx" not in by_level:
        pytest.skip("this CPU (or its OS) gives no AMX tiles")
    portable = by_level.get("avx512bf16") or by_level["avx512"]
    assert _max_grad_diff(by_level["amx"], portable) <= 1e-3
    for ra, rb in zip(by_level["amx"]["runs"], portable["runs"]):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-5 * rb["loss"]


def test_portable_levels_agree_up_to_fused_multiply_adds(by_level):
    """The portable bfloat16 kernel computes the same sums at every level;
    the float kernels around it contract a*b + c into FMAs on AVX2 and
    AVX-512, not on the SSE2 baseline: last-bit differences, ~1e-6."""
    levels = [lv for lv in ("avx512", "avx2", "baseline") if lv in by_level]
    if len(levels) < 2:
        pytest.skip("one float level on this CPU")
    for level in levels[1:]:
        assert _max_grad_diff(by_level[level], by_level[levels[0]]) <= 1e-4


# ---------------------------------------------------------------- model, checkpoint, CLI


def test_a_bfloat16_model_keeps_float32_master_weights(tmp_path, monkeypatch):
    corpus = corpus_from_string("the quick brown fox jumps over the lazy dog. " * 60)
    model = cx.CharRNN.new(corpus, hidden=32, dtype="bfloat16", cell="lstm", layers=2)
    assert model.dtype == np.float32 and model.precision == "bfloat16"
    assert model.meta()["dtype"] == "bfloat16"
    twin = model.copy()  # the same weights, trained the same way in float32
    assert twin.precision == "bfloat16"
    twin.precision = "full"
    seen = []
    real = engine.train_walk

    def recording(*a, **kw):
        seen.append(kw["precision"])
        return real(*a, **kw)

    evaluated = []
    real_eval = engine.evaluate_loss

    def recording_eval(*a, **kw):
        evaluated.append(kw["precision"])
        return real_eval(*a, **kw)

    monkeypatch.setattr(engine, "train_walk", recording)
    monkeypatch.setattr(engine, "evaluate_loss", recording_eval)
    kw = dict(steps=30, seq_length=16, batch_size=4, optimizer="adam", eta=3e-3, log_every=10, sample_every=10)
    model.fit(corpus, **kw)
    # the trainer hands the model's precision to the core, for training and validation alike
    assert seen and set(seen) == {"bfloat16"}
    assert len(evaluated) >= 4 and set(evaluated) == {"bfloat16"}
    seen.clear()
    evaluated.clear()
    twin.fit(corpus, **kw)
    assert set(seen) == {"full"} and set(evaluated) == {"full"}
    # (how close the two trainings stay is the engine tests' question: Adam
    # turns gradients near zero into full-size steps, so rounding can move
    # single weights by a whole step here)
    assert any(not np.array_equal(model.params[k], twin.params[k]) for k in model.params)
    assert all(np.isfinite(v).all() for v in model.params.values())
    path = model.save(tmp_path / "m.npz")
    back = cx.CharRNN.load(path)
    assert back.precision == "bfloat16" and back.dtype == np.float32
    for k in model.params:
        assert np.array_equal(back.params[k], model.params[k])
    # sampling reads it as the float32 model it stores
    assert back.sample(40, seed=1) == model.sample(40, seed=1)
    # its loss is float32's unless bfloat16 products are asked for
    text = "the lazy dog jumps over the quick brown fox. " * 4
    full, rounded = back.loss(text), back.loss(text, precision="bfloat16")
    assert full == model.loss(text) and 0 < abs(rounded - full) <= 2 * U_BF16 * full


def test_bfloat16_is_refused_for_float64_models():
    corpus = corpus_from_string("abcabcabc" * 20)
    model = cx.CharRNN.new(corpus, hidden=8)
    with pytest.raises(ValueError, match="bfloat16 training needs float32 parameters"):
        cx.CharRNN(model.vocab, model.params, precision="bfloat16")
    with pytest.raises(ValueError, match="precision must be 'full' or 'bfloat16'"):
        cx.CharRNN(model.vocab, copy_params(model.params, np.float32), precision="half")


def test_cli_trains_in_bfloat16_and_records_it(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 200, encoding="utf-8")
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "charrnn_ext.cli", "train", "--text", str(text), "--out", str(out), "--cell", "gru",
         "--layers", "2", "--hidden", "32", "--dtype", "bfloat16", "--steps", "40", "--batch-size", "4",
         "--optimizer", "adam", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["dtype"] == "bfloat16"
    assert "bfloat16" in (out / "report.md").read_text(encoding="utf-8")
    model = cx.CharRNN.load(out / "last.npz")
    assert model.precision == "bfloat16" and model.dtype == np.float32
    # a resumed run goes on in bfloat16 from the checkpoint's float32 master weights
    res = subprocess.run(
        [sys.executable, "-m", "charrnn_ext.cli", "train", "--resume", str(out), "--steps", "60", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    resumed = cx.CharRNN.load(out / "last.npz")
    assert resumed.step == 60 and resumed.precision == "bfloat16"
    assert any(not np.array_equal(resumed.params[k], model.params[k]) for k in model.params)
