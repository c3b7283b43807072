"""The float32 kernels against the float64 ones."""
from __future__ import annotations

import numpy as np
import pytest

import charrnn_ext as cx
from charrnn_ext.params import PARAM_NAMES, copy_params, zeros_like_params
from helpers import max_scaled_err, problem

# float32 has a unit roundoff of 6e-8. Every gradient entry is a sum over the
# T = 25 steps of products accumulated over up to m = 100 terms, and the
# backward recurrence passes errors through T steps, so errors of order
# sqrt(25 * 100) * 6e-8 = 3e-6 of the array's scale are expected; measured
# values are 1e-7 to 5e-6. 2e-5 leaves room without hiding a real bug
# (a wrong index or a missing term changes results by > 1e-3).
TOL32 = 2e-5


@pytest.mark.parametrize("K,m,T,sig", [(80, 100, 25, 0.01), (80, 100, 25, 0.1), (5, 3, 1, 0.3), (40, 64, 50, 0.05)])
def test_float32_gradients_track_float64(K, m, T, sig):
    p64, X, Y, h0 = problem(K, m, T, seed=K + m, sig=sig)
    p32 = copy_params(p64, np.float32)
    loss64, g64, h64 = cx.loss_and_grads(p64, X, Y, h0)
    loss32, g32, h32 = cx.loss_and_grads(p32, X, Y, h0.astype(np.float32))
    assert isinstance(loss32, float)
    assert abs(loss32 - loss64) <= TOL32 * loss64
    assert h32.dtype == np.float32 and max_scaled_err(h32, h64) <= TOL32
    for name in PARAM_NAMES:
        assert g32[name].dtype == np.float32
        assert max_scaled_err(g32[name], g64[name]) <= TOL32, name


def test_float32_training_tracks_float64():
    K, m, T = 30, 32, 25
    data = (np.arange(3000) * 7 % 23 + np.arange(3000) // 11 % 7).astype(np.uint8)  # a learnable pattern
    p64 = cx.init_params(K, m, seed=2)
    p32 = copy_params(p64, np.float32)
    l64, *_ = cx.train_steps(p64, zeros_like_params(p64), data, n_steps=300, seq_length=T)
    l32, h32, *_ = cx.train_steps(p32, zeros_like_params(p32), data, n_steps=300, seq_length=T)
    assert l32.dtype == np.float32 and h32.dtype == np.float32
    # The first loss is a plain forward pass: float32 rounding only.
    assert abs(l32[0] - l64[0]) <= TOL32 * l64[0]
    # Afterwards AdaGrad divides small gradients by sqrt(M + 1e-8) ~ 1e-4, so
    # float32 rounding of a near-zero gradient entry (~1e-7 absolute) moves its
    # parameter by up to ~1e-3 differently: the two runs follow different but
    # equally good trajectories. Their learning curves must still agree.
    end64, end32 = l64[-50:].mean(), l32[-50:].mean()
    assert end64 < 0.2 * l64[0] and end32 < 0.2 * l64[0]
    assert abs(end32 - end64) <= 0.1 * end64


def test_float32_sampling_runs_and_matches_float64_mostly():
    p64 = cx.init_params(20, 16, sig=0.5, seed=3)
    p32 = copy_params(p64, np.float32)
    s64, _ = cx.sample(p64, None, [1], 500, 1.0, 7)
    s32, h32 = cx.sample(p32, None, [1], 500, 1.0, 7)
    assert h32.dtype == np.float32
    # Same RNG stream and nearly the same probabilities: the texts agree until
    # a draw lands within ~1e-7 of a CDF boundary, which is rare.
    assert np.mean(s64[:100] == s32[:100]) > 0.9
