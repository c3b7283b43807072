"""A plain NumPy implementation of the vanilla RNN, written to be read next to
the equations. It is the yardstick the C++ core is tested against.

For t = 1..T:
    a_t = W h_{t-1} + U x_t + b      h_t = tanh(a_t)
    o_t = V h_t + c                   p_t = softmax(o_t)
    loss = sum_t -log p_t[y_t]
x_t is the one-hot vector of character X[t]; U x_t is simply column X[t] of U.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .layout import PARAM_NAMES, Params


def forward(params: Mapping[str, np.ndarray], X, Y, h0=None, dtype=np.float64):
    """Loss and the activations the backward pass needs: (loss, H, P).

    H has T + 1 rows (H[0] = h0, H[t] = h_t); P has T rows (P[t-1] = p_t).
    dtype is the working precision (np.longdouble serves numerical gradients).
    """
    U, W, V, b, c = (np.asarray(params[k], dtype=dtype) for k in PARAM_NAMES)
    X = np.asarray(X)
    Y = np.asarray(Y)
    T = len(X)
    m = W.shape[0]
    H = np.zeros((T + 1, m), dtype=dtype)
    if h0 is not None:
        H[0] = h0
    P = np.zeros((T, V.shape[0]), dtype=dtype)
    loss = dtype(0)
    for t in range(T):
        a = W @ H[t] + U[:, X[t]] + b
        H[t + 1] = np.tanh(a)
        o = V @ H[t + 1] + c
        shifted = o - o.max()
        log_z = np.log(np.exp(shifted).sum())
        P[t] = np.exp(shifted - log_z)
        loss += log_z - shifted[Y[t]]  # -log p_t[y_t]
    return loss, H, P


def backward(params: Mapping[str, np.ndarray], X, Y, H, P) -> Params:
    """Gradients of the loss (raw, unclipped) by backpropagation through time."""
    W = np.asarray(params["W"], dtype=np.float64)
    V = np.asarray(params["V"], dtype=np.float64)
    grads = {k: np.zeros(np.shape(params[k])) for k in PARAM_NAMES}
    dh_next = np.zeros(W.shape[0])
    for t in reversed(range(len(X))):
        do = P[t].copy()
        do[Y[t]] -= 1.0  # dL/do_t = p_t - y_t
        grads["V"] += np.outer(do, H[t + 1])
        grads["c"] += do
        dh = V.T @ do + dh_next  # from the output and from step t + 1
        da = (1.0 - H[t + 1] ** 2) * dh  # through tanh
        grads["U"][:, X[t]] += da
        grads["W"] += np.outer(da, H[t])
        grads["b"] += da
        dh_next = W.T @ da
    return grads


def loss_and_grads(params: Mapping[str, np.ndarray], X, Y, h0=None):
    """(loss, gradients, last hidden state), like charrnn_ext.loss_and_grads."""
    loss, H, P = forward(params, X, Y, h0)
    return loss, backward(params, X, Y, H, P), H[-1].copy()


def adagrad_update(
    params: Params,
    state: Params,
    grads: Mapping[str, np.ndarray],
    eta: float = 0.1,
    clip: float = 5.0,
    eps: float = 1e-8,
) -> None:
    """In place: g <- clip(g); M <- M + g^2; theta <- theta - eta g / sqrt(M + eps)."""
    for k in PARAM_NAMES:
        g = np.clip(grads[k], -clip, clip)
        state[k] += g * g
        params[k] -= eta * g / np.sqrt(state[k] + eps)


def train_step(params: Params, state: Params, X, Y, h0=None, eta: float = 0.1, clip: float = 5.0, eps: float = 1e-8):
    """One step of BPTT + clipped AdaGrad in place; returns (loss, h_last)."""
    loss, grads, h = loss_and_grads(params, X, Y, h0)
    adagrad_update(params, state, grads, eta, clip, eps)
    return loss, h


def train_steps(
    params: Params,
    state: Params,
    data,
    h0=None,
    *,
    n_steps: int,
    seq_length: int = 25,
    pos: int = 0,
    eta: float = 0.1,
    clip: float = 5.0,
    eps: float = 1e-8,
):
    """The classic training walk through data; returns (losses, h, pos, wraps).

    Chunks are data[pos:pos+T] -> data[pos+1:pos+T+1]; when a whole chunk no
    longer fits, the walk restarts at 0 with a zero hidden state.
    """
    m = np.shape(params["W"])[0]
    h = np.zeros(m) if h0 is None else np.array(h0, dtype=np.float64)
    losses = np.zeros(n_steps)
    wraps = 0
    for s in range(n_steps):
        if pos + seq_length + 1 > len(data):
            pos, h, wraps = 0, np.zeros(m), wraps + 1
        X = data[pos : pos + seq_length]
        Y = data[pos + 1 : pos + seq_length + 1]
        losses[s], h = train_step(params, state, X, Y, h, eta, clip, eps)
        pos += seq_length
    return losses, h, pos, wraps


def next_char_distribution(params: Mapping[str, np.ndarray], h, x: int, temperature: float = 1.0):
    """(p, h_new): the distribution of the character after x from state h."""
    U, W, V, b, c = (np.asarray(params[k], dtype=np.float64) for k in PARAM_NAMES)
    h_new = np.tanh(W @ h + U[:, x] + b)
    o = (V @ h_new + c) / temperature
    p = np.exp(o - o.max())
    return p / p.sum(), h_new
