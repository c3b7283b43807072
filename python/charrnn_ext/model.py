"""The user-facing model: a vocabulary, the parameter arrays and (once
trained) the optimiser state, with fit / sample / save / load.

A one-layer vanilla RNN (``cell="rnn", layers=1``, the default) keeps the
classic U, W, V, b, c parameters; LSTM, GRU and stacked networks use the
layout of :mod:`charrnn_ext.nets`.

Typical use::

    from charrnn_ext.data import load_corpus
    from charrnn_ext.model import CharRNN

    corpus = load_corpus("input.txt")
    model = CharRNN.new(corpus.vocab, hidden=100, seed=0)
    result = model.fit(corpus, steps=20000, out="runs/first")
    print(model.sample(300, prime="ROMEO:", seed=1))
    model.save("model.npz")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from . import _core
from .checkpoint import Checkpoint, TrainState, is_classic, load_checkpoint, model_spec, save_checkpoint
from .data import Corpus, Vocabulary, corpus_from_string
from .nets import CELLS, copy_net_params, net_dims, net_init
from .params import copy_params, dims, init_params
from .sampling import sample_pieces, sample_text

__all__ = ["CharRNN"]


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


class CharRNN:
    """A character-level recurrent network (vanilla RNN by default).

    Attributes: ``vocab`` (:class:`~charrnn_ext.data.Vocabulary`), ``cell``
    ('rnn', 'lstm' or 'gru'), ``layers``, ``params`` (dict of U, W, V, b, c
    for a one-layer rnn, else keyed as in :mod:`charrnn_ext.nets`), ``sig``,
    ``forget_bias`` and ``seed`` (initialisation; the seed also drives the
    samples taken during training) and ``state``
    (:class:`~charrnn_ext.checkpoint.TrainState` or None before training).
    """

    def __init__(self, vocab: Vocabulary, params: dict[str, np.ndarray], *, sig: float = 0.01, seed: int = 0,
                 state: TrainState | None = None, start_h: np.ndarray | None = None, cell: str = "rnn",
                 layers: int = 1, forget_bias: float = 1.0):
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a charrnn_ext.data.Vocabulary, got {type(vocab).__name__}")
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(map(repr, CELLS))}")
        self.cell = cell
        self.layers = int(layers)
        if self.classic:
            K, m = dims(params)
        else:
            K, m, n_layers = net_dims(params)
            if n_layers != self.layers:
                raise ValueError(f"parameters have {n_layers} layers, expected {self.layers}")
        if K != vocab.size:
            raise ValueError(f"parameters are for K={K} characters but the vocabulary has {vocab.size}")
        self.vocab = vocab
        self.params = params
        self.sig = float(sig)
        self.forget_bias = float(forget_bias)
        self.seed = _check_seed(seed)
        self.state = state
        self.start_h = start_h

    # -- construction -------------------------------------------------------

    @classmethod
    def new(cls, vocab: Vocabulary | Corpus, hidden: int = 100, sig: float = 0.01, seed: int = 0,
            dtype: npt.DTypeLike = np.float64, *, cell: str = "rnn", layers: int = 1,
            forget_bias: float = 1.0) -> CharRNN:
        """A freshly initialised model (biases 0, weights ~ N(0, sig^2); an
        LSTM's forget-gate bias is ``forget_bias``).

        ``vocab`` may also be a :class:`~charrnn_ext.data.Corpus` (its vocabulary is used).
        ``cell`` is 'rnn', 'lstm' or 'gru'; ``layers`` stacks that many cells.
        """
        if isinstance(vocab, Corpus):
            vocab = vocab.vocab
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a Vocabulary or a Corpus, got {type(vocab).__name__}")
        if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(map(repr, CELLS))}")
        seed = _check_seed(seed)
        if is_classic(cell, layers):
            params = init_params(vocab.size, int(hidden), sig, seed=seed, dtype=dtype)
        else:
            params = net_init(cell, vocab.size, int(hidden), int(layers), sig, seed=seed, dtype=dtype,
                              forget_bias=forget_bias)
        return cls(vocab, params, sig=sig, seed=seed, cell=cell, layers=int(layers), forget_bias=forget_bias)

    # -- properties ---------------------------------------------------------

    @property
    def K(self) -> int:
        """Vocabulary size."""
        return self.vocab.size

    @property
    def classic(self) -> bool:
        """True for a one-layer vanilla RNN (parameters U, W, V, b, c)."""
        return is_classic(self.cell, self.layers)

    @property
    def hidden(self) -> int:
        """Hidden size m."""
        return int(np.shape(self.params["V"])[1])

    @property
    def dtype(self) -> np.dtype:
        return self.params["V"].dtype

    @property
    def n_params(self) -> int:
        """Number of trainable numbers."""
        return int(sum(a.size for a in self.params.values()))

    @property
    def step(self) -> int:
        """Number of training updates applied so far."""
        return 0 if self.state is None else self.state.step

    def __repr__(self) -> str:
        net = "" if self.classic else f"cell={self.cell!r}, layers={self.layers}, "
        return (f"CharRNN({net}K={self.K}, hidden={self.hidden}, dtype={self.dtype}, step={self.step}, "
                f"seed={self.seed})")

    def meta(self) -> dict[str, Any]:
        """Model hyper-parameters as stored in checkpoints."""
        return {"hidden": self.hidden, "K": self.K, "sig": self.sig, "seed": self.seed, "dtype": str(self.dtype),
                "cell": self.cell, "layers": self.layers, "forget_bias": self.forget_bias}

    # -- training -----------------------------------------------------------

    def fit(self, data: str | os.PathLike[str] | Corpus | None = None, steps: int | None = None,
            epochs: float | None = None, *, out: str | os.PathLike[str] | None = None,
            callback: Callable[[Any], None] | None = None, progress: bool = False,
            max_steps: int | None = None, max_minutes: float | None = None, **config: Any):
        """Train for ``steps`` more updates (or ``epochs`` more passes over the
        training split; default 2 epochs) and return a
        :class:`~charrnn_ext.training.TrainResult`.

        ``data``: a :class:`~charrnn_ext.data.Corpus`, a ``pathlib.Path`` to a
        UTF-8 file, a ``str`` that names an existing file (else it is the text
        itself), or None for the built-in Shakespeare corpus. A text is encoded
        with the model's vocabulary and split with ``val_fraction``.

        ``out``: run folder receiving metrics.csv, samples.md, loss.png,
        last.npz, best.npz, config.json, gradcheck.md and report.md.
        ``callback(record)`` is called with a
        :class:`~charrnn_ext.training.Progress` at every log point; it may
        raise :class:`~charrnn_ext.training.StopTraining` to stop early (the
        state is saved and can be continued). ``max_steps`` stops after that
        many updates of this call while the run's target stays
        ``steps``/``epochs`` (continue with :meth:`resume`). Other keyword
        arguments set :class:`~charrnn_ext.training.TrainConfig` fields
        (seq_length, eta, clip, eps, optimizer, clip_mode, gamma, beta1,
        beta2, lr_decay, lr_decay_every, batch_size, threads, log_every,
        sample_every, val_fraction, val_chars, ...); unset ones keep the
        values of the previous fit or the defaults. ``max_minutes`` ends the
        run (finished, with the final evaluation) once that much wall-clock
        time has passed.

        Calling fit again continues training (same optimiser state, position
        in the text and step counter) on the same text; a different text is
        refused unless :meth:`reset_training` is called first.
        KeyboardInterrupt saves the run folder and is re-raised.
        """
        from .training import Trainer

        trainer = Trainer(self, data, out=out, callback=callback, progress=progress, **config)
        return trainer.run(steps=steps, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes)

    def resume(self, data: str | os.PathLike[str] | Corpus | None = None, *, total_steps: int | None = None,
               out: str | os.PathLike[str] | None = None, callback: Callable[[Any], None] | None = None,
               progress: bool = False, max_steps: int | None = None, max_minutes: float | None = None):
        """Continue an interrupted run up to its target (or ``total_steps``).

        ``data`` None means the text the run was trained on (the stored file
        path, or the built-in corpus); a different text is refused.
        """
        from .training import Trainer

        if self.state is None:
            raise ValueError("this model has no training state to resume; use fit()")
        trainer = Trainer(self, data, out=out, callback=callback, progress=progress, resume=True)
        return trainer.run(total_steps=total_steps, max_steps=max_steps, max_minutes=max_minutes)

    def reset_training(self) -> None:
        """Forget the optimiser state and step counter (keeps the parameters)."""
        self.state = None

    # -- inference ----------------------------------------------------------

    @property
    def start_state(self) -> np.ndarray | None:
        """Hidden state that sampling and :meth:`loss` start from: the running
        training state (or the one stored with the checkpoint), None = zeros.

        Training resets the state to zero only at the start of an epoch, so a
        network early in training may work well only from states like the
        ones it was trained in; starting from zero can then give poor text.
        """
        if self.state is not None:
            h = self.state.h
            return h[0] if self.classic and h.ndim == 2 else h  # batched run: stream 0
        return self.start_h

    def sample(self, n: int, temperature: float = 1.0, prime: str | None = None, seed: int | None = None,
               top_k: int = 0, top_p: float = 1.0, greedy: bool = False) -> str:
        """Synthesise ``n`` characters and return them (without the prime).

        The network starts from :attr:`start_state` (the training hidden state
        saved with the parameters; zeros for a fresh model) and reads ``prime`` (a
        string; every character must be in the vocabulary, else ValueError);
        without a prime it reads a newline (or the first vocabulary character).
        ``seed`` None draws a random seed; the same seed gives the same text.
        ``top_k`` > 0 draws only among the k most probable characters,
        ``top_p`` < 1 only from the smallest set holding that much probability,
        ``greedy`` always takes the most probable one.
        """
        return sample_text(self.params, self.vocab, n, temperature=temperature, prime=prime, seed=seed,
                           h0=self.start_state, top_k=top_k, top_p=top_p, greedy=greedy,
                           cell=None if self.classic else self.cell)

    def sample_stream(self, n: int, temperature: float = 1.0, prime: str | None = None, seed: int | None = None,
                      *, top_k: int = 0, top_p: float = 1.0, greedy: bool = False, piece: int = 256):
        """Like :meth:`sample`, but yields the text in pieces of at most
        ``piece`` characters as it is generated; the pieces joined equal
        :meth:`sample` with the same arguments."""
        return sample_pieces(self.params, self.vocab, n, temperature=temperature, prime=prime, seed=seed,
                             h0=self.start_state, top_k=top_k, top_p=top_p, greedy=greedy,
                             cell=None if self.classic else self.cell, piece=piece)

    def loss(self, text: str) -> float:
        """Loss per character of predicting text[1:] from text[:-1], from :attr:`start_state`."""
        data = corpus_from_string(text, 0.0, self.vocab).train
        if self.classic:
            total, _ = _core.evaluate_loss(self.params, data, self.start_state)
        else:
            total, _ = _core.net_evaluate_loss(self.cell, self.params, data, self.start_state)
        return float(total) / (len(data) - 1)

    # -- persistence --------------------------------------------------------

    def to_checkpoint(self, include_state: bool = True, **extra_meta: Any) -> Checkpoint:
        state = self.state if include_state else None
        return Checkpoint(vocab=self.vocab, params=self.params, meta={**self.meta(), **extra_meta}, state=state,
                          start_h=self.start_state)

    def save(self, path: str | os.PathLike[str], include_state: bool = True) -> Path:
        """Write an .npz checkpoint (atomically). With the training state (if
        any) unless ``include_state`` is False."""
        return save_checkpoint(path, self.to_checkpoint(include_state))

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> CharRNN:
        meta = ckpt.meta
        cell, layers = model_spec(meta)
        return cls(ckpt.vocab, ckpt.params, sig=float(meta.get("sig", 0.01)), seed=int(meta.get("seed", 0)),
                   state=ckpt.state, start_h=ckpt.start_h, cell=cell, layers=layers,
                   forget_bias=float(meta.get("forget_bias", 1.0)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CharRNN:
        """Load a checkpoint written by :meth:`save` or by training
        (last.npz / best.npz). A run folder means its best.npz."""
        p = Path(path)
        if p.is_dir():
            p = p / "best.npz"
        return cls.from_checkpoint(load_checkpoint(p))

    def copy(self) -> CharRNN:
        h = self.start_state
        params = copy_params(self.params) if self.classic else copy_net_params(self.params)
        return CharRNN(self.vocab, params, sig=self.sig, seed=self.seed, state=None,
                       start_h=None if h is None else h.copy(), cell=self.cell, layers=self.layers,
                       forget_bias=self.forget_bias)
