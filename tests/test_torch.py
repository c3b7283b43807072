"""A third opinion: PyTorch autograd (only where torch is installed)."""
from __future__ import annotations

import pytest

import charrnn_ext as cx
from charrnn_ext.params import PARAM_NAMES
from helpers import max_rel_err, problem

torch = pytest.importorskip("torch")


def torch_loss_and_grads(params, X, Y, h0):
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(h0, dtype=torch.float64)
    loss = torch.zeros((), dtype=torch.float64)
    for x, y in zip(X, Y):
        h = torch.tanh(t["W"] @ h + t["U"][:, int(x)] + t["b"])
        o = t["V"] @ h + t["c"]
        loss = loss - torch.log_softmax(o, dim=0)[int(y)]
    loss.backward()
    return float(loss), {k: t[k].grad.numpy() for k in PARAM_NAMES}, h.detach().numpy()


@pytest.mark.parametrize("K,m,T,sig", [(80, 100, 25, 0.01), (10, 7, 30, 0.1), (2, 1, 1, 0.5)])
def test_gradients_agree_with_torch_autograd(K, m, T, sig):
    params, X, Y, h0 = problem(K, m, T, seed=K * m, sig=sig)
    loss, grads, h = cx.loss_and_grads(params, X, Y, h0)
    loss_t, grads_t, h_t = torch_loss_and_grads(params, X, Y, h0)
    assert max_rel_err(loss, loss_t) <= 1e-10
    assert max_rel_err(h, h_t) <= 1e-10
    for name in PARAM_NAMES:
        assert max_rel_err(grads[name], grads_t[name]) <= 1e-10, name
