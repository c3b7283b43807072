"""charrnn_ext: character-level recurrent networks with a C++ core.

The numerical kernels (forward pass, BPTT, clipped AdaGrad, sampling) are C++;
everything around them (data, checks, training loop, reports) is Python.
"""
from ._core import evaluate_loss, loss_and_grads, sample, train_step, train_steps
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Corpus, Vocabulary, builtin_corpus, load_corpus, load_text
from .gradcheck import GradCheckReport, check_gradients, gradient_check
from .model import CharRNN
from .params import PARAM_NAMES, init_params, zeros_like_params
from .report import write_report
from .training import Progress, StopTraining, TrainConfig, Trainer, TrainingDiverged, TrainResult

__version__ = "0.1.0"

__all__ = [
    "PARAM_NAMES",
    "CharRNN",
    "CheckpointError",
    "Corpus",
    "GradCheckReport",
    "Progress",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "Vocabulary",
    "builtin_corpus",
    "load_checkpoint",
    "load_corpus",
    "load_text",
    "save_checkpoint",
    "write_report",
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
