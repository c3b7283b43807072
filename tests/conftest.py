import os
import signal
import sys
from pathlib import Path

import pytest

# Hypothesis profiles (see helpers.fuzz): "ci" runs every property test at
# full volume, and .ci/run selects it with HYPOTHESIS_PROFILE=ci; "dev", the
# default, runs a fifth of the examples.
try:
    from hypothesis import settings
except ImportError:  # the property tests skip themselves
    pass
else:
    settings.register_profile("ci", max_examples=100)
    settings.register_profile("dev", max_examples=20)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The engine uses fewer threads than asked when a step is too small to share
# (cpp/engine.hpp, team_size). The tests run small networks and must really
# split them between threads, so every thread asked for is used here;
# test_engine_streams.py checks the rule itself with the variable removed.
os.environ["CHARRNN_TEAM"] = "full"

# A test run started in the background by a shell without job control
# inherits SIGINT ignored, and Python then leaves it ignored (and so do the
# child processes the tests start): the tests of Ctrl-C need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Make tests/helpers.py importable as `helpers` without turning tests into a package.
sys.path.insert(0, str(Path(__file__).parent))

# Shared by the workflow tests (test_model/test_training/test_checkpoint/test_cli).
# About 2.3 KB of repetitive English that a tiny model learns in a few hundred
# updates; with seq_length=10 one epoch is 205 updates, so short runs cross epochs.
SMALL_TEXT = ("The cat sat on the mat. The dog sat on the log.\nA bird sang in the tree, and the cat ran away!\n") * 24

# Tiny but complete run settings (T=10, frequent logging and sampling).
TINY = dict(seq_length=10, log_every=20, sample_every=60, val_chars=150)


def pytest_configure(config):
    # Registered here rather than in pyproject.toml so that a copy of tests/
    # run against an installed wheel (.ci/run) knows it too.
    config.addinivalue_line(
        "markers",
        "slow: runs the command in child processes or a large fuzz volume; the fast subset is -m 'not slow'",
    )


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """SMALL_TEXT as a file, for the command line's --text."""
    p = tmp_path_factory.mktemp("text") / "small.txt"
    p.write_text(SMALL_TEXT)
    return p


@pytest.fixture(scope="module")
def run100(tmp_path_factory) -> Path:
    """A finished run folder of the classic model size (100 units), 60 updates."""
    from charrnn_ext.data import corpus_from_string
    from charrnn_ext.model import CharRNN

    out = tmp_path_factory.mktemp("run100") / "run"
    model = CharRNN.new(corpus_from_string(SMALL_TEXT), hidden=100, seed=1)
    model.fit(SMALL_TEXT, steps=60, out=out, **TINY)
    return out


@pytest.fixture
def deadline():
    """A test that could block forever (a FIFO opened for reading, a server
    that never answers) fails after 60 s instead (SIGALRM, main thread)."""
    import signal

    def expired(signum, frame):
        raise TimeoutError("blocked for 60 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
