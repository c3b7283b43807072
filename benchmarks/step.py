"""Training-speed benchmark: the one engine against the NumPy reference and PyTorch CPU.

Run from the repository root, with the package installed:

    python -m benchmarks.step                 # the table (about 10 minutes)
    python -m benchmarks.step --readme        # ... and write it into benchmarks/README.md
    python -m benchmarks.step --quick         # smoke run for CI: seconds, no timing assertions
    python -m benchmarks.step --memory        # also the peak RSS of `charrnn train` on 100 MB

Everything is timed in ONE process so that ratios compare like with like on
a possibly busy machine. Every figure is the median of at least 5 repeats
after a warm-up, with the min-max range; every repeat runs long enough
(>= ~0.25 s) to swamp timer and call overheads. The rows of one table
group (one network, or one m, or one B) are timed interleaved: repeat r of
every contestant runs before repeat r + 1 of any, so that a machine whose
speed drifts (a shared virtual machine) slows them alike. Each ratio is against a
baseline timed in the same run: batch-1 rows against the package's NumPy
reference trainer, batched rows against PyTorch CPU training the same
network on the same batch (the peer a user would pick instead): in float32,
and under torch.autocast("cpu", torch.bfloat16), the strongest a user can
write where bfloat16 trains faster (AMX, or AVX512-BF16 on AMD). The machine line names
the CPU model and the kernels that ran (float and bfloat16).
"""

from __future__ import annotations

import os

# OpenBLAS tuning variables change what NumPy's reference costs; record them
# and drop them for this process only, before NumPy is imported.
OPENBLAS_ENV = {k: os.environ.pop(k, None) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
# The NumPy reference is single-threaded (its per-timestep mat-vecs are too
# small for a BLAS thread pool, and an idle pool spinning in the background
# would steal the core the two-thread rows need).
BLAS_THREADS = os.environ.get("CHARRNN_BENCH_BLAS_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = BLAS_THREADS

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import charrnn_ext as cx
from charrnn_ext import reference

from .tables import write_block

K = 80  # the built-in corpus's vocabulary
SEQ = 25  # the classic chunk
README = Path(__file__).with_name("README.md")


@dataclass
class Timing:
    """Seconds per unit of work: median and range over the repeats."""

    median: float
    low: float
    high: float
    repeats: int


# A contestant: a call that does some work, and how many units (updates,
# passes) one call is.
Run = tuple[Callable[[], object], float]


def timed_together(runs: dict[str, Run], repeats: int, min_seconds: float) -> dict[str, Timing]:
    """Run each call once to warm up, then time every one in repeats of
    enough calls to last min_seconds, interleaved: the repeats go round the
    contestants (in an order rotated by one at each repeat), so that drift in
    the machine's speed reaches all of them. Seconds per unit for each."""
    calls = {}
    for name, (fn, _) in runs.items():
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-6)
        calls[name] = max(1, int(min_seconds / once + 0.999))
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, units = runs[name]
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / (calls[name] * units))
    return {n: Timing(statistics.median(v), min(v), max(v), repeats) for n, v in samples.items()}


def timed(fn: Callable[[], object], units: float, repeats: int, min_seconds: float) -> Timing:
    """One contestant alone (see timed_together)."""
    return timed_together({"": (fn, units)}, repeats, min_seconds)[""]


def make_text(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, K, n).astype(np.int32)


# ------------------------------------------------------------------ the contestants


def numpy_classic(m: int, steps: int) -> Run:
    """The classic trainer in plain NumPy (charrnn_ext.reference): one
    timestep at a time forward and backward, then clipped AdaGrad."""
    text = make_text(200_000)
    p = cx.init_params(K, m, seed=1)
    s = cx.zeros_like_params(p)
    return (lambda: reference.train_steps(p, s, text, n_steps=steps, seq_length=SEQ)), steps


def engine(
    cell: str,
    layers: int,
    m: int,
    dtype,
    B: int,
    T: int,
    threads: int,
    optimizer: str,
    steps: int,
    clip_mode: str = "elementwise",
) -> Run:
    """``dtype`` np.float32 / np.float64, or "bfloat16" (float32 weights,
    bfloat16 matrix products)."""
    text = make_text(max(400_000, B * (T + 1) * (steps + 2)))
    bf16 = isinstance(dtype, str) and dtype == "bfloat16"
    p = cx.net_init(cell, K, m, layers, seed=1, dtype=np.float32 if bf16 else dtype, sig=0.05)
    if (cell, layers) == ("rnn", 1):
        p = cx.to_classic(p)
    st = cx.init_opt_state(p, optimizer)
    kw = dict(n_steps=steps, seq_length=T, optimizer=optimizer, clip_mode=clip_mode, threads=threads)
    if bf16:
        kw["precision"] = "bfloat16"
    if B > 1:
        kw["batch_size"] = B
    return (lambda: cx.train_steps(p, st, text, **kw)), steps


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def pytorch(
    cell: str,
    layers: int,
    m: int,
    B: int,
    T: int,
    threads: int,
    optimizer: str,
    steps: int,
    bf16: bool = False,
) -> Run | None:
    """The same network in PyTorch CPU: nn.RNN/LSTM/GRU (one-hot input of
    size K) + Linear, summed cross-entropy, the same optimiser and clipping
    (AdaGrad with elementwise clipping to 5, Adam with global-norm clipping
    to 5), B batch-first streams of T characters, state carried. float32, or
    with ``bf16`` the forward pass under bfloat16 autocast (weights and
    optimiser float32, as in charrnn_ext's bfloat16)."""
    if not torch_available():
        return None
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](K, m, layers, batch_first=True)
    out = torch.nn.Linear(m, K)
    params = list(rnn.parameters()) + list(out.parameters())
    opt = torch.optim.Adagrad(params, lr=0.1, eps=1e-8) if optimizer == "adagrad" else torch.optim.Adam(params, lr=2e-3)
    eye = torch.eye(K)
    text = torch.from_numpy(make_text(B * (T + 1) * 8).astype(np.int64))
    L = len(text) // B
    seg = text[: B * L].view(B, L)
    state = {"h": None, "pos": 0}

    def run():
        torch.set_num_threads(threads)  # the rows timed beside it may have set another count
        for _ in range(steps):
            pos = state["pos"]
            if pos + T + 1 > L:
                pos, state["h"] = 0, None
            x = eye[seg[:, pos : pos + T]]
            y = seg[:, pos + 1 : pos + T + 1]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                hs, hT = rnn(x, state["h"])
                logits = out(hs)
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, K), y.reshape(-1), reduction="sum")
            opt.zero_grad()
            loss.backward()
            if optimizer == "adagrad":
                for q in params:
                    q.grad.clamp_(-5, 5)
            else:
                torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            state["h"] = tuple(t.detach().float() for t in hT) if isinstance(hT, tuple) else hT.detach().float()
            state["pos"] = pos + T

    return run, steps


def validation_seconds(repeats: int, min_s: float, quick: bool, precision: str = "full") -> tuple[Timing, int]:
    """evaluate_loss of an LSTM 2x256 float32 on the built-in corpus's
    whole held-out 10 %, 64 streams, 2 threads, its products in ``precision``:
    seconds per pass."""
    if quick:
        val = make_text(20_000)
    else:
        val = cx.load_corpus().val
    p = cx.net_init("lstm", K, 256, 2, seed=1, dtype=np.float32, sig=0.05)
    run = lambda: cx.evaluate_loss(p, val, batch_size=64, threads=2, precision=precision)  # noqa: E731
    return timed(run, 1, repeats, min_s), int(val.size)


# ------------------------------------------------------------------ memory


def measure_train_memory(text_mb: int = 100, steps: int = 200) -> dict[str, float]:
    """Peak RSS of `python -m charrnn_ext train --text FILE --steps N` on a
    generated text of text_mb MB, from a fresh intermediate process whose
    only child it is."""
    tmp = tempfile.mkdtemp(prefix="charrnn_mem_")
    try:
        path = os.path.join(tmp, "text.txt")
        rng = np.random.default_rng(0)
        # Two non-Latin-1 characters make a Python str of this text take 2
        # bytes a character, as real texts with dashes and accents do.
        words = [w.encode() for w in "the of and to in a is that for it as was with be by on not he thé —".split()]
        with open(path, "wb") as f:
            chunk = b" ".join(words[i] for i in rng.integers(0, len(words), 200_000)) + b"\n"
            for _ in range(max(1, text_mb * 1_000_000 // len(chunk))):
                f.write(chunk)
        cli = [
            sys.executable,
            "-m",
            "charrnn_ext",
            "train",
            "--text",
            path,
            "--steps",
            str(steps),
            "--out",
            os.path.join(tmp, "out"),
            "--no-progress",
        ]
        probe = (
            "import resource, subprocess, sys; "
            f"subprocess.run({cli!r}, check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tempfile.gettempdir()
        )
        size_mb = os.path.getsize(path) / 1e6
        return {
            "text_mb": round(size_mb, 1),
            "peak_rss_mb": round(int(done.stdout.split()[-1]) / 1024, 1),
            "target_mb": round(2 * size_mb + 200, 1),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ report


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cxx = "unknown compiler"
    for exe in ("c++", "g++", "clang++"):
        if shutil.which(exe):
            cxx = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
            break
    torch_v = "not installed"
    if torch_available():
        import torch

        torch_v = torch.__version__
    return (
        f"{model}, {os.cpu_count()} logical CPUs, load {os.getloadavg()[0]:.2f} at the start; {cxx}; "
        f"kernels: float {cx.simd_level()}, bfloat16 {cx.engine.bf16_path()}; "
        f"numpy {np.__version__} (BLAS threads {BLAS_THREADS}); torch {torch_v}; "
        f"OPENBLAS_CORETYPE={OPENBLAS_ENV['OPENBLAS_CORETYPE']} "
        f"OPENBLAS_L2_SIZE={OPENBLAS_ENV['OPENBLAS_L2_SIZE']} "
        f"(unset in this process)"
    )


def fmt_rate(t: Timing, chars: int) -> str:
    return f"{chars / t.median:,.0f} ({chars / t.high:,.0f}-{chars / t.low:,.0f})"


def fmt_ms(t: Timing) -> str:
    return f"{t.median * 1e3:.3f} ({t.low * 1e3:.3f}-{t.high * 1e3:.3f})"


def classic_tables(q: bool, repeats: int, min_s: float, out: Callable[..., None]) -> None:
    """The classic RNN: one stream against the NumPy reference, B streams against PyTorch."""
    # 1. the classic experiment, one stream
    out("### The classic RNN, one stream (K = 80, T = 25, AdaGrad, elementwise clipping)")
    out()
    out("| m | implementation | ms per update | chars/s | x NumPy reference |")
    out("|---|---|---|---|---|")
    for m in [16] if q else [50, 100, 256]:
        runs = {"ref": numpy_classic(m, 20)}
        for dtype in (np.float64, np.float32):
            runs[np.dtype(dtype).name] = engine("rnn", 1, m, dtype, 1, SEQ, 1, "adagrad", 200)
        times = timed_together(runs, repeats, min_s)
        ref = times["ref"]
        out(f"| {m} | NumPy reference (float64) | {fmt_ms(ref)} | {fmt_rate(ref, SEQ)} | 1.0 |")
        for dtype in (np.float64, np.float32):
            t = times[np.dtype(dtype).name]
            out(
                f"| {m} | charrnn_ext ({np.dtype(dtype).name}) | {fmt_ms(t)} | {fmt_rate(t, SEQ)} | "
                f"{ref.median / t.median:.1f} |"
            )
    out()

    # 2. batched classic RNN against PyTorch
    out("### The classic RNN, B streams (m = 100, T = 25, AdaGrad, elementwise clipping, float32)")
    out()
    out("| B | threads | implementation | ms per update | chars/s | x PyTorch, same B and threads |")
    out("|---|---|---|---|---|---|")
    m = 16 if q else 100
    # One and two threads at B = 64 share a group, so that the second
    # thread's gain is a ratio of rows timed in the same minutes.
    B2 = 4 if q else 64
    groups = [[(4, 1), (4, 2)]] if q else [[(16, 1)], [(64, 1), (64, 2)], [(256, 2)]]
    pair: dict[int, Timing] = {}
    for group in groups:
        runs = {}
        for B, threads in group:
            steps = max(3, 800 // B)
            for dt in (np.float32, np.float64):
                runs[f"{B} {threads} {np.dtype(dt).name}"] = engine("rnn", 1, m, dt, B, SEQ, threads, "adagrad", steps)
            if (torch_run := pytorch("rnn", 1, m, B, SEQ, threads, "adagrad", max(2, steps // 4))) is not None:
                runs[f"{B} {threads} torch"] = torch_run
        times = timed_together(runs, repeats, min_s)
        for B, threads in group:
            pt = times.get(f"{B} {threads} torch")
            if pt is not None:
                out(f"| {B} | {threads} | PyTorch nn.RNN + Linear | {fmt_ms(pt)} | {fmt_rate(pt, B * SEQ)} | 1.0 |")
            for dtype in (np.float32, np.float64):
                t = times[f"{B} {threads} {np.dtype(dtype).name}"]
                ratio = f"{pt.median / t.median:.2f}" if pt is not None else "n/a"
                out(
                    f"| {B} | {threads} | charrnn_ext ({np.dtype(dtype).name}) | {fmt_ms(t)} | "
                    f"{fmt_rate(t, B * SEQ)} | {ratio} |"
                )
            if B == B2:
                pair[threads] = times[f"{B} {threads} float32"]
    out()
    one, two = pair[1], pair[2]
    out(
        f"The second thread, B = {B2}, float32 (both rows timed together, calls of {max(3, 800 // B2)} updates "
        f"that include setting up the engine): {fmt_ms(one)} ms on one thread, {fmt_ms(two)} ms on two, "
        f"**{one.median / two.median:.2f}×**."
    )
    out()


def other_figures(q: bool, repeats: int, min_s: float, out: Callable[..., None], memory: bool) -> None:
    """Validation, sampling, the Python overhead of a call, and (memory) the CLI's peak RSS."""
    # 4. validation, sampling, overhead
    vt, n_val = validation_seconds(repeats, min_s, q)
    out(
        f"Validation of an LSTM 2x256 (float32) on {'a 20,000-character text' if q else 'the built-in held-out split'} "
        f"({n_val:,} characters), 64 streams, 2 threads: {vt.median:.2f} s ({vt.low:.2f}-{vt.high:.2f}), "
        f"{n_val / vt.median:,.0f} chars/s."
    )
    if cx.engine.has_bf16_units():  # (the portable bfloat16 kernel is slower than float32: not worth a line)
        bt, _ = validation_seconds(repeats, min_s, q, precision="bfloat16")
        out(
            f"The same with bfloat16 products (`{cx.engine.bf16_path()}`, as a bfloat16 run validates): "
            f"{bt.median:.2f} s ({bt.low:.2f}-{bt.high:.2f}), {vt.median / bt.median:.2f}× float32."
        )
    n_sample = 10_000 if q else 1_000_000
    p = cx.init_params(K, 100, seed=3)
    ts = timed(lambda: cx.sample(p, None, [0], n_sample, 1.0, 0), 1, repeats if not q else 1, 0.0)
    out(
        f"Sampling {n_sample:,} characters from the classic m=100 model (float64): {ts.median:.2f} s "
        f"({ts.low:.2f}-{ts.high:.2f})."
    )
    # a large network's single stream: the team splits the weights (stream_team in cpp/engine.hpp)
    n_net = 200 if q else 5_000
    pn = cx.net_init("lstm", K, 256, 2, seed=2, dtype=np.float32, sig=0.05)
    runs = {t: (lambda t=t: cx.sample(pn, None, [0], n_net, 1.0, 0, threads=t), 1) for t in (1, 2)}
    st = timed_together({str(t): r for t, r in runs.items()}, repeats, min_s)
    one, two = st["1"], st["2"]
    out(
        f"Sampling {n_net:,} characters from an LSTM 2x256 (float32), timed together: {fmt_ms(one)} ms on one "
        f"thread, {fmt_ms(two)} ms on two, **{one.median / two.median:.2f}×**."
    )
    text = make_text(200_000)
    pc = cx.init_params(K, 100, seed=1)
    sc = cx.zeros_like_params(pc)
    call = timed(lambda: cx.train_steps(pc, sc, text, n_steps=0), 1, repeats, min_s)
    step = timed(lambda: cx.train_steps(pc, sc, text, n_steps=100), 100, repeats, min_s)
    out(
        f"Python overhead per train_steps call (m=100, float64): {call.median * 1e6:.1f} µs, "
        f"{call.median / (100 * step.median) * 100:.2f}% of a call of 100 updates."
    )
    if memory:
        mem = measure_train_memory()
        out(
            f"Training CLI peak RSS on a {mem['text_mb']} MB text: {mem['peak_rss_mb']} MB (target: at most "
            f"2 x file + 200 MB = {mem['target_mb']} MB)."
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (CI): seconds, no timing assertions")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS of the training CLI on 100 MB")
    ap.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    ap.add_argument("--gated-only", action="store_true", help="only the gated networks (float32 and bfloat16)")
    args = ap.parse_args(argv)
    q = args.quick
    repeats, min_s = (2, 0.01) if q else (5, 0.25)
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    flags = "".join(f" --{k.replace('_', '-')}" for k in ("quick", "gated_only", "memory") if getattr(args, k))
    out(f"Command: `python -m benchmarks.step{flags}`. Machine: {machine_description()}.")
    out()
    out(
        "Every figure: median of " + str(repeats) + " repeats after a warm-up (min-max in brackets); "
        "ratios against a baseline timed in the same run."
    )
    out()

    if not args.gated_only:
        classic_tables(q, repeats, min_s, out)
    # 3. gated stacked networks against PyTorch, float32 and bfloat16
    B, T = (4, 8) if q else (32, 64)
    nets = [("lstm", 16), ("gru", 16)] if q else [("lstm", 256), ("gru", 384)]
    out(f"### Gated networks: 2 layers, B = {B}, T = {T}, Adam, global-norm clipping, 2 threads")
    out()
    out(
        "Both PyTorch rows are timed. Under bfloat16 autocast it is the strongest peer where bfloat16 "
        "trains faster than float32 (AMX, or AVX512-BF16 on AMD; "
        f"this one: {'yes' if cx.engine.bf16_trains_faster() else 'no'}), and float32 elsewhere."
    )
    out()
    out("| network | implementation | ms per update | chars/s | x PyTorch bf16 | x PyTorch f32 | x our float32 |")
    out("|---|---|---|---|---|---|---|")
    for cell, m in nets:
        steps = 2 if q else 10
        net = f"{cell} 2 x {m}"
        runs = {
            "float32": engine(cell, 2, m, np.float32, B, T, 2, "adam", steps, clip_mode="global_norm"),
            "bfloat16": engine(cell, 2, m, "bfloat16", B, T, 2, "adam", steps, clip_mode="global_norm"),
        }
        for name, bf16 in (("torch", False), ("torch bf16", True)):
            if (torch_run := pytorch(cell, 2, m, B, T, 2, "adam", steps, bf16=bf16)) is not None:
                runs[name] = torch_run
        times = timed_together(runs, repeats, min_s)
        pt, pb = times.get("torch"), times.get("torch bf16")
        ours = {np.float32: times["float32"], "bfloat16": times["bfloat16"]}

        def ratio(base: Timing | None, t: Timing) -> str:
            return f"{base.median / t.median:.2f}" if base is not None else "n/a"

        if pt is not None and pb is not None:
            out(f"| {net} | PyTorch nn.{cell.upper()} + Linear, float32 | {fmt_ms(pt)} | {fmt_rate(pt, B * T)} | "
                f"{ratio(pb, pt)} | 1.0 | |")  # fmt: skip
            out(f"| {net} | PyTorch, bf16 autocast | {fmt_ms(pb)} | {fmt_rate(pb, B * T)} | 1.0 | "
                f"{ratio(pt, pb)} | |")  # fmt: skip
        for dt, t in ours.items():
            name = "float32" if dt is np.float32 else "bfloat16"
            out(
                f"| {net} | charrnn_ext, {name} | {fmt_ms(t)} | {fmt_rate(t, B * T)} | {ratio(pb, t)} | "
                f"{ratio(pt, t)} | {ratio(ours[np.float32], t)} |"
            )
    out()

    if not args.gated_only:
        other_figures(q, repeats, min_s, out, args.memory)
    if args.readme:
        write_block(README, "step", "\n".join(lines), "Training speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
