"""A checkpoint as an ONNX model, for ONNX Runtime and other ONNX consumers.

The graph is made of the standard recurrent operators (``RNN``, ``LSTM``,
``GRU``; opset :data:`OPSET`), one per layer, and a ``MatMul`` + ``Add`` for
the output layer:

``indices``  int64 [batch, time]      character indices in [0, K)
``h0``       float32 [layers, batch, m]  optional: the initial hidden states
``c0``       float32 [layers, batch, m]  optional, LSTM only: the initial cell states
``logits``   float32 [batch, time, K]   o_t = V h_t + c of the top layer
``hT``, ``cT``  [layers, batch, m]      the states after the last character

Left out, ``h0`` / ``c0`` are the checkpoint's start state (the state this
package samples from; zeros if it stored none), the same for every stream of
the batch. A state with a batch dimension of 1 is also broadcast over the batch.

The model computes in float32 whatever the checkpoint's dtype: ONNX Runtime
implements the recurrent operators for float32 only. The vocabulary is in
the model's metadata (``metadata_props``): ``vocabulary`` holds the
characters, index order, as a JSON string.

Mapping from this package's layout (:mod:`charrnn_ext.layout`): the one-hot
input of layer 0 is built with ``Equal`` + ``Cast`` (an index outside
[0, K) reads as an all-zero vector), so layer 0's ``W`` is ``l0.Wx`` as it
is. ONNX stacks the gate blocks as LSTM [i, o, f, c] and GRU [z, r, h]
(ours: [i, f, g, o] and [r, z, n]); the GRU is ONNX's
``linear_before_reset=1`` form, with ``B = [b, bh]``; rnn and lstm have one
bias, so ``B = [b, 0]``.

``onnx`` is imported only when a model is built (``pip install
'charrnn_ext[onnx]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import load_checkpoint
from ..fileio import atomic_write_bytes
from ..layout import GATES, STATES, describe, from_classic
from ..state import Checkpoint
from ..version import package_version

if TYPE_CHECKING:
    import onnx

__all__ = ["GATE_ORDER", "METADATA_VOCABULARY", "OPSET", "onnx_model", "save_onnx"]

#: The default-domain opset the models declare.
OPSET = 17
#: IR version of the files: the one that goes with opset 17, so that
#: runtimes of that generation (ONNX Runtime >= 1.13) read them.
IR_VERSION = 8
#: Metadata key of the vocabulary (a JSON string of the characters).
METADATA_VOCABULARY = "vocabulary"
#: ONNX operator, and our gate blocks in ONNX's order, by cell.
GATE_ORDER: dict[str, tuple[str, tuple[int, ...]]] = {
    "rnn": ("RNN", (0,)),
    "lstm": ("LSTM", (0, 3, 1, 2)),  # [i, f, g, o] -> [i, o, f, c]
    "gru": ("GRU", (1, 0, 2)),  # [r, z, n] -> [z, r, h]
}
# Protocol buffers refuse messages of 2 GiB or more; leave room for the graph.
_MAX_BYTES = 2**31 - (1 << 20)


def _reorder(a: np.ndarray, m: int, order: tuple[int, ...]) -> np.ndarray:
    """The gate blocks (rows of m) of a in the given order."""
    return np.concatenate([a[g * m : (g + 1) * m] for g in order], axis=0)


def _as_checkpoint(source: Checkpoint | str | os.PathLike[str]) -> Checkpoint:
    return source if isinstance(source, Checkpoint) else load_checkpoint(source)


def onnx_model(source: Checkpoint | str | os.PathLike[str]) -> onnx.ModelProto:
    """The ONNX model of a checkpoint (a :class:`~charrnn_ext.state.Checkpoint`
    or the path of one), checked with ``onnx.checker`` (full check)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ImportError(
            "exporting to ONNX needs the onnx package: pip install 'charrnn_ext[onnx]'", name="onnx"
        ) from exc

    ckpt = _as_checkpoint(source)
    params = from_classic(ckpt.params)
    cell, K, m, layers = describe(params)
    op, order = GATE_ORDER[cell]
    G, S = GATES[cell], STATES[cell]
    n_bytes = 4 * sum(a.size for a in params.values()) + 8 * K
    if n_bytes > _MAX_BYTES:
        raise ValueError(f"the model would take {n_bytes:,} bytes; a single ONNX file holds less than 2 GiB")

    def f32(name: str, a: np.ndarray) -> onnx.TensorProto:
        with np.errstate(over="ignore"):
            b = np.ascontiguousarray(a, dtype=np.float32)
        if not np.all(np.isfinite(b)):
            raise ValueError(f"{name}: values beyond the float32 range; the ONNX model computes in float32")
        return numpy_helper.from_array(b, name)

    def i64(name: str, values: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)

    h0 = ckpt.sampling_state
    start = np.zeros((layers, S * m)) if h0 is None else np.asarray(h0, dtype=np.float64).reshape(layers, S * m)
    state_names = ["h0", "c0"][:S]
    inits = [
        i64("char_ids", list(range(K))),
        i64("state_dims", [layers]),
        i64("hidden_dim", [m]),
        i64("unsqueeze_last", [-1]),
        i64("squeeze_dir", [1]),
        i64("zero", [0]),
        i64("one", [1]),
        f32("VT", params["V"].T),
        f32("c", params["c"]),
    ]
    # the default states: (layers, 1, m), broadcast over the batch
    inits += [f32(name, start[:, None, s * m : (s + 1) * m]) for s, name in enumerate(state_names)]
    nodes = [
        helper.make_node("Shape", ["indices"], ["indices_shape"]),
        helper.make_node("Slice", ["indices_shape", "zero", "one"], ["batch_dim"]),
        helper.make_node("Concat", ["state_dims", "batch_dim", "hidden_dim"], ["state_shape"], axis=0),
        helper.make_node("Transpose", ["indices"], ["indices_tb"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["indices_tb", "unsqueeze_last"], ["indices_tb1"]),
        helper.make_node("Equal", ["indices_tb1", "char_ids"], ["one_hot_bool"]),
        helper.make_node("Cast", ["one_hot_bool"], ["x0"], to=TensorProto.FLOAT),
    ]
    nodes += [helper.make_node("Expand", [name, "state_shape"], [f"{name}_full"]) for name in state_names]
    x = "x0"
    finals: list[list[str]] = [[] for _ in state_names]
    for l in range(layers):
        W = _reorder(params[f"l{l}.Wx"], m, order)[None]
        R = _reorder(params[f"l{l}.Wh"], m, order)[None]
        bh = params[f"l{l}.bh"] if cell == "gru" else np.zeros(G * m)
        B = np.concatenate([_reorder(params[f"l{l}.b"], m, order), _reorder(bh, m, order)])[None]
        inits += [
            f32(f"W{l}", W),
            f32(f"R{l}", R),
            f32(f"B{l}", B),
            i64(f"layer{l}", [l]),
            i64(f"layer{l}_end", [l + 1]),
        ]
        states_in = []
        for name in state_names:
            nodes.append(
                helper.make_node("Slice", [f"{name}_full", f"layer{l}", f"layer{l}_end", "zero"], [f"{name}_l{l}"])
            )
            states_in.append(f"{name}_l{l}")
        outs = [f"y{l}", f"hT_l{l}"] + ([f"cT_l{l}"] if cell == "lstm" else [])
        extra: dict[str, Any] = {"linear_before_reset": 1} if cell == "gru" else {}
        nodes.append(
            helper.make_node(
                op, [x, f"W{l}", f"R{l}", f"B{l}", "", *states_in], outs, hidden_size=m, name=f"layer{l}", **extra
            )
        )
        nodes.append(helper.make_node("Squeeze", [f"y{l}", "squeeze_dir"], [f"x{l + 1}"]))
        x = f"x{l + 1}"
        for s, out in enumerate(outs[1:]):
            finals[s].append(out)
    out_names = ["hT", "cT"][:S]
    nodes += [helper.make_node("Concat", parts, [name], axis=0) for parts, name in zip(finals, out_names)]
    nodes += [
        helper.make_node("MatMul", [x, "VT"], ["scores_tb"]),
        helper.make_node("Add", ["scores_tb", "c"], ["logits_tb"]),
        helper.make_node("Transpose", ["logits_tb"], ["logits"], perm=[1, 0, 2]),
    ]
    state_type: list[str | int] = [layers, "batch", m]
    graph = helper.make_graph(
        nodes,
        f"charrnn_{cell}",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "time"])]
        + [helper.make_tensor_value_info(name, TensorProto.FLOAT, state_type) for name in state_names],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "time", K])]
        + [helper.make_tensor_value_info(name, TensorProto.FLOAT, state_type) for name in out_names],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="charrnn_ext",
        producer_version=package_version(),
        doc_string=f"character-level {cell} network, {layers} layer(s) of {m} units, {K} characters",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            METADATA_VOCABULARY: json.dumps(ckpt.vocab.chars, ensure_ascii=False),
            "cell": cell,
            "layers": str(layers),
            "hidden": str(m),
            "source_dtype": str(params["V"].dtype),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(source: Checkpoint | str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write the ONNX model of a checkpoint to ``path`` atomically (a failed
    export leaves no file behind)."""
    return atomic_write_bytes(path, onnx_model(source).SerializeToString())
