"""The user-facing model: a vocabulary, the parameter arrays and (once
trained) the training state, with fit / sample / save / load.

Parameters are kept under their network names (:mod:`charrnn_ext.layout`);
the classic vanilla RNN is ``cell="rnn", layers=1`` (the default), whose
U, W, V, b, c are ``l0.Wx``, ``l0.Wh``, ``V``, ``l0.b``, ``c``
(:func:`charrnn_ext.layout.to_classic` gives the classic names).

Typical use::

    import charrnn_ext as cx

    corpus = cx.load_corpus("input.txt")
    model = cx.CharRNN.new(corpus, hidden=100, seed=0)
    result = model.fit(corpus, steps=20000, out="runs/first")
    print(model.sample(300, prime="ROMEO:", seed=1))
    model.save("model.npz")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import engine
from .checkpoint import load_checkpoint, save_checkpoint
from .config import default, option, precision_of
from .data import Corpus, Vocabulary, corpus_from_string
from .layout import copy_params, describe, from_classic, is_classic, net_init
from .resources import check_fits, model_bytes
from .sampling import sample_pieces, sample_text
from .state import Checkpoint, TrainState
from .tracing import DEFAULT_TOP_K, Trace, trace_text
from .training import Trainer, TrainResult

__all__ = ["CharRNN"]


class CharRNN:
    """A character-level recurrent network (the classic vanilla RNN by default).

    Attributes: ``vocab`` (:class:`~charrnn_ext.data.Vocabulary`), ``cell``
    ('rnn', 'lstm' or 'gru'), ``layers``, ``params`` (dict of arrays under
    the network names), ``sig``, ``forget_bias`` and ``seed`` (initialisation;
    the seed also drives the samples and the dropout masks of training) and
    ``state`` (:class:`~charrnn_ext.state.TrainState`, None before training).
    """

    def __init__(
        self,
        vocab: Vocabulary,
        params: dict[str, np.ndarray],
        *,
        sig: float = default("sig"),
        seed: int = default("seed"),
        state: TrainState | None = None,
        start_h: np.ndarray | None = None,
        forget_bias: float = default("forget_bias"),
        precision: str = "full",
    ):
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a charrnn_ext.data.Vocabulary, got {type(vocab).__name__}")
        params = from_classic(params)
        cell, K, _m, layers = describe(params)
        if K != vocab.size:
            raise ValueError(f"parameters are for K={K} characters but the vocabulary has {vocab.size}")
        self.vocab = vocab
        self.params = params
        self.cell, self.layers = cell, layers
        self.sig = option("sig").check(sig)
        self.forget_bias = option("forget_bias").check(forget_bias)
        self.seed = option("seed").check(seed)
        self.state = state
        self.start_h = start_h
        if precision not in ("full", "bfloat16"):
            raise ValueError(f"precision must be 'full' or 'bfloat16', got {precision!r}")
        if precision == "bfloat16" and self.dtype != np.float32:
            raise ValueError(f"bfloat16 training needs float32 parameters, got {self.dtype}")
        #: the matrix products of training: 'full' (the parameters' type) or
        #: 'bfloat16' (float32 master weights); sampling, evaluation and export
        #: always compute in the parameters' type
        self.precision = precision

    # -- construction -------------------------------------------------------------

    @classmethod
    def new(
        cls,
        vocab: Vocabulary | Corpus,
        hidden: int = default("hidden"),
        sig: float = default("sig"),
        seed: int = default("seed"),
        dtype: npt.DTypeLike = default("dtype"),
        *,
        cell: str = default("cell"),
        layers: int = default("layers"),
        forget_bias: float = default("forget_bias"),
    ) -> CharRNN:
        """A freshly initialised model (biases 0, weights ~ N(0, sig^2); an
        LSTM's forget-gate bias is ``forget_bias``). ``vocab`` may be a
        :class:`~charrnn_ext.data.Corpus` (its vocabulary is used)."""
        if isinstance(vocab, Corpus):
            vocab = vocab.vocab
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a Vocabulary or a Corpus, got {type(vocab).__name__}")
        hidden = option("hidden").check(hidden)
        layers = option("layers").check(layers)
        cell = option("cell").check(cell)
        seed = option("seed").check(seed)
        sig = option("sig").check(sig)
        dt: np.dtype[Any]
        if isinstance(dtype, str) and dtype == "bfloat16":
            dt, precision = np.dtype(np.float32), "bfloat16"
        else:
            dt, precision = np.dtype(dtype), "full"
            option("dtype").check(str(dt) if dt.kind == "f" else repr(dtype))
        check_fits(
            f"a {cell} network of {layers} x {hidden} units ({dt})",
            model_bytes(cell, vocab.size, hidden, layers, str(dt)),
            "choose a smaller --hidden or --layers",
        )
        params = net_init(cell, vocab.size, hidden, layers, sig, seed=seed, dtype=dt, forget_bias=forget_bias)
        return cls(vocab, params, sig=sig, seed=seed, forget_bias=forget_bias, precision=precision)

    # -- properties ---------------------------------------------------------------

    @property
    def K(self) -> int:
        """Vocabulary size."""
        return self.vocab.size

    @property
    def classic(self) -> bool:
        """True for the classic one-layer vanilla RNN."""
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
        return (
            f"CharRNN(cell={self.cell!r}, layers={self.layers}, K={self.K}, hidden={self.hidden}, "
            f"dtype={self.meta()['dtype']}, step={self.step}, seed={self.seed})"
        )

    def meta(self) -> dict[str, Any]:
        """The model options, as stored in checkpoints and config.json."""
        return {
            "hidden": self.hidden,
            "K": self.K,
            "sig": self.sig,
            "seed": self.seed,
            "dtype": "bfloat16" if self.precision == "bfloat16" else str(self.dtype),
            "cell": self.cell,
            "layers": self.layers,
            "forget_bias": self.forget_bias,
        }

    # -- training -----------------------------------------------------------------

    def fit(
        self,
        data: str | os.PathLike[str] | Corpus | None = None,
        steps: int | None = None,
        epochs: float | None = None,
        *,
        out: str | os.PathLike[str] | None = None,
        callback: Callable[[Any], None] | None = None,
        progress: bool = False,
        max_steps: int | None = None,
        max_minutes: float | None = None,
        force: bool = False,
        **config: Any,
    ) -> TrainResult:
        """Train for ``steps`` more updates (or ``epochs`` more passes over the
        training split; default 2 epochs) and return a
        :class:`~charrnn_ext.training.TrainResult`.

        ``data``: a :class:`~charrnn_ext.data.Corpus`, a path to a UTF-8 file,
        a ``str`` that names an existing file (else it is the text itself),
        or None for the built-in Shakespeare corpus. ``out``: a run folder
        (:mod:`charrnn_ext.runfolder`). ``callback(progress)`` is called at
        every record point and may raise
        :class:`~charrnn_ext.training.StopTraining`. ``max_steps`` stops this
        call after that many updates (continue with :meth:`resume`);
        ``max_minutes`` is the run's training-time budget. ``force`` lets a
        new run write into a folder that holds other files (only the run's
        own files are replaced). Other keyword
        arguments are training options (:class:`~charrnn_ext.config.TrainConfig`);
        unset ones keep the values of the previous fit or the defaults.

        Calling fit again continues training on the same text (a different
        text is refused unless :meth:`reset_training` is called first).
        KeyboardInterrupt and SIGTERM save the run folder.
        """
        run_info = config.pop("run_info", None)
        trainer = Trainer(
            self, data, out=out, callback=callback, progress=progress, run_info=run_info, force=force, **config
        )
        return trainer.run(steps=steps, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes)

    def resume(
        self,
        data: str | os.PathLike[str] | Corpus | None = None,
        *,
        total_steps: int | None = None,
        out: str | os.PathLike[str] | None = None,
        callback: Callable[[Any], None] | None = None,
        progress: bool = False,
        max_steps: int | None = None,
        max_minutes: float | None = None,
        threads: int | None = None,
    ) -> TrainResult:
        """Continue an interrupted run up to its target (or ``total_steps``).
        ``data`` None means the text the run was trained on (the stored path,
        or the built-in corpus); a different text is refused. ``threads`` may
        change (results do not depend on it)."""
        if self.state is None:
            raise ValueError("this model has no training state to resume; use fit()")
        extra: dict[str, Any] = {} if threads is None else {"threads": threads}
        trainer = Trainer(self, data, out=out, callback=callback, progress=progress, resume=True, **extra)
        return trainer.run(total_steps=total_steps, max_steps=max_steps, max_minutes=max_minutes)

    def reset_training(self) -> None:
        """Forget the optimiser state and step counter (keeps the parameters)."""
        self.state = None

    # -- inference ----------------------------------------------------------------

    @property
    def start_state(self) -> np.ndarray | None:
        """The (layers, S*m) state sampling and :meth:`loss` start from: the
        running training state of stream 0 (or the one stored with the
        checkpoint); None means zeros. Training resets the state only at the
        start of an epoch, so a network early in training may work well only
        from states like the ones it was trained in."""
        if self.state is not None:
            return self.state.h[0]
        return self.start_h

    def sample(
        self,
        n: int,
        temperature: float = default("temperature"),
        prime: str | None = None,
        seed: int | None = None,
        top_k: int = default("top_k"),
        top_p: float = default("top_p"),
        greedy: bool = default("greedy"),
    ) -> str:
        """Synthesise ``n`` characters and return them (without the prime).

        The network starts from :attr:`start_state` and reads ``prime`` (every
        character must be in the vocabulary); without a prime it reads a
        newline (or the first vocabulary character). ``seed`` None draws a
        random seed; the same seed gives the same text. ``top_k`` > 0 draws
        only among the k most probable characters, ``top_p`` < 1 only from the
        smallest set holding that much probability, ``greedy`` always takes
        the most probable one."""
        return sample_text(
            self.params,
            self.vocab,
            n,
            temperature=temperature,
            prime=prime,
            seed=seed,
            h0=self.start_state,
            top_k=top_k,
            top_p=top_p,
            greedy=greedy,
        )

    def sample_stream(
        self,
        n: int,
        temperature: float = default("temperature"),
        prime: str | None = None,
        seed: int | None = None,
        *,
        top_k: int = default("top_k"),
        top_p: float = default("top_p"),
        greedy: bool = default("greedy"),
        piece: int = 256,
    ):
        """Like :meth:`sample`, but yields the text in pieces of at most
        ``piece`` characters as it is generated."""
        return sample_pieces(
            self.params,
            self.vocab,
            n,
            temperature=temperature,
            prime=prime,
            seed=seed,
            h0=self.start_state,
            top_k=top_k,
            top_p=top_p,
            greedy=greedy,
            piece=piece,
        )

    def loss(self, text: str, batch_size: int = default("batch_size"), threads: int = default("threads")) -> float:
        """Loss per character of predicting text[1:] from text[:-1], from :attr:`start_state`."""
        data = corpus_from_string(text, 0.0, self.vocab).train
        total, _ = engine.evaluate_loss(self.params, data, self.start_state, batch_size=batch_size, threads=threads)
        return float(total) / (len(data) - 1)

    def trace(
        self,
        text: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        states: bool = True,
        batch_size: int = default("batch_size"),
        threads: int = default("threads"),
    ) -> Trace:
        """What the network computes at every character of ``text``, from
        :attr:`start_state` like :meth:`loss`, in one call of the C++ engine:
        a :class:`~charrnn_ext.tracing.Trace` with, for every position i
        (having read text[i], predicting text[i + 1]), the probability of the
        actual next character and its surprisal in bits, the ``top_k`` most
        probable next characters, and every layer's hidden state (and an
        LSTM's cell state) unless ``states`` is False. The mean of its
        ``nll`` is ``self.loss(text, batch_size)``. Characters outside the
        vocabulary raise ValueError naming them."""
        return trace_text(
            self.params,
            self.vocab,
            text,
            self.start_state,
            top_k=top_k,
            states=states,
            batch_size=batch_size,
            threads=threads,
        )

    # -- persistence --------------------------------------------------------------

    def to_checkpoint(self, include_state: bool = True, **extra_meta: Any) -> Checkpoint:
        return Checkpoint(
            vocab=self.vocab,
            params=self.params,
            meta={**self.meta(), **extra_meta},
            state=self.state if include_state else None,
            start_h=self.start_state,
        )

    def save(self, path: str | os.PathLike[str], include_state: bool = True) -> Path:
        """Write an .npz checkpoint atomically, with the training state (if
        any) unless ``include_state`` is False."""
        return save_checkpoint(path, self.to_checkpoint(include_state))

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> CharRNN:
        meta = ckpt.meta
        return cls(
            ckpt.vocab,
            ckpt.params,
            sig=float(meta.get("sig", default("sig"))),
            seed=int(meta.get("seed", default("seed"))),
            state=ckpt.state,
            start_h=ckpt.start_h,
            forget_bias=float(meta.get("forget_bias", default("forget_bias"))),
            precision=precision_of(str(meta.get("dtype", ""))),
        )

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
        return CharRNN(
            self.vocab,
            copy_params(self.params),
            sig=self.sig,
            seed=self.seed,
            state=None,
            start_h=None if h is None else h.copy(),
            forget_bias=self.forget_bias,
            precision=self.precision,
        )
