"""A checkpoint as a PyTorch module: the documented short name of
:mod:`charrnn_ext.export.torch`, where the code lives. Importing it needs
torch (``pip install 'charrnn_ext[torch]'``)."""

from .export.torch import EXPORT_FORMAT, EXPORT_VERSION, CharRNNModule, State, save_torch

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "CharRNNModule", "State", "save_torch"]
