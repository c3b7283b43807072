"""charrnn_ext: character-level recurrent networks with a C++ core.

The numerical kernels (forward pass, BPTT, clipped AdaGrad, sampling) are C++;
everything around them (data, checks, training loop, reports) is Python.
"""
from ._core import (
    evaluate_loss,
    loss_and_grads,
    loss_and_grads_batched,
    sample,
    simd_level,
    train_step,
    train_steps,
    train_steps_batched,
)
from .gradcheck import GradCheckReport, check_gradients, gradient_check
from .params import PARAM_NAMES, init_params, zeros_like_params

__version__ = "0.1.0"

__all__ = [
    "PARAM_NAMES",
    "GradCheckReport",
    "check_gradients",
    "evaluate_loss",
    "gradient_check",
    "init_params",
    "loss_and_grads",
    "loss_and_grads_batched",
    "sample",
    "simd_level",
    "train_step",
    "train_steps",
    "train_steps_batched",
    "zeros_like_params",
]
