"""Type stubs for the compiled C++ module charrnn_ext._core."""
from typing import Mapping, Sequence

import numpy as np
import numpy.typing as npt

_Params = Mapping[str, npt.NDArray[np.floating]]
_Indices = npt.NDArray[np.integer] | Sequence[int]
_Hidden = npt.NDArray[np.floating] | None

def loss_and_grads(
    params: _Params, X: _Indices, Y: _Indices, h0: _Hidden = None
) -> tuple[float, dict[str, npt.NDArray[np.floating]], npt.NDArray[np.floating]]:
    """Summed loss, raw (unclipped) gradients keyed like params, and the last hidden state."""

def train_step(
    params: _Params,
    state: _Params,
    X: _Indices,
    Y: _Indices,
    h0: _Hidden = None,
    eta: float = 0.1,
    clip: float = 5.0,
    eps: float = 1e-8,
) -> tuple[float, npt.NDArray[np.floating]]:
    """One BPTT + clipped AdaGrad step in place on params and state; returns (loss, h_last)."""

def train_steps(
    params: _Params,
    state: _Params,
    data: _Indices,
    h0: _Hidden = None,
    *,
    n_steps: int,
    seq_length: int = 25,
    pos: int = 0,
    eta: float = 0.1,
    clip: float = 5.0,
    eps: float = 1e-8,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], int, int, bool]:
    """n_steps training steps walking data in chunks; returns (losses, h, pos, wraps, diverged)."""

def evaluate_loss(params: _Params, data: _Indices, h0: _Hidden = None) -> tuple[float, npt.NDArray[np.floating]]:
    """Summed loss of predicting data[1:] from data[:-1]; returns (loss, h_last)."""

def sample(
    params: _Params,
    h0: _Hidden,
    prime: _Indices,
    n: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.floating]]:
    """Feed prime from h0, then draw n characters; returns (indices, h)."""
