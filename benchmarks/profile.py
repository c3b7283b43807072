"""Where an update's time goes: per-phase timers around the engine's phases
(pack the weights, forward, output layer, backward), from a small C++
program built against cpp/ with the extension's compiler flags.

    python -m benchmarks.profile                      # LSTM 2x256, B=32, T=64, float32, 1 and 2 threads
    python -m benchmarks.profile --dtype bfloat16     # the same with bfloat16 products (the kernel this CPU has)
    python -m benchmarks.profile gru 2 256 32 64      # CELL LAYERS M B T
    python -m benchmarks.profile --quick              # a tiny network: does it build and run (CI)

Medians of 101 updates after 5 of warm-up; GFLOP/s counts the multiply-adds
of the matrix products only. The first line names the CPU and the kernels
(CHARRNN_ISA lowers them, as for the extension).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["-O3", "-std=c++17", "-fno-math-errno", "-ffp-contract=fast", "-Wno-psabi", "-pthread"]


def build(tmp: Path, source: str = "profile_phases.cpp") -> Path:
    """Compiles benchmarks/<source> against cpp/ into tmp; returns the program."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        raise SystemExit("no C++ compiler found")
    exe = tmp / Path(source).stem
    subprocess.run(
        [cxx, *FLAGS, f"-I{ROOT / 'cpp'}", str(Path(__file__).with_name(source)), "-o", str(exe)],
        check=True,
    )
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", nargs="*", default=["lstm", "2", "256", "32", "64"], help="CELL LAYERS M B T")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    ap.add_argument("--quick", action="store_true", help="a tiny LSTM (1 x 16, B=2, T=8): a build-and-run check")
    args = ap.parse_args(argv)
    if args.quick:
        args.shape = ["lstm", "1", "16", "2", "8"]
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        subprocess.run([str(exe), "--machine"], check=True)
        for threads in (1, 2):
            print(
                f"\n{' x '.join(args.shape[:3])}, B={args.shape[3]}, T={args.shape[4]}, {args.dtype}, "
                f"{threads} thread(s)\n"
            )
            print("| phase | ms | GFLOP/s |\n|---|---|---|", flush=True)
            subprocess.run([str(exe), *args.shape, str(threads), args.dtype], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
