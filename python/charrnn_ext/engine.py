"""The C++ engine's front doors: :mod:`charrnn_ext._core`'s functions with
their defaults (from :mod:`charrnn_ext.config`) and the states in the shapes
the caller uses. This is the only module that imports ``_core``: the rest of
the package (training, the model, sampling, the layout) reaches the core
through the functions here.

Parameters are a dict of NumPy arrays with the classic names (U, W, V, b, c)
or the network names (:mod:`charrnn_ext.layout`); the cell and the number of
layers are read from the shapes. States follow the names: with the classic
names a stream's state is (m,), B streams (B, m); with the network names
(layers, S*m) and (B, layers, S*m). The arrays are used in place, never
copied, and the GIL is released while the core computes.

Losses and gradients are SUMS over the characters of a chunk (and over its
streams); the gradients of B streams go into one update.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from . import _core
from .config import CELLS, CLIP_MODES, OPTIMIZERS, default, update_options

__all__ = [
    "TraceArrays",
    "bf16_path",
    "bf16_trains_faster",
    "core_layout",
    "evaluate_loss",
    "has_bf16_units",
    "loss_and_grads",
    "numerical_grads",
    "sample",
    "simd_level",
    "trace",
    "train_step",
    "train_steps",
    "train_walk",
]

# The option table and the compiled core must agree on the names they share;
# an extension built from another version of the sources is refused here.
_core_names = (tuple(_core.CELLS), tuple(_core.OPTIMIZERS), tuple(_core.CLIP_MODES))
if _core_names != (CELLS, OPTIMIZERS, CLIP_MODES):
    raise ImportError(
        f"the compiled core charrnn_ext._core knows cells, optimisers and clip modes {_core_names}, "
        f"but charrnn_ext.config lists {(CELLS, OPTIMIZERS, CLIP_MODES)}: the extension was built from "
        "other sources; rebuild it (pip install .)"
    )


#: The values of CHARRNN_ISA, lowest first: each lowers the kernels to at most that level.
ISA_LEVELS: tuple[str, ...] = ("baseline", "avx2", "avx512", "avx512bf16", "amx")
if os.environ.get("CHARRNN_ISA") and os.environ["CHARRNN_ISA"] not in ISA_LEVELS:
    warnings.warn(
        f"CHARRNN_ISA={os.environ['CHARRNN_ISA']!r} names no kernel level ({', '.join(ISA_LEVELS)}): "
        "the portable baseline kernels run",
        RuntimeWarning,
        stacklevel=2,
    )


def bf16_path() -> str:
    """The kernel of bfloat16 matrix products on this CPU: 'amx' (AMX-BF16
    tiles), 'avx512bf16', or the float kernels' level when the portable
    kernel computes them (the same sums, slower). CHARRNN_ISA lowers it."""
    return _core.bf16_path()


def has_bf16_units() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16)."""
    return _core.bf16_path() in ("amx", "avx512bf16")


def bf16_trains_faster() -> bool:
    """Whether bfloat16 products train faster than float32 ones here, the
    choice of ``--dtype`` that presets leave to the machine.

    - AMX tiles: yes (2.3-3.2x over the harness runs on an Intel Xeon,
      benchmarks/README.md).
    - AVX512-BF16 alone on an Intel core: no. One ``vdpbf16ps`` does two
      multiply-adds a lane, but on a Xeon it issues at a quarter of the
      float32 FMA's rate, so it does half the multiply-adds a second; with
      AMX masked (``CHARRNN_ISA=avx512bf16``) that Xeon trained 1.3x slower
      in bfloat16 than in float32 (benchmarks/README.md).
    - AVX512-BF16 on AMD (Zen 4 and 5): yes, expected rather than measured
      (no AMD run of it yet): there the instruction is meant to issue as
      often as a float32 FMA, which doubles the multiply-adds.
    - The portable kernel: no (slower than float32)."""
    path = _core.bf16_path()
    return path == "amx" or (path == "avx512bf16" and _core.cpu_vendor() == "AuthenticAMD")


Params = Mapping[str, np.ndarray]
IndexArray = npt.NDArray[np.integer] | Sequence[int]


def _one_stream(params: Params, h: np.ndarray) -> np.ndarray:
    """A stream's state in the caller's shape: (m,) for classic names, else (layers, S*m)."""
    return h.reshape(-1) if "U" in params else h.reshape(h.shape[-2:])


def _streams(params: Params, h: np.ndarray) -> np.ndarray:
    """B streams' states in the caller's shape: (B, m) for classic names, else (B, layers, S*m)."""
    return h.reshape(h.shape[0], -1) if "U" in params else h


def simd_level() -> str:
    """The instruction set the core's kernels were chosen for at load time
    (``CHARRNN_ISA`` in the environment can lower it)."""
    return _core.simd_level()


def core_layout(cell: str, K: int, m: int, layers: int) -> list[tuple[str, str | None, tuple[int, ...]]]:
    """[(name, classic name or None, shape)] of a network's parameters, in the core's order."""
    return _core.layout(cell, K, m, layers)


def loss_and_grads(
    params: Params,
    X: Any,
    Y: Any,
    h0: np.ndarray | None = None,
    *,
    dropout: float = default("dropout"),
    seed: int = default("seed"),
    update: int = 0,
    threads: int = default("threads"),
    precision: str = "full",
) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """Loss summed over the chunk X -> Y, the raw (unclipped) gradients keyed
    like params, and the final state. X and Y are (T,) for one stream or
    (B, T) for B streams (then h0 and the state returned are batched, and
    loss and gradients are sums over the streams). With ``dropout`` > 0 the
    masks are those of update number ``update`` of a run seeded ``seed``.
    ``precision`` 'bfloat16' (float32 parameters) rounds the operands of
    every matrix product to bfloat16 and sums in float32."""
    loss, grads, h = _core.loss_and_grads(
        params, X, Y, h0, cell=None, dropout=dropout, seed=seed, update=update, threads=threads, precision=precision
    )
    return loss, grads, (_streams if np.ndim(X) == 2 else _one_stream)(params, h)


def train_step(
    params: Params,
    state: Params,
    X: Any,
    Y: Any,
    h0: np.ndarray | None = None,
    eta: float | None = None,
    clip: float = default("clip"),
    eps: float = default("eps"),
    *,
    optimizer: str = default("optimizer"),
    clip_mode: str = default("clip_mode"),
    gamma: float = default("gamma"),
    beta1: float = default("beta1"),
    beta2: float = default("beta2"),
    dropout: float = default("dropout"),
    seed: int = default("seed"),
    threads: int = default("threads"),
    precision: str = "full",
) -> tuple[float, np.ndarray]:
    """One update on the chunk X -> Y, in place on params and state (the
    optimiser memory, :func:`~charrnn_ext.layout.init_opt_state`; a classic
    AdaGrad memory {U, W, V, b, c} works too). Returns (loss, final state).
    ``eta`` None is the optimiser's default (0.1 for AdaGrad). A non-finite
    loss or gradient raises ValueError and changes nothing. ``precision``
    'bfloat16' (float32 parameters) computes every matrix product with
    bfloat16 operands and float32 sums."""
    options = update_options(locals())  # the keyword arguments named in the option table
    loss, h = _core.train_step(
        params, state, X, Y, h0, cell=None, options=options, threads=threads, precision=precision
    )
    return loss, (_streams if np.ndim(X) == 2 else _one_stream)(params, h)


def train_steps(
    params: Params,
    state: Params,
    data: IndexArray,
    h0: np.ndarray | None = None,
    *,
    n_steps: int,
    seq_length: int = default("seq_length"),
    pos: int = 0,
    batch_size: int | None = None,
    positions: IndexArray | None = None,
    threads: int = default("threads"),
    optimizer: str = default("optimizer"),
    eta: float | None = None,
    clip: float = default("clip"),
    clip_mode: str = default("clip_mode"),
    eps: float = default("eps"),
    gamma: float = default("gamma"),
    beta1: float = default("beta1"),
    beta2: float = default("beta2"),
    dropout: float = default("dropout"),
    seed: int = default("seed"),
    precision: str = "full",
):
    """``n_steps`` updates walking ``data`` (an index array) in chunks of
    ``seq_length``, in place on params and state.

    One stream (the classic walk, ``batch_size`` None or 1 and no
    ``positions``): chunk data[pos:pos+T] -> data[pos+1:pos+T+1]; when a whole
    chunk no longer fits, the walk restarts at 0 with a zero state. Returns
    (losses, h, pos, wraps, diverged).

    ``batch_size`` B streams: data is cut into B segments of len(data) // B,
    stream s walks segment s from ``positions[s]`` (default 0) with its own
    state h0[s]; per step the gradients of all streams are summed into one
    update. Returns (losses, h (B, ...), positions (B,), wraps (B,), diverged).

    losses[i] is the summed loss of update i (over B * seq_length
    characters). The walk stops before the first update whose loss or
    gradient is not finite (diverged = True; that update not applied).
    ``precision`` 'bfloat16' (float32 parameters) computes every matrix
    product with bfloat16 operands and float32 sums."""
    single = (batch_size is None or batch_size == 1) and positions is None
    if not single and pos != 0:
        raise ValueError("pos is for one stream; with batch_size > 1 give positions (one offset per stream)")
    if single and (isinstance(pos, bool) or not isinstance(pos, (int, np.integer))):
        raise TypeError(f"pos must be an integer, got {type(pos).__name__}")
    options = update_options(locals())  # the keyword arguments named in the option table
    try:
        losses, h, pos_out, wraps, diverged = train_walk(
            params,
            state,
            data,
            h0,
            n_steps=n_steps,
            seq_length=seq_length,
            batch_size=1 if batch_size is None else batch_size,
            positions=[pos] if single else positions,
            options=options,
            threads=threads,
            precision=precision,
        )
    except ValueError as exc:  # one stream's offset is `pos` to the caller
        if single and "positions[0]" in str(exc):
            raise ValueError(
                str(exc)
                .replace("positions[0]", "pos")
                .replace("its segment", "the text")
                .replace("the segment length", "len(data)")
            ) from None
        raise
    if single:
        return losses, _one_stream(params, h), int(pos_out[0]), int(wraps[0]), diverged
    return losses, _streams(params, h), pos_out, wraps, diverged


def train_walk(
    params: Params,
    state: Params,
    data: IndexArray,
    h0: np.ndarray | None,
    *,
    n_steps: int,
    seq_length: int,
    batch_size: int,
    positions: IndexArray | None,
    options: Mapping[str, Any],
    threads: int,
    precision: str,
) -> tuple[np.ndarray, np.ndarray, npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
    """:func:`train_steps` as the trainer uses it: B streams, the update's
    options as one mapping (:func:`charrnn_ext.config.update_options`), the
    precision of the products, and the results as the core gives them
    (states (B, layers, S*m))."""
    return _core.train_steps(
        params,
        state,
        data,
        h0,
        n_steps=n_steps,
        seq_length=seq_length,
        batch_size=batch_size,
        positions=positions,
        cell=None,
        options=options,
        threads=threads,
        precision=precision,
    )


def evaluate_loss(
    params: Params,
    data: IndexArray,
    h0: np.ndarray | None = None,
    *,
    batch_size: int = default("batch_size"),
    threads: int = default("threads"),
    precision: str = "full",
) -> tuple[float, np.ndarray]:
    """Summed loss of predicting data[1:] from data[:-1] (forward only), and
    the state at the end of the text. ``batch_size`` B > 1 reads B contiguous
    segments at once (each but the first from a zero state, so the loss
    differs slightly from B = 1). ``precision`` 'bfloat16' (float32
    parameters) computes the matrix products as bfloat16 training does."""
    loss, h = _core.evaluate_loss(
        params, data, h0, cell=None, batch_size=batch_size, threads=threads, precision=precision
    )
    return loss, _one_stream(params, h)


class TraceArrays(NamedTuple):
    """What :func:`trace` returns (N characters, N - 1 positions)."""

    nll: npt.NDArray[np.float64]  #: (N-1,) -log p(data[i+1]), the engine's row losses
    prob: np.ndarray  #: (N-1,) p(data[i+1])
    top_index: npt.NDArray[np.int32]  #: (N-1, top_k) most probable first, ties by the lower index
    top_prob: np.ndarray  #: (N-1, top_k)
    hidden: np.ndarray | None  #: (layers, N-1, m), None unless states
    cell: np.ndarray | None  #: (layers, N-1, m) for an LSTM, else None
    state: np.ndarray  #: the state at the end of the text, in the caller's shape


def trace(
    params: Params,
    data: IndexArray,
    h0: np.ndarray | None = None,
    *,
    top_k: int,
    states: bool = True,
    batch_size: int = default("batch_size"),
    threads: int = default("threads"),
    precision: str = "full",
) -> TraceArrays:
    """The forward pass of :func:`evaluate_loss`, kept at every position i
    (having read data[i], predicting data[i+1]) instead of summed: the row
    losses, the probability of the next character, the ``top_k`` most
    probable next characters, and (``states``) every layer's hidden state and
    an LSTM's cell state (:class:`TraceArrays`). ``batch_size`` as in
    :func:`evaluate_loss` (1: one pass from h0, every state that of a single
    reading), and ``precision`` too."""
    nll, prob, top_index, top_prob, hidden, cell, h = _core.trace(
        params,
        data,
        h0,
        cell=None,
        top_k=top_k,
        states=states,
        batch_size=batch_size,
        threads=threads,
        precision=precision,
    )
    return TraceArrays(nll, prob, top_index, top_prob, hidden, cell, _one_stream(params, h))


def sample(
    params: Params,
    h0: np.ndarray | None,
    prime: IndexArray,
    n: int,
    temperature: float = default("temperature"),
    seed: int = default("seed"),
    *,
    top_k: int = default("top_k"),
    top_p: float = default("top_p"),
    greedy: bool = default("greedy"),
    threads: int = default("threads"),
) -> tuple[npt.NDArray[np.int32], np.ndarray]:
    """Feed ``prime`` from h0 (None: zeros), then draw n characters from
    softmax(o / temperature). ``top_k`` > 0 keeps the k most probable
    characters, ``top_p`` < 1 the smallest set holding that probability,
    ``greedy`` takes the most probable. Up to ``threads`` threads share each
    step where the network's weights are large (the text does not depend on
    it). Returns (indices, state)."""
    out, h = _core.sample(
        params,
        h0,
        prime,
        n=n,
        cell=None,
        temperature=temperature,
        seed=seed,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        threads=threads,
    )
    return out, _one_stream(params, h)


def numerical_grads(
    params: Params,
    X: Any,
    Y: Any,
    h0: np.ndarray | None = None,
    *,
    h: float = 1e-4,
    dropout: float = default("dropout"),
    seed: int = default("seed"),
    update: int = 0,
    threads: int = default("threads"),
) -> dict[str, np.ndarray]:
    """Centred differences of the chunk's summed loss for every parameter
    entry, the losses evaluated in long double by the engine, the entries
    shared by ``threads`` workers (the result does not depend on how many)."""
    return _core.numerical_grads(
        params, X, Y, h0, cell=None, h=h, dropout=dropout, seed=seed, update=update, threads=threads
    )
