"""Property-based fuzzing of every entry point of the C++ engine, through the
front doors (charrnn_ext.<fn>) and the core (charrnn_ext._core.<fn>).

Each generated call gets a verdict from predicates written here, independently
of the C++ checks (cpp/bindings):
  True  - valid: the call must return, and its result must be right;
  False - invalid: the call must raise TypeError, ValueError or IndexError,
          whose message names the argument that was spoiled, and change nothing;
  None  - either outcome is allowed (only: out-of-range characters a walk
          may or may not read).
A call spoils at most one thing (an argument, an array, a key, a value), so a
refusal can be traced to it. Results of valid calls are compared with the
NumPy references (charrnn_ext.reference for the classic names,
charrnn_ext.reference_nets otherwise) on small shapes; the *_large tests
reach the blocked SIMD paths (K, m up to 130, texts over 256 characters,
chunks over 128 steps, several streams and threads) and compare thread
counts (bit-identical by design), float32 with float64 and, where it is
affordable, the references.

Values that trip known, documented package bugs (see test_bug_* in
test_bindings_validation.py) are not generated here: ints beyond the float
range for float arguments, NumPy arrays with several elements as scalars,
unhashable optimizer names, NumPy bools for greedy, counts of 2**40..2**62
that size an output array, update counters near 2**63.

The number of examples follows the hypothesis profile (helpers.fuzz: the
"ci" profile runs the full volume, the default a fifth of it) times
FUZZ_SCALE (default 1); the examples are derandomized, so a run is repeatable.
"""

from __future__ import annotations

import operator
import types
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import charrnn_ext as cx  # noqa: E402
from charrnn_ext import _core, reference  # noqa: E402
from charrnn_ext import reference_nets as ref  # noqa: E402
from charrnn_ext.config import UPDATE_OPTIONS  # noqa: E402
from helpers import fuzz  # noqa: E402

EXPECTED = (TypeError, ValueError, IndexError)
OUTCOMES: dict[str, list[int]] = {}  # function -> [returned, refused]
COMPARED: dict[str, int] = {}  # test -> valid calls whose results were compared with a reference


def compared(name):
    COMPARED[name] = COMPARED.get(name, 0) + 1


CELLS = ("rnn", "lstm", "gru")
OPTIMIZERS = ("adagrad", "rmsprop", "adam")
CLIP_MODES = ("elementwise", "global_norm", "none")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CLASSIC = {"U": "l0.Wx", "W": "l0.Wh", "V": "V", "b": "l0.b", "c": "c"}  # classic name -> network name
F64, F32 = np.dtype(np.float64), np.dtype(np.float32)
NAN, INF = float("nan"), float("inf")
INT64_MAX = 2**63 - 1
ODD_DTYPES = [np.float16, np.int32, np.int64, np.complex64, np.bool_, ">f8", ">f4", object]
INDEX_DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]
DEFAULT_ETA = {"adagrad": 0.1, "rmsprop": 2e-3, "adam": 2e-3}


# ================================================================ verdicts and outcomes


def settle(*parts):
    """One verdict from the verdicts of the parts."""
    parts = [None if p is None else bool(p) for p in parts]
    if any(p is False for p in parts):
        return False
    return None if any(p is None for p in parts) else True


def run_call(name, verdict, fragments, fn):
    """fn(), tallied under name; checks the outcome against the verdict, and a
    refusal's message against the fragments (one of them must occur; the name
    of the spoiled argument). Returns fn's result, or None if it was refused."""
    try:
        result = fn()
    except EXPECTED as e:
        OUTCOMES.setdefault(name, [0, 0])[1] += 1
        assert verdict is not True, f"{name} refused a valid call: {e!r}"
        if verdict is False and fragments:
            assert any(f in str(e) for f in fragments), (fragments, str(e))
        return None
    OUTCOMES.setdefault(name, [0, 0])[0] += 1
    assert verdict is not False, f"{name} accepted an invalid call"
    return result


class Chooser:
    """The choices of one example, all made from one seed that hypothesis
    draws: uniform over the options (hypothesis's own choices are far from
    uniform over thousands of cases, and each of its draws costs ~0.1 ms).
    The seed is hypothesis's "Draw 1" of a failing example; note() records
    what was spoiled. (It is drawn as bytes: hypothesis mixes the integer
    literals of the local modules imported so far into integer draws, which
    would make the examples depend on the test files that ran before.)"""

    def __init__(self, data):
        self.rng = np.random.default_rng(int.from_bytes(data.draw(st.binary(min_size=16, max_size=16)), "little"))

    def pick(self, options, what=None):
        options = list(options)
        choice = options[int(self.rng.integers(len(options)))]
        if what:
            note(f"{what}: {choice!r}")
        return choice

    def int(self, bounds):
        lo, hi = bounds
        return lo + int.from_bytes(self.rng.bytes(16), "little") % (hi - lo + 1)

    def bool(self):
        return bool(self.rng.integers(2))


def pick(draw, options, what="spoil"):
    return draw.pick(options, what)


def target_of(draw, kinds, clean):
    """'none' with weight `clean`, else one of kinds: the one thing to spoil."""
    return pick(draw, ["none"] * clean + list(kinds), "target")


# ---------------------------------------------------------------- scalars


def int_ok(v, lo=0, hi=INT64_MAX):
    """A count: an int (or __index__), not a bool, in [lo, hi]."""
    if isinstance(v, (bool, np.bool_)):
        return False
    try:
        i = operator.index(v)
    except TypeError:
        return False
    return lo <= i <= hi and i <= INT64_MAX


def real_value(v):
    """The float a number argument stands for, or None if it is refused."""
    if v is None or isinstance(v, (bool, str, bytes)):
        return None
    if not (hasattr(v, "__index__") or hasattr(v, "__float__")):
        return None
    return float(v)


def real_ok(v, rule):
    f = real_value(v)
    return f is not None and bool(rule(f))


def positive_finite(f):
    return np.isfinite(f) and f > 0


def unit_interval(f):
    return np.isfinite(f) and 0 <= f < 1


def seed_ok(v):
    return int_ok(v, 0, 2**64 - 1) or (
        not isinstance(v, bool) and isinstance(v, (int, np.integer)) and 0 <= int(v) < 2**64
    )


def choice_ok(v, names):
    return isinstance(v, str) and v in names


BAD_COUNTS = [-1, -5, 2**63, 2**64, 2**70, 1.5, 2.0, "3", None, True, False, [1]]
BAD_SEEDS = [-1, 2**64, 2**70, 1.5, "7", None, True, [0]]
BAD_POSITIVE = [0.0, -0.0, -1.0, NAN, INF, -INF, "0.1", None, True, 1 + 0j, [0.1]]
BAD_UNIT = [1.0, 1.5, -0.1, NAN, INF, "0.5", None, True]
BAD_THREADS = [0, -1, 257, 1000, 2**64, 1.0, "2", None, True]
GOOD_THREADS = [1, 1, 1, 2, 2, 3, 4, np.int32(2), np.uint8(1)]


# ---------------------------------------------------------------- networks


def shapes_of(cell, K, m, L):
    """Name -> shape of a network's parameters (written out here, not taken from the core)."""
    G = GATES[cell]
    out = {}
    for l in range(L):
        out[f"l{l}.Wx"] = (G * m, K if l == 0 else m)
        out[f"l{l}.Wh"] = (G * m, m)
        out[f"l{l}.b"] = (G * m,)
        if cell == "gru":
            out[f"l{l}.bh"] = (G * m,)
    out["V"] = (K, m)
    out["c"] = (K,)
    return out


class Net:
    """A valid network: cell, sizes, dtype, naming and its parameters."""

    def __init__(self, cell, K, m, L, dtype, classic, params):
        self.cell, self.K, self.m, self.L, self.dtype, self.classic, self.params = cell, K, m, L, dtype, classic, params
        self.S = 2 if cell == "lstm" else 1
        self.W = self.S * m

    def one_shape(self):
        return (self.m,) if self.classic else (self.L, self.W)

    def streams_shape(self, B):
        return (B, self.m) if self.classic else (B, self.L, self.W)

    def to_net(self, d):
        """float64 copies of a dict keyed like params, under the network names."""
        out = {k: np.array(v, dtype=np.float64) for k, v in d.items()}
        return {CLASSIC.get(k, k): v for k, v in out.items()} if self.classic else out

    def from_net(self, d):
        back = {v: k for k, v in CLASSIC.items()}
        return {back.get(k, k): v for k, v in d.items()} if self.classic else dict(d)


def random_params(rng, cell, K, m, L, dtype, scale, v_scale, classic):
    params = {}
    for k, s in shapes_of(cell, K, m, L).items():
        sc = scale / np.sqrt(m) if k.endswith(".Wh") else v_scale if k in ("V", "c") else scale
        params[k] = (sc * rng.standard_normal(s)).astype(dtype)
    if classic:
        params = {c: params[n] for c, n in CLASSIC.items()}
    return params


def draw_net(draw, K=(1, 7), m=(1, 5), L=(1, 3), scales=(0.05, 0.3, 1.0), v_scales=(0.3, 1.0, 3.0), dtype=None):
    cell = draw.pick(CELLS)
    layers = draw.int(L)
    K_, m_ = draw.int(K), draw.int(m)
    dt = dtype or draw.pick([F64, F32])
    classic = cell == "rnn" and layers == 1 and draw.bool()
    rng = np.random.default_rng(draw.int((0, 2**32 - 1)))
    params = random_params(rng, cell, K_, m_, layers, dt, draw.pick(scales), draw.pick(v_scales), classic)
    return Net(cell, K_, m_, layers, dt, classic, params), rng


def arr_ok(a, shape, dtype, writable=False, finite=True):
    return (
        isinstance(a, np.ndarray)
        and a.dtype == dtype
        and a.dtype.isnative
        and a.shape == tuple(shape)
        and a.flags.c_contiguous
        and (not writable or a.flags.writeable)
        and (not finite or bool(np.all(np.isfinite(a))))
    )


def overlapping(arrays):
    arrays = [a for a in arrays if isinstance(a, np.ndarray)]
    return any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])


def params_layout(p):
    """(cell, K, m, L, dtype, classic) that a parameter mapping describes, or None."""
    if not isinstance(p, Mapping):
        return None
    classic = "U" in p
    if classic and "l0.Wx" in p:
        return None
    head = p.get("U" if classic else "V")
    if not isinstance(head, np.ndarray) or head.ndim != 2 or head.dtype not in (F64, F32) or not head.dtype.isnative:
        return None
    if classic:
        (m, K), cell, L = head.shape, "rnn", 1
    else:
        (K, m), L = head.shape, 0
        while f"l{L}.Wx" in p:
            L += 1
        Wh = p.get("l0.Wh")
        rows = Wh.shape[0] if isinstance(Wh, np.ndarray) and Wh.ndim == 2 else -1
        cell = {m: "rnn", 4 * m: "lstm", 3 * m: "gru"}.get(rows)
        if L == 0 or cell is None:
            return None
    if K == 0 or m == 0:
        return None
    return cell, K, m, L, head.dtype, classic


def keyed_shapes(cell, K, m, L, classic):
    shapes = shapes_of(cell, K, m, L)
    return {c: shapes[n] for c, n in CLASSIC.items()} if classic else shapes


def params_ok(p, writable=False):
    lay = params_layout(p)
    if lay is None:
        return False
    cell, K, m, L, dt, classic = lay
    want = keyed_shapes(cell, K, m, L, classic)
    if set(p.keys()) != set(want) or not all(arr_ok(p[k], s, dt, writable) for k, s in want.items()):
        return False
    return not (writable and overlapping(list(p.values())))


def as_index_array(obj, allow_2d):
    """What the binding makes of an index argument, or None if it must refuse it."""
    if isinstance(obj, (str, bytes)):
        return None
    if isinstance(obj, np.ndarray):
        a = obj
    else:
        try:
            a = np.asarray(obj)
            if a.size == 0:
                a = np.asarray(obj, dtype=np.int64)
        except (ValueError, TypeError):
            return None
    if a.dtype.kind not in "iu" or not a.dtype.isnative:
        return None
    if a.ndim != 1 and not (allow_2d and a.ndim == 2):
        return None
    return a if a.flags.c_contiguous else None


def out_of_range(a, K):
    """Flat positions of a's entries outside [0, K)."""
    flat = np.asarray(a).reshape(-1)
    return set(np.flatnonzero((flat < 0) | (flat >= K)).tolist())


def h0_ok(h0, lay_dtype, L, W, B):
    """The initial state the binding accepts for B streams of a network with L layers of width W."""
    if h0 is None:
        return True
    if not isinstance(h0, np.ndarray) or h0.dtype != lay_dtype or not h0.dtype.isnative:
        return False
    shapes = {(B, L, W)} | ({(L, W)} if B == 1 else set()) | ({(B, W)} if L == 1 else set())
    shapes |= {(W,)} if B == 1 and L == 1 else set()
    return h0.shape in shapes and h0.flags.c_contiguous and bool(np.all(np.isfinite(h0)))


# ---------------------------------------------------------------- spoiling


def spoil_array(draw, a):
    """a with one thing wrong (some spoils leave a valid array: a Fortran or
    strided view of a vector or a single row is still C-contiguous)."""
    kind = pick(
        draw,
        [
            "dtype",
            "other_float",
            "shape",
            "ndim",
            "fortran",
            "strided",
            "nonfinite",
            "list",
            "none",
            "readonly",
            "zero_d",
        ],
    )
    if kind == "dtype":
        return a.astype(draw.pick(ODD_DTYPES))
    if kind == "other_float":
        return a.astype(F32 if a.dtype == F64 else F64)
    if kind == "shape":
        i = draw.int((0, a.ndim - 1))
        shape = list(a.shape)
        shape[i] = max(0, shape[i] + draw.pick([-1, 1, 2]))
        return np.zeros(shape, dtype=a.dtype)
    if kind == "ndim":
        return a.reshape(a.shape + (1,)) if draw.bool() or a.ndim == 1 else a.reshape(-1)
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if kind == "nonfinite" and a.size:
        a = a.copy()
        a.flat[draw.int((0, a.size - 1))] = draw.pick([NAN, INF, -INF])
        return a
    if kind == "list":
        return a.tolist()
    if kind == "none":
        return None
    if kind == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if kind == "zero_d":
        return np.asarray(a.flat[0] if a.size else 0.0, dtype=a.dtype)
    return a


def spoil_params(draw, net):
    """params with one thing wrong ('mapping', 'extra_layer' with the right
    width, and some array spoils stay valid; the predicates decide)."""
    p = dict(net.params)
    kind = pick(
        draw,
        [
            "array",
            "array",
            "array",
            "array",
            "missing",
            "stray",
            "rename",
            "extra_layer",
            "bh",
            "mapping",
            "not_mapping",
            "K0",
            "m0",
            "alias",
            "mixed",
        ],
    )
    keys = sorted(p)
    if kind == "array":
        k = draw.pick(keys)
        p[k] = spoil_array(draw, p[k])
    elif kind == "missing":
        del p[draw.pick(keys)]
    elif kind == "stray":
        p[draw.pick(["extra", "l0.Wy", f"l{net.L + 1}.Wx", "M:V", "V ", "t", 7, ("V",)])] = np.zeros(
            net.m, dtype=net.dtype
        )
    elif kind == "rename":
        k = draw.pick(keys)
        p[draw.pick([k.upper() if k.upper() != k else k + "_", k + " ", k.replace(".", "_") + "x"])] = p.pop(k)
    elif kind == "extra_layer" and not net.classic:  # a new layer L: valid if it reads m values
        G, L, m = GATES[net.cell], net.L, net.m
        p[f"l{L}.Wx"] = np.zeros((G * m, draw.pick([m, m, net.K])), dtype=net.dtype)
        p[f"l{L}.Wh"] = np.zeros((G * m, m), dtype=net.dtype)
        p[f"l{L}.b"] = np.zeros(G * m, dtype=net.dtype)
        if net.cell == "gru":
            p[f"l{L}.bh"] = np.zeros(G * m, dtype=net.dtype)
    elif kind == "bh" and not net.classic:
        if net.cell == "gru":
            del p[f"l{draw.int((0, net.L - 1))}.bh"]
        else:
            p["l0.bh"] = np.zeros(GATES[net.cell] * net.m, dtype=net.dtype)
    elif kind == "mapping":
        return draw.pick([types.MappingProxyType, OrderedDict])(p)
    elif kind == "not_mapping":
        return draw.pick([list(p.values()), tuple(p.items()), None, "params", p["V"]])
    elif kind == "alias":  # two entries are one array: fine to read, refused where written
        k = draw.pick(keys)
        p[k] = p[draw.pick([j for j in keys if p[j].shape == p[k].shape])]
    elif kind in ("K0", "m0"):
        K0, m0 = (0, net.m) if kind == "K0" else (net.K, 0)
        return {k: np.zeros(s, dtype=net.dtype) for k, s in keyed_shapes(net.cell, K0, m0, net.L, net.classic).items()}
    elif kind == "mixed":
        p["l0.Wx" if net.classic else "U"] = np.zeros((net.m, net.K), dtype=net.dtype)
    return p


def effective_net(p, net):
    """The network that params p describe if they are valid (a spoil may leave
    them valid: another mapping type, an extra layer, a contiguous view), else net."""
    if not params_ok(p):
        return net
    cell, K, m, L, dt, classic = params_layout(p)
    return Net(cell, K, m, L, dt, classic, dict(p))


def names(target):
    """Message fragments that name a spoiled argument."""
    if target in ("params", "opt_state", "X", "Y", "h0", "data", "prime", "positions"):
        return [target]
    if target == "shape":
        return ["X and Y"]
    return [f"{target} must", f"{target} is", f"{target} =", f"unknown {target}"]


def spoil_cell(draw, cell):
    return draw.pick(
        [
            cell.upper(),
            cell + " ",
            "",
            "transformer",
            1,
            cell.encode(),
            [cell],
            "rnn" if cell != "rnn" else "gru",
            np.str_(cell),
            None,
        ]
    )


def cell_ok(v, cell):
    return v is None or (isinstance(v, str) and v == cell)


def index_spoil(draw, rng, K, shape):
    """An index array with one thing wrong (or not: 'list', 'native' are valid)."""
    a = rng.integers(0, max(K, 1), shape).astype(draw.pick(INDEX_DTYPES))
    kind = pick(
        draw,
        [
            "big",
            "big",
            "negative",
            "negative",
            "float",
            "3d",
            "strided",
            "list",
            "str",
            "empty",
            "swapped",
            "native",
            "bool",
            "object",
        ],
    )
    if kind in ("big", "negative") and a.size:
        a = a.astype(np.uint64 if kind == "big" and draw.bool() else np.int64)
        bad = (
            [K, K + 1, 2**31, 2**62, 2**64 - 1]
            if a.dtype == np.uint64
            else [K, K + 3, 2**62]
            if kind == "big"
            else [-1, -(2**62)]
        )
        a.flat[draw.int((0, a.size - 1))] = draw.pick(bad)
    elif kind == "float":
        return a.astype(np.float64)
    elif kind == "3d":
        return a.reshape((1,) + a.shape) if a.ndim == 2 else a.reshape(1, 1, -1)
    elif kind == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    elif kind == "list":
        return a.tolist()
    elif kind == "str":
        return "abcdefghij"[: max(1, a.size)]
    elif kind == "empty":
        return np.zeros((0,) * a.ndim, dtype=np.int64) if draw.bool() else []
    elif kind == "swapped":
        return a.astype(a.dtype.newbyteorder()) if a.dtype.itemsize > 1 else a.astype(object)
    elif kind == "bool":
        return a.astype(bool)
    elif kind == "object":
        return a.astype(object)
    return a


def draw_h0(draw, rng, net, B, batched, spoil=False):
    """A valid initial state for B streams (None sometimes), or with spoil one
    with something wrong; the predicate h0_ok decides."""
    shape = net.streams_shape(B) if batched else net.one_shape()
    if not spoil and draw.int((0, 3)) == 0:
        return None
    h0 = (0.5 * np.tanh(rng.standard_normal(shape))).astype(net.dtype)
    if not spoil:
        return h0
    kind = pick(draw, ["array", "array", "array", "other", "rows", "transposed"])
    if kind == "array":
        return spoil_array(draw, h0)
    if kind == "other":  # a shape of another layout: classic for networks, one stream for B, ...
        return np.zeros(draw.pick([(net.m,), (net.L, net.m), (B + 1, net.W), (net.W, net.L)]), dtype=net.dtype)
    if kind == "rows":
        return np.zeros((draw.pick(([0, net.L + 1, 3])), net.W), dtype=net.dtype)
    return np.ascontiguousarray(np.swapaxes(h0, -1, -2)) if h0.ndim >= 2 else h0[None, :]


def snapshot(*objs):
    out = []
    for o in objs:
        if isinstance(o, Mapping):
            out.append({k: np.array(v, copy=True) for k, v in o.items() if isinstance(v, np.ndarray)})
        elif isinstance(o, np.ndarray):
            out.append({None: o.copy()})
        else:
            out.append({})
    return out


def assert_unchanged(objs, snaps):
    for o, snap in zip(objs, snaps):
        for k, v in snap.items():
            now = o if k is None else o[k]
            assert np.array_equal(now, v, equal_nan=v.dtype.kind in "fc"), f"changed: {k!r}"


# ---------------------------------------------------------------- comparisons


def close(a, b, tol, floor=1e-6):
    """max |a - b| <= tol * max(max |b|, floor): normwise relative error per array."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    if not a.size:
        return True
    return float(np.max(np.abs(a - b))) <= tol * max(float(np.max(np.abs(b))), floor)


TOL = {F64: 1e-9, F32: 3e-3}
# A loss near zero (every prediction almost certain) is log_z - o_y with both
# terms of the size of the logits: float32 quantizes it in steps of the
# logits' ulp (2**-24 * |o|, 1e-6 for |o| ~ 8), and the gradients then start
# from p - 1 of the same size, quantized in steps of 2**-24. Relative to a
# loss or a gradient that small the comparison is meaningless; below this
# floor it is absolute (3e-3 * 1e-4 = 3e-7), still far below what a wrong
# term would change.
LOSS_FLOOR = {F64: 1e-6, F32: 1e-4}


def ref_loss_and_grads(net, p, X, Y, h0, dropout=0.0, seed=0, update=0):
    """(loss, grads keyed like p, h (B, L, W)) of the NumPy references, float64."""
    X2, Y2 = np.atleast_2d(np.asarray(X, np.int64)), np.atleast_2d(np.asarray(Y, np.int64))
    B = X2.shape[0]
    h3 = None if h0 is None else np.asarray(h0, np.float64).reshape(B, net.L, net.W)
    if net.classic and dropout == 0:  # the classic reference, stream by stream
        p64 = {k: np.asarray(v, np.float64) for k, v in p.items()}
        total, grads, hs = 0.0, {k: np.zeros(v.shape) for k, v in p64.items()}, []
        for s in range(B):
            loss, g, h = reference.loss_and_grads(p64, X2[s], Y2[s], None if h3 is None else h3[s, 0])
            total += float(loss)
            for k in grads:
                grads[k] += g[k]
            hs.append(h)
        return total, grads, np.array(hs).reshape(B, 1, net.m)
    loss, grads, h = ref.loss_and_grads(net.cell, net.to_net(p), X2, Y2, h3, dropout=dropout, seed=seed, update=update)
    return loss, net.from_net(grads), h


def check_loss_grads(net, loss, grads, h, loss_r, grads_r, h_r, B):
    tol = TOL[net.dtype]
    assert isinstance(loss, float) and np.isfinite(loss)
    assert abs(loss - loss_r) <= tol * max(abs(loss_r), LOSS_FLOOR[net.dtype]), (loss, loss_r)
    assert close(np.asarray(h).reshape(B, net.L, net.W), h_r, tol)
    assert set(grads) == set(net.params)
    for k, g in grads.items():
        assert g.shape == net.params[k].shape and g.dtype == net.dtype, k
        assert close(g, grads_r[k], tol, LOSS_FLOOR[net.dtype]), (
            k,
            np.max(np.abs(g - grads_r[k])),
            np.max(np.abs(grads_r[k])),
        )


def tally_report():
    return {k: tuple(v) for k, v in sorted(OUTCOMES.items())}


# ================================================================ loss_and_grads


@fuzz(1900)
@given(st.data())
def test_fuzz_loss_and_grads(data):
    draw = Chooser(data)
    net, rng = draw_net(draw)
    batched = draw.bool()
    B, T = (draw.int((1, 3)) if batched else 1), draw.int((1, 8))
    shape = (B, T) if batched else (T,)
    via = draw.pick(["engine", "core"])
    target = target_of(
        draw,
        ["params", "params", "params", "X", "Y", "shape", "h0", "dropout", "seed", "update", "threads"]
        + (["cell"] if via == "core" else []),
        clean=14,
    )
    p = spoil_params(draw, net) if target == "params" else net.params
    net = effective_net(p, net)
    X = (
        index_spoil(draw, rng, net.K, shape)
        if target == "X"
        else rng.integers(0, net.K, shape).astype(draw.pick(INDEX_DTYPES))
    )
    Y = index_spoil(draw, rng, net.K, shape) if target == "Y" else rng.integers(0, net.K, shape)
    if target == "shape":
        Y = rng.integers(0, net.K, draw.pick([(T + 1,), (B, T + 1), (B + 1, T), (T,) if batched else (1, T), (0,)]))
    h0 = draw_h0(draw, rng, net, B, batched, spoil=target == "h0")
    dropout = draw.pick(BAD_UNIT) if target == "dropout" else draw.pick([0.0, 0.0, 0.3, 0.7])
    seed = draw.pick(BAD_SEEDS) if target == "seed" else draw.int((0, 2**64 - 1))
    update = draw.pick(BAD_COUNTS) if target == "update" else draw.pick([0, 5, INT64_MAX])
    threads = draw.pick(BAD_THREADS if target == "threads" else GOOD_THREADS)
    cell = spoil_cell(draw, net.cell) if target == "cell" else draw.pick([None, net.cell])

    Xa, Ya = as_index_array(X, True), as_index_array(Y, True)
    lay = params_layout(p)
    verdict = settle(
        params_ok(p),
        cell_ok(cell, lay[0] if lay else net.cell),
        Xa is not None
        and Ya is not None
        and Xa.shape == Ya.shape
        and Xa.size > 0
        and not out_of_range(Xa, net.K)
        and not out_of_range(Ya, net.K),
        real_ok(dropout, unit_interval),
        seed_ok(seed),
        int_ok(update),
        int_ok(threads, 1, 256),
    )
    if verdict and lay:
        Bs = Xa.shape[0] if Xa.ndim == 2 else 1
        verdict = settle(verdict, h0_ok(h0, lay[4], lay[3], (2 if lay[0] == "lstm" else 1) * lay[2], Bs))
    fragments = names(target)
    ins = [p, X, Y, h0]
    before = snapshot(*ins)
    if via == "engine":

        def call():
            return cx.loss_and_grads(
                p,
                X,
                Y,
                h0,
                dropout=dropout,
                seed=seed,
                update=update,
                threads=threads,
            )
    else:

        def call():
            return _core.loss_and_grads(
                p,
                X,
                Y,
                h0,
                cell=cell,
                dropout=dropout,
                seed=seed,
                update=update,
                threads=threads,
                precision="full",
            )

    out = run_call("loss_and_grads", verdict, fragments, call)
    assert_unchanged(ins, before)
    if out is None:
        return
    loss, grads, h = out
    if via == "core":
        assert h.shape == (B, net.L, net.W)
    else:
        assert h.shape == (net.streams_shape(B) if batched else net.one_shape())
    assert h.dtype == net.dtype
    loss_r, grads_r, h_r = ref_loss_and_grads(net, dict(p), Xa, Ya, h0, float(dropout), int(seed), int(update))
    check_loss_grads(net, loss, dict(grads), h, loss_r, grads_r, h_r, B)
    compared("loss_and_grads")


@fuzz(100)
@given(st.data())
def test_fuzz_loss_and_grads_large(data):
    """Shapes that reach the blocked kernels: several panels of NR units, long
    chunks, several streams split between threads. Thread counts must agree
    bit for bit; float64 agrees with the reference, float32 with float64."""
    draw = Chooser(data)
    net, rng = draw_net(draw, K=(60, 140), m=(30, 130), L=(1, 2), scales=(0.3, 1.0), v_scales=(0.3, 1.0))
    B, T = draw.int((1, 4)), draw.int((100, 300))
    X, Y = rng.integers(0, net.K, (B, T)), rng.integers(0, net.K, (B, T))
    h0 = draw_h0(draw, rng, net, B, True)
    dropout = draw.pick([0.0, 0.0, 0.25])
    seed = draw.int((0, 2**64 - 1))
    threads = draw.int((2, 4))
    loss1, grads1, h1 = cx.loss_and_grads(net.params, X, Y, h0, dropout=dropout, seed=seed, update=3, threads=1)
    loss, grads, h = run_call(
        "loss_and_grads",
        True,
        None,
        lambda: cx.loss_and_grads(net.params, X, Y, h0, dropout=dropout, seed=seed, update=3, threads=threads),
    )
    assert loss == loss1 and np.array_equal(h, h1) and all(np.array_equal(grads[k], grads1[k]) for k in grads1)
    if net.dtype == F64 and B * T * net.L <= 600:
        loss_r, grads_r, h_r = ref_loss_and_grads(net, net.params, X, Y, h0, dropout, seed, 3)
        check_loss_grads(net, loss, grads, h, loss_r, grads_r, h_r, B)
    elif net.dtype == F32:  # float32 against the engine's float64 on the same numbers
        p64 = {k: v.astype(np.float64) for k, v in net.params.items()}
        loss64, grads64, h64 = cx.loss_and_grads(
            p64,
            X,
            Y,
            None if h0 is None else h0.astype(np.float64),
            dropout=dropout,
            seed=seed,
            update=3,
            threads=threads,
        )
        assert abs(loss - loss64) <= 1e-4 * loss64
        assert close(h, h64, 1e-3)
        for k in grads64:
            assert close(grads[k], grads64[k], 1e-2), k


# ================================================================ optimiser memory


def draw_opt_state(draw, rng, net, optimizer, needs_t=True):
    """Non-trivial optimiser memory: squared-gradient slots >= 0, Adam's m of
    any sign; sometimes a classic memory keyed by the bare names, without the
    counter 't' unless Adam or dropout need it."""
    out = {}
    bare = optimizer != "adam" and draw.int((0, 4)) == 0
    for k, a in net.params.items():
        noise = [0.1 * rng.standard_normal(a.shape) if rng.integers(2) else np.zeros(a.shape) for _ in range(2)]
        if optimizer == "adam":  # a consistent pair: v >= m^2
            out[f"m:{k}"] = noise[0].astype(net.dtype)
            out[f"v:{k}"] = (noise[0] ** 2 + np.abs(noise[1])).astype(net.dtype)
        else:
            out[k if bare else f"M:{k}"] = np.abs(noise[0]).astype(net.dtype)
    if not bare or needs_t or draw.bool():
        out["t"] = np.array(draw.pick([0, 0, 1, 7, 2**40]), dtype=np.int64)
    return out


def spoil_opt_state(draw, rng, net, state, optimizer):
    s = dict(state)
    kind = pick(
        draw,
        [
            "array",
            "array",
            "negative",
            "missing",
            "stray",
            "other_optimizer",
            "not_mapping",
            "mapping",
            "alias_param",
            "alias_state",
            "t",
            "t",
            "no_t",
        ],
    )
    key = draw.pick(sorted(k for k in s if k != "t"))
    if kind == "array":
        s[key] = spoil_array(draw, s[key])
    elif kind == "negative":  # invalid in M and v, fine in Adam's m
        s[key] = s[key].copy()
        s[key].flat[draw.int((0, s[key].size - 1))] = -draw.pick([1e-3, 1.0, 1e30])
    elif kind == "missing":
        del s[key]
    elif kind == "stray":
        s[draw.pick(["extra", "M:extra", "v:V" if optimizer != "adam" else "M:V", "T", "l9.Wx"])] = s[key].copy()
    elif kind == "other_optimizer":
        return draw_opt_state(draw, rng, net, draw.pick([o for o in OPTIMIZERS if o != optimizer]))
    elif kind == "not_mapping":
        return draw.pick([list(s.values()), None, "state", 0])
    elif kind == "mapping":
        return types.MappingProxyType(s)
    elif kind == "alias_param":  # the memory *is* the parameter array
        s[key] = net.params[key.split(":", 1)[-1]]
    elif kind == "alias_state":  # two memory entries share one array
        s[key] = s[draw.pick(sorted(k for k in s if k != "t" and s[k].shape == s[key].shape))]
    elif kind == "t":
        s["t"] = draw.pick(
            [
                0,
                np.int64(3),
                np.zeros((), np.int32),
                np.zeros(1, np.int64),
                np.array(-1, np.int64),
                np.zeros((), ">i8"),
                np.zeros(()),
                None,
                np.array(5, np.int64),
            ]
        )
        if isinstance(s["t"], np.ndarray) and s["t"].dtype == np.int64 and draw.bool():
            s["t"] = s["t"].copy()
            s["t"].setflags(write=False)
    elif kind == "no_t":
        s.pop("t", None)
    return s


def memory_key(state, k, optimizer, slot):
    """The key the binding reads for parameter k's slot (bare names are a classic AdaGrad memory)."""
    if optimizer == "adam":
        return f"{slot}:{k}"
    return f"M:{k}" if f"M:{k}" in state or k not in state else k


def opt_state_ok(state, p, optimizer, needs_t):
    if not choice_ok(optimizer, OPTIMIZERS) or not isinstance(state, Mapping):
        return False
    cell, K, m, L, dt, classic = params_layout(p)
    want, arrays = {}, []
    for k, shape in keyed_shapes(cell, K, m, L, classic).items():
        for slot in ("m", "v") if optimizer == "adam" else ("M",):
            want[memory_key(state, k, optimizer, slot)] = (shape, slot)
    if set(state) - {"t"} != set(want):
        return False
    for key, (shape, slot) in want.items():
        a = state[key]
        if not arr_ok(a, shape, dt, writable=True) or (slot in "Mv" and np.any(a < 0)):
            return False
        arrays.append(a)
    if "t" in state:
        t = state["t"]
        if not (
            isinstance(t, np.ndarray)
            and t.dtype == np.int64
            and t.dtype.isnative
            and t.ndim == 0
            and t.flags.writeable
            and int(t) >= 0
        ):
            return False
        arrays.append(t)
    elif needs_t:
        return False
    return not overlapping(arrays + list(p.values()))


# Valid settings. (beta2 = 0 is valid too, but Adam then divides by |g| and steps by ~eta * m / eps where a
# gradient is at rounding level: the result is rounding noise, no use for a comparison.)
HYPER_OK = {
    "eta": [0.1, 0.1, 0.01, 1.0, 2e-3],
    "clip": [5.0, 5.0, 0.5, 100.0],
    "gamma": [0.9, 0.9, 0.0, 0.99],
    "beta1": [0.9, 0.9, 0.0, 0.5],
    "beta2": [0.999, 0.999, 0.5, 0.9],
    "eps": [1e-8, 1e-8, 1e-5, 1.0],
}
HYPER_BAD = {k: BAD_POSITIVE if k in ("eta", "clip", "eps") else BAD_UNIT for k in HYPER_OK}
HYPER_RULE = {
    "eta": positive_finite,
    "clip": positive_finite,
    "eps": positive_finite,
    "gamma": unit_interval,
    "beta1": unit_interval,
    "beta2": unit_interval,
}


def draw_training(draw, rng, net, via, extra_targets, clean):
    """Optimiser, memory, hyper-parameters, dropout, seed, threads and cell of a
    training call, at most one of them (or of extra_targets) spoiled. Returns
    (target, settings dict, verdict of these settings)."""
    optimizer = draw.pick(OPTIMIZERS)
    dropout_ok = draw.pick([0.0, 0.0, 0.0, 0.2, 0.5])
    state = draw_opt_state(draw, rng, net, optimizer, optimizer == "adam" or dropout_ok > 0)
    kinds = (
        [
            "opt_state",
            "opt_state",
            "opt_state",
            "optimizer",
            "clip_mode",
            "hyper",
            "hyper",
            "dropout",
            "seed",
            "threads",
        ]
        + extra_targets
        + (["cell"] if via == "core" else [])
    )
    target = target_of(draw, kinds, clean)
    if target == "opt_state":
        state = spoil_opt_state(draw, rng, net, state, optimizer)
    opt_arg = draw.pick(["Adam", "sgd", "", 1, "adagrad ", None]) if target == "optimizer" else optimizer
    clip_mode = (
        draw.pick(["global", "norm", "None", None, 0, b"none"])
        if target == "clip_mode"
        else draw.pick(["elementwise", "elementwise", "global_norm", "none"])
    )
    bad = draw.pick(sorted(HYPER_OK)) if target == "hyper" else None
    hyper = {k: draw.pick(HYPER_BAD[k] if k == bad else HYPER_OK[k]) for k in sorted(HYPER_OK)}
    if target == "hyper":
        target = bad
    if via == "engine" and target != "eta" and draw.bool():
        hyper["eta"] = None  # the optimiser's default
    dropout = draw.pick(BAD_UNIT) if target == "dropout" else dropout_ok
    seed = draw.pick(BAD_SEEDS) if target == "seed" else draw.int((0, 2**64 - 1))
    threads = draw.pick(BAD_THREADS if target == "threads" else GOOD_THREADS)
    cell = spoil_cell(draw, net.cell) if target == "cell" else draw.pick([None, net.cell])
    needs_t = opt_arg == "adam" or (real_value(dropout) or 0) > 0
    verdict = settle(
        choice_ok(opt_arg, OPTIMIZERS),
        choice_ok(clip_mode, CLIP_MODES),
        *((k == "eta" and v is None and via == "engine") or real_ok(v, HYPER_RULE[k]) for k, v in hyper.items()),
        real_ok(dropout, unit_interval),
        seed_ok(seed),
        int_ok(threads, 1, 256),
        cell_ok(cell, net.cell),
    )
    if verdict is not False:
        verdict = settle(verdict, opt_state_ok(state, net.params, opt_arg, needs_t))
    s = dict(
        optimizer=opt_arg,
        state=state,
        clip_mode=clip_mode,
        dropout=dropout,
        seed=seed,
        threads=threads,
        cell=cell,
        **hyper,
    )
    return target, s, verdict


def training_params(draw, rng, net, target, s, verdict):
    """The parameters of a training call (spoiled if target == 'params'), the
    network they describe, and the verdict; valid spoiled parameters (another
    mapping type, an extra layer) get a fresh memory that matches them."""
    if target != "params":
        return net.params, net, verdict
    p = spoil_params(draw, net)
    if not params_ok(p, writable=True):
        return p, effective_net(p, net), False
    net = effective_net(p, net)
    needs_t = s["optimizer"] == "adam" or s["dropout"] > 0
    s["state"] = draw_opt_state(draw, rng, net, s["optimizer"], needs_t)
    return p, net, settle(verdict, opt_state_ok(s["state"], p, s["optimizer"], needs_t))


def opt_kwargs(s, via):
    kw = {
        k: s[k]
        for k in (
            "optimizer",
            "eta",
            "clip",
            "clip_mode",
            "gamma",
            "beta1",
            "beta2",
            "eps",
            "dropout",
            "seed",
            "threads",
        )
    }
    if via == "core":  # the core takes the update's options as one mapping
        kw = {"options": {k: kw.pop(k) for k in UPDATE_OPTIONS}, **kw, "cell": s["cell"], "precision": "full"}
    return kw


def ref_memory(net, state, optimizer):
    """float64 copies of the memory under "<slot>:<network name>" (as reference_nets keys it)."""
    out = {}
    for k in net.params:
        for slot in ("m", "v") if optimizer == "adam" else ("M",):
            out[f"{slot}:{CLASSIC.get(k, k) if net.classic else k}"] = np.array(
                state[memory_key(state, k, optimizer, slot)], dtype=np.float64
            )
    return out


def check_memory(net, state, mem_r, optimizer, tol, floor):
    for k in net.params:
        for slot in ("m", "v") if optimizer == "adam" else ("M",):
            got = state[memory_key(state, k, optimizer, slot)]
            assert close(got, mem_r[f"{slot}:{CLASSIC.get(k, k) if net.classic else k}"], tol, floor), (k, slot)


def ref_hyper(s):
    eta = DEFAULT_ETA[s["optimizer"]] if s["eta"] is None else float(s["eta"])
    return dict(
        optimizer=s["optimizer"],
        eta=eta,
        clip=float(s["clip"]),
        clip_mode=s["clip_mode"],
        gamma=float(s["gamma"]),
        beta1=float(s["beta1"]),
        beta2=float(s["beta2"]),
        eps=float(s["eps"]),
    )


# ================================================================ train_step


@fuzz(1900)
@given(st.data())
def test_fuzz_train_step(data):
    draw = Chooser(data)
    net, rng = draw_net(draw)
    via = draw.pick(["engine", "core"])
    batched = draw.bool()
    B, T = (draw.int((1, 3)) if batched else 1), draw.int((1, 6))
    shape = (B, T) if batched else (T,)
    target, s, verdict = draw_training(draw, rng, net, via, ["params", "params", "X", "h0"], clean=16)
    p, net, verdict = training_params(draw, rng, net, target, s, verdict)
    X = index_spoil(draw, rng, net.K, shape) if target == "X" else rng.integers(0, net.K, shape)
    Y = rng.integers(0, net.K, shape)
    h0 = draw_h0(draw, rng, net, B, batched, spoil=target == "h0")
    Xa = as_index_array(X, True)
    if verdict is not False:
        verdict = settle(
            verdict,
            Xa is not None and Xa.shape == shape and not out_of_range(Xa, net.K),
            h0_ok(h0, net.dtype, net.L, net.W, B),
        )
    state = s["state"]
    fragments = names(target)
    watch = [p, state, X, Y, h0]
    before = snapshot(*watch)
    kw = opt_kwargs(s, via)
    if via == "engine":
        call = lambda: cx.train_step(p, state, X, Y, h0, **kw)  # noqa: E731
    else:
        call = lambda: _core.train_step(p, state, X, Y, h0, **kw)  # noqa: E731
    out = run_call("train_step", verdict, fragments, call)
    if out is None:
        assert_unchanged(watch, before)
        return
    assert_unchanged(watch[2:], before[2:])
    loss, h = out
    assert h.dtype == net.dtype and h.shape == (
        (B, net.L, net.W) if via == "core" else net.streams_shape(B) if batched else net.one_shape()
    )
    # the reference: summed gradients of the streams, then one update of float64 copies
    p0 = before[0]
    t0 = int(before[1]["t"]) if "t" in before[1] else 0
    loss_r, grads_r, h_r = ref_loss_and_grads(net, p0, Xa, Y, h0, float(s["dropout"]), int(s["seed"]), t0)
    tol = TOL[net.dtype]
    assert abs(loss - loss_r) <= tol * max(abs(loss_r), LOSS_FLOOR[net.dtype])
    assert close(np.asarray(h).reshape(B, net.L, net.W), h_r, tol)
    p_r, mem_r = net.to_net(p0), ref_memory(net, before[1], s["optimizer"])
    hyper = ref_hyper(s)
    t_r = ref.optimizer_update(p_r, mem_r, net.to_net(grads_r), t0, **hyper)
    if "t" in state:
        assert int(state["t"]) == t_r == t0 + 1
    # parameters to 1e-9 (float64) of the step size, memory to 1e-9 of its own scale
    step_tol, mem_tol = (1e-9, 1e-9) if net.dtype == F64 else (2e-2, 1e-2)
    p_now = net.to_net(p)
    for k in p_now:
        scale = max(float(np.max(np.abs(p_r[k]))), hyper["eta"])
        assert float(np.max(np.abs(p_now[k] - p_r[k]))) <= step_tol * scale, k
    check_memory(net, state, mem_r, s["optimizer"], mem_tol, 1e-8)
    compared("train_step")


@fuzz(100)
@given(st.data())
def test_fuzz_train_step_large(data):
    """Big shapes, several streams, any optimiser, dropout: thread counts give
    bit-identical updates, and float64 agrees with the reference."""
    draw = Chooser(data)
    net, rng = draw_net(draw, K=(60, 140), m=(30, 130), L=(1, 2), scales=(0.3, 1.0), v_scales=(0.3, 1.0))
    optimizer = draw.pick(OPTIMIZERS)
    B, T = draw.int((1, 4)), draw.int((100, 200))
    X, Y = rng.integers(0, net.K, (B, T)), rng.integers(0, net.K, (B, T))
    kw = dict(
        optimizer=optimizer,
        clip_mode=draw.pick(CLIP_MODES),
        dropout=draw.pick([0.0, 0.3]),
        seed=draw.int((0, 2**64 - 1)),
        eta=0.01,
    )
    state = draw_opt_state(draw, rng, net, optimizer)
    state["t"] = np.array(3, np.int64)
    p0 = {k: v.copy() for k, v in net.params.items()}
    p1, s1 = {k: v.copy() for k, v in net.params.items()}, {k: v.copy() for k, v in state.items()}
    loss1, h1 = cx.train_step(p1, s1, X, Y, threads=1, **kw)
    loss, h = run_call(
        "train_step", True, None, lambda: cx.train_step(net.params, state, X, Y, threads=draw.int((2, 4)), **kw)
    )
    assert loss == loss1 and np.array_equal(h, h1)
    assert all(np.array_equal(net.params[k], p1[k]) for k in p1) and all(np.array_equal(state[k], s1[k]) for k in s1)
    assert int(state["t"]) == 4
    if net.dtype == F64 and B * T * net.L <= 400:
        loss_r, _, h_r = ref_loss_and_grads(net, p0, X, Y, None, kw["dropout"], kw["seed"], 3)
        assert abs(loss - loss_r) <= 1e-9 * loss_r and close(np.asarray(h).reshape(B, net.L, net.W), h_r, 1e-9)


# ================================================================ train_steps


def walk_reads(L, T, positions, n, K, text, B):
    """The characters the walk of B streams over segments of L reads (flat
    indices into text), the final positions and wraps, as the docs describe."""
    reads, pos, wraps = set(), list(positions), [0] * B
    for _ in range(n):
        for s in range(B):
            if pos[s] + T + 1 > L:
                pos[s], wraps[s] = 0, wraps[s] + 1
            reads.update(range(s * L + pos[s], s * L + pos[s] + T + 1))
            pos[s] += T
    return reads, pos, wraps


@fuzz(1900)
@given(st.data())
def test_fuzz_train_steps(data):
    draw = Chooser(data)
    net, rng = draw_net(draw, L=(1, 2), m=(1, 4))
    via = draw.pick(["engine", "core"])
    target, s, verdict = draw_training(
        draw,
        rng,
        net,
        via,
        ["params", "data", "data", "h0", "n_steps", "seq_length", "batch_size", "positions"],
        clean=14,
    )
    p, net, verdict = training_params(draw, rng, net, target, s, verdict)
    B = draw.int((1, 3))
    # the engine's one-stream form (pos=...) or its batched form (batch_size=, positions=)
    batched = via == "core" or B > 1 or target in ("batch_size", "positions") or draw.bool()
    T = draw.int((1, 5))
    short = target == "data" and draw.bool()  # too short for one chunk per stream
    N = draw.int((0, B * (T + 1) + 8)) if short else draw.int((B * (T + 1), B * (T + 1) + 12))
    text = (
        index_spoil(draw, rng, net.K, (N,))
        if target == "data"
        else rng.integers(0, net.K, N).astype(draw.pick(INDEX_DTYPES))
    )
    n_steps = draw.pick([-1, 2**63, 2**70, 1.5, "2", None, True]) if target == "n_steps" else draw.int((0, 4))
    seq_length = draw.pick([0, -3, 2**63, 2.0, True, None]) if target == "seq_length" else T
    batch_size = draw.pick([0, -1, 2**63, 2.0, "1", True]) if target == "batch_size" else B
    ta = as_index_array(text, False)
    Nv = ta.shape[0] if ta is not None else 0
    seg = Nv // B
    if target == "positions":
        positions = draw.pick(
            [
                [0] * (B + 1),
                [seg + 1] * B,
                [-1] * B,
                [0.0] * B,
                np.zeros((B, 1), int),
                "0",
                [2**64 - 1] * B,
                [2**70] * B,
                0,
                [True] * B,
            ]
        )
    else:
        positions = (
            None
            if draw.bool()
            else rng.integers(0, seg + 1, B).astype(
                draw.pick([np.int64, np.int32, np.uint16] if seg < 2**15 else [np.int64])
            )
        )
    h0 = draw_h0(draw, rng, net, B, batched, spoil=target == "h0")
    # the verdict of the walk's own arguments
    verdict = settle(verdict, ta is not None, int_ok(n_steps), int_ok(seq_length, 1), int_ok(batch_size, 1))
    reads = ()
    if verdict is not False:
        Bi, Ti, ni = int(batch_size), int(seq_length), int(n_steps)
        L = Nv // Bi
        verdict = settle(verdict, L >= Ti + 1)
        if positions is not None:
            pa = as_index_array(positions, False)
            verdict = settle(
                verdict,
                pa is not None
                and pa.shape == (Bi,)
                and not np.any(pa.astype(object) < 0)
                and not np.any(pa.astype(object) > L),
            )
        if verdict is not False:
            verdict = settle(verdict, h0_ok(h0, net.dtype, net.L, net.W, Bi))
        if verdict is not False:
            q0 = [0] * Bi if positions is None else [int(v) for v in np.asarray(positions)]
            reads, _, _ = walk_reads(L, Ti, q0, ni, net.K, ta, Bi)
            bad = out_of_range(ta, net.K)
            used = {i for s_ in range(Bi) for i in range(s_ * L, (s_ + 1) * L)} if ni else set()
            verdict = settle(verdict, False if bad & reads else None if bad & used else True)
    fragments = names(target)
    state = s["state"]
    watch = [p, state, text, h0]
    before = snapshot(*watch)
    kw = opt_kwargs(s, via)
    if via == "core":

        def call():
            return _core.train_steps(
                p,
                state,
                text,
                h0,
                n_steps=n_steps,
                seq_length=seq_length,
                batch_size=batch_size,
                positions=positions,
                **kw,
            )
    else:
        walk = (
            dict(batch_size=batch_size, positions=positions)
            if batched
            else dict(pos=0 if positions is None else positions[0])
        )

        def call():
            return cx.train_steps(
                p,
                state,
                text,
                h0,
                n_steps=n_steps,
                seq_length=seq_length,
                **walk,
                **kw,
            )

    out = run_call("train_steps", verdict, fragments, call)
    if out is None:
        assert_unchanged(watch, before)
        return
    assert_unchanged(watch[2:], before[2:])
    losses, h, pos_out, wraps, diverged = out
    Bi, Ti, ni = int(batch_size), int(seq_length), int(n_steps)
    assert losses.dtype == net.dtype and losses.shape == (ni,) and diverged is False
    assert np.all(np.isfinite(losses))
    if via == "core" or (batched and not (batch_size == 1 and positions is None)):
        assert pos_out.shape == wraps.shape == (Bi,) and pos_out.dtype == wraps.dtype == np.int64
        assert h.shape == ((Bi, net.L, net.W) if via == "core" else net.streams_shape(Bi))
    else:
        assert isinstance(pos_out, int) and isinstance(wraps, int) and h.shape == net.one_shape()
    q0 = [0] * Bi if positions is None else [int(v) for v in np.asarray(positions)]
    _, pos_r, wraps_r = walk_reads(Nv // Bi, Ti, q0, ni, net.K, ta, Bi)
    assert np.atleast_1d(pos_out).tolist() == pos_r and np.atleast_1d(wraps).tolist() == wraps_r
    if verdict is not True:
        return
    t0 = int(before[1]["t"]) if "t" in before[1] else 0
    if "t" in state:
        assert int(state["t"]) == t0 + ni
    p_r, mem_r = net.to_net(before[0]), ref_memory(net, before[1], s["optimizer"])
    h3 = None if h0 is None else np.asarray(h0, np.float64).reshape(Bi, net.L, net.W)
    losses_r, h_r, pos_r, wraps_r, _ = ref.train_steps(
        net.cell,
        p_r,
        mem_r,
        np.asarray(ta, np.int64),
        h3,
        n_steps=ni,
        seq_length=Ti,
        batch_size=Bi,
        positions=q0,
        t=t0,
        dropout=float(s["dropout"]),
        seed=int(s["seed"]),
        **ref_hyper(s),
    )
    assert np.atleast_1d(pos_out).tolist() == pos_r.tolist() and np.atleast_1d(wraps).tolist() == wraps_r.tolist()
    tol = TOL[net.dtype]
    step_tol, mem_tol = (1e-8, 1e-8) if net.dtype == F64 else (5e-2, 5e-2)
    assert close(losses, losses_r, tol if net.dtype == F64 else 1e-2)
    assert close(np.asarray(h).reshape(Bi, net.L, net.W), h_r, 1e-8 if net.dtype == F64 else 1e-2)
    p_now = net.to_net(p)
    eta = ref_hyper(s)["eta"]
    for k in p_now:
        assert float(np.max(np.abs(p_now[k] - p_r[k]))) <= step_tol * max(float(np.max(np.abs(p_r[k]))), eta), k
    check_memory(net, state, mem_r, s["optimizer"], mem_tol, 1e-8)
    compared("train_steps")


@fuzz(100)
@given(st.data())
def test_fuzz_train_steps_large(data):
    """Texts over 256 characters, chunks over 128 steps, several streams and
    threads: bit-identical for any thread count, the walk bookkeeping as
    documented, float64 losses against the reference where affordable."""
    draw = Chooser(data)
    net, rng = draw_net(draw, K=(60, 130), m=(30, 130), L=(1, 2), scales=(0.3,), v_scales=(0.3, 1.0))
    optimizer = draw.pick(OPTIMIZERS)
    B, T = draw.int((1, 4)), draw.int((129, 200))
    N = max(257, B * (T + 1)) + draw.int((0, 3 * T))
    text = rng.integers(0, net.K, N)
    n = draw.int((1, 3))
    positions = rng.integers(0, N // B + 1, B)
    kw = dict(
        n_steps=n,
        seq_length=T,
        batch_size=B,
        positions=positions,
        optimizer=optimizer,
        eta=0.01,
        dropout=draw.pick([0.0, 0.2]),
        seed=draw.int((0, 2**64 - 1)),
    )
    state = draw_opt_state(draw, rng, net, optimizer)
    state["t"] = np.zeros((), np.int64)
    p1, s1 = {k: v.copy() for k, v in net.params.items()}, {k: v.copy() for k, v in state.items()}
    mem0 = {k: v.copy() for k, v in state.items()}
    p0 = {k: v.copy() for k, v in net.params.items()}
    out1 = cx.train_steps(p1, s1, text, threads=1, **kw)
    out = run_call(
        "train_steps", True, None, lambda: cx.train_steps(net.params, state, text, threads=draw.int((2, 4)), **kw)
    )
    for a, b in zip(out, out1):
        assert np.array_equal(a, b)
    assert all(np.array_equal(net.params[k], p1[k]) for k in p1) and int(state["t"]) == n
    _, pos_r, wraps_r = walk_reads(N // B, T, positions.tolist(), n, net.K, text, B)
    assert out[2].tolist() == pos_r and out[3].tolist() == wraps_r and not out[4]
    if net.dtype == F64 and n * B * T * net.L <= 600:
        p_r, mem_r = net.to_net(p0), ref_memory(net, mem0, optimizer)
        losses_r, h_r, _, _, _ = ref.train_steps(
            net.cell,
            p_r,
            mem_r,
            text,
            None,
            n_steps=n,
            seq_length=T,
            batch_size=B,
            positions=positions,
            dropout=kw["dropout"],
            seed=kw["seed"],
            optimizer=optimizer,
            eta=0.01,
            clip=5.0,
            clip_mode="elementwise",
            gamma=0.9,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
        )
        assert close(out[0], losses_r, 1e-9) and close(np.asarray(out[1]).reshape(h_r.shape), h_r, 1e-8)


# ================================================================ evaluate_loss


def ref_evaluate(net, p, data, h0, B):
    """The documented split: min(B, N-1) streams over (N-1)//B inputs each,
    stream 0 from h0, the others from zeros, the remainder read by the last
    stream continuing its state. (loss, final state (L, W)), float64."""
    pn = net.to_net(p)
    N = len(data)
    inputs = N - 1
    Be = max(1, min(B, inputs))
    E = inputs // Be
    h_start = None if h0 is None else np.asarray(h0, np.float64).reshape(net.L, net.W)
    total, final = 0.0, None
    for s in range(Be):
        loss, _, final = ref.forward(
            net.cell, pn, data[s * E : (s + 1) * E], data[s * E + 1 : (s + 1) * E + 1], h_start if s == 0 else None
        )
        total += float(loss)
    if inputs > Be * E:
        loss, _, final = ref.forward(net.cell, pn, data[Be * E : inputs], data[Be * E + 1 : N], final)
        total += float(loss)
    return total, final


@fuzz(1900)
@given(st.data())
def test_fuzz_evaluate_loss(data):
    draw = Chooser(data)
    net, rng = draw_net(draw)
    via = draw.pick(["engine", "core"])
    target = target_of(
        draw,
        ["params", "params", "params", "data", "data", "h0", "batch_size", "threads"]
        + (["cell"] if via == "core" else []),
        clean=10,
    )
    p = spoil_params(draw, net) if target == "params" else net.params
    net = effective_net(p, net)
    N = draw.int((0, 14)) if target == "data" else draw.int((2, 14))
    text = (
        index_spoil(draw, rng, net.K, (N,))
        if target == "data"
        else rng.integers(0, net.K, N).astype(draw.pick(INDEX_DTYPES))
    )
    h0 = draw_h0(draw, rng, net, 1, False, spoil=target == "h0")
    B = draw.pick([0, -1, 1.0, True, "2", None]) if target == "batch_size" else draw.pick([1, 1, 2, 3, 5, 20, 2**62])
    threads = draw.pick(BAD_THREADS if target == "threads" else GOOD_THREADS)
    cell = spoil_cell(draw, net.cell) if target == "cell" else draw.pick([None, net.cell])
    ta = as_index_array(text, False)
    lay = params_layout(p)
    verdict = settle(
        params_ok(p),
        cell_ok(cell, lay[0] if lay else net.cell),
        ta is not None and len(ta) >= 2 and not out_of_range(ta, net.K),
        int_ok(B, 1),
        int_ok(threads, 1, 256),
    )
    if verdict and lay:
        verdict = settle(verdict, h0_ok(h0, lay[4], lay[3], (2 if lay[0] == "lstm" else 1) * lay[2], 1))
    fragments = names(target)
    ins = [p, text, h0]
    before = snapshot(*ins)
    if via == "engine":
        call = lambda: cx.evaluate_loss(p, text, h0, batch_size=B, threads=threads)  # noqa: E731
    else:
        call = lambda: _core.evaluate_loss(p, text, h0, cell=cell, batch_size=B, threads=threads, precision="full")  # noqa: E731
    out = run_call("evaluate_loss", verdict, fragments, call)
    assert_unchanged(ins, before)
    if out is None:
        return
    loss, h = out
    assert h.dtype == net.dtype and h.shape == ((net.L, net.W) if via == "core" else net.one_shape())
    tol = TOL[net.dtype]
    loss_r, h_r = ref_evaluate(net, dict(p), np.asarray(ta, np.int64), h0, int(B))
    assert isinstance(loss, float) and abs(loss - loss_r) <= tol * max(loss_r, LOSS_FLOOR[net.dtype]), (loss, loss_r)
    assert close(np.asarray(h).reshape(net.L, net.W), h_r, tol)
    compared("evaluate_loss")
    if int(B) == 1 and net.classic and net.dtype == F64:  # and the classic reference
        t64 = np.asarray(ta, np.int64)
        loss_c, H, _ = reference.forward({k: np.asarray(v) for k, v in p.items()}, t64[:-1], t64[1:], h0)
        assert abs(loss - float(loss_c)) <= 1e-9 * max(float(loss_c), 1e-6)
        assert close(np.asarray(h).reshape(-1), H[-1], 1e-9)


@fuzz(100)
@given(st.data())
def test_fuzz_evaluate_loss_large(data):
    draw = Chooser(data)
    net, rng = draw_net(draw, K=(60, 140), m=(30, 130), L=(1, 2), scales=(0.3, 1.0), v_scales=(0.3, 1.0))
    N = draw.int((257, 1500))
    text = rng.integers(0, net.K, N)
    h0 = draw_h0(draw, rng, net, 1, False)
    B = draw.int((1, 6))
    loss1, h1 = cx.evaluate_loss(net.params, text, h0, batch_size=B, threads=1)
    loss, h = run_call(
        "evaluate_loss",
        True,
        None,
        lambda: cx.evaluate_loss(net.params, text, h0, batch_size=B, threads=draw.int((2, 4))),
    )
    assert loss == loss1 and np.array_equal(h, h1)
    if net.dtype == F64 and N * net.L <= 1500:
        loss_r, h_r = ref_evaluate(net, net.params, text, h0, B)
        assert abs(loss - loss_r) <= 1e-9 * loss_r and close(np.asarray(h).reshape(h_r.shape), h_r, 1e-9)
    else:
        loss64, h64 = cx.evaluate_loss(
            {k: v.astype(np.float64) for k, v in net.params.items()},
            text,
            None if h0 is None else h0.astype(np.float64),
            batch_size=B,
        )
        assert abs(loss - loss64) <= 1e-4 * loss64 and close(h, h64, 1e-3)


# ================================================================ sample

MASK = (1 << 64) - 1


class SplitMix64:
    """The sampler's generator (cpp/sampling.hpp)."""

    def __init__(self, seed):
        self.state = int(seed) & MASK

    def uniform(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return ((z ^ (z >> 31)) >> 11) * 2.0**-53


def allowed_draws(p, u, top_k, top_p, greedy, margin):
    """Every character the sampler may draw from probabilities p (known to a
    relative precision `margin`) with uniform u: one, unless a decision -- a
    greedy near-tie, the top-k or top-p cut, a CDF step -- is closer than
    that. The rules of test_sampling.replay_draw."""
    return _draws(p, u, top_k, top_p, greedy, margin)[1]


def _draws(p, u, top_k, top_p, greedy, margin):
    K = len(p)
    order = np.argsort(-p, kind="stable")
    if greedy:
        allowed = set(np.flatnonzero(p >= p[order[0]] * (1 - margin)).tolist())
        return int(order[0]), allowed
    keep = K if top_k <= 0 or top_k >= K else top_k
    kept_sets = [order[:keep]]
    if keep < K and p[order[keep - 1]] - p[order[keep]] <= margin * p[order[keep - 1]]:
        kept_sets.append(np.r_[order[: keep - 1], order[keep]])  # the top-k tie broken the other way
    if top_p < 1.0:
        cut = []
        for kept in kept_sets:
            cum = np.cumsum(p[kept])
            target = top_p * cum[-1]
            ends = {int(np.argmax(cum >= target)) + 1}
            for i in np.flatnonzero(np.abs(cum - target) <= margin * cum[-1]):
                ends |= {int(i) + 1, min(int(i) + 2, len(kept))}  # a top-p cut either side
            cut += [kept[:e] for e in sorted(ends)]
        kept_sets = cut
    first, allowed = None, set()
    for kept in kept_sets:
        q = np.zeros(K)
        q[kept] = p[kept]
        cum = np.cumsum(q)
        target = u * cum[-1]
        positive = np.flatnonzero(q > 0)
        idx = min(int(np.searchsorted(cum, target, side="right")), int(positive[-1]))
        first = idx if first is None else first
        allowed.add(idx)
        for k in positive[np.abs(cum[positive] - target) <= margin * cum[-1]]:  # on a CDF step: either side
            allowed.add(int(k))
            later = positive[positive > k]
            if later.size:
                allowed.add(int(later[0]))
    return first, allowed


def next_distribution(net, pn, state, x, temperature):
    """(p at this temperature, new state) by the references: p at temperature 1
    from them, tempered here in log space (1/temperature may be ~1e308)."""
    if net.classic:
        p1, state = reference.next_char_distribution(pn, state, x)
    else:
        p1, state = ref.next_char_distribution(net.cell, pn, state, x)
    with np.errstate(divide="ignore", over="ignore"):
        logp = np.log(p1)
        q = np.exp((logp - logp.max()) / temperature)
    return q / q.sum(), state


def check_sample(net, p, h0, prime, out, h, temperature, seed, top_k, top_p, greedy):
    """The drawn characters and the returned state against the NumPy replay.
    Returns the number of draws that were decided within the margin."""
    pn = {k: np.asarray(v, np.float64) for k, v in p.items()}
    shape = (net.m,) if net.classic else (net.L, net.W)
    state = np.zeros(shape) if h0 is None else np.asarray(h0, np.float64).reshape(shape)
    margin = 1e-9 if net.dtype == F64 else 1e-5
    rng = SplitMix64(seed)
    for x in prime[:-1]:
        _, state = next_distribution(net, pn, state, int(x), 1.0)
    x, unsure = int(prime[-1]), 0
    for i, y in enumerate(out):
        probs, state_next = next_distribution(net, pn, state, x, temperature)
        allowed = allowed_draws(probs, 0.0 if greedy else rng.uniform(), top_k, top_p, greedy, margin)
        assert int(y) in allowed, (i, int(y), allowed)
        unsure += len(allowed) > 1
        state, x = state_next, int(y)
    if len(out) == 0:
        _, state = next_distribution(net, pn, state, x, 1.0)
    assert close(np.asarray(h, np.float64).reshape(shape), state, 1e-9 if net.dtype == F64 else 1e-4, 1.0)
    return unsure


def temperature_ok(v, dtype):
    f = real_value(v)
    if f is None or not positive_finite(f):
        return False
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.asarray(1.0 / f).astype(dtype)))


@fuzz(1900)
@given(st.data())
def test_fuzz_sample(data):
    draw = Chooser(data)
    net, rng = draw_net(draw, v_scales=(0.3, 1.0, 3.0, 6.0))
    via = draw.pick(["engine", "core"])
    target = target_of(
        draw,
        [
            "params",
            "params",
            "params",
            "prime",
            "h0",
            "n",
            "temperature",
            "temperature",
            "top_k",
            "top_p",
            "greedy",
            "seed",
        ]
        + (["cell"] if via == "core" else []),
        clean=14,
    )
    p = spoil_params(draw, net) if target == "params" else net.params
    net = effective_net(p, net)
    n_prime = draw.int((1, 8))
    prime = (
        index_spoil(draw, rng, net.K, (n_prime,))
        if target == "prime"
        else rng.integers(0, net.K, n_prime).astype(draw.pick(INDEX_DTYPES))
    )
    h0 = draw_h0(draw, rng, net, 1, False, spoil=target == "h0")
    n = draw.pick([-1, -5, 2**63, 2**64, 1.5, "3", None, True]) if target == "n" else draw.int((0, 25))
    # 1/temperature overflows float32 below ~2.94e-39 and float64 below ~5.56e-309
    temperature = (
        draw.pick(BAD_POSITIVE + [2.9e-39, 1e-40, 1e-300, 5.5e-309, 5e-324])
        if target == "temperature"
        else draw.pick([1.0, 1.0, 1.0, 0.5, 2.0, 5.0, 0.1, 1e-3, 1e-25, 3e-39] + ([6e-309] if net.dtype == F64 else []))
    )
    top_k = (
        draw.pick([-1, 2**63, 1.5, "2", None, True])
        if target == "top_k"
        else draw.pick([0, 0, 0, 1, 2, 3, 7, 100, np.int8(2)])
    )
    top_p = (
        draw.pick([0.0, -0.5, 1.5, NAN, INF, "0.5", None])
        if target == "top_p"
        else draw.pick([1.0, 1.0, 1.0, 0.5, 0.9, 1e-9])
    )
    greedy = draw.pick(["yes", [], None, 0, 1, 0.5]) if target == "greedy" else draw.pick([False, False, True])
    seed = (
        draw.pick(BAD_SEEDS)
        if target == "seed"
        else (draw.pick([0, 1, 2**64 - 1, np.uint64(12345)]) if draw.bool() else draw.int((0, 2**64 - 1)))
    )
    cell = spoil_cell(draw, net.cell) if target == "cell" else draw.pick([None, net.cell])
    pa = as_index_array(prime, False)
    lay = params_layout(p)
    verdict = settle(
        params_ok(p),
        cell_ok(cell, lay[0] if lay else net.cell),
        int_ok(n),
        seed_ok(seed),
        int_ok(top_k),
        real_ok(top_p, lambda v: 0 < v <= 1),
        isinstance(greedy, bool),
        temperature_ok(temperature, lay[4] if lay else net.dtype),
    )
    if verdict is not False:
        verdict = settle(
            verdict,
            pa is not None and len(pa) >= 1 and not out_of_range(pa, lay[1]),
            h0_ok(h0, lay[4], lay[3], (2 if lay[0] == "lstm" else 1) * lay[2], 1),
        )
    fragments = names(target)
    ins = [p, prime, h0]
    before = snapshot(*ins)
    if via == "engine":

        def call():
            return cx.sample(
                p,
                h0,
                prime,
                n,
                temperature,
                seed,
                top_k=top_k,
                top_p=top_p,
                greedy=greedy,
            )
    else:

        def call():
            return _core.sample(
                p,
                h0,
                prime,
                n=n,
                cell=cell,
                temperature=temperature,
                seed=seed,
                top_k=top_k,
                top_p=top_p,
                greedy=greedy,
                threads=1,
            )

    out = run_call("sample", verdict, fragments, call)
    assert_unchanged(ins, before)
    if out is None:
        return
    idx, h = out
    n = int(n)
    assert idx.shape == (n,) and idx.dtype == np.int32 and (n == 0 or (idx.min() >= 0 and idx.max() < net.K))
    assert h.dtype == net.dtype and h.shape == ((net.L, net.W) if via == "core" else net.one_shape())
    assert np.all(np.isfinite(h))
    unsure = check_sample(
        net, dict(p), h0, np.asarray(pa), idx, h, float(temperature), int(seed), int(top_k), float(top_p), greedy
    )
    assert unsure <= max(2, n // 4), unsure
    compared("sample")


@fuzz(100)
@given(st.data())
def test_fuzz_sample_large(data):
    draw = Chooser(data)
    net, rng = draw_net(draw, K=(60, 140), m=(30, 130), L=(1, 2), scales=(0.3,), v_scales=(1.0, 3.0), dtype=F64)
    prime = rng.integers(0, net.K, draw.int((1, 300)))
    n = draw.int((50, 300))
    kw = dict(top_k=draw.pick([0, 0, 5, 70]), top_p=draw.pick([1.0, 0.9, 0.5]), greedy=draw.bool())
    temperature, seed = draw.pick([1.0, 0.7, 1.5]), draw.int((0, 2**64 - 1))
    h0 = draw_h0(draw, rng, net, 1, False)
    idx, h = run_call("sample", True, None, lambda: cx.sample(net.params, h0, prime, n, temperature, seed, **kw))
    assert (
        check_sample(net, net.params, h0, prime, idx, h, temperature, seed, kw["top_k"], kw["top_p"], kw["greedy"]) <= 2
    )


# ================================================================ numerical_grads


@fuzz(2000)
@given(st.data())
def test_fuzz_numerical_grads(data):
    draw = Chooser(data)
    net, rng = draw_net(draw, K=(1, 4), m=(1, 3), L=(1, 2), scales=(0.05, 0.3), v_scales=(0.3, 1.0))
    via = draw.pick(["engine", "core"])
    batched = draw.bool()
    B, T = (draw.int((1, 2)) if batched else 1), draw.int((1, 4))
    shape = (B, T) if batched else (T,)
    target = target_of(
        draw,
        ["params", "params", "X", "Y", "h0", "h", "dropout", "seed", "update", "threads"]
        + (["cell"] if via == "core" else []),
        clean=12,
    )
    p = spoil_params(draw, net) if target == "params" else net.params
    net = effective_net(p, net)
    X = index_spoil(draw, rng, net.K, shape) if target == "X" else rng.integers(0, net.K, shape)
    Y = index_spoil(draw, rng, net.K, shape) if target == "Y" else rng.integers(0, net.K, shape)
    h0 = draw_h0(draw, rng, net, B, batched, spoil=target == "h0")
    step = draw.pick(BAD_POSITIVE) if target == "h" else draw.pick([1e-4, 1e-5, 3e-5])
    dropout = draw.pick(BAD_UNIT) if target == "dropout" else draw.pick([0.0, 0.0, 0.4])
    seed = draw.pick(BAD_SEEDS) if target == "seed" else draw.int((0, 2**64 - 1))
    update = draw.pick(BAD_COUNTS) if target == "update" else draw.int((0, 10))
    threads = draw.pick(BAD_THREADS if target == "threads" else GOOD_THREADS)
    cell = spoil_cell(draw, net.cell) if target == "cell" else draw.pick([None, net.cell])
    Xa, Ya = as_index_array(X, True), as_index_array(Y, True)
    lay = params_layout(p)
    verdict = settle(
        params_ok(p),
        cell_ok(cell, lay[0] if lay else net.cell),
        Xa is not None
        and Ya is not None
        and Xa.shape == Ya.shape
        and Xa.size > 0
        and not out_of_range(Xa, net.K)
        and not out_of_range(Ya, net.K),
        real_ok(step, positive_finite),
        real_ok(dropout, unit_interval),
        seed_ok(seed),
        int_ok(update),
        int_ok(threads, 1, 256),
    )
    if verdict and lay:
        verdict = settle(
            verdict,
            h0_ok(h0, lay[4], lay[3], (2 if lay[0] == "lstm" else 1) * lay[2], Xa.shape[0] if Xa.ndim == 2 else 1),
        )
    fragments = names(target)
    ins = [p, X, Y, h0]
    before = snapshot(*ins)
    if via == "engine":

        def call():
            return cx.numerical_grads(
                p,
                X,
                Y,
                h0,
                h=step,
                dropout=dropout,
                seed=seed,
                update=update,
                threads=threads,
            )
    else:

        def call():
            return _core.numerical_grads(
                p,
                X,
                Y,
                h0,
                cell=cell,
                h=step,
                dropout=dropout,
                seed=seed,
                update=update,
                threads=threads,
            )

    out = run_call("numerical_grads", verdict, fragments, call)
    assert_unchanged(ins, before)
    if out is None:
        return
    assert set(out) == set(p)
    # centred differences of the long-double loss of exactly these (float32 or float64) numbers: within
    # O(h^2) of the reference gradients of the same numbers in float64
    _, grads_r, _ = ref_loss_and_grads(net, dict(p), Xa, Ya, h0, float(dropout), int(seed), int(update))
    for k, g in out.items():
        assert g.dtype == np.float64 and g.shape == p[k].shape, k
        assert close(g, grads_r[k], 2e-5, 1e-3), (k, np.max(np.abs(g - grads_r[k])))
    compared("numerical_grads")


# ================================================================ layout


@fuzz(2000)
@given(st.data())
def test_fuzz_layout(data):
    draw = Chooser(data)
    target = target_of(draw, ["cell", "K", "m", "layers"], clean=4)
    cell = draw.pick(CELLS)
    args = {"cell": spoil_cell(draw, cell) if target == "cell" else cell}
    for name in ("K", "m", "layers"):
        if name == target:
            args[name] = draw.pick(
                [0, -1, -(2**70), 2**63, 2**64, True, False, 1.0, 2.5, "3", None, [2], np.float64(2.0)]
            )
        else:
            v = draw.int((1, 300 if name != "layers" else 6))
            args[name] = v if draw.bool() else draw.pick([np.int64, np.uint16, np.int32])(v)
    verdict = settle(
        isinstance(args["cell"], str) and args["cell"] in CELLS, *(int_ok(args[k], 1) for k in ("K", "m", "layers"))
    )
    out = run_call(
        "layout", verdict, names(target), lambda: _core.layout(args["cell"], args["K"], args["m"], args["layers"])
    )
    if out is None:
        return
    shapes = shapes_of(args["cell"], int(args["K"]), int(args["m"]), int(args["layers"]))
    classic = args["cell"] == "rnn" and int(args["layers"]) == 1
    back = {v: k for k, v in CLASSIC.items()}
    assert out == [(k, back[k] if classic else None, s) for k, s in shapes.items()]
    compared("layout")


# ================================================================ the tally


@pytest.fixture(scope="module", autouse=True)
def every_entry_point_saw_both_outcomes():
    """After the module's tests, whatever their order or selection: every
    entry point that was fuzzed was driven through both valid calls and
    refused ones, with enough of each, and its valid results were compared
    with a reference."""
    yield
    if not OUTCOMES:
        return  # no fuzz test ran (a selection of other tests)
    print("\nfuzz outcomes (returned, refused):", tally_report())
    print("valid calls compared with a reference:", dict(sorted(COMPARED.items())))
    for name, (ok, refused) in OUTCOMES.items():
        total = ok + refused
        assert ok >= 0.25 * total and refused >= 0.15 * total, (name, ok, refused)
        assert COMPARED.get(name, 0) >= 0.2 * total, (name, COMPARED.get(name, 0), total)
