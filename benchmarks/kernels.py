"""The float32 kernels against this machine's float32 matrix-product peak,
in one run: the peak is a large square product by PyTorch (or NumPy's BLAS
without torch) on one thread, timed before and after the kernel table of
benchmarks/bf16_gemm.cpp (one product at each of the engine's shapes, by
every kernel this CPU has), which is built against cpp/ with the
extension's compiler flags.

    python -m benchmarks.kernels             # about a minute
    python -m benchmarks.kernels --readme    # ... and write it into benchmarks/README.md

Each kernel figure is the best of 5 repeats of >= 0.2 s (bf16_gemm.cpp);
the peak, the best of 5 products at each of its two times. The share of
the peak is taken against the higher of the two.
"""

from __future__ import annotations

import os

# one BLAS thread, and the OpenBLAS tuning variables recorded and unset for this process only
OPENBLAS_ENV = {k: os.environ.pop(k, None) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .profile import build
from .step import README, machine_description
from .tables import write_block


def peak_gflops(n: int) -> tuple[float, str]:
    """Best of 5 float32 products n x n x n on one thread, and what ran them."""
    try:
        import torch

        torch.set_num_threads(1)
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm, who = (lambda: torch.mm(a, b)), f"torch {torch.__version__} torch.mm"
    except ImportError:
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
        mm, who = (lambda: x @ y), f"numpy {np.__version__} matmul"
    mm()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9, who


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    args = ap.parse_args(argv)
    n = 2048
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    out(f"Command: `python -m benchmarks.kernels`. Machine: {machine_description()}.")
    out()
    before, who = peak_gflops(n)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([str(build(Path(tmp), "bf16_gemm.cpp"))], check=True, capture_output=True, text=True)
    after, _ = peak_gflops(n)
    peak = max(before, after)
    out(f"float32 peak: {who}, n = {n}, one thread: {before:.0f} GFLOP/s before the table, {after:.0f} after.")
    out()
    for line in done.stdout.splitlines():
        cells = line.split("|")
        if line.startswith("| product"):
            line = line + " float32 share of the peak |"
        elif line.startswith("|---"):
            line = line + "---:|"
        elif line.startswith("| ") and len(cells) > 4:
            line = line + f" {float(cells[3]) / peak:.0%} |"
        out(line)
    if args.readme:
        write_block(README, "kernels", "\n".join(lines), "Benchmarks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
