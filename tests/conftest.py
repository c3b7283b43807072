import sys
from pathlib import Path

# Make tests/helpers.py importable as `helpers` without turning tests into a package.
sys.path.insert(0, str(Path(__file__).parent))

# Shared by the workflow tests (test_model/test_training/test_checkpoint/test_cli).
# About 2.3 KB of repetitive English that a tiny model learns in a few hundred
# updates; with seq_length=10 one epoch is 205 updates, so short runs cross epochs.
SMALL_TEXT = ("The cat sat on the mat. The dog sat on the log.\nA bird sang in the tree, and the cat ran away!\n") * 24

# Tiny but complete run settings (T=10, frequent logging and sampling).
TINY = dict(seq_length=10, log_every=20, sample_every=60, val_chars=150)
