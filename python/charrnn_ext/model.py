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
from .checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
from .config import default, group, option, precision_of
from .data import Corpus, Vocabulary, corpus_from_string, describe_chars, text_vocabulary
from .layout import copy_params, describe, from_classic, grow_vocab, is_classic, net_init
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
    ``state`` (:class:`~charrnn_ext.state.TrainState`, None before training)
    and ``origin`` (where the parameters came from, for the next run to
    record: the checkpoint :meth:`load` read, with its path, SHA-256 and
    update count, and the characters :meth:`extend_vocab` appended since;
    None for a new model, and once a run has recorded it).
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
        self.origin: dict[str, Any] | None = None

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

        Fine-tuning: on a trained model without a training state (one
        :meth:`load` read from a best.npz, or after :meth:`reset_training`),
        fit starts a new run from its parameters, and the text's characters
        the model has not seen join its vocabulary (:meth:`extend_vocab`).
        The run folder records the checkpoint (path and SHA-256) and the
        characters added.
        """
        run_info = config.pop("run_info", None)
        model_opts = sorted(set(config) & {o.name for o in group("model")})
        if model_opts:
            meta = self.meta()
            raise ValueError(
                "fit() takes training options only; "
                + ", ".join(f"{k} is fixed by the model ({meta[k]!r})" for k in model_opts)
                + " (a model of other dimensions is CharRNN.new(...))"
            )
        if self.state is None and self.origin is not None:  # fine-tuning: new characters join the vocabulary
            self.extend_vocab(text_vocabulary(data).chars)
        try:
            trainer = Trainer(
                self, data, out=out, callback=callback, progress=progress, run_info=run_info, force=force, **config
            )
        except ValueError as exc:
            if self.state is not None and self._has_new_chars(data):
                raise ValueError(
                    f"{exc}. This model holds the training state of a run on another text; call "
                    f"reset_training() first to fine-tune it on this one (its new characters then join the vocabulary)"
                ) from None
            raise
        return trainer.run(steps=steps, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes)

    def _has_new_chars(self, data: Any) -> bool:
        """Whether a training ``data`` argument holds characters outside the vocabulary (False if it is unreadable)."""
        try:
            chars = text_vocabulary(data).chars
        except (OSError, TypeError, ValueError):
            return False
        return self.vocab.extended(chars) is not self.vocab

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

    def extend_vocab(self, chars: str) -> str:
        """Append the characters of ``chars`` that the vocabulary lacks (in
        code-point order) and return them. The known characters keep their
        indices and every weight; each new character's input column (``l0.Wx``),
        output row (``V``) and output bias (``c``) are what a fresh model
        (:meth:`new`, with this model's sig, seed and forget_bias) of the grown
        vocabulary starts with. Nothing changes when every character is known.
        A model holding a training state refuses new characters (its optimiser
        memory is for the old vocabulary): call :meth:`reset_training` first.
        :meth:`fit` does this for a new run's text."""
        grown = self.vocab.extended(chars)
        if grown is self.vocab:
            return ""
        added = grown.chars[self.K :]
        if self.state is not None:
            raise ValueError(
                f"cannot add {len(added)} character(s) ({describe_chars(added)}) to a model that holds the "
                f"training state of its {self.K}-character vocabulary; call reset_training() first (a "
                f"fine-tuning run starts its optimiser afresh)"
            )
        check_fits(
            f"the {self.cell} network of {self.layers} x {self.hidden} units with the vocabulary grown from "
            f"{self.K} to {grown.size} characters",
            2 * model_bytes(self.cell, grown.size, self.hidden, self.layers, str(self.dtype)),
            "fine-tune on a text with fewer distinct characters",
        )
        self.params = grow_vocab(self.params, grown.size, self.sig, self.seed, self.forget_bias)
        if self.origin is not None:
            self.origin["added"] += added
        self.vocab = grown
        return added

    def reset_training(self) -> None:
        """Forget the optimiser state and step counter (keeps the parameters).
        The next :meth:`fit` is then a new run that starts from this trained
        model (fine-tuning): it may be on another text, whose new characters
        join the vocabulary."""
        if self.state is not None and self.state.step > 0 and self.origin is None:
            self.origin = {"path": None, "sha256": None, "step": self.state.step, "kept": self.K, "added": ""}
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
        threads: int = default("threads"),
    ) -> str:
        """Synthesise ``n`` characters and return them (without the prime).

        The network starts from :attr:`start_state` and reads ``prime`` (every
        character must be in the vocabulary); without a prime it reads a
        newline (or the first vocabulary character). ``seed`` None draws a
        random seed; the same seed gives the same text. ``top_k`` > 0 draws
        only among the k most probable characters, ``top_p`` < 1 only from the
        smallest set holding that much probability, ``greedy`` always takes
        the most probable one. Up to ``threads`` threads share each step of a
        large network; the text does not depend on it."""
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
            threads=threads,
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
        threads: int = default("threads"),
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
            threads=threads,
        )

    def loss(
        self,
        text: str,
        batch_size: int = default("batch_size"),
        threads: int = default("threads"),
        precision: str = "full",
    ) -> float:
        """Loss per character of predicting text[1:] from text[:-1], from
        :attr:`start_state`; ``precision`` 'bfloat16' computes the products as
        bfloat16 training does (float32 models)."""
        data = corpus_from_string(text, 0.0, self.vocab).train
        total, _ = engine.evaluate_loss(
            self.params, data, self.start_state, batch_size=batch_size, threads=threads, precision=precision
        )
        return float(total) / (len(data) - 1)

    def trace(
        self,
        text: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        states: bool = True,
        batch_size: int = default("batch_size"),
        threads: int = default("threads"),
        precision: str = "full",
    ) -> Trace:
        """What the network computes at every character of ``text``, from
        :attr:`start_state` like :meth:`loss`, in one call of the C++ engine:
        a :class:`~charrnn_ext.tracing.Trace` with, for every position i
        (having read text[i], predicting text[i + 1]), the probability of the
        actual next character and its surprisal in bits, the ``top_k`` most
        probable next characters, and every layer's hidden state (and an
        LSTM's cell state) unless ``states`` is False. The mean of its
        ``nll`` is ``self.loss(text, batch_size, precision=precision)``.
        Characters outside the vocabulary raise ValueError naming them."""
        return trace_text(
            self.params,
            self.vocab,
            text,
            self.start_state,
            top_k=top_k,
            states=states,
            batch_size=batch_size,
            threads=threads,
            precision=precision,
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
        ckpt = load_checkpoint(p)
        model = cls.from_checkpoint(ckpt)
        step = ckpt.state.step if ckpt.state is not None else ckpt.meta.get("step")
        model.origin = {
            "path": str(p.resolve()),
            "sha256": checkpoint_sha256(p),
            "step": step if isinstance(step, int) and not isinstance(step, bool) else None,
            "kept": model.K,
            "added": "",
        }
        return model

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
