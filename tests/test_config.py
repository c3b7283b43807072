"""charrnn_ext.config: every option once (checks, defaults, presets), the
TrainConfig built from them, its learning-rate schedule, and the command
line parser generated from them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

import numpy as np
import pytest

from charrnn_ext import _core, cli, config, engine
from charrnn_ext.config import (
    CELLS,
    CLIP_MODES,
    DEFAULT_ETA,
    LR_SCHEDULES,
    OPTIMIZERS,
    OPTIONS,
    PRESETS,
    TrainConfig,
    default,
    group,
    option,
    preset_values,
)
from conftest import SMALL_TEXT

BY_NAME = {o.name: o for o in OPTIONS}


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def _outside(o: config.Option) -> list:
    """Values just outside the option's allowed set (of the right type)."""
    if o.choices is not None:
        return [o.choices[0].upper() + "x", "", o.choices[0] + " "]
    if o.kind is int:
        out = []
        if o.low is not None:
            out.append(int(o.low) - 1 if not o.low_open else int(o.low))
        if o.high is not None:
            out.append(int(o.high) + 1 if not o.high_open else int(o.high))
        return out
    if o.kind is float:
        out = [math.nan, math.inf, -math.inf]
        if o.low is not None:
            out.append(float(o.low) if o.low_open else math.nextafter(float(o.low), -math.inf))
        if o.high is not None:
            out.append(float(o.high) if o.high_open else math.nextafter(float(o.high), math.inf))
        return out
    return []


def _inside(o: config.Option) -> list:
    """Values at or just inside the limits, which must be accepted."""
    if o.choices is not None:
        return list(o.choices)
    if o.kind is int:
        return [int(o.low) + (1 if o.low_open else 0), int(o.high) - (1 if o.high_open else 0)]
    if o.kind is float:
        lo = math.nextafter(float(o.low), math.inf) if o.low_open else float(o.low)
        hi = math.nextafter(float(o.high), -math.inf) if o.high_open else float(o.high)
        return [lo, hi]
    if o.kind is bool:
        return [True, False]
    return ["", "some text", "ünïcode €"]


def _wrong_types(o: config.Option) -> list:
    if o.kind is str:
        return [1, 1.5, True, b"rnn", ["rnn"]] + ([] if o.optional else [None])
    if o.kind is bool:
        return [1, 0, "true", None, np.float64(1.0)]
    wrong = ["1", True, False, [1], b"1", 1 + 0j] + ([] if o.optional else [None])
    if o.kind is int:
        wrong += [1.0, 2.5, np.float64(3.0)]
    return wrong


def test_options_are_unique_and_grouped():
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names))
    assert {o.group for o in OPTIONS} == {"model", "train", "run", "sample", "serve", "gradcheck"}
    assert [o.name for o in group("train")] == list(TrainConfig.names())
    assert [o.name for o in group("model")] == ["cell", "layers", "hidden", "sig", "forget_bias", "dtype", "seed"]
    for o in OPTIONS:
        assert option(o.name) is o and default(o.name) == o.default
        assert o.flag == "--" + o.name.replace("_", "-")
        assert o.help and o.kind in (int, float, str, bool)
        if o.kind in (int, float):
            assert o.low is not None and o.high is not None and o.low < o.high, o.name
        assert (o.default is None) <= o.optional, o.name
    with pytest.raises(ValueError, match=r"unknown option 'hiden'; known: batch_size, best_by, beta1, .*, warmup$"):
        option("hiden")


def test_choices_come_from_the_core():
    assert CELLS == tuple(_core.CELLS) == ("rnn", "lstm", "gru")
    assert OPTIMIZERS == tuple(_core.OPTIMIZERS) == ("adagrad", "rmsprop", "adam")
    assert CLIP_MODES == tuple(_core.CLIP_MODES) == ("elementwise", "global_norm", "none")
    assert option("cell").choices == CELLS and option("optimizer").choices == OPTIMIZERS
    assert option("clip_mode").choices == CLIP_MODES and option("lr_schedule").choices == LR_SCHEDULES
    assert option("dtype").choices == ("float64", "float32", "bfloat16")
    assert option("preset").choices == tuple(PRESETS) == ("classic", "quality")
    assert set(DEFAULT_ETA) == set(OPTIMIZERS)


def test_documented_ranges():
    """The ranges API_NOTES.md promises."""
    want = {
        "hidden": (1, 65536, False, False),
        "layers": (1, 64, False, False),
        "seq_length": (1, 100000, False, False),
        "batch_size": (1, 65536, False, False),
        "threads": (1, 256, False, False),
        "eta": (0, 10, True, False),
        "sig": (0, 10, False, False),
        "clip": (0, 1e6, True, False),
        "eps": (0, 1, True, False),
        "gamma": (0, 1, False, True),
        "beta1": (0, 1, False, True),
        "beta2": (0, 1, False, True),
        "dropout": (0, 0.95, False, False),
        "lr_decay": (0, 1, True, False),
    }
    for name, (lo, hi, lo_open, hi_open) in want.items():
        o = option(name)
        assert (o.low, o.high, o.low_open, o.high_open) == (lo, hi, lo_open, hi_open), name


@pytest.mark.parametrize("o", OPTIONS, ids=[o.name for o in OPTIONS])
def test_option_check_accepts_default_and_limits(o):
    got = o.check(o.default)
    assert got == o.default and type(got) is type(o.default)
    for v in _inside(o):
        got = o.check(v)
        assert got == v and type(got) is o.kind, (v, got)
    if o.optional:
        assert o.check(None) is None


@pytest.mark.parametrize("o", OPTIONS, ids=[o.name for o in OPTIONS])
def test_option_check_rejects_values_just_outside(o):
    for v in _outside(o):
        with pytest.raises(ValueError) as info:
            o.check(v)
        msg = str(info.value)
        assert msg.startswith(f"{o.name} must be "), msg
        assert (o.range_text() in msg) if o.choices is None else (", ".join(o.choices) in msg), msg


@pytest.mark.parametrize("o", OPTIONS, ids=[o.name for o in OPTIONS])
def test_option_check_rejects_wrong_types(o):
    for v in _wrong_types(o):
        with pytest.raises(TypeError) as info:
            o.check(v)
        msg = str(info.value)
        assert msg.startswith(f"{o.name} must be "), (v, msg)
        assert type(v).__name__ in msg, (v, msg)


def test_option_check_converts_numpy_and_int_numbers():
    assert option("hidden").check(np.int64(7)) == 7 and type(option("hidden").check(np.int64(7))) is int
    assert type(option("sig").check(1)) is float and option("sig").check(1) == 1.0
    assert type(option("eta").check(np.float32(0.5))) is float
    assert option("seed").check(2**64 - 1) == 2**64 - 1
    assert option("seed").range_text() == "[0, 18_446_744_073_709_551_616)"
    assert option("layers").range_text() == "[1, 64]" and option("eta").range_text() == "(0, 10]"
    assert option("gamma").range_text() == "[0, 1)" and option("cell").range_text() == "one of rnn, lstm, gru"
    assert option("greedy").range_text() == "true or false"


def test_option_check_huge_integer_for_a_float_option():
    """A Python int too large for a float is refused with the ValueError naming the option (also through
    TrainConfig and CharRNN.fit), not an OverflowError."""
    for name in ("eta", "sig", "dropout", "temperature"):
        with pytest.raises(ValueError, match=f"^{name} must be a number in "):
            option(name).check(10**400)


# ---------------------------------------------------------------------------
# TrainConfig
# ---------------------------------------------------------------------------


def test_train_config_defaults_are_the_classic_experiment():
    cfg = TrainConfig()
    assert cfg.to_dict() == {
        "seq_length": 25,
        "batch_size": 1,
        "threads": 1,
        "optimizer": "adagrad",
        "eta": 0.1,
        "lr_schedule": "step",
        "lr_decay": 1.0,
        "lr_decay_every": 1,
        "lr_final": 0.0,
        "warmup": 0,
        "clip": 5.0,
        "clip_mode": "elementwise",
        "eps": 1e-8,
        "gamma": 0.9,
        "beta1": 0.9,
        "beta2": 0.999,
        "dropout": 0.0,
        "carry_state": False,  # the classic experiment starts every epoch from a zero state
        "smoothing": "classic",  # the classic experiment's smooth loss, exactly
        "best_by": "validation",  # the classic experiment chose by smooth loss: --best-by smooth
        "log_every": 100,
        "sample_every": 10_000,
        "sample_chars": 200,
        "passage_chars": 1000,
        "val_fraction": 0.1,
        "val_chars": 100_000,
    }
    assert cfg.lr == cfg.eta == 0.1
    assert [f.name for f in dataclasses.fields(TrainConfig)] == [o.name for o in group("train")]
    # the classic rate is constant for a whole run
    assert {cfg.lr_at(s, 205, s / 10_000) for s in (0, 1, 204, 205, 9_999)} == {0.1}


@pytest.mark.parametrize("optimizer, eta", [("adagrad", 0.1), ("rmsprop", 2e-3), ("adam", 2e-3)])
def test_train_config_default_eta_follows_the_optimizer(optimizer, eta):
    assert TrainConfig(optimizer=optimizer).eta == eta == DEFAULT_ETA[optimizer]
    assert TrainConfig(optimizer=optimizer, eta=0.5).eta == 0.5


@pytest.mark.parametrize(
    "field, value, exc, match",
    [
        ("seq_length", 0, ValueError, r"seq_length must be an integer in \[1, 100_000\], got 0"),
        ("batch_size", 2.0, TypeError, r"batch_size must be an integer in \[1, 65536\], got float 2.0"),
        ("eta", 0.0, ValueError, r"eta must be a number in \(0, 10\], got 0.0"),
        ("eta", -1, ValueError, r"eta must be a number in \(0, 10\], got -1"),
        ("optimizer", "sgd", ValueError, "optimizer must be one of adagrad, rmsprop, adam; got 'sgd'"),
        ("clip_mode", None, TypeError, "clip_mode must be a string, got NoneType None"),
        ("dropout", 0.96, ValueError, r"dropout must be a number in \[0, 0.95\], got 0.96"),
        ("beta2", 1.0, ValueError, r"beta2 must be a number in \[0, 1\), got 1.0"),
        ("val_fraction", 1.5, ValueError, r"val_fraction must be a number in \[0, 0.9\], got 1.5"),
        ("threads", 257, ValueError, r"threads must be an integer in \[1, 256\], got 257"),
    ],
)
def test_train_config_checks_every_field(field, value, exc, match):
    with pytest.raises(exc, match=f"^{match}$"):
        TrainConfig(**{field: value})


def test_train_config_from_dict():
    cfg = TrainConfig(seq_length=7, eta=0.05, optimizer="rmsprop", dropout=0.2, batch_size=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # "lr" is an older name of "eta"
    old = TrainConfig.from_dict({"seq_length": 10, "lr": 0.05})
    assert old.eta == 0.05 and old.lr == 0.05 and old.seq_length == 10
    assert TrainConfig.from_dict({"lr": 0.05, "eta": 0.07}).eta == 0.07  # the new name wins
    with pytest.raises(ValueError, match=r"eta must be a number in \(0, 10\], got 0"):
        TrainConfig.from_dict({"lr": 0})
    # options a newer version added take their defaults (a version-1 checkpoint's dict)
    v1 = TrainConfig.from_dict({"seq_length": 10, "lr": 0.1, "clip": 5.0, "log_every": 10})
    assert v1 == TrainConfig(seq_length=10, log_every=10)
    assert TrainConfig.from_dict({}) == TrainConfig()
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['sample_evry'\]; known: \["):
        TrainConfig.from_dict({"sample_evry": 3})
    d = {"lr": 0.3}
    TrainConfig.from_dict(d)
    assert d == {"lr": 0.3}  # the caller's dict is not changed


def test_lr_at_step_schedule():
    cfg = TrainConfig(eta=0.1, lr_decay=0.5, lr_decay_every=2)
    spe = 10  # the rate halves every 2 epochs = 20 updates
    got = [cfg.lr_at(s, spe, 0.0) for s in (0, 19, 20, 39, 40, 45, 100)]
    assert got == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.1 * 0.5**5]
    # progress does not matter to the step schedule; steps_per_epoch 0 counts as 1
    assert cfg.lr_at(20, spe, 0.99) == 0.05
    assert TrainConfig(eta=0.1, lr_decay=0.5).lr_at(3, 0, 0.0) == 0.1 * 0.5**3
    # a factor that underflows after a few decays: the smallest positive rate, never 0
    tiny = TrainConfig(eta=0.1, lr_decay=1e-200)
    assert tiny.lr_at(1, 1, 0.0) == pytest.approx(1e-201, rel=1e-15)
    assert tiny.lr_at(2, 1, 0.0) == tiny.lr_at(10**6, 1, 0.0) == sys.float_info.min


def test_lr_at_linear_and_cosine_schedules():
    lin = TrainConfig(eta=0.1, lr_schedule="linear", lr_final=0.1)
    cos = TrainConfig(eta=0.1, lr_schedule="cosine", lr_final=0.1)
    for cfg in (lin, cos):
        assert cfg.lr_at(0, 10, 0.0) == pytest.approx(0.1, rel=1e-15)
        assert cfg.lr_at(0, 10, 0.5) == pytest.approx(0.055, rel=1e-15)  # halfway: (0.1 + 0.9 / 2) * eta
        assert cfg.lr_at(0, 10, 1.0) == pytest.approx(0.01, rel=1e-15)  # the end: lr_final * eta
        assert cfg.lr_at(0, 10, 7.0) == cfg.lr_at(0, 10, 1.0)  # clamped to [0, 1]
        assert cfg.lr_at(0, 10, -1.0) == cfg.lr_at(0, 10, 0.0)
        assert cfg.lr_at(999, 10, 0.5) == cfg.lr_at(0, 10, 0.5)  # the step does not matter
    assert lin.lr_at(0, 10, 0.25) == pytest.approx(0.1 * (0.1 + 0.9 * 0.75), rel=1e-15)
    assert cos.lr_at(0, 10, 0.25) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))), rel=1e-15)
    assert cos.lr_at(0, 10, 0.25) == pytest.approx(0.08681980515339464, rel=1e-14)
    assert cos.lr_at(0, 10, 0.75) == pytest.approx(0.02318019484660536, rel=1e-14)
    # lr_final 0 decays to 0, given as the smallest positive float64 (the engine refuses eta <= 0)
    assert TrainConfig(eta=0.2, lr_schedule="linear").lr_at(0, 1, 1.0) == sys.float_info.min


def test_lr_at_warmup():
    cfg = TrainConfig(eta=0.1, warmup=4)
    assert [cfg.lr_at(s, 10, 0.0) for s in range(6)] == [0.1 * 1 / 4, 0.1 * 2 / 4, 0.1 * 3 / 4, 0.1, 0.1, 0.1]
    # warm-up multiplies the schedule's rate
    cw = TrainConfig(eta=0.1, lr_schedule="cosine", lr_final=0.0, warmup=10)
    assert cw.lr_at(4, 10, 0.5) == pytest.approx(0.1 * 0.5 * 0.5, rel=1e-15)
    sw = TrainConfig(eta=0.1, lr_decay=0.5, warmup=3)
    assert sw.lr_at(1, 1, 0.0) == pytest.approx(0.1 * 0.5 * 2 / 3, rel=1e-15)


# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------


def test_presets_expand_to_valid_option_values():
    assert preset_values("classic") == {}
    q = preset_values("quality", bf16_faster=engine.bf16_trains_faster())
    assert q["threads"] == min(config.usable_cores(), 256) >= 1
    machine = ("threads", "dtype")  # resolved for this machine
    assert {k: v for k, v in q.items() if k not in machine} == {
        k: v for k, v in PRESETS["quality"].items() if k not in machine
    }
    assert (q["cell"], q["layers"], q["optimizer"], q["lr_schedule"]) == ("gru", 2, "adam", "cosine")
    # bfloat16 where it trains faster than float32 (tests/test_bf16.py has the rule), float32 elsewhere
    assert q["dtype"] == ("bfloat16" if engine.bf16_trains_faster() else "float32")
    for name, value in q.items():
        assert option(name).group in ("model", "train"), name
        assert option(name).check(value) == value, name
    # a TrainConfig accepts the preset's training options
    TrainConfig(**{k: v for k, v in q.items() if k in TrainConfig.names()})
    q["cell"] = "lstm"
    assert preset_values("quality")["cell"] == "gru" and PRESETS["quality"]["threads"] is None  # copies
    assert PRESETS["quality"]["dtype"] is None
    assert preset_values("quality", bf16_faster=True)["dtype"] == "bfloat16"
    assert preset_values("quality", bf16_faster=False)["dtype"] == "float32"
    with pytest.raises(ValueError, match="unknown preset 'fast'; expected one of classic, quality"):
        preset_values("fast")


def test_cli_preset_expands_and_explicit_options_override_it(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text(SMALL_TEXT)
    out = tmp_path / "run"
    rc = cli.main(
        [
            "train",
            "--text",
            str(text),
            "--out",
            str(out),
            "--preset",
            "quality",
            "--hidden",
            "8",
            "--layers",
            "1",
            "--seq-length",
            "10",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--eta",
            "0.01",
            "--steps",
            "4",
            "--passage-chars",
            "20",
            "--sample-chars",
            "20",
            "--no-progress",
        ]
    )
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    q = preset_values("quality", bf16_faster=engine.bf16_trains_faster())
    given = {
        "hidden": 8,
        "layers": 1,
        "seq_length": 10,
        "batch_size": 2,
        "threads": 1,
        "eta": 0.01,
        "passage_chars": 20,
        "sample_chars": 20,
    }
    # a run of 4 updates samples every update (the preset's 2,000 scaled to the run's length)
    want = {name: default(name) for name in TrainConfig.names()} | {k: q[k] for k in q} | given | {"sample_every": 1}
    assert cfg["train"] == {k: want[k] for k in TrainConfig.names()}
    for k in ("cell", "layers", "hidden", "sig", "dtype", "seed", "forget_bias"):
        assert cfg["model"][k] == want.get(k, default(k)), k
    assert cfg["run"]["preset"] == "quality" and cfg["run"]["steps"] == 4
    assert cfg["run"]["options"]["cell"] == "gru" and cfg["run"]["options"]["hidden"] == 8


# ---------------------------------------------------------------------------
# The command line is generated from OPTIONS
# ---------------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = cli.build_parser()
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def _check_action(a: argparse.Action, o: config.Option, default_value, flag=None):
    assert a.option_strings == [flag or o.flag], o.name
    assert a.default == default_value, o.name
    assert a.help.startswith(o.help), o.name
    if o.kind is bool:
        assert isinstance(a, argparse._StoreTrueAction)
        return
    assert a.choices == o.choices, o.name
    # the type parses the option's text and checks its range with the option's message
    if o.default is not None:
        assert a.type(str(o.default)) == o.default, o.name
    for v in _outside(o)[:2]:
        if isinstance(v, float) and not math.isfinite(v):
            continue
        if o.choices is None:
            with pytest.raises(argparse.ArgumentTypeError, match=f"^{o.name} must be "):
                a.type(repr(v) if isinstance(v, float) else str(v))
    if o.kind in (int, float):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^expected {o._kind_text()} in "):
            a.type("twelve")


def test_train_parser_options_come_from_OPTIONS():
    acts = _actions(_subparsers()["train"])
    opts = [o for o in OPTIONS if o.group in ("model", "train", "run")]
    assert set(acts) == {o.name for o in opts} | {"no_progress", "force"}
    for o in opts:
        # None when not given, so that presets and stored runs can fill it in
        _check_action(acts[o.name], o, None)
    assert acts["eta"].help.endswith("default the optimiser's")
    assert acts["hidden"].help.endswith("; 1 <= M <= 65,536; default 100")
    args = cli.build_parser().parse_args(["train"])
    assert all(getattr(args, o.name) is None for o in opts)


def test_sample_parser_options_come_from_OPTIONS():
    acts = _actions(_subparsers()["sample"])
    opts = group("sample")
    assert set(acts) == {o.name for o in opts} | {"checkpoint", "seed", "threads"}
    for o in opts:
        _check_action(acts[o.name], o, o.default, flag="-n" if o.name == "length" else None)
    assert acts["seed"].default is None and acts["seed"].type("5") == 5
    # --threads parses and checks as the threads option does, with its default
    assert acts["threads"].default == option("threads").default and acts["threads"].type("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"^threads must be "):
        acts["threads"].type("0")
    args = cli.build_parser().parse_args(["sample", "x.npz"])
    assert {o.name: getattr(args, o.name) for o in opts} == {o.name: o.default for o in opts}


def test_gradcheck_parser_options_come_from_OPTIONS():
    acts = _actions(_subparsers()["gradcheck"])
    assert set(acts) == {"cell", "layers", "hidden", "seq_length", "dropout", "seed", "threads", "text", "tolerance"}
    for name in ("cell", "layers", "seq_length", "dropout", "seed", "threads", "text"):
        _check_action(acts[name], option(name), option(name).default)
    _check_action(acts["hidden"], option("hidden"), 5)
    _check_action(acts["tolerance"], option("tolerance"), 1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--layers", "65"], "argument --layers: layers must be an integer in [1, 64], got 65"),
        (["train", "--dropout", "0.96"], "argument --dropout: dropout must be a number in [0, 0.95], got 0.96"),
        (["train", "--cell", "tanh"], "argument --cell: cell must be one of rnn, lstm, gru; got 'tanh'"),
        (["train", "--hidden", "1.5"], "argument --hidden: expected an integer in [1, 65536], got '1.5'"),
        (["sample", "x", "--top-p", "0"], "argument --top-p: top_p must be a number in (0, 1], got 0.0"),
    ],
)
def test_parser_refuses_out_of_range_values(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"charrnn: error: {message} (see charrnn {argv[0]} --help)"], err
