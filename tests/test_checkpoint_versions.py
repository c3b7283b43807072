"""Checkpoints written by earlier releases keep loading, sampling and training.

tests/data holds real files of the two earlier formats: v1_training.npz
(format 1: a classic RNN run) and, written by the release of format 2,
v2_lstm_adam.npz (a 2-layer LSTM trained with Adam), v2_rnn_batched.npz (a
classic RNN trained with 3 streams) and v2_gru_model.npz (a GRU's parameters
only). The expected texts below were drawn by the release that wrote each
file, from the same checkpoint with the same seeds: the engine that replaced
its kernels must draw exactly the same characters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint

DATA = Path(__file__).parent / "data"

# file -> (format version, cell, layers, streams, updates done,
#          sample(60, seed=3, temperature=0.8), sample(30, seed=4, top_k=3, prime="The")) by the writing release
EXPECTED = {
    "v1_training": (
        1,
        "rnn",
        1,
        1,
        30,
        ",e  an t te hanaa! mst TgiaTdnas,oe hn d ine nr l.hhe e .lhe",
        " tt anha at tatat t aan the at",
    ),
    "v2_lstm_adam": (
        2,
        "lstm",
        2,
        1,
        30,
        "!mi Al,tetmnebnra!.irwm.itA!lsmn.tdAemcb,gnsaht\nh,mmggdd,mib",
        "attaaata attattta t a a atat a",
    ),
    "v2_rnn_batched": (
        2,
        "rnn",
        1,
        3,
        30,
        "!n  The mgnbn the Thee anmag.rg at be can the t i the eag on",
        " the the the the  sat t she sa",
    ),
    "v2_gru_model": (
        2,
        "gru",
        1,
        1,
        0,
        "!mi Al,tetmnebnra!.irwm.itA!lsmn.tdAemcb,gmsaht\nh,mmggcd,mib",
        ".tooonybmggnnycyc.t!omg\ngnny,e",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_checkpoint_loads_and_samples_as_its_release_did(name):
    version, cell, layers, streams, step, text, filtered = EXPECTED[name]
    ckpt = load_checkpoint(DATA / f"{name}.npz")
    assert ckpt.format_version == version
    model = cx.CharRNN.from_checkpoint(ckpt)
    assert (model.cell, model.layers, model.step) == (cell, layers, step)
    assert set(model.params) == set(cx.param_shapes(cell, model.K, model.hidden, layers))
    if model.state is not None:
        width = (2 if cell == "lstm" else 1) * model.hidden  # an LSTM's state row is h then c
        assert model.state.h.shape == (streams, layers, width)
        assert model.state.positions.shape == (streams,)
        assert model.state.t == step  # one update per step; format 1 kept no counter
    assert model.sample(60, seed=3, temperature=0.8) == text
    assert model.sample(30, seed=4, top_k=3, prime="The") == filtered


@pytest.mark.parametrize("name", ["v1_training", "v2_lstm_adam", "v2_rnn_batched"])
def test_old_run_continues_and_round_trips_through_the_current_format(name, tmp_path):
    from conftest import SMALL_TEXT

    model = cx.CharRNN.load(DATA / f"{name}.npz")
    before = {k: v.copy() for k, v in model.params.items()}
    result = model.fit(SMALL_TEXT, steps=10)
    assert result.step == 40 and model.state.t == 40
    assert np.isfinite(result.smooth_loss)
    assert any(not np.array_equal(before[k], model.params[k]) for k in before)
    path = save_checkpoint(tmp_path / "now.npz", model.to_checkpoint())
    again = load_checkpoint(path)
    assert again.format_version == FORMAT_VERSION
    for k, v in model.params.items():
        assert np.array_equal(again.params[k], v)
    for k, v in model.state.opt_state.items():
        assert np.array_equal(again.state.opt_state[k], v)
    assert np.array_equal(again.state.h, model.state.h)
    assert np.array_equal(again.state.positions, model.state.positions)
