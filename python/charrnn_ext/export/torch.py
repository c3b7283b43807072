"""A checkpoint as a PyTorch module, to fine-tune or compare in PyTorch.

Importing this module needs torch (``pip install 'charrnn_ext[torch]'``);
``import charrnn_ext`` alone never imports it.

:class:`CharRNNModule` is one ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` of all
the layers (``batch_first=True``) and an ``nn.Linear`` output layer. Layer 0
reads one-hot vectors of size K, so its ``weight_ih_l0`` is ``l0.Wx`` as it
is (multiplying by a one-hot vector picks a column, exactly). Mapping from
this package's layout (:mod:`charrnn_ext.layout`), per layer l:

==================  =========================================
``weight_ih_l{l}``  ``l{l}.Wx`` (same gate order: rnn [a], lstm [i, f, g, o], gru [r, z, n])
``weight_hh_l{l}``  ``l{l}.Wh``
``bias_ih_l{l}``    ``l{l}.b``
``bias_hh_l{l}``    gru: ``l{l}.bh``; rnn and lstm: zeros (they have one bias; going back, b = b_ih + b_hh)
``out.weight``      ``V``
``out.bias``        ``c``
==================  =========================================

The buffer ``start_state`` is the checkpoint's (layers, S*m) start state
(each row h, then c for lstm; zeros if it stored none): the state this
package samples from, and the one :meth:`CharRNNModule.forward` starts from
when given none.

:func:`save_torch` writes ``charrnn export --format torch`` files: a dict
that ``torch.load(path, weights_only=True)`` reads, holding the state_dict,
the vocabulary and the layout.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import CELLS, default
from ..data import Vocabulary
from ..fileio import atomic_write
from ..layout import STATES, describe, from_classic, param_shapes
from ..state import Checkpoint

__all__ = ["EXPORT_FORMAT", "CharRNNModule", "State", "save_torch"]

#: The ``format`` entry of the files :func:`save_torch` writes, and their version.
EXPORT_FORMAT = "charrnn_ext.torch"
EXPORT_VERSION = 1

#: A recurrent state as the module takes and returns it: h, or (h, c) for an
#: LSTM, each (layers, batch, m).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_RECURRENT = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The model options a checkpoint's meta carries besides the shapes.
_INIT_META = ("sig", "seed", "forget_bias")


class CharRNNModule(nn.Module):
    """A character-level rnn / lstm / gru network as a PyTorch module.

    ``forward(indices, state=None)`` maps int64 indices (batch, time) to
    (logits (batch, time, K), state). ``vocab``: the characters of the K
    indices (optional; :meth:`to_checkpoint` needs one). ``meta``: the
    checkpoint's model options, kept for :meth:`to_checkpoint`.
    """

    start_state: torch.Tensor  # a buffer, see the module's docstring

    def __init__(
        self,
        cell: str,
        vocab_size: int,
        hidden: int,
        layers: int = 1,
        *,
        dtype: torch.dtype = torch.float64,
        vocab: Vocabulary | str | None = None,
        meta: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(map(repr, CELLS))}")
        if min(vocab_size, hidden, layers) < 1:
            raise ValueError(f"vocab_size, hidden and layers must be at least 1, got {vocab_size}, {hidden}, {layers}")
        if dtype not in _DTYPES.values():
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.cell, self.vocab_size, self.hidden, self.layers = cell, int(vocab_size), int(hidden), int(layers)
        self.vocab = None if vocab is None else _vocabulary(vocab, self.vocab_size)
        self.meta = dict(meta or {})
        self.rnn = _RECURRENT[cell](self.vocab_size, self.hidden, self.layers, batch_first=True, dtype=dtype)
        self.out = nn.Linear(self.hidden, self.vocab_size, dtype=dtype)
        self.register_buffer("start_state", torch.zeros(self.layers, STATES[cell] * self.hidden, dtype=dtype))

    # -- from and to this package's checkpoints ------------------------------------

    @classmethod
    def from_checkpoint(cls, source: Checkpoint | str | os.PathLike[str]) -> CharRNNModule:
        """The module of a checkpoint (a :class:`~charrnn_ext.state.Checkpoint`
        or the path of an .npz file), in the checkpoint's dtype."""
        ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
        params = from_classic(ckpt.params)
        cell, K, m, layers = describe(params)
        module = cls(
            cell,
            K,
            m,
            layers,
            dtype=_DTYPES[str(params["V"].dtype)],
            vocab=ckpt.vocab,
            meta={k: ckpt.meta[k] for k in _INIT_META if k in ckpt.meta},
        )
        module.load_params(params, ckpt.sampling_state)
        return module

    @torch.no_grad()
    def load_params(self, params: Mapping[str, np.ndarray], start_h: np.ndarray | None = None) -> None:
        """Copy this package's parameter arrays (network names) and start
        state (layers, S*m; None: zeros) into the module, bit for bit."""
        shapes = param_shapes(self.cell, self.vocab_size, self.hidden, self.layers)
        if set(params) != set(shapes):
            raise ValueError(f"expected the parameters {sorted(shapes)}, got {sorted(params)}")
        for name, shape in shapes.items():
            if np.shape(params[name]) != shape:
                raise ValueError(f"parameter {name!r} has shape {np.shape(params[name])}, expected {shape}")
        for name, tensor in self._mapping().items():
            if name in params:
                tensor.copy_(torch.tensor(np.asarray(params[name])))
            else:
                tensor.zero_()
        if start_h is None:
            self.start_state.zero_()
        else:
            self.start_state.copy_(torch.tensor(np.asarray(start_h)).reshape(self.start_state.shape))

    def to_params(self) -> dict[str, np.ndarray]:
        """The parameters as this package's arrays (network names), in the
        module's dtype; the inverse of :meth:`load_params`."""
        t = self._mapping()
        out: dict[str, np.ndarray] = {}
        for name in param_shapes(self.cell, self.vocab_size, self.hidden, self.layers):
            out[name] = t[name].detach().cpu().numpy().copy()
            if name.endswith(".b") and self.cell != "gru":
                # b = b_ih + b_hh; where b_hh is zero, b_ih as it is (keeps the sign of zeros)
                b_hh = t[name + "_hh"].detach().cpu().numpy()
                out[name] = np.where(b_hh == 0, out[name], out[name] + b_hh)
        return out

    def _mapping(self) -> dict[str, torch.Tensor]:
        """Package parameter name -> the tensor holding it (and "l{l}.b_hh",
        the second bias of an rnn / lstm layer)."""
        r = self.rnn
        t: dict[str, torch.Tensor] = {"V": self.out.weight, "c": self.out.bias}
        for l in range(self.layers):
            t[f"l{l}.Wx"] = getattr(r, f"weight_ih_l{l}")
            t[f"l{l}.Wh"] = getattr(r, f"weight_hh_l{l}")
            t[f"l{l}.b"] = getattr(r, f"bias_ih_l{l}")
            t[f"l{l}.bh" if self.cell == "gru" else f"l{l}.b_hh"] = getattr(r, f"bias_hh_l{l}")
        return t

    def to_checkpoint(self, path: str | os.PathLike[str], vocab: Vocabulary | str | None = None) -> Path:
        """Write the module as a model checkpoint (.npz) that this package
        samples from (:meth:`charrnn_ext.CharRNN.load`) and trains further.
        ``vocab``: the characters of the indices (default: the module's own)."""
        voc = self.vocab if vocab is None else _vocabulary(vocab, self.vocab_size)
        if voc is None:
            raise ValueError("this module has no vocabulary; pass vocab (a Vocabulary or the K characters)")
        dtype = self.out.weight.dtype
        if dtype not in _DTYPES.values():
            raise TypeError(f"checkpoints hold float32 or float64 parameters; the module is {dtype}")
        params = self.to_params()
        start = self.start_state.detach().cpu().numpy().astype(params["V"].dtype)
        bad = [name for name, a in params.items() if not np.all(np.isfinite(a))]
        if bad or not np.all(np.isfinite(start)):
            raise ValueError(f"non-finite values in {', '.join(bad) or 'start_state'}; a checkpoint must be finite")
        meta = {k: self.meta.get(k, default(k)) for k in _INIT_META}
        meta.update(
            hidden=self.hidden, K=self.vocab_size, dtype=str(params["V"].dtype), cell=self.cell, layers=self.layers
        )
        ckpt = Checkpoint(vocab=voc, params=params, meta=meta, start_h=start if np.any(start != 0) else None)
        return save_checkpoint(path, ckpt)

    # -- the exported file ----------------------------------------------------------

    def export_dict(self) -> dict[str, Any]:
        """What :func:`save_torch` writes: the state_dict, the layout and
        the vocabulary, all of types ``torch.load(weights_only=True)`` reads."""
        return {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_VERSION,
            "cell": self.cell,
            "layers": self.layers,
            "hidden": self.hidden,
            "vocab_size": self.vocab_size,
            "vocabulary": None if self.vocab is None else self.vocab.chars,
            "dtype": str(self.out.weight.dtype).removeprefix("torch."),
            "meta": json.dumps(self.meta),
            "state_dict": self.state_dict(),
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CharRNNModule:
        """A module from a file written by :func:`save_torch` (``charrnn
        export --format torch``), read with ``weights_only=True``."""
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable torch file ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, dict) or obj.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: not a charrnn_ext torch export (no 'format' entry {EXPORT_FORMAT!r})")
        if obj.get("format_version") != EXPORT_VERSION:
            raise ValueError(f"{path}: unsupported torch export version {obj.get('format_version')!r}")
        _check_declared_sizes(path, obj)  # before the declared network is built: it may be huge
        try:
            module = cls(
                obj["cell"],
                obj["vocab_size"],
                obj["hidden"],
                obj["layers"],
                dtype=_DTYPES[obj["dtype"]],
                vocab=obj["vocabulary"],
                meta=json.loads(obj["meta"]),
            )
            module.load_state_dict(obj["state_dict"])
        except (KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: damaged torch export ({type(exc).__name__}: {exc})") from None
        return module

    # -- computing ---------------------------------------------------------------------

    def initial_state(self, batch: int = 1) -> State:
        """The start state for ``batch`` streams in the module's form: h, or
        (h, c) for an LSTM, each (layers, batch, m)."""
        m = self.hidden
        parts = [
            self.start_state[:, s * m : (s + 1) * m, None].transpose(1, 2).expand(-1, batch, -1).contiguous()
            for s in range(STATES[self.cell])
        ]
        return (parts[0], parts[1]) if self.cell == "lstm" else parts[0]

    def forward(self, indices: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (batch, time, K) of the characters following each of
        ``indices`` (batch, time), and the state after the last one.
        ``state`` None: :meth:`initial_state` (the checkpoint's start state)."""
        if indices.dim() != 2:
            raise ValueError(f"indices must be (batch, time), got shape {tuple(indices.shape)}")
        if state is None:
            state = self.initial_state(indices.shape[0])
        x = nn.functional.one_hot(indices.long(), self.vocab_size).to(self.out.weight.dtype)
        y, state = self.rnn(x, state)
        return self.out(y), state


#: Gate blocks of torch's recurrent layers, by cell.
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _torch_shapes(cell: str, K: int, m: int, layers: int) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of a CharRNNModule."""
    g = _GATES[cell] * m
    shapes: dict[str, tuple[int, ...]] = {}
    for l in range(layers):
        shapes |= {
            f"rnn.weight_ih_l{l}": (g, K if l == 0 else m),
            f"rnn.weight_hh_l{l}": (g, m),
            f"rnn.bias_ih_l{l}": (g,),
            f"rnn.bias_hh_l{l}": (g,),
        }
    return shapes | {"out.weight": (K, m), "out.bias": (K,), "start_state": (layers, STATES[cell] * m)}


def _check_declared_sizes(path: str | os.PathLike[str], obj: dict[str, Any]) -> None:
    """ValueError naming the file and the entry unless the declared cell and
    sizes are those of the stored tensors (checked before anything of the
    declared size is allocated)."""
    cell = obj.get("cell")
    if not isinstance(cell, str) or cell not in _GATES:
        raise ValueError(f"{path}: damaged torch export (entry 'cell' is {cell!r:.40})")
    sizes = [v for v in (obj.get(k) for k in ("vocab_size", "hidden", "layers")) if isinstance(v, int)]
    if len(sizes) != 3 or not all(not isinstance(v, bool) and v >= 1 for v in sizes):
        raise ValueError(f"{path}: damaged torch export (vocab_size, hidden and layers must be integers >= 1)")
    if obj.get("dtype") not in _DTYPES:
        raise ValueError(f"{path}: damaged torch export (entry 'dtype' is {obj.get('dtype')!r:.40})")
    state = obj.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ValueError(f"{path}: damaged torch export (entry 'state_dict' is not a mapping of tensors)")
    K, m, layers = sizes
    if layers > len(state):
        raise ValueError(f"{path}: damaged torch export (declares {layers} layers; its tensors hold fewer)")
    expected = _torch_shapes(cell, K, m, layers)
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ValueError(
            f"{path}: damaged torch export (the declared {cell} of {layers} layer(s) does not match its tensors: "
            f"missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(
                f"{path}: damaged torch export (declares vocab_size {K}, hidden {m}, but {name} is "
                f"{tuple(state[name].shape)}, not {shape})"
            )


def _vocabulary(vocab: Vocabulary | str, size: int) -> Vocabulary:
    voc = vocab if isinstance(vocab, Vocabulary) else Vocabulary(vocab)
    if voc.size != size:
        raise ValueError(f"the vocabulary has {voc.size} characters; the network reads {size}")
    return voc


def save_torch(source: Checkpoint | str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write a checkpoint (object or path) as a PyTorch file atomically: see
    :meth:`CharRNNModule.export_dict`."""
    obj = CharRNNModule.from_checkpoint(source).export_dict()

    def write(fh: IO[bytes]) -> None:
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:  # torch's writer reports a failed write of the file as its own error
            raise OSError(f"cannot write {path}: torch could not write the file ({exc})") from None

    return atomic_write(path, write)
