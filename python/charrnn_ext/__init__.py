"""charrnn_ext: character-level recurrent networks with a C++ core.

The numerical kernels (forward pass, BPTT, clipped AdaGrad, sampling) are C++;
everything around them (data, checks, training loop, reports) is Python.
"""
from ._core import (
    evaluate_loss,
    loss_and_grads,
    loss_and_grads_batched,
    net_evaluate_loss,
    net_loss_and_grads,
    net_sample,
    net_train_steps,
    sample,
    simd_level,
    train_step,
    train_steps,
    train_steps_batched,
)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Corpus, Vocabulary, builtin_corpus, load_corpus, load_text
from .gradcheck import GradCheckReport, check_gradients, check_net_gradients, gradient_check
from .model import CharRNN
from .nets import CELLS, OPTIMIZERS, init_opt_state, net_init, net_param_shapes, net_zero_state
from .params import PARAM_NAMES, init_params, zeros_like_params
from .report import write_report
from .training import Progress, StopTraining, TrainConfig, Trainer, TrainingDiverged, TrainResult

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "OPTIMIZERS",
    "PARAM_NAMES",
    "CharRNN",
    "CheckpointError",
    "Corpus",
    "GradCheckReport",
    "Progress",
    "StopTraining",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainResult",
    "Vocabulary",
    "builtin_corpus",
    "check_gradients",
    "check_net_gradients",
    "evaluate_loss",
    "gradient_check",
    "init_opt_state",
    "init_params",
    "load_checkpoint",
    "load_corpus",
    "load_text",
    "loss_and_grads",
    "loss_and_grads_batched",
    "net_evaluate_loss",
    "net_init",
    "net_loss_and_grads",
    "net_param_shapes",
    "net_sample",
    "net_train_steps",
    "net_zero_state",
    "sample",
    "save_checkpoint",
    "simd_level",
    "train_step",
    "train_steps",
    "train_steps_batched",
    "write_report",
    "zeros_like_params",
]
