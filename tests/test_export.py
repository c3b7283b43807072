"""Exports (issue 13): an ONNX model for ONNX Runtime and a PyTorch module.

The three implementations (this package, ONNX Runtime on the exported model,
the PyTorch module) must agree on the summed loss of a 2,000-character text
and on 300 greedily decoded characters; checkpoint -> module -> checkpoint
must be bit for bit; bad input must fail cleanly and leave no file. The
models are trained briefly here (so that they predict something and start
from a non-zero state, as real checkpoints do). Tests needing torch, onnx or
onnxruntime are skipped where those are not installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext.checkpoint import load_checkpoint, save_checkpoint
from charrnn_ext.cli import main
from charrnn_ext.data import Vocabulary
from charrnn_ext.layout import STATES
from helpers import CELLS, max_scaled_err

README = Path(__file__).resolve().parents[1] / "README.md"
HIDDEN = 40
EVAL_CHARS = 2_000
GREEDY_CHARS = 300
CONFIGS = [(cell, layers, dtype) for cell in CELLS for layers in (1, 2) for dtype in ("float32", "float64")]
IDS = [f"{c}-{n}-{d}" for c, n, d in CONFIGS]
#: Relative agreement of the summed loss with this package's, by the dtype
#: the computation runs in (the ONNX model is float32 whatever the checkpoint).
TOL = {"float32": 1e-5, "float64": 1e-9}


def _ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def _torch():
    return pytest.importorskip("torch")


# ---------------------------------------------------------------------------
# fixtures: a text, briefly trained checkpoints, their exports
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text():
    """Training text and a separate 2,000-character evaluation text, one vocabulary."""
    full = cx.builtin_corpus()[: 60_000 + EVAL_CHARS]
    vocab = Vocabulary.from_text(full)
    return vocab, vocab.encode(full[:60_000]).astype(np.int64), full[60_000:]


@pytest.fixture(scope="module")
def checkpoints(text, tmp_path_factory):
    """(cell, layers, dtype) -> path of a model checkpoint trained for 1,500
    Adam updates, whose stored start state is the training state."""
    vocab, data, _ = text
    folder = tmp_path_factory.mktemp("checkpoints")
    cache: dict[tuple[str, int, str], Path] = {}

    def get(cell: str, layers: int, dtype: str) -> Path:
        key = (cell, layers, dtype)
        if key not in cache:
            seed = CONFIGS.index(key)
            params = cx.net_init(cell, vocab.size, HIDDEN, layers, sig=0.1, seed=seed, dtype=dtype)
            opt = cx.init_opt_state(params, "adam")
            _, h, *_ = cx.train_steps(params, opt, data, n_steps=1500, seq_length=25, optimizer="adam", eta=5e-3)
            model = cx.CharRNN(vocab, params, seed=seed, start_h=h)
            cache[key] = model.save(folder / f"{cell}-{layers}-{dtype}.npz", include_state=False)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def onnx_files(checkpoints, tmp_path_factory):
    _ort()
    folder = tmp_path_factory.mktemp("onnx")
    cache: dict[Path, Path] = {}

    def get(ckpt: Path) -> Path:
        if ckpt not in cache:
            cache[ckpt] = cx.save_onnx(ckpt, folder / ckpt.with_suffix(".onnx").name)
        return cache[ckpt]

    return get


def _session(path: Path):
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no notice about the state inputs having defaults
    return ort.InferenceSession(str(path), options)


def _rel(reference: float, value: float) -> float:
    """|value - reference| / |reference|."""
    return abs(value - reference) / abs(reference)


def _summed_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    """sum_t -log softmax(logits_t)[y_t], computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].sum())


def _zero_feeds(cell: str, layers: int, batch: int = 1) -> dict[str, np.ndarray]:
    return {name: np.zeros((layers, batch, HIDDEN), np.float32) for name in ["h0", "c0"][: STATES[cell]]}


def readme_loop() -> str:
    """The Python code of README.md's onnxruntime sampling loop."""
    text = README.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- onnx-sampling-loop:begin -->\s*```python\n(.*?)```\s*<!-- onnx-sampling-loop:end -->", text, re.S
    )
    assert block, "README.md lost its onnx-sampling-loop markers"
    return block.group(1)


# ---------------------------------------------------------------------------
# agreement: summed loss, final state, greedy decoding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell,layers,dtype", CONFIGS, ids=IDS)
def test_onnx_summed_loss_agrees(cell, layers, dtype, text, checkpoints, onnx_files):
    vocab, _, ev = text
    ckpt = load_checkpoint(checkpoints(cell, layers, dtype))
    data = vocab.encode(ev).astype(np.int64)
    loss, h = cx.evaluate_loss(ckpt.params, data)  # from a zero state
    session = _session(onnx_files(checkpoints(cell, layers, dtype)))
    logits, *states = session.run(None, {"indices": data[None, :-1], **_zero_feeds(cell, layers)})
    assert logits.shape == (1, EVAL_CHARS - 1, vocab.size) and logits.dtype == np.float32
    assert _rel(loss, _summed_loss(logits[0], data[1:])) <= TOL["float32"]
    ours = np.concatenate([s[:, 0] for s in states], axis=1)  # (layers, S*m), row = h then c
    assert max_scaled_err(ours, h) <= 1e-5


@pytest.mark.parametrize("cell,layers,dtype", CONFIGS, ids=IDS)
@pytest.mark.slow
def test_torch_summed_loss_agrees(cell, layers, dtype, text, checkpoints):
    torch = _torch()
    from charrnn_ext.torch import CharRNNModule

    vocab, _, ev = text
    path = checkpoints(cell, layers, dtype)
    ckpt = load_checkpoint(path)
    data = vocab.encode(ev).astype(np.int64)
    loss, h = cx.evaluate_loss(ckpt.params, data)
    net = CharRNNModule.from_checkpoint(path)
    zero = torch.zeros(layers, 1, HIDDEN, dtype=getattr(torch, dtype))
    with torch.no_grad():
        logits, state = net(torch.from_numpy(data[None, :-1]), (zero, zero) if cell == "lstm" else zero)
    assert logits.dtype == getattr(torch, dtype)
    assert _rel(loss, _summed_loss(logits[0].numpy(), data[1:])) <= TOL[dtype]
    parts = state if cell == "lstm" else (state,)
    ours = np.concatenate([s[:, 0].numpy() for s in parts], axis=1)
    assert max_scaled_err(ours, h) <= (1e-5 if dtype == "float32" else 1e-12)


def _torch_greedy(net, prime_idx: np.ndarray, n: int) -> list[int]:
    import torch

    out: list[int] = []
    with torch.no_grad():
        logits, state = net(torch.from_numpy(prime_idx.astype(np.int64))[None])
        for _ in range(n):
            i = int(torch.argmax(logits[0, -1]))
            out.append(i)
            logits, state = net(torch.tensor([[i]]), state)
    return out


def _package_greedy(path: Path, prime: str) -> str:
    text = cx.CharRNN.load(path).sample(GREEDY_CHARS, greedy=True, prime=prime)
    assert len(text) == GREEDY_CHARS and len(set(text)) > 3  # a model that says something
    return text


@pytest.mark.parametrize("cell,layers,dtype", CONFIGS, ids=IDS)
def test_greedy_decoding_readme_loop_agrees(cell, layers, dtype, text, checkpoints, onnx_files):
    """300 characters after a prime, from the checkpoint's start state: this
    package and the README's onnxruntime loop on the exported model."""
    path = checkpoints(cell, layers, dtype)
    prime = text[2][:40]
    namespace: dict = {}
    exec(readme_loop(), namespace)
    got = namespace["generate"](str(onnx_files(path)), prime, GREEDY_CHARS, temperature=0)
    assert got == prime + _package_greedy(path, prime)


@pytest.mark.parametrize("cell,layers,dtype", CONFIGS, ids=IDS)
@pytest.mark.slow
def test_greedy_decoding_torch_agrees(cell, layers, dtype, text, checkpoints):
    _torch()
    from charrnn_ext.torch import CharRNNModule

    vocab, _, ev = text
    path = checkpoints(cell, layers, dtype)
    prime = ev[:40]
    net = CharRNNModule.from_checkpoint(path)
    assert vocab.decode(_torch_greedy(net, vocab.encode(prime), GREEDY_CHARS)) == _package_greedy(path, prime)


def test_readme_loop_runs_without_charrnn_ext(checkpoints, onnx_files, text):
    """The README's loop in a fresh interpreter where importing charrnn_ext fails."""
    vocab, _, ev = text
    code = readme_loop()
    assert "charrnn_ext" not in code
    assert len(code[code.index("def generate") :].splitlines()) <= 15
    path = checkpoints("lstm", 2, "float32")
    prime = ev[:40]
    model = str(onnx_files(path))
    script = (
        "import sys\nsys.modules['charrnn_ext'] = None\n"
        + code
        + f"\nprint(json.dumps([generate({model!r}, {prime!r}, {GREEDY_CHARS}, temperature=0),"
        f" generate({model!r}, {prime!r}, 50, temperature=0.8, seed=1)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    greedy, sampled = json.loads(run.stdout)
    assert greedy == prime + cx.CharRNN.load(path).sample(GREEDY_CHARS, greedy=True, prime=prime)
    assert sampled.startswith(prime) and len(sampled) == len(prime) + 50 and set(sampled) <= set(vocab.chars)


# ---------------------------------------------------------------------------
# the ONNX model itself
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_onnx_model_layout(cell, checkpoints, text):
    onnx = pytest.importorskip("onnx")
    vocab = text[0]
    model = cx.onnx_model(checkpoints(cell, 2, "float64"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    state_in, state_out = ["h0", "c0"][: STATES[cell]], ["hT", "cT"][: STATES[cell]]
    assert [i.name for i in model.graph.input] == ["indices", *state_in]
    assert [o.name for o in model.graph.output] == ["logits", *state_out]

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert dims(model.graph.input[0]) == ["batch", "time"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert dims(model.graph.output[0]) == ["batch", "time", vocab.size]
    assert all(dims(v) == [2, "batch", HIDDEN] for v in [*model.graph.input[1:], *model.graph.output[1:]])
    recurrent = [n for n in model.graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
    assert [n.op_type for n in recurrent] == [{"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]] * 2
    if cell == "gru":
        assert all(
            onnx.helper.get_attribute_value(a) == 1
            for n in recurrent
            for a in n.attribute
            if a.name == "linear_before_reset"
        )
        assert all(any(a.name == "linear_before_reset" for a in n.attribute) for n in recurrent)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["vocabulary"]) == vocab.chars
    assert (meta["cell"], meta["layers"], meta["hidden"]) == (cell, "2", str(HIDDEN))


@pytest.mark.parametrize("cell", CELLS)
def test_onnx_states_batches_and_defaults(cell, checkpoints, onnx_files, text):
    """No h0/c0 = the start state the package samples from; a batch of
    streams = the streams one by one; a text read in two calls (states fed
    back) = read in one."""
    vocab, _, ev = text
    path = checkpoints(cell, 2, "float32")
    ckpt = load_checkpoint(path)
    session = _session(onnx_files(path))
    data = vocab.encode(ev[:301]).astype(np.int64)
    loss, _ = cx.evaluate_loss(ckpt.params, data, ckpt.start_h)
    logits, *_ = session.run(None, {"indices": data[None, :-1]})
    assert _rel(loss, _summed_loss(logits[0], data[1:])) <= TOL["float32"]

    names = ["h0", "c0"][: STATES[cell]]
    rng = np.random.default_rng(0)
    states = {n: (0.5 * rng.standard_normal((2, 3, HIDDEN))).astype(np.float32) for n in names}
    batch = np.stack([data[:100], data[100:200], data[200:300]])
    together = session.run(None, {"indices": batch, **states})
    for s in range(3):
        alone = session.run(None, {"indices": batch[s : s + 1], **{n: v[:, s : s + 1] for n, v in states.items()}})
        for a, b in zip(together, alone):
            np.testing.assert_allclose(a[s : s + 1] if a.shape[0] == 3 else a[:, s : s + 1], b, rtol=1e-5, atol=1e-6)

    whole = session.run(None, {"indices": data[None, :-1]})
    first = session.run(None, {"indices": data[None, :150]})
    second = session.run(None, {"indices": data[None, 150:-1], **dict(zip(names, first[1:]))})
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], axis=1), whole[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(second[1:], whole[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_old_checkpoints_export_and_sample_as_before(tmp_path):
    """The format-2 and format-1 fixtures: the exported model starts from the
    state the package samples them from (stream 0's training state)."""
    _ort()
    data = Path(__file__).parent / "data"
    for name in ("v1_training.npz", "v2_gru_model.npz", "v2_lstm_adam.npz", "v2_rnn_batched.npz"):
        model = cx.CharRNN.load(data / name)
        prime = model.vocab.chars[:3]
        path = cx.save_onnx(data / name, tmp_path / f"{name}.onnx")
        namespace: dict = {}
        exec(readme_loop(), namespace)
        got = namespace["generate"](str(path), prime, 60, temperature=0)
        assert got == prime + model.sample(60, greedy=True, prime=prime), name


# ---------------------------------------------------------------------------
# the PyTorch module and file
# ---------------------------------------------------------------------------


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("cell,layers,dtype", CONFIGS, ids=IDS)
def test_round_trip_is_bit_for_bit(cell, layers, dtype, checkpoints, tmp_path):
    _torch()
    from charrnn_ext.torch import CharRNNModule, save_torch

    original = load_checkpoint(checkpoints(cell, layers, dtype))
    original.params["l0.b"][:3] = -0.0  # the sign of zero survives too
    src = save_checkpoint(tmp_path / "src.npz", original)
    CharRNNModule.from_checkpoint(src).to_checkpoint(tmp_path / "direct.npz")
    CharRNNModule.load(save_torch(src, tmp_path / "model.pt")).to_checkpoint(tmp_path / "via_file.npz")
    for name in ("direct.npz", "via_file.npz"):
        back = load_checkpoint(tmp_path / name)
        assert back.params.keys() == original.params.keys()
        assert all(_same_bits(back.params[k], original.params[k]) for k in original.params), name
        assert _same_bits(back.start_h, original.start_h)
        assert back.vocab == original.vocab
        assert {k: back.meta[k] for k in ("cell", "layers", "hidden", "dtype", "seed")} == {
            k: original.meta[k] for k in ("cell", "layers", "hidden", "dtype", "seed")
        }


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.slow
def test_fine_tuned_module_goes_back_to_a_checkpoint_that_trains(cell, checkpoints, text, tmp_path):
    """After a torch update both biases of an rnn/lstm layer are non-zero;
    the checkpoint written back computes what the module computes, samples,
    and trains further."""
    torch = _torch()
    from charrnn_ext.torch import CharRNNModule

    vocab, _, ev = text
    net = CharRNNModule.from_checkpoint(checkpoints(cell, 2, "float64"))
    data = torch.from_numpy(vocab.encode(ev[:201]).astype(np.int64))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        logits, _state = net(data[None, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], data[1:], reduction="sum")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(net.rnn.bias_hh_l1.detach().abs().max()) > 0
    net.to_checkpoint(tmp_path / "tuned.npz", vocab.chars)
    model = cx.CharRNN.load(tmp_path / "tuned.npz")
    with torch.no_grad():
        logits, _state = net(data[None, :-1])
    expected = float(torch.nn.functional.cross_entropy(logits[0], data[1:], reduction="sum"))
    ours, _ = cx.evaluate_loss(model.params, data.numpy(), model.start_state)
    assert _rel(expected, ours) <= 1e-9
    assert len(model.sample(20, seed=0)) == 20
    result = model.fit(ev, steps=3, seq_length=10, val_fraction=0.1)
    assert result.step == 3 and np.isfinite(result.final_val_loss)


def test_torch_file_loads_with_weights_only(checkpoints, text, tmp_path):
    torch = _torch()
    from charrnn_ext.torch import CharRNNModule

    vocab, _, ev = text
    src = checkpoints("gru", 2, "float32")
    assert main(["export", str(src), "-o", str(tmp_path / "m.pt")]) == 0  # torch, from the suffix
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    assert (obj["cell"], obj["layers"], obj["hidden"], obj["vocab_size"], obj["dtype"]) == (
        "gru",
        2,
        HIDDEN,
        vocab.size,
        "float32",
    )
    assert obj["vocabulary"] == vocab.chars
    assert "rnn.weight_ih_l0" in obj["state_dict"] and "out.weight" in obj["state_dict"]
    x = torch.from_numpy(vocab.encode(ev[:50]).astype(np.int64))[None]
    with torch.no_grad():
        a, _ = CharRNNModule.load(tmp_path / "m.pt")(x)
        b, _ = CharRNNModule.from_checkpoint(src)(x)
    assert torch.equal(a, b)


def test_torch_module_refuses_bad_input(checkpoints, tmp_path):
    torch = _torch()
    from charrnn_ext.torch import CharRNNModule

    net = CharRNNModule.from_checkpoint(checkpoints("rnn", 1, "float32"))
    with pytest.raises(ValueError, match="characters"):
        net.to_checkpoint(tmp_path / "x.npz", "ab")
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        net(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(RuntimeError):
        net(torch.tensor([[net.vocab_size]]))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        CharRNNModule.load(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a charrnn_ext torch export"):
        CharRNNModule.load(tmp_path / "other.pt")
    with torch.no_grad():
        net.out.bias[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        net.to_checkpoint(tmp_path / "nan.npz")
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "nan.npz").exists()


# ---------------------------------------------------------------------------
# the command line and bad input
# ---------------------------------------------------------------------------


def test_import_charrnn_ext_imports_neither_torch_nor_onnx():
    code = (
        "import sys, charrnn_ext, charrnn_ext.cli\nprint(sorted({'torch', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_cli_export_writes_onnx(checkpoints, tmp_path, capsys):
    _ort()
    src = checkpoints("lstm", 1, "float64")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "best.npz").write_bytes(src.read_bytes())
    assert main(["export", str(folder)]) == 0  # a run folder means its best.npz; onnx is the default
    assert (folder / "best.onnx").is_file()
    assert main(["export", str(src), "--format", "onnx", "-o", str(tmp_path / "m.bin")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert _session(tmp_path / "m.bin").get_modelmeta().custom_metadata_map["cell"] == "lstm"


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _fails_cleanly(argv: list[str], folder: Path, capsys, match: str) -> None:
    before = _listing(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("charrnn: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and re.search(match, err), err
    assert _listing(folder) == before  # no partial output, no temporary file


@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_cli_export_bad_input(fmt, checkpoints, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx" if fmt == "onnx" else "torch")
    src = tmp_path / "model.npz"
    src.write_bytes(checkpoints("gru", 1, "float32").read_bytes())
    out = str(tmp_path / "out.bin")
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    flipped = bytearray(src.read_bytes())
    flipped[len(flipped) // 3] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint\n")
    _fails_cleanly(["export", str(damaged), "--format", fmt, "-o", out], tmp_path, capsys, "damaged.npz")
    _fails_cleanly(
        ["export", str(tmp_path / "flipped.npz"), "--format", fmt, "-o", out], tmp_path, capsys, "flipped.npz"
    )
    _fails_cleanly(["export", str(text_file), "--format", fmt, "-o", out], tmp_path, capsys, "not a readable")
    _fails_cleanly(["export", str(tmp_path / "absent.npz"), "--format", fmt, "-o", out], tmp_path, capsys, "not found")
    _fails_cleanly(["export", str(src), "--format", "tflite", "-o", out], tmp_path, capsys, "unknown export format")
    _fails_cleanly(
        ["export", str(src), "--format", fmt, "-o", str(tmp_path / "no" / "x")], tmp_path, capsys, "does not exist"
    )
    _fails_cleanly(["export", str(src), "--format", fmt, "-o", str(tmp_path)], tmp_path, capsys, "is a folder")
    _fails_cleanly(["export", str(src), "--format", fmt, "-o", str(src)], tmp_path, capsys, "being exported")
    assert load_checkpoint(src).params.keys()  # still intact

    # the disk fills up while the file is written
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("charrnn_ext.fileio.os.fsync", full)
    _fails_cleanly(["export", str(src), "--format", fmt, "-o", out], tmp_path, capsys, "No space left")
    monkeypatch.undo()

    # the optional package is missing
    monkeypatch.setitem(sys.modules, fmt, None)
    monkeypatch.delitem(sys.modules, "charrnn_ext.export.torch", raising=False)
    _fails_cleanly(
        ["export", str(src), "--format", fmt, "-o", out],
        tmp_path,
        capsys,
        re.escape(f"pip install 'charrnn_ext[{fmt}]'"),
    )
