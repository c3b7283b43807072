"""Type stubs for the C++ extension charrnn_ext._core.

Parameters are a dict with keys U (m, K), W (m, m), V (K, m), b (m,), c (K,):
C-contiguous NumPy arrays, all float64 or all float32 (the dtype selects the
precision). Character indices may be any native integer dtype.

The net_* functions take a general network instead: cell is 'rnn', 'lstm' or
'gru'; parameters are keyed "l{l}.Wx" (G*m, in_l), "l{l}.Wh" (G*m, m),
"l{l}.b" (G*m,) (and "l{l}.bh" for gru) per layer, then "V" (K, m), "c" (K,),
with G = 1, 4, 3; hidden states are (layers, S*m) with S = 2 for lstm (h, c).
"""
from typing import Mapping, Sequence, Union

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
Params = Mapping[str, np.ndarray]
IndexArray = Union[npt.NDArray[np.integer], Sequence[int]]
IndexMatrix = Union[npt.NDArray[np.integer], Sequence[Sequence[int]]]

def loss_and_grads(
    params: Params,
    X: IndexArray,
    Y: IndexArray,
    h0: FloatArray | None = None,
) -> tuple[float, dict[str, np.ndarray], FloatArray]:
    """(loss summed over the sequence, raw gradients, h_last (m,))."""

def loss_and_grads_batched(
    params: Params,
    X: IndexMatrix,
    Y: IndexMatrix,
    h0: FloatArray | None = None,
    *,
    threads: int = 1,
) -> tuple[float, dict[str, np.ndarray], FloatArray]:
    """B streams at once: X, Y (B, T); h0 (B, m) or None.

    Loss and gradients are sums over the B streams. Returns
    (loss, grads, h_last (B, m)). Results are identical for every thread count.
    """

def train_step(
    params: Params,
    state: Params,
    X: IndexArray,
    Y: IndexArray,
    h0: FloatArray | None = None,
    eta: float = 0.1,
    clip: float = 5.0,
    eps: float = 1e-8,
) -> tuple[float, FloatArray]:
    """One BPTT + clipped AdaGrad step in place on params/state: (loss, h_last (m,))."""

def train_steps(
    params: Params,
    state: Params,
    data: IndexArray,
    h0: FloatArray | None = None,
    *,
    n_steps: int,
    seq_length: int = 25,
    pos: int = 0,
    eta: float = 0.1,
    clip: float = 5.0,
    eps: float = 1e-8,
) -> tuple[FloatArray, FloatArray, int, int, bool]:
    """The classic walk: (losses (steps_done,), h (m,), pos, wraps, diverged)."""

def train_steps_batched(
    params: Params,
    state: Params,
    data: IndexArray,
    h0: FloatArray | None = None,
    *,
    n_steps: int,
    batch_size: int,
    seq_length: int = 25,
    positions: IndexArray | None = None,
    threads: int = 1,
    eta: float = 0.1,
    clip: float = 5.0,
    eps: float = 1e-8,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
    """Minibatched walk over batch_size contiguous segments of len(data) // batch_size.

    h0 is (batch_size, m) or None; positions are offsets inside each segment
    (default zeros). Per step the gradients of all streams are summed, then
    clipped and applied in one AdaGrad update; losses[i] is the sum over all
    batch_size * seq_length predictions of step i. Returns
    (losses (steps_done,), h (batch_size, m), positions (batch_size,),
    wraps (batch_size,), diverged). batch_size=1 equals train_steps exactly.
    """

def evaluate_loss(
    params: Params,
    data: IndexArray,
    h0: FloatArray | None = None,
) -> tuple[float, FloatArray]:
    """Summed loss of predicting data[1:] from data[:-1]: (loss, h_last (m,))."""

def sample(
    params: Params,
    h0: FloatArray | None,
    prime: IndexArray,
    n: int,
    temperature: float = 1.0,
    seed: int = 0,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> tuple[npt.NDArray[np.int32], FloatArray]:
    """Feed prime from h0, then draw n characters: (indices (n,) int32, h (m,)).
    top_k > 0 keeps the k most probable characters, top_p < 1 the smallest
    set reaching that probability, greedy takes the argmax."""

def simd_level() -> str:
    """Kernel set chosen for this CPU: 'avx512', 'avx2' or 'baseline' (the
    build's own target; 'baseline-avx2' / 'baseline-avx512' when the build
    itself was compiled for those, e.g. with CHARRNN_NATIVE=ON)."""


def net_loss_and_grads(
    cell: str, params: Params, X: IndexArray, Y: IndexArray, h0: FloatArray | None = None
) -> tuple[float, dict[str, FloatArray], FloatArray]:
    """Loss, raw gradients keyed like params, and the last state (layers, S*m) of a network."""

def net_train_steps(
    cell: str,
    params: Params,
    opt_state: Params,
    data: IndexArray,
    h0: FloatArray | None = None,
    *,
    n_steps: int,
    seq_length: int = 25,
    pos: int = 0,
    optimizer: str = "adagrad",
    lr: float = 0.1,
    clip: float = 5.0,
    clip_mode: str = "elementwise",
    gamma: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    t: int = 0,
) -> tuple[FloatArray, FloatArray, int, int, bool, int]:
    """Training walk of a network with AdaGrad, RMSProp or Adam: (losses, h, pos, wraps, diverged, t)."""

def net_evaluate_loss(
    cell: str, params: Params, data: IndexArray, h0: FloatArray | None = None
) -> tuple[float, FloatArray]:
    """Summed loss of predicting data[1:] from data[:-1] with a network: (loss, h_last)."""

def net_sample(
    cell: str,
    params: Params,
    h0: FloatArray | None,
    prime: IndexArray,
    n: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int = 0,
) -> tuple[npt.NDArray[np.int32], FloatArray]:
    """Feed prime through a network from h0, then draw n filtered characters: (indices, h)."""
