"""charrnn_ext: character-level recurrent networks with a C++ core.

Forward pass, backpropagation through time, the optimisers, evaluation and
sampling are one C++ engine (:mod:`charrnn_ext.engine` gives its functions
with their defaults); text, checks, the training loop, checkpoints and
reports are Python.

A trained model also runs elsewhere: :func:`save_onnx` writes an ONNX model
(needs the ``[onnx]`` extra) and :mod:`charrnn_ext.torch` turns a checkpoint
into a PyTorch module (needs ``[torch]``; not imported by this package).
:func:`sweep` searches training options with Optuna on a Dask cluster
(needs ``[sweep]``; Optuna and Dask are imported when a sweep starts).
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import CELLS, CLIP_MODES, OPTIMIZERS, OPTIONS, PRESETS, TrainConfig
from .data import Corpus, Vocabulary, builtin_corpus, load_corpus, load_text
from .engine import evaluate_loss, loss_and_grads, numerical_grads, sample, simd_level, train_step, train_steps
from .export.onnx import onnx_model, save_onnx
from .gradcheck import GradCheckReport, check_gradients, gradient_check
from .layout import (
    PARAM_NAMES,
    copy_params,
    from_classic,
    init_opt_state,
    init_params,
    net_init,
    param_shapes,
    to_classic,
    zero_state,
    zeros_like_params,
)
from .model import CharRNN
from .runfolder import write_report
from .state import Checkpoint, TrainState
from .sweeps.run import sweep
from .tracing import Trace
from .training import Progress, StopTraining, Trainer, TrainingDiverged, TrainResult
from .version import package_version

__version__ = package_version()

__all__ = [
    "CELLS",
    "CLIP_MODES",
    "OPTIMIZERS",
    "OPTIONS",
    "PARAM_NAMES",
    "PRESETS",
    "CharRNN",
    "Checkpoint",
    "CheckpointError",
    "Corpus",
    "GradCheckReport",
    "Progress",
    "StopTraining",
    "Trace",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "Vocabulary",
    "builtin_corpus",
    "check_gradients",
    "copy_params",
    "evaluate_loss",
    "from_classic",
    "gradient_check",
    "init_opt_state",
    "init_params",
    "load_checkpoint",
    "load_corpus",
    "load_text",
    "loss_and_grads",
    "net_init",
    "numerical_grads",
    "onnx_model",
    "param_shapes",
    "sample",
    "save_checkpoint",
    "save_onnx",
    "simd_level",
    "sweep",
    "to_classic",
    "train_step",
    "train_steps",
    "write_report",
    "zero_state",
    "zeros_like_params",
]
