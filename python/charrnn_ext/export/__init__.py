"""Models out of the package: a checkpoint as an ONNX model (:mod:`.onnx`,
needs the ``[onnx]`` extra) or as a PyTorch module (:mod:`.torch`, needs
``[torch]``; also importable as :mod:`charrnn_ext.torch`).

Importing this package imports neither onnx nor torch: :mod:`.onnx` imports
onnx when a model is built, and :mod:`.torch` (which imports torch) is
imported only by its users.
"""
