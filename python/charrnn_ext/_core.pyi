"""Type stubs for the C++ extension charrnn_ext._core (checked against the
built module by mypy.stubtest in CI).

Every argument is required: the defaults live in charrnn_ext.config and the
front doors of charrnn_ext.engine. Parameters are a mapping of C-contiguous
NumPy arrays of one float dtype (float32 or float64) under the network names
(l{l}.Wx, l{l}.Wh, l{l}.b, l{l}.bh for gru, V, c) or, for a one-layer rnn,
the classic names (U, W, V, b, c); the cell is read from the shapes and
`cell` (None or a name) only checks it. States are returned as
(streams, layers, S*m) by the training functions and (layers, S*m) by
evaluate_loss and sample, S = 2 for lstm. The training functions take the
update's options (optimiser, learning rate, clipping, dropout, seed) as one
mapping, `options`, made by charrnn_ext.config.update_options.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

_Params = Mapping[str, np.ndarray]
_Indices = npt.NDArray[np.integer] | Sequence[int] | Sequence[Sequence[int]]

CELLS: tuple[str, ...]
OPTIMIZERS: tuple[str, ...]
CLIP_MODES: tuple[str, ...]

def loss_and_grads(
    params: _Params,
    X: _Indices,
    Y: _Indices,
    h0: np.ndarray | None,
    *,
    cell: str | None,
    dropout: float,
    seed: int,
    update: int,
    threads: int,
    precision: str,
) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """(summed loss, raw gradients keyed like params, final states (streams, layers, S*m))."""

def train_step(
    params: _Params,
    opt_state: _Params,
    X: _Indices,
    Y: _Indices,
    h0: np.ndarray | None,
    *,
    cell: str | None,
    options: Mapping[str, object],
    threads: int,
    precision: str,
) -> tuple[float, np.ndarray]:
    """One update in place: (loss, final states)."""

def train_steps(
    params: _Params,
    opt_state: _Params,
    data: _Indices,
    h0: np.ndarray | None,
    *,
    n_steps: int,
    seq_length: int,
    batch_size: int,
    positions: _Indices | None,
    cell: str | None,
    options: Mapping[str, object],
    threads: int,
    precision: str,
) -> tuple[np.ndarray, np.ndarray, npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
    """(losses (steps done,), states, positions (streams,), wraps (streams,), diverged)."""

def evaluate_loss(
    params: _Params,
    data: _Indices,
    h0: np.ndarray | None,
    *,
    cell: str | None,
    batch_size: int,
    threads: int,
    precision: str,
) -> tuple[float, np.ndarray]:
    """(summed loss of predicting data[1:] from data[:-1], state at the end (layers, S*m))."""

def numerical_grads(
    params: _Params,
    X: _Indices,
    Y: _Indices,
    h0: np.ndarray | None,
    *,
    cell: str | None,
    h: float,
    dropout: float,
    seed: int,
    update: int,
    threads: int,
) -> dict[str, np.ndarray]:
    """Centred differences of the summed loss, losses in long double."""

def sample(
    params: _Params,
    h0: np.ndarray | None,
    prime: _Indices,
    *,
    n: int,
    cell: str | None,
    temperature: float,
    seed: int,
    top_k: int,
    top_p: float,
    greedy: bool,
    threads: int,
) -> tuple[npt.NDArray[np.int32], np.ndarray]:
    """(drawn indices (n,), state (layers, S*m))."""

def trace(
    params: _Params,
    data: _Indices,
    h0: np.ndarray | None,
    *,
    cell: str | None,
    top_k: int,
    states: bool,
    batch_size: int,
    threads: int,
    precision: str,
) -> tuple[
    npt.NDArray[np.float64],
    np.ndarray,
    npt.NDArray[np.int32],
    np.ndarray,
    np.ndarray | None,
    np.ndarray | None,
    np.ndarray,
]:
    """(-log p(next) (N-1,), p(next) (N-1,), top indices (N-1, top_k), top probabilities (N-1, top_k),
    hidden states (layers, N-1, m) or None, LSTM cell states (layers, N-1, m) or None, state at the end)."""

def layout(cell: str, K: int, m: int, layers: int) -> list[tuple[str, str | None, tuple[int, ...]]]:
    """[(name, classic name or None, shape)] of a network's parameters, in the core's order."""

def bf16_path() -> str: ...
def cpu_vendor() -> str:
    """'GenuineIntel', 'AuthenticAMD', ... as CPUID spells it; '' on other architectures."""

def simd_level() -> str:
    """'avx512', 'avx2' or 'baseline' (the build's own target)."""
