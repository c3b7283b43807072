"""rnn / lstm / gru stacks: C++ (net_loss_and_grads) against the NumPy
reference (reference_nets) and against centred differences of the
long-double loss; float32 against float64; torch autograd as an optional
third opinion; the state carried between chunks; bad inputs."""
import numpy as np
import pytest

from charrnn_ext import _core
from charrnn_ext import reference_nets as ref
from charrnn_ext.gradcheck import check_net_gradients
from charrnn_ext.nets import STATES, net_init, net_param_shapes, net_zero_state

from nets_common import CELLS, max_rel_err, net_problem, spectral_radius

LAYERS = (1, 2, 3)


@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.parametrize("cell", CELLS)
def test_cpp_matches_reference(cell, layers):
    params, X, Y, h0 = net_problem(cell, K=9, m=5, layers=layers, T=25, seed=layers)
    assert spectral_radius(params, cell, 5) < 1.0
    loss, grads, h = _core.net_loss_and_grads(cell, params, X, Y, h0)
    loss_r, grads_r, h_r = ref.loss_and_grads(cell, params, X, Y, h0)
    assert max_rel_err(loss, loss_r) <= 1e-10
    assert set(grads) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k].dtype == np.float64
        assert max_rel_err(grads[k], grads_r[k]) <= 1e-10, k
    assert h.shape == (layers, STATES[cell] * 5)
    assert max_rel_err(h, h_r) <= 1e-10


@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_centred_differences(cell, layers):
    params, X, Y, h0 = net_problem(cell, K=6, m=5, layers=layers, T=10, seed=10 + layers)
    # h = 1e-5: the long-double loss keeps rounding noise ~1e-13, so the
    # O(h^2) truncation (~1e-7 relative at h = 1e-4) is the error that matters.
    report = check_net_gradients(cell, params, X, Y, h0, h=1e-5)
    worst = report.worst()
    assert worst["cpp_vs_numerical"] <= 1e-6, report.table()
    assert worst["numpy_vs_numerical"] <= 1e-6, report.table()
    assert worst["cpp_vs_numpy"] <= 1e-10, report.table()


@pytest.mark.parametrize("cell", CELLS)
def test_float32_tracks_float64(cell):
    # float32 carries ~6e-8 relative rounding per operation; over T = 25
    # contracting steps and sums of ~T*K terms the losses and gradients agree
    # to ~1e-5 relative to their scale. Gradient entries that nearly cancel
    # are compared relative to the array's largest entry.
    params, X, Y, h0 = net_problem(cell, K=9, m=8, layers=2, T=25, seed=3)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    l64, g64, h64 = _core.net_loss_and_grads(cell, params, X, Y, h0)
    l32, g32, h32 = _core.net_loss_and_grads(cell, p32, X, Y, h0.astype(np.float32))
    assert h32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    assert abs(l32 - l64) / abs(l64) < 1e-5
    for k in params:
        assert np.max(np.abs(g32[k] - g64[k])) <= 1e-4 * max(np.max(np.abs(g64[k])), 1e-3), k
    assert np.max(np.abs(h32 - h64)) < 1e-5


@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_across_chunks(cell):
    # Two chunks with the state handed over == the loss of the whole text.
    params, _, _, h0 = net_problem(cell, K=7, m=6, layers=2, T=5, seed=4)
    data = np.random.default_rng(5).integers(0, 7, 301)
    l1, _, h1 = _core.net_loss_and_grads(cell, params, data[:150], data[1:151], h0)
    l2, _, h2 = _core.net_loss_and_grads(cell, params, data[150:300], data[151:301], h1)
    le, he = _core.net_evaluate_loss(cell, params, data, h0)
    assert max_rel_err(l1 + l2, le) <= 1e-12
    assert max_rel_err(h2, he) <= 1e-12
    lr_, hr = ref.evaluate_loss(cell, params, data, h0)
    assert max_rel_err(le, lr_) <= 1e-10 and max_rel_err(he, hr) <= 1e-10


def test_one_layer_rnn_equals_vanilla_core():
    # The general stack with cell 'rnn' and one layer is the vanilla RNN.
    params, X, Y, h0 = net_problem("rnn", K=8, m=6, layers=1, T=20, seed=6)
    vanilla = {"U": params["l0.Wx"], "W": params["l0.Wh"], "b": params["l0.b"], "V": params["V"], "c": params["c"]}
    l, g, h = _core.net_loss_and_grads("rnn", params, X, Y, h0)
    lv, gv, hv = _core.loss_and_grads(vanilla, X, Y, h0[0])
    assert max_rel_err(l, lv) <= 1e-12 and max_rel_err(h[0], hv) <= 1e-12
    for k, kv in (("l0.Wx", "U"), ("l0.Wh", "W"), ("l0.b", "b"), ("V", "V"), ("c", "c")):
        assert max_rel_err(g[k], gv[kv]) <= 1e-10


def test_init_shapes_and_forget_bias():
    p = net_init("lstm", K=11, m=4, layers=2, forget_bias=1.0, dtype=np.float32)
    assert {k: v.shape for k, v in p.items()} == net_param_shapes("lstm", 11, 4, 2)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in p.values())
    for l in range(2):
        b = p[f"l{l}.b"]
        assert np.all(b[4:8] == 1.0) and np.all(b[:4] == 0) and np.all(b[8:] == 0)
    g = net_init("gru", K=5, m=3, layers=1)
    assert set(g) == {"l0.Wx", "l0.Wh", "l0.b", "l0.bh", "V", "c"}
    assert net_zero_state("lstm", p).shape == (2, 8)
    with pytest.raises(ValueError, match="unknown cell"):
        net_init("transformer", 5, 3)


# ---------------------------------------------------------------- torch (optional)

@pytest.mark.parametrize("layers", (1, 2))
@pytest.mark.parametrize("cell", ("lstm", "gru"))
def test_torch_autograd_agrees(cell, layers):
    torch = pytest.importorskip("torch")
    K, m, T = 7, 5, 15
    params, X, Y, h0 = net_problem(cell, K=K, m=m, layers=layers, T=T, seed=7)
    loss, grads, h_last = _core.net_loss_and_grads(cell, params, X, Y, h0)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    Mod = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    net = Mod(K, m, num_layers=layers).double()
    with torch.no_grad():
        for l in range(layers):
            getattr(net, f"weight_ih_l{l}").copy_(tp[f"l{l}.Wx"])
            getattr(net, f"weight_hh_l{l}").copy_(tp[f"l{l}.Wh"])
            getattr(net, f"bias_ih_l{l}").copy_(tp[f"l{l}.b"])
            getattr(net, f"bias_hh_l{l}").copy_(tp[f"l{l}.bh"] if cell == "gru" else torch.zeros(4 * m, dtype=torch.float64))
    x = torch.nn.functional.one_hot(torch.tensor(X), K).double().unsqueeze(1)
    hh = torch.tensor(h0[:, :m]).unsqueeze(1).contiguous()
    state = (hh, torch.tensor(h0[:, m:]).unsqueeze(1).contiguous()) if cell == "lstm" else hh
    out, fin = net(x, state)
    logits = out[:, 0, :] @ tp["V"].T + tp["c"]
    tl = torch.nn.functional.cross_entropy(logits, torch.tensor(Y), reduction="sum")
    tl.backward()
    assert abs(tl.item() - loss) / loss < 1e-12
    for l in range(layers):
        assert max_rel_err(grads[f"l{l}.Wx"], getattr(net, f"weight_ih_l{l}").grad.numpy()) < 1e-9
        assert max_rel_err(grads[f"l{l}.Wh"], getattr(net, f"weight_hh_l{l}").grad.numpy()) < 1e-9
        assert max_rel_err(grads[f"l{l}.b"], getattr(net, f"bias_ih_l{l}").grad.numpy()) < 1e-9
        if cell == "gru":
            assert max_rel_err(grads[f"l{l}.bh"], getattr(net, f"bias_hh_l{l}").grad.numpy()) < 1e-9
    assert max_rel_err(grads["V"], tp["V"].grad.numpy()) < 1e-9
    h_t = fin[0] if cell == "lstm" else fin
    assert max_rel_err(h_last[:, :m], h_t[:, 0].detach().numpy()) < 1e-12
    if cell == "lstm":
        assert max_rel_err(h_last[:, m:], fin[1][:, 0].detach().numpy()) < 1e-12


# ---------------------------------------------------------------- bad inputs

def _small(cell="lstm", layers=2):
    params, X, Y, h0 = net_problem(cell, K=6, m=4, layers=layers, T=5, seed=8)
    return params, X, Y, h0


def test_bad_cell_name():
    params, X, Y, _ = _small()
    with pytest.raises(ValueError, match="unknown cell 'lstn'; expected one of 'rnn', 'lstm', 'gru'"):
        _core.net_loss_and_grads("lstn", params, X, Y)
    with pytest.raises(TypeError, match="cell must be a string"):
        _core.net_loss_and_grads(3, params, X, Y)


def test_missing_layer_key_and_extras():
    params, X, Y, _ = _small()
    p = dict(params)
    del p["l1.Wh"]
    with pytest.raises(ValueError, match=r"params has no 'l1.Wh' entry"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    with pytest.raises(ValueError, match=r"params\['l0.Wx'\] has shape \(16, 6\); expected \(12, 6\) for a 'gru'"):
        _core.net_loss_and_grads("gru", params, X, Y)  # lstm params given as gru
    g, *_ = _small("gru")
    del g["l0.bh"]
    with pytest.raises(ValueError, match=r"params has no 'l0.bh' entry"):
        _core.net_loss_and_grads("gru", g, X, Y)
    g, *_ = _small("rnn")
    g["l0.bh"] = np.zeros(4)
    with pytest.raises(ValueError, match="unexpected entry 'l0.bh'"):
        _core.net_loss_and_grads("rnn", g, X, Y)
    p = dict(params)
    p["l3.Wx"] = params["l1.Wx"]  # a gap: l2 missing
    with pytest.raises(ValueError, match="unexpected entry 'l3.Wx'"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    p = dict(params)
    del p["V"]
    with pytest.raises(ValueError, match="params has no 'V' entry"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    with pytest.raises(ValueError, match="no 'l0.Wx' entry"):
        _core.net_loss_and_grads("lstm", {"V": params["V"], "c": params["c"]}, X, Y)
    with pytest.raises(TypeError, match="must be a dict"):
        _core.net_loss_and_grads("lstm", [1, 2], X, Y)


def test_shape_dtype_contiguity_finiteness():
    params, X, Y, _ = _small()
    p = dict(params)
    p["l1.Wh"] = np.zeros((16, 5))
    with pytest.raises(ValueError, match=r"params\['l1.Wh'\] has shape \(16, 5\); expected \(16, 4\)"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    p = dict(params)
    p["l0.Wx"] = np.zeros((12, 6))  # rnn-sized for an lstm
    with pytest.raises(ValueError, match=r"expected \(16, 6\) for a 'lstm' network"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    p = dict(params)
    p["l0.b"] = params["l0.b"].astype(np.float32)
    with pytest.raises(TypeError, match=r"params\['l0.b'\] has dtype float32; expected float64"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    p = dict(params)
    p["V"] = params["V"].astype(np.int64)
    with pytest.raises(TypeError, match="float64 or float32"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    p = dict(params)
    p["l0.Wh"] = np.asfortranarray(params["l0.Wh"])
    with pytest.raises(ValueError, match="not C-contiguous"):
        _core.net_loss_and_grads("lstm", p, X, Y)
    p = dict(params)
    p["c"] = params["c"].copy()
    p["c"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _core.net_loss_and_grads("lstm", p, X, Y)


def test_bad_state_and_indices():
    params, X, Y, h0 = _small()
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 4\); expected \(layers, 2\*m\) = \(2, 8\)"):
        _core.net_loss_and_grads("lstm", params, X, Y, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="h0 has dtype float32"):
        _core.net_loss_and_grads("lstm", params, X, Y, h0.astype(np.float32))
    with pytest.raises(IndexError, match="outside the vocabulary"):
        _core.net_loss_and_grads("lstm", params, X, np.full(5, 6))
    with pytest.raises(ValueError, match="same length"):
        _core.net_loss_and_grads("lstm", params, X, Y[:3])
    with pytest.raises(ValueError, match="at least 2"):
        _core.net_evaluate_loss("lstm", params, np.array([1]))
