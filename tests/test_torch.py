"""A third opinion: PyTorch autograd (reported as SKIPPED where torch is not
installed). The classic RNN written out step by step, and the networks
mapped onto torch.nn.RNN / LSTM / GRU: the gate blocks are stacked in
PyTorch's orders (lstm i, f, g, o; gru r, z, n), l{l}.Wx / l{l}.Wh are
weight_ih_l{l} / weight_hh_l{l}, l{l}.b is bias_ih_l{l} and, for gru, l{l}.bh
is bias_hh_l{l} (rnn and lstm have no second bias: bias_hh = 0)."""

from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext import reference_nets as ref
from charrnn_ext.layout import PARAM_NAMES
from helpers import max_rel_err, net_problem, problem

torch = pytest.importorskip("torch")

# float64 on both sides: the same expressions in a different order (and
# PyTorch's fused kernels); measured ~1e-14 for losses and states, ~1e-12 for
# gradients (which sum T * B terms with cancellation).
TOL_LOSS = 1e-10
TOL_GRAD = 1e-9


def torch_classic(params, X, Y, h0):
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(h0, dtype=torch.float64)
    loss = torch.zeros((), dtype=torch.float64)
    for x, y in zip(X, Y):
        h = torch.tanh(t["W"] @ h + t["U"][:, int(x)] + t["b"])
        o = t["V"] @ h + t["c"]
        loss = loss - torch.log_softmax(o, dim=0)[int(y)]
    loss.backward()
    return loss.item(), {k: t[k].grad.numpy() for k in PARAM_NAMES}, h.detach().numpy()


@pytest.mark.parametrize("K,m,T,sig", [(80, 100, 25, 0.01), (10, 7, 30, 0.1), (2, 1, 1, 0.5)])
def test_classic_gradients_agree_with_torch_autograd(K, m, T, sig):
    params, X, Y, h0 = problem(K, m, T, seed=K * m, sig=sig)
    loss, grads, h = cx.loss_and_grads(params, X, Y, h0)
    loss_t, grads_t, h_t = torch_classic(params, X, Y, h0)
    assert max_rel_err(loss, loss_t) <= TOL_LOSS
    assert max_rel_err(h, h_t) <= TOL_LOSS
    for name in PARAM_NAMES:
        assert max_rel_err(grads[name], grads_t[name]) <= TOL_LOSS, name


def torch_network(cell, params, X, Y, h0, *, dropout=0.0, seed=0, update=0):
    """Loss, gradients (network names) and final states (B, L, S*m) of a stack
    built from one torch.nn.RNN/LSTM/GRU layer per layer, fed B streams at once.
    Dropout (inverted) multiplies the input of layer l > 0 (site l) and of the
    output layer (site L) by the masks that reference_nets.dropout_keep gives."""
    B, T = X.shape
    L = sum(1 for k in params if k.endswith(".Wx"))
    m = params["l0.Wh"].shape[1]
    K = params["V"].shape[0]
    Mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    layers = []
    for l in range(L):
        mod = Mod(K if l == 0 else m, m).double()
        with torch.no_grad():
            mod.weight_ih_l0.copy_(torch.tensor(params[f"l{l}.Wx"]))
            mod.weight_hh_l0.copy_(torch.tensor(params[f"l{l}.Wh"]))
            mod.bias_ih_l0.copy_(torch.tensor(params[f"l{l}.b"]))
            bh = params[f"l{l}.bh"] if cell == "gru" else np.zeros(mod.bias_hh_l0.shape)
            mod.bias_hh_l0.copy_(torch.tensor(bh))
        layers.append(mod)
    V = torch.tensor(params["V"], requires_grad=True)
    c = torch.tensor(params["c"], requires_grad=True)

    def drop(seq, site):  # seq (T, B, m)
        if dropout <= 0:
            return seq
        keep = np.array([[ref.dropout_keep(seed, update, s, t, site, m, dropout) for s in range(B)] for t in range(T)])
        return seq * torch.tensor(keep / (1.0 - dropout))

    seq = torch.nn.functional.one_hot(torch.tensor(X.T), K).double()  # (T, B, K)
    finals = []
    for l, mod in enumerate(layers):
        if l > 0:
            seq = drop(seq, l)
        h_init = torch.tensor(np.ascontiguousarray(h0[:, l, :m])).unsqueeze(0)  # (1, B, m)
        state = (h_init, torch.tensor(np.ascontiguousarray(h0[:, l, m:])).unsqueeze(0)) if cell == "lstm" else h_init
        seq, fin = mod(seq, state)
        finals.append(torch.cat([fin[0][0], fin[1][0]], dim=1) if cell == "lstm" else fin[0])
    logits = drop(seq, L) @ V.T + c  # (T, B, K)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(T * B, K), torch.tensor(Y.T).reshape(T * B), reduction="sum"
    )
    loss.backward()
    grads = {"V": V.grad.numpy(), "c": c.grad.numpy()}
    for l, mod in enumerate(layers):
        grads[f"l{l}.Wx"] = mod.weight_ih_l0.grad.numpy()
        grads[f"l{l}.Wh"] = mod.weight_hh_l0.grad.numpy()
        grads[f"l{l}.b"] = mod.bias_ih_l0.grad.numpy()
        if cell == "gru":
            grads[f"l{l}.bh"] = mod.bias_hh_l0.grad.numpy()
        else:  # the one bias sits where torch has two: both receive the same gradient
            assert max_rel_err(mod.bias_hh_l0.grad.numpy(), grads[f"l{l}.b"]) <= 1e-12
    return loss.item(), grads, torch.stack(finals, dim=1).detach().numpy()


@pytest.mark.parametrize("streams", [None, 3], ids=["single", "B3"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_networks_agree_with_torch_nn(cell, layers, streams):
    K, m, T = 7, 5, 15
    params, X, Y, h0 = net_problem(cell, K=K, m=m, layers=layers, T=T, seed=7 + layers, streams=streams)
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    loss, grads, h = cx.loss_and_grads(params, X, Y, h0)
    if streams is None:  # torch_network takes B streams; one stream is B = 1
        Xb, Yb, h0b, hb = X[None], Y[None], h0[None], h[None]
    else:
        Xb, Yb, h0b, hb = X, Y, h0, h
    loss_t, grads_t, h_t = torch_network(cell, params, Xb, Yb, h0b)
    assert max_rel_err(loss, loss_t) <= TOL_LOSS
    assert h_t.shape == hb.shape and max_rel_err(hb, h_t) <= TOL_LOSS
    assert set(grads_t) == set(params)
    for k in params:
        assert max_rel_err(grads[k], grads_t[k]) <= TOL_GRAD, k


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_layer_networks_with_dropout_agree_with_torch(cell):
    # The masks of reference_nets.dropout_keep applied between torch layers:
    # the C++ engine's dropout is exactly that (a third implementation of the
    # same masked network).
    params, X, Y, h0 = net_problem(cell, K=6, m=5, layers=2, T=12, seed=21, streams=3)
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    drop = dict(dropout=0.4, seed=13, update=5)
    loss, grads, h = cx.loss_and_grads(params, X, Y, h0, **drop)
    loss_t, grads_t, h_t = torch_network(cell, params, X, Y, h0, **drop)
    assert max_rel_err(loss, loss_t) <= TOL_LOSS and max_rel_err(h, h_t) <= TOL_LOSS
    for k in params:
        assert max_rel_err(grads[k], grads_t[k]) <= TOL_GRAD, k
    plain, _, _ = torch_network(cell, params, X, Y, h0)
    assert abs(plain - loss_t) > 1e-3  # the masks matter


def test_gate_order_matters():
    # Swapping two LSTM gate blocks (i <-> f) or two GRU blocks (r <-> z)
    # changes the loss, so the agreement above pins PyTorch's gate orders.
    m = 4
    for cell in ("lstm", "gru"):
        params, X, Y, h0 = net_problem(cell, K=6, m=m, layers=1, T=10, seed=3)
        X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
        loss_t, _, _ = torch_network(cell, params, X[None], Y[None], h0[None])
        loss, _, _ = cx.loss_and_grads(params, X, Y, h0)
        assert max_rel_err(loss, loss_t) <= TOL_LOSS
        swapped = {k: v.copy() for k, v in params.items()}
        for k in ("l0.Wx", "l0.Wh", "l0.b") + (("l0.bh",) if cell == "gru" else ()):
            swapped[k][:m], swapped[k][m : 2 * m] = params[k][m : 2 * m], params[k][:m]
        loss_s, _, _ = cx.loss_and_grads(swapped, X, Y, h0)
        assert abs(loss_s - loss_t) > 1e-6 * loss_t, cell
