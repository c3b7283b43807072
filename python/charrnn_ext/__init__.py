"""charrnn_ext: character-level recurrent networks with a C++ core.

The numerical kernels (forward pass, BPTT, clipped AdaGrad, sampling) are C++;
everything around them (data, checks, training loop, reports) is Python.
"""
from ._core import evaluate_loss, loss_and_grads, sample, train_step, train_steps
from ._core import net_evaluate_loss, net_loss_and_grads, net_sample, net_train_steps
from .gradcheck import GradCheckReport, check_gradients, check_net_gradients, gradient_check
from .nets import CELLS, OPTIMIZERS, init_opt_state, net_init, net_param_shapes, net_zero_state
from .params import PARAM_NAMES, init_params, zeros_like_params

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "OPTIMIZERS",
    "check_net_gradients",
    "init_opt_state",
    "net_evaluate_loss",
    "net_init",
    "net_loss_and_grads",
    "net_param_shapes",
    "net_sample",
    "net_train_steps",
    "net_zero_state",
    "PARAM_NAMES",
    "GradCheckReport",
    "check_gradients",
    "evaluate_loss",
    "gradient_check",
    "init_params",
    "loss_and_grads",
    "sample",
    "train_step",
    "train_steps",
    "zeros_like_params",
]
