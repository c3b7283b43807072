"""Plain NumPy reference for the general networks, written per time step to
be read next to the equations (cpp/cells.hpp, cpp/engine.hpp, cpp/optim.hpp).
It is the yardstick the C++ core is tested against.

Cells (s = logistic sigmoid; gate blocks stacked in this order):
    rnn:  h = tanh(Wx x + b + Wh h_prev)
    lstm: [i, f, g, o] = [s, s, tanh, s](Wx x + b + Wh h_prev)
          c = f c_prev + i g;   h = o tanh(c)
    gru:  r = s(Wx_r x + b_r + Wh_r h_prev + bh_r);  z likewise
          n = tanh(Wx_n x + b_n + r (Wh_n h_prev + bh_n));  h = (1 - z) n + z h_prev
Stack: layer 0 reads the one-hot character (Wx x = column x of Wx), layer l
reads h of layer l - 1; o_t = V h_top + c, loss = sum_t -log softmax(o_t)[y_t].
States are (layers, S*m) arrays, S = 2 for lstm (h then c).

Dropout (inverted, p > 0) multiplies the input of every layer l > 0 and of the
output layer by keep / (1 - p), with the masks replayed from the counter-based
generator of cpp/dropout.hpp (:func:`dropout_keep`): the same masks as the C++
engine draws for (seed, update, stream, position, site).

B streams (X, Y of shape (B, T)) are B independent chunks whose losses and
gradients are summed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .layout import STATES, describe

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _mix(z: int) -> int:
    """SplitMix64's finaliser on a Python int (wrapping 64-bit arithmetic)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_keep(seed: int, update: int, stream: int, t: int, site: int, m: int, p: float) -> np.ndarray:
    """Which of m units are kept at dropout site `site` (layer l's input: l;
    the output layer's: L) of stream `stream` at chunk position t of update
    `update` (cpp/dropout.hpp)."""
    k = seed
    for v in (update, stream, t, site):
        k = _mix((k + _GOLDEN * (v + 1)) & _MASK64)
    q = np.arange((m + 1) // 2, dtype=np.uint64)
    bits = _mix_array(np.uint64(k) + np.uint64(_GOLDEN) * (q + np.uint64(1)))
    units = np.empty(2 * q.size, dtype=np.uint64)
    units[0::2] = bits & np.uint64(0xFFFFFFFF)
    units[1::2] = bits >> np.uint64(32)
    return units[:m] >= np.uint64(math.floor(p * 4294967296.0))


def net_dims(params: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """(K, m, layers) of a network's parameter dict."""
    _, K, m, layers = describe(params)
    return K, m, layers


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _layer(params, l, cell, dtype):
    p = {k: np.asarray(params[f"l{l}.{k}"], dtype=dtype) for k in ("Wx", "Wh", "b")}
    if cell == "gru":
        p["bh"] = np.asarray(params[f"l{l}.bh"], dtype=dtype)
    return p


def cell_forward(cell, p, xin, h_prev, c_prev):
    """One step of one layer: (h, c, cache). xin is an index (layer 0) or a vector."""
    Wx, Wh, b = p["Wx"], p["Wh"], p["b"]
    m = Wh.shape[1]
    ax = (Wx[:, xin] if np.ndim(xin) == 0 else Wx @ xin) + b
    if cell == "rnn":
        h = np.tanh(ax + Wh @ h_prev)
        return h, None, {"h": h}
    if cell == "lstm":
        z = ax + Wh @ h_prev
        i, f, g, o = _sigmoid(z[:m]), _sigmoid(z[m : 2 * m]), np.tanh(z[2 * m : 3 * m]), _sigmoid(z[3 * m :])
        c = f * c_prev + i * g
        tc = np.tanh(c)
        return o * tc, c, {"i": i, "f": f, "g": g, "o": o, "tc": tc, "c_prev": c_prev}
    ah = Wh @ h_prev + p["bh"]
    r = _sigmoid(ax[:m] + ah[:m])
    z = _sigmoid(ax[m : 2 * m] + ah[m : 2 * m])
    hn = ah[2 * m :]
    n = np.tanh(ax[2 * m :] + r * hn)
    return (1 - z) * n + z * h_prev, None, {"r": r, "z": z, "n": n, "hn": hn, "h_prev": h_prev}


def cell_backward(cell, cache, dh, dc):
    """Back through one step: (dax, dah, dh_prev_direct, dc_prev) with
    dax / dah the input-side / recurrent-side pre-activation gradients."""
    if cell == "rnn":
        da = (1 - cache["h"] ** 2) * dh
        return da, da, 0.0, None
    if cell == "lstm":
        i, f, g, o, tc = cache["i"], cache["f"], cache["g"], cache["o"], cache["tc"]
        dct = dc + dh * o * (1 - tc**2)
        dz = np.concatenate(
            [dct * g * i * (1 - i), dct * cache["c_prev"] * f * (1 - f), dct * i * (1 - g**2), dh * tc * o * (1 - o)]
        )
        return dz, dz, 0.0, dct * f
    r, z, n, hn = cache["r"], cache["z"], cache["n"], cache["hn"]
    dan = dh * (1 - z) * (1 - n**2)
    dar = dan * hn * r * (1 - r)
    daz = dh * (cache["h_prev"] - n) * z * (1 - z)
    return (np.concatenate([dar, daz, dan]), np.concatenate([dar, daz, dan * r]), dh * z, None)


def forward(
    cell, params: Mapping[str, np.ndarray], X, Y, h0=None, dtype=np.float64, *, dropout=0.0, seed=0, update=0, stream=0
):
    """(loss, cache, final state) of the chunk X -> Y of one stream from state
    h0 (None = zeros). dtype is the working precision (np.longdouble serves
    numerical gradients); dropout/seed/update/stream select the masks."""
    _K, m, L = net_dims(params)
    S = STATES[cell]
    state = np.zeros((L, S * m), dtype=dtype) if h0 is None else np.array(h0, dtype=dtype)
    layers = [_layer(params, l, cell, dtype) for l in range(L)]
    V = np.asarray(params["V"], dtype=dtype)
    c_out = np.asarray(params["c"], dtype=dtype)
    scale = np.asarray(1.0 / (1.0 - dropout), dtype=dtype) if dropout > 0 else None
    T = len(X)
    h = [state[l, :m].copy() for l in range(L)]
    c = [state[l, m:].copy() if S == 2 else None for l in range(L)]
    caches: list[list[Any]] = [[None] * T for _ in range(L)]
    Hs: list[list[Any]] = [[None] * T for _ in range(L)]  # h_t of each layer
    Cs: list[list[Any]] = [[None] * T for _ in range(L)]  # c_t of each layer (lstm)
    Xs: list[list[Any]] = [[None] * T for _ in range(L + 1)]  # what layer l (L: the output) reads, after dropout
    keeps: list[list[Any]] = [[None] * T for _ in range(L + 1)]
    Ps = []
    loss = dtype(0)
    for t in range(T):
        xin: Any = int(X[t])
        for l in range(L):
            if l > 0:
                xin = _dropped(xin, keeps, l, t, dropout, seed, update, stream, scale)
                Xs[l][t] = xin
            h[l], c[l], caches[l][t] = cell_forward(cell, layers[l], xin, h[l], c[l])
            Hs[l][t], Cs[l][t] = h[l], c[l]
            xin = h[l]
        top = _dropped(h[L - 1], keeps, L, t, dropout, seed, update, stream, scale)
        Xs[L][t] = top
        o = V @ top + c_out
        shifted = o - o.max()
        log_z = np.log(np.exp(shifted).sum())
        Ps.append(np.exp(shifted - log_z))
        loss += log_z - shifted[int(Y[t])]
    final = np.zeros((L, S * m), dtype=dtype)
    for l in range(L):
        final[l, :m] = h[l]
        if S == 2:
            final[l, m:] = c[l]
    cache = {
        "state0": state,
        "caches": caches,
        "H": Hs,
        "C": Cs,
        "X": Xs,
        "keep": keeps,
        "scale": scale,
        "P": Ps,
        "layers": layers,
        "V": V,
    }
    return loss, cache, final


def _dropped(h, keeps, site, t, dropout, seed, update, stream, scale):
    if dropout <= 0:
        return h
    keep = dropout_keep(seed, update, stream, t, site, h.size, dropout)
    keeps[site][t] = keep
    return np.where(keep, h * scale, 0)


def _undrop(dh, cache, site, t):
    keep = cache["keep"][site][t]
    return dh if keep is None else np.where(keep, dh * cache["scale"], 0)


def backward(cell, params, X, Y, cache):
    """Raw gradients of the loss, keyed like params."""
    _K, m, L = net_dims(params)
    grads = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    layers, V, Hs, Xs, P = cache["layers"], cache["V"], cache["H"], cache["X"], cache["P"]
    T = len(X)
    # dL/dh_t of the top layer from the output
    dH: list[list[Any]] = [[None] * T for _ in range(L)]
    for t in range(T):
        do = P[t].copy()
        do[int(Y[t])] -= 1.0
        grads["V"] += np.outer(do, Xs[L][t])
        grads["c"] += do
        dH[L - 1][t] = _undrop(V.T @ do, cache, L, t)
    for l in reversed(range(L)):
        p = layers[l]
        dh_next = np.zeros(m)
        dc = np.zeros(m)
        h_init = cache["state0"][l, :m]
        for t in reversed(range(T)):
            dax, dah, dh_direct, dc = cell_backward(cell, cache["caches"][l][t], dH[l][t] + dh_next, dc)
            h_prev = Hs[l][t - 1] if t > 0 else h_init
            if l == 0:
                grads["l0.Wx"][:, int(X[t])] += dax
            else:
                grads[f"l{l}.Wx"] += np.outer(dax, Xs[l][t])
                dH[l - 1][t] = _undrop(p["Wx"].T @ dax, cache, l, t)
            grads[f"l{l}.Wh"] += np.outer(dah, h_prev)
            grads[f"l{l}.b"] += dax
            if cell == "gru":
                grads[f"l{l}.bh"] += dah
            dh_next = p["Wh"].T @ dah + dh_direct
    return grads


def loss_and_grads(cell, params, X, Y, h0=None, *, dropout=0.0, seed=0, update=0):
    """(loss, grads, h_last) like charrnn_ext.loss_and_grads with network
    names, in float64. X, Y of shape (B, T) are B streams (h0 (B, layers,
    S*m)); their losses and gradients are summed."""
    X = np.asarray(X)
    if X.ndim == 1:
        loss, cache, final = forward(cell, params, X, Y, h0, dropout=dropout, seed=seed, update=update)
        return float(loss), backward(cell, params, X, Y, cache), final
    Y = np.asarray(Y)
    total, grads, finals = 0.0, None, []
    for s in range(X.shape[0]):
        loss, cache, final = forward(
            cell, params, X[s], Y[s], None if h0 is None else h0[s], dropout=dropout, seed=seed, update=update, stream=s
        )
        g = backward(cell, params, X[s], Y[s], cache)
        total += float(loss)
        grads = g if grads is None else {k: grads[k] + g[k] for k in g}
        finals.append(final)
    return total, grads, np.stack(finals)


def evaluate_loss(cell, params, data, h0=None):
    """(loss, h_last) of predicting data[1:] from data[:-1]."""
    loss, _, final = forward(cell, params, data[:-1], data[1:], h0)
    return float(loss), final


# ---------------------------------------------------------------- optimisers


def clip_grads(grads: Mapping[str, np.ndarray], clip: float, mode: str = "elementwise") -> dict:
    """elementwise: clip to [-clip, clip]; global_norm: scale all by min(1, clip / ||g||_2)."""
    if mode == "elementwise":
        return {k: np.clip(g, -clip, clip) for k, g in grads.items()}
    if mode == "global_norm":
        norm = np.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads.values()))
        scale = clip / norm if norm > clip else 1.0
        return {k: g * scale for k, g in grads.items()}
    if mode == "none":
        return dict(grads)
    raise ValueError(f"unknown clip_mode {mode!r}")


def optimizer_update(
    params,
    opt_state,
    grads,
    t: int,
    optimizer="adagrad",
    eta=0.1,
    clip=5.0,
    clip_mode="elementwise",
    gamma=0.9,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
) -> int:
    """One update in place (opt_state keyed "M:<name>" or "m:"/"v:", as
    init_opt_state makes it); returns the new step count t + 1."""
    lr = eta
    t += 1
    g_all = clip_grads(grads, clip, clip_mode)
    for k in params:
        g = g_all[k]
        if optimizer == "adagrad":
            opt_state[f"M:{k}"] += g * g
            params[k] -= lr * g / np.sqrt(opt_state[f"M:{k}"] + eps)
        elif optimizer == "rmsprop":
            M = opt_state[f"M:{k}"]
            M[...] = gamma * M + (1 - gamma) * (g * g)
            params[k] -= lr * g / np.sqrt(M + eps)
        elif optimizer == "adam":
            mo, v = opt_state[f"m:{k}"], opt_state[f"v:{k}"]
            mo[...] = beta1 * mo + (1 - beta1) * g
            v[...] = beta2 * v + (1 - beta2) * (g * g)
            m_hat = mo / (1 - beta1**t)
            v_hat = v / (1 - beta2**t)
            params[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
    return t


def train_steps(
    cell,
    params,
    opt_state,
    data,
    h0=None,
    *,
    n_steps,
    seq_length=25,
    batch_size=1,
    positions=None,
    t=0,
    dropout=0.0,
    seed=0,
    **opt,
):
    """The training walk of charrnn_ext.train_steps with B = batch_size
    streams over contiguous segments of data (network names, float64):
    (losses, h (B, layers, S*m), positions, wraps, t)."""
    _K, m, L = net_dims(params)
    zero = np.zeros((L, STATES[cell] * m))
    B = batch_size
    seg = len(data) // B
    h = np.zeros((B, *zero.shape)) if h0 is None else np.array(h0, dtype=np.float64).reshape(B, *zero.shape)
    pos = np.zeros(B, dtype=np.int64) if positions is None else np.array(positions, dtype=np.int64)
    wraps = np.zeros(B, dtype=np.int64)
    losses = np.zeros(n_steps)
    for i in range(n_steps):
        X = np.zeros((B, seq_length), dtype=np.int64)
        Y = np.zeros((B, seq_length), dtype=np.int64)
        for s in range(B):
            if pos[s] + seq_length + 1 > seg:
                pos[s], h[s], wraps[s] = 0, zero, wraps[s] + 1
            chunk = data[s * seg + pos[s] : s * seg + pos[s] + seq_length + 1]
            X[s], Y[s] = chunk[:-1], chunk[1:]
        losses[i], grads, h = loss_and_grads(cell, params, X, Y, h, dropout=dropout, seed=seed, update=t)
        t = optimizer_update(params, opt_state, grads, t, **opt)
        pos += seq_length
    return losses, h, pos, wraps, t


# ---------------------------------------------------------------- sampling


def filter_probs(p, top_k: int = 0, top_p: float = 1.0):
    """The filtered, renormalised distribution: keep the top_k most probable
    characters (0 = all), then the smallest most-probable set whose
    probabilities sum to >= top_p of what is left. Ties rank the lower index first."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    keep = len(p) if top_k <= 0 or top_k >= len(p) else top_k
    if top_p < 1.0:
        cum = np.cumsum(p[order[:keep]])
        keep = int(np.argmax(cum >= top_p * cum[-1])) + 1
    out = np.zeros_like(p)
    out[order[:keep]] = p[order[:keep]]
    return out / out.sum()


def next_char_distribution(cell, params, state, x: int, temperature: float = 1.0):
    """(p, new_state): the distribution of the character after x from state."""
    _K, m, L = net_dims(params)
    state = np.array(state, dtype=np.float64)
    xin = int(x)
    for l in range(L):
        p = _layer(params, l, cell, np.float64)
        c_prev = state[l, m:] if STATES[cell] == 2 else None
        h, c, _ = cell_forward(cell, p, xin, state[l, :m], c_prev)
        state[l, :m] = h
        if c is not None:
            state[l, m:] = c
        xin = h
    o = (np.asarray(params["V"], np.float64) @ state[L - 1, :m] + params["c"]) / temperature
    q = np.exp(o - o.max())
    return q / q.sum(), state
