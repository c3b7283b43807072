"""Quality at a fixed wall-clock budget: which cell/optimiser learns the
built-in corpus best in the same time?

Run from the repository root:

    python -m benchmarks.quality --minutes 10     # the table (6 runs, 2 at a time: ~30 minutes)
    python -m benchmarks.quality --minutes 0.2    # smoke run

Every configuration trains on the built-in Shakespeare corpus (its last 10 %
held out) for the same number of minutes, in its own process, two processes
at a time (one per core of a 2-core machine; each process uses one thread).
The LSTM, GRU and 2-layer RNN get the hidden size whose parameter count is
closest to the classic m=100 RNN's. Printed: a Markdown table with the
parameter count, updates done, characters seen, the validation loss per
character of the final model on the whole validation split, and the best
smooth training loss (per 25-character chunk), plus the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQ = 25
ADAPTIVE_LR = 2e-3  # Adam and RMSProp; AdaGrad keeps the classic 0.1

# name, cell, layers, optimizer, learning rate, hidden size (None: match the classic's parameter count)
CONFIGS = [
    ("rnn m=100 adagrad (classic)", "rnn", 1, "adagrad", 0.1, 100),
    ("rnn m=100 adam", "rnn", 1, "adam", ADAPTIVE_LR, 100),
    ("lstm adam", "lstm", 1, "adam", ADAPTIVE_LR, None),
    ("gru adam", "gru", 1, "adam", ADAPTIVE_LR, None),
    ("lstm rmsprop", "lstm", 1, "rmsprop", ADAPTIVE_LR, None),
    ("rnn 2 layers adam", "rnn", 2, "adam", ADAPTIVE_LR, None),
]


def n_params(cell: str, layers: int, K: int, m: int) -> int:
    from charrnn_ext.checkpoint import layout_shapes

    total = 0
    for shape in layout_shapes(cell, layers, K, m).values():
        size = 1
        for d in shape:
            size *= d
        total += size
    return total


def matched_hidden(cell: str, layers: int, K: int, target: int) -> int:
    """The hidden size whose parameter count is closest to target."""
    return min(range(1, 1000), key=lambda m: abs(n_params(cell, layers, K, m) - target))


def plan(K: int) -> list[dict]:
    target = n_params("rnn", 1, K, 100)
    rows = []
    for name, cell, layers, opt, lr, m in CONFIGS:
        m = matched_hidden(cell, layers, K, target) if m is None else m
        rows.append({"name": name, "cell": cell, "layers": layers, "optimizer": opt, "lr": lr, "hidden": m,
                     "params": n_params(cell, layers, K, m)})
    return rows


def run_one(spec: dict, minutes: float) -> dict:
    """Train one configuration in this process and return its figures."""
    from charrnn_ext.data import load_corpus
    from charrnn_ext.model import CharRNN

    corpus = load_corpus(None, 0.1)
    model = CharRNN.new(corpus.vocab, hidden=spec["hidden"], cell=spec["cell"], layers=spec["layers"], seed=0)
    t0 = time.perf_counter()
    res = model.fit(corpus, steps=10**12, max_minutes=minutes, optimizer=spec["optimizer"], eta=spec["lr"],
                    seq_length=SEQ, log_every=100, sample_every=10**12, sample_chars=0, passage_chars=0,
                    val_chars=1000)
    return {**spec, "updates": res.step, "chars": res.step * SEQ, "final_val_loss": res.final_val_loss,
            "val_chars": res.val_chars, "best_smooth_loss": res.best_loss, "seconds": time.perf_counter() - t0,
            "n_params_model": model.n_params}


def machine() -> str:
    from charrnn_ext import _core

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, kernels {_core.simd_level()}, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def table(results: list[dict], minutes: float) -> str:
    lines = [f"Budget: {minutes:g} minute(s) of training per configuration (wall clock, 2 runs at a time, "
             f"1 thread each); seq_length {SEQ}; learning rate 0.1 for AdaGrad, {ADAPTIVE_LR:g} for Adam and "
             f"RMSProp; elementwise clipping at 5; float64; seed 0.", "",
             "| config | hidden | params | updates | chars seen | val loss/char (whole split) | "
             "best smooth loss |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        val = "n/a" if r.get("final_val_loss") is None else f"{r['final_val_loss']:.4f}"
        best = "n/a" if r.get("best_smooth_loss") is None else f"{r['best_smooth_loss']:.3f}"
        lines.append(f"| {r['name']} | {r['hidden']} | {r['params']:,} | {r.get('updates', 0):,} | "
                     f"{r.get('chars', 0):,} | {val} | {best} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per configuration")
    ap.add_argument("--jobs", type=int, default=2, help="configurations trained at the same time (default 2)")
    ap.add_argument("--only", action="append", help="run only configurations whose name contains this")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # JSON spec: train it and print the result as JSON
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_one(json.loads(args.child), args.minutes)))
        return 0

    from charrnn_ext.data import load_corpus

    K = load_corpus(None, 0.1).vocab.size
    specs = plan(K)
    if args.only:
        specs = [s for s in specs if any(o in s["name"] for o in args.only)]
    print(f"Machine: {machine()}", flush=True)
    print(f"Vocabulary K = {K}; parameter counts:", flush=True)
    for s in specs:
        print(f"  {s['name']}: hidden {s['hidden']}, {s['params']:,} parameters", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    root = str(Path(__file__).resolve().parent.parent)
    results: dict[int, dict] = {}
    pending = list(enumerate(specs))
    running: list[tuple[int, subprocess.Popen, object]] = []
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            i, spec = pending.pop(0)
            out = tempfile.TemporaryFile(mode="w+")
            cmd = [sys.executable, "-m", "benchmarks.quality", "--minutes", str(args.minutes),
                   "--child", json.dumps(spec)]
            running.append((i, subprocess.Popen(cmd, cwd=root, env=env, stdout=out), out))
            print(f"started: {spec['name']}", flush=True)
        time.sleep(0.5)
        for item in list(running):
            i, proc, out = item
            if proc.poll() is None:
                continue
            running.remove(item)
            out.seek(0)
            text = out.read()
            out.close()
            if proc.returncode != 0:
                print(f"FAILED ({proc.returncode}): {specs[i]['name']}", flush=True)
                results[i] = {**specs[i]}
                continue
            results[i] = json.loads(text.strip().splitlines()[-1])
            r = results[i]
            print(f"done: {r['name']}: {r['updates']:,} updates, val loss {r['final_val_loss']:.4f}/char",
                  flush=True)
    print()
    print(table([results[i] for i in sorted(results)], args.minutes))
    print(f"\nMachine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
