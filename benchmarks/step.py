"""Training-step benchmark: the C++ core against the package's NumPy reference trainer.

Run from the repository root:

    python -m benchmarks.step            # full table (a few minutes)
    python -m benchmarks.step --quick    # smoke run for CI: seconds, no assertions

Everything is timed in ONE process so that the ratios compare like with like
on a possibly busy machine: each figure is the best of a few repeats. Rows:
NumPy reference (float64, batch 1), the core's train_steps (float64/float32,
batch 1), train_steps_batched (several batch sizes and thread counts), and
PyTorch CPU when it can be imported. Then sampling of 1,000,000 characters.
"""
from __future__ import annotations

import os

# OpenBLAS tuning variables change what NumPy's reference costs; record them
# and drop them for this process only, before NumPy is imported.
OPENBLAS_ENV = {k: os.environ.pop(k, None) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
# The reference is single-threaded NumPy (the classic per-timestep mat-vecs
# are too small for a BLAS thread pool to help, and an idle pool spinning in the
# background would steal the core the two-thread rows need). Override with
# CHARRNN_BENCH_BLAS_THREADS.
BLAS_THREADS = os.environ.get("CHARRNN_BENCH_BLAS_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = BLAS_THREADS

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from charrnn_ext import _core  # noqa: E402
from charrnn_ext import reference  # noqa: E402
from charrnn_ext.params import init_params, zeros_like_params  # noqa: E402

K_DEFAULT = 72
SEQ = 25


def best_time(fn, repeats: int) -> float:
    """Smallest wall time of `repeats` calls of fn() (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def make_text(K: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, K, n).astype(np.int32)


def time_numpy(K, m, steps, repeats):
    """The classic trainer in plain NumPy: charrnn_ext.reference, one
    timestep at a time forward and backward, then clipped AdaGrad."""
    text = make_text(K, 200_000)
    p = init_params(K, m, seed=1)
    s = zeros_like_params(p)
    return best_time(lambda: reference.train_steps(p, s, text, n_steps=steps, seq_length=SEQ), repeats) / steps


def time_core(K, m, dtype, steps, repeats, batch=None, threads=1):
    text = make_text(K, max(200_000, (batch or 1) * (SEQ + 1) * 4))
    p = init_params(K, m, seed=1, dtype=dtype)
    s = zeros_like_params(p)
    if batch is None:
        run = lambda: _core.train_steps(p, s, text, n_steps=steps, seq_length=SEQ)  # noqa: E731
    else:
        run = lambda: _core.train_steps_batched(  # noqa: E731
            p, s, text, n_steps=steps, batch_size=batch, seq_length=SEQ, threads=threads)
    return best_time(run, repeats) / steps


def python_overhead(K, m, steps, repeats):
    """(seconds per step inside one train_steps call, seconds per call spent
    outside the C++ loop). The latter is measured as a call with n_steps=0:
    argument parsing, validation (finiteness of the parameters, index range)
    and building the result tuple -- everything a call pays besides steps."""
    text = make_text(K, 200_000)
    p = init_params(K, m, seed=1)
    s = zeros_like_params(p)
    per_step = best_time(lambda: _core.train_steps(p, s, text, n_steps=steps, seq_length=SEQ), repeats) / steps
    calls = 200
    per_call = best_time(
        lambda: [_core.train_steps(p, s, text, n_steps=0, seq_length=SEQ) for _ in range(calls)], repeats) / calls
    return per_step, per_call


def time_torch(K, m, batch, threads, steps, repeats):
    """The classic trainer in PyTorch (nn.RNN tanh + Linear, Adagrad with
    elementwise clipping), float32, batch-first streams of SEQ characters."""
    try:
        import torch
    except Exception:  # noqa: BLE001 - optional
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rnn = torch.nn.RNN(K, m, nonlinearity="tanh", batch_first=True)
    out = torch.nn.Linear(m, K)
    params = list(rnn.parameters()) + list(out.parameters())
    opt = torch.optim.Adagrad(params, lr=0.1, eps=1e-8)
    eye = torch.eye(K)
    text = torch.from_numpy(make_text(K, batch * (SEQ + 1) * 8).astype(np.int64))
    L = len(text) // batch
    seg = text[: batch * L].view(batch, L)
    h = torch.zeros(1, batch, m)

    def run():
        nonlocal h
        pos = 0
        for _ in range(steps):
            if pos + SEQ + 1 > L:
                pos, h = 0, torch.zeros(1, batch, m)
            x = eye[seg[:, pos:pos + SEQ]]
            y = seg[:, pos + 1:pos + SEQ + 1]
            hs, hT = rnn(x, h)
            loss = torch.nn.functional.cross_entropy(out(hs).reshape(-1, K), y.reshape(-1), reduction="sum")
            opt.zero_grad()
            loss.backward()
            for q in params:
                q.grad.clamp_(-5, 5)
            opt.step()
            h = hT.detach()
            pos += SEQ

    return best_time(run, repeats) / steps


def time_sampling(n_chars: int, m: int = 100, K: int = K_DEFAULT):
    p = init_params(K, m, seed=3)
    return best_time(lambda: _core.sample(p, None, [0], n_chars, 1.0, 0), 1)


# ------------------------------------------------------------------ memory
def measure_train_memory(text_mb: int = 100, steps: int = 200):
    """Peak RSS of `python -m charrnn_ext train` on a generated text of text_mb MB.

    Runs `python -m charrnn_ext train --text FILE --steps N --out DIR` in a
    child process and reads its peak RSS from getrusage(RUSAGE_CHILDREN).
    """
    tmp = tempfile.mkdtemp(prefix="charrnn_mem_")
    try:
        path = os.path.join(tmp, "text.txt")
        rng = np.random.default_rng(0)
        # Two non-Latin-1 characters make a Python str of this text take 2 bytes
        # a character, as real texts with dashes and accents do.
        words = [w.encode() for w in "the of and to in a is that for it as was with be by on not he thé —".split()]
        with open(path, "wb") as f:
            chunk = b" ".join(words[i] for i in rng.integers(0, len(words), 200_000)) + b"\n"
            for _ in range(max(1, text_mb * 1_000_000 // len(chunk))):
                f.write(chunk)
        # ru_maxrss of RUSAGE_CHILDREN is the largest of all children this
        # process ever waited for (torch, say, may start some), so the CLI is
        # started from a fresh intermediate process whose only child it is.
        cli = [sys.executable, "-m", "charrnn_ext", "train", "--text", path, "--steps", str(steps),
               "--out", os.path.join(tmp, "out"), "--no-progress"]
        probe = ("import resource, subprocess, sys; "
                 f"subprocess.run({cli!r}, check=True, capture_output=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                             cwd=tempfile.gettempdir())
        peak_kb = int(out.stdout.split()[-1])
        size_mb = os.path.getsize(path) / 1e6
        return {"text_mb": round(size_mb, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
                "target_mb": round(2 * size_mb + 200, 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ report
def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cxx = "unknown compiler"
    for exe in ("c++", "g++", "clang++"):
        if shutil.which(exe):
            cxx = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
            break
    return (f"{model}, {os.cpu_count()} logical CPUs, load {os.getloadavg()[0]:.2f}; {cxx}; "
            f"kernels: {_core.simd_level()}; numpy {np.__version__}; "
            f"OPENBLAS_CORETYPE={OPENBLAS_ENV['OPENBLAS_CORETYPE']} "
            f"OPENBLAS_L2_SIZE={OPENBLAS_ENV['OPENBLAS_L2_SIZE']} (unset here); BLAS threads {BLAS_THREADS}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (CI): seconds, no timing assertions")
    ap.add_argument("--K", type=int, default=K_DEFAULT)
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS of the training CLI on 100 MB")
    args = ap.parse_args(argv)
    K = args.K
    if args.quick:
        ms, steps, repeats, batches, nsample = [16], 5, 1, [(4, 1), (4, 2)], 10_000
    else:
        ms, steps, repeats, batches, nsample = [50, 100, 256], 200, 3, [(16, 1), (64, 1), (64, 2), (256, 2)], 1_000_000

    print(f"# charrnn_ext training step benchmark (K={K}, T={SEQ})")
    print(machine_description())
    print()
    print("| m | implementation | dtype | batch | threads | ms/step | chars/s | x NumPy ref (chars/s) |")
    print("|---|---|---|---|---|---|---|---|")

    def row(m, name, dtype, batch, threads, sec, ref_cps):
        cps = batch * SEQ / sec
        ratio = cps / ref_cps if ref_cps else float("nan")
        print(f"| {m} | {name} | {dtype} | {batch} | {threads} | {sec * 1e3:.4f} | {cps:,.0f} | {ratio:.1f} |",
              flush=True)

    for m in ms:
        ref_steps = max(5, steps // (10 if m < 256 else 20))
        t_ref = time_numpy(K, m, ref_steps, repeats)
        ref_cps = SEQ / t_ref
        row(m, "NumPy reference", "float64", 1, 1, t_ref, ref_cps)
        for dtype in (np.float64, np.float32):
            row(m, "train_steps", np.dtype(dtype).name, 1, 1, time_core(K, m, dtype, steps, repeats), ref_cps)
        for dtype in (np.float64, np.float32):
            for batch, threads in batches:
                n = max(3, steps * 4 // batch)
                sec = time_core(K, m, dtype, n, repeats, batch=batch, threads=threads)
                row(m, "train_steps_batched", np.dtype(dtype).name, batch, threads, sec, ref_cps)
        for batch, threads in ((1, 1), (batches[-1][0], 2)):
            sec = time_torch(K, m, batch, threads, max(3, steps // (4 * max(1, batch // 16))), repeats)
            if sec is not None:
                row(m, "PyTorch CPU (nn.RNN)", "float32", batch, threads, sec, ref_cps)

    m = 100 if not args.quick else ms[0]
    t1, tc = python_overhead(K, m, steps, repeats)
    print()
    print(f"Python overhead (m={m}, float64): {t1 * 1e6:.1f} us/step inside train_steps; "
          f"{tc * 1e6:.1f} us per call outside the C++ loop = {tc / t1 * 100:.1f}% of one step "
          f"(n_steps=1 per call), {tc / (100 * t1) * 100:.2f}% of the step time at n_steps=100")
    ts = time_sampling(nsample, m=m, K=K)
    print(f"Sampling {nsample:,} chars (m={m}, K={K}, float64): {ts:.3f} s ({nsample / ts:,.0f} chars/s)")
    if args.memory:
        mem = measure_train_memory()
        print(f"Training CLI peak RSS on a {mem['text_mb']} MB text: {mem['peak_rss_mb']} MB "
              f"(target: at most 2 x file + 200 MB = {mem['target_mb']} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
