"""Which network learns the built-in corpus best in a fixed wall-clock budget?

Run from the repository root, with the package installed (and torch for the
PyTorch row):

    python -m benchmarks.quality --grid-minutes 3 --finalists 1   # grid, finalists, PyTorch, table (about 80 minutes)
    python -m benchmarks.quality --stage table --readme # the table again from the stored results
    python -m benchmarks.quality --minutes 0.2 --grid-minutes 0.1 --seeds 1 --results /tmp/q.json  # smoke run

Every run is `charrnn train --preset quality` with the options of its
configuration and a time budget (`--max-minutes`), in its own process, one
at a time (each uses every core). The score is the final model's validation
loss per character on the whole held-out 10 % of the text.

1. Grid: each cell/optimiser family is tuned under the same (shorter) budget
   over hidden size and learning rate (the schedule of the preset runs over
   that budget).
2. Finalists: the best grid point of the best families, rerun at the full
   budget with several seeds; reported as mean +- sample standard deviation.
3. PyTorch CPU: an LSTM as a user would write it (benchmarks/torch_baseline.py)
   with the same budget, split, threads and schedule, under bfloat16 autocast
   where bfloat16 trains faster than float32 (AMX, or AVX512-BF16 on AMD);
   the best of a small grid over hidden
   size and learning rate (seed 0), as a user tuning it would pick.

Results are kept in a JSON file (one record per run), so that an
interrupted benchmark continues where it stopped and the table can be
rebuilt without training again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from charrnn_ext.fileio import atomic_write_text

from .tables import write_block

HERE = Path(__file__).resolve().parent
README = HERE / "QUALITY.md"

# family -> (options shared by its grid points, its (hidden, eta) grid points).
# The earlier study (float32, AMD EPYC) ruled out RMSProp and the classic RNN
# and found 384 units best for both gated cells; with bfloat16 products the
# engine runs 2-3 times as many updates in a budget, so the grid asks whether
# a larger network or a higher rate now does better.
FAMILIES: dict[str, tuple[dict[str, Any], list[tuple[int, float]]]] = {
    "gru 2 layers, Adam": ({"cell": "gru", "layers": 2, "optimizer": "adam"}, [(384, 3e-3), (384, 5e-3), (512, 3e-3)]),
    "lstm 2 layers, Adam": ({"cell": "lstm", "layers": 2, "optimizer": "adam"}, [(384, 5e-3)]),
}

# The quality preset's network and optimiser, as a configuration of the table.
PRESET_POINT: dict[str, Any] = {"cell": "gru", "layers": 2, "optimizer": "adam", "hidden": 384, "eta": 3e-3}

# PyTorch's grid: (hidden, eta) of its LSTM 2 x H.
TORCH_GRID: list[tuple[int, float]] = [(256, 2e-3), (256, 3e-3), (384, 2e-3), (384, 3e-3)]


def grid_points(family: str) -> list[dict[str, Any]]:
    fixed, points = FAMILIES[family]
    return [{**fixed, "hidden": m, "eta": eta} for m, eta in points]


def key(kind: str, options: dict[str, Any], minutes: float, seed: int) -> str:
    return json.dumps({"kind": kind, "options": options, "minutes": minutes, "seed": seed}, sort_keys=True)


def run_charrnn(options: dict[str, Any], minutes: float, seed: int, keep: Path | None = None) -> dict[str, Any]:
    """One `charrnn train --preset quality` run; its summary. keep: where to
    leave its run folder (else it is removed)."""
    out = Path(tempfile.mkdtemp(prefix="charrnn_quality_")) / "run"
    cmd = [
        sys.executable,
        "-m",
        "charrnn_ext",
        "train",
        "--preset",
        "quality",
        "--max-minutes",
        str(minutes),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--no-progress",
    ]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        summary = json.loads((out / "summary.json").read_text())
        config = json.loads((out / "config.json").read_text())
        chars = summary["step"] * config["train"]["seq_length"] * config["train"]["batch_size"]
        return {
            "val_loss": summary["final_val_loss"],
            "updates": summary["step"],
            "seconds": summary["seconds"],
            "chars_per_s": chars / summary["seconds"],
            "n_params": config["model"]["n_params"],
            "command": " ".join(cmd[1 : cmd.index("--out")] + cmd[cmd.index("--no-progress") :]),
        }
    except subprocess.CalledProcessError as exc:
        return {"val_loss": None, "error": exc.stderr.strip().splitlines()[-1:]}
    finally:
        if keep is not None and out.is_dir():
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(str(out), str(keep))
        shutil.rmtree(out.parent, ignore_errors=True)


def torch_has_bf16() -> bool:
    """Whether PyTorch's bfloat16 autocast is the strongest peer here: where bfloat16
    trains faster than float32 (with AMX masked on a Xeon, PyTorch's autocast was
    slower than its float32, as ours was; benchmarks/README.md)."""
    from charrnn_ext.engine import bf16_trains_faster

    return bf16_trains_faster()


def run_torch(minutes: float, seed: int, threads: int, hidden: int, eta: float, bf16: bool) -> dict[str, Any] | None:
    try:
        import torch  # noqa: F401
    except Exception:
        return None
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.torch_baseline",
        "--minutes",
        str(minutes),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
        "--hidden",
        str(hidden),
        "--eta",
        str(eta),
    ] + (["--bf16"] if bf16 else [])
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=HERE.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


class Results:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, k: str, make) -> Any:
        if k not in self.data:
            print(f"running {k}", flush=True)
            self.data[k] = make()
            atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True))
        return self.data[k]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    from charrnn_ext import engine, simd_level

    return f"{model}, {os.cpu_count()} logical CPUs; kernels: float {simd_level()}, bfloat16 {engine.bf16_path()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="budget of the finalists and PyTorch (default 10)")
    ap.add_argument("--grid-minutes", type=float, default=4.0, help="budget of a grid point (default 4)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per finalist (default 3)")
    ap.add_argument(
        "--finalists",
        type=int,
        default=2,
        help="families rerun at the full budget: the best ones of the grid (default 2)",
    )
    ap.add_argument("--keep", type=Path, help="keep the finalists' run folders under this folder")
    ap.add_argument(
        "--no-grid",
        action="store_true",
        help="no grid: the one finalist is the quality preset as it stands (a shorter study)",
    )
    ap.add_argument("--stage", choices=("all", "grid", "final", "torch", "table"), default="all")
    ap.add_argument("--results", type=Path, default=HERE / "quality_results.json")
    ap.add_argument("--readme", action="store_true", help="write the tables into benchmarks/QUALITY.md")
    args = ap.parse_args(argv)
    res = Results(args.results)
    threads = os.cpu_count() or 1
    seeds = list(range(args.seeds))

    # 1. grid
    best: dict[str, dict[str, Any]] = {}
    grid_rows = []
    for family in () if args.no_grid else FAMILIES:
        for point in grid_points(family):
            k = key("grid", point, args.grid_minutes, 0)
            r = (
                res.data.get(k)
                if args.stage in ("final", "torch", "table")
                else res.get(k, lambda p=point: run_charrnn(p, args.grid_minutes, 0))
            )
            if r is None:
                continue
            grid_rows.append((family, point, r))
            if r.get("val_loss") is not None and (family not in best or r["val_loss"] < best[family][1]["val_loss"]):
                best[family] = (point, r)
    # 2. finalists, 3. PyTorch
    final_rows = []
    ranked = sorted(best.items(), key=lambda item: item[1][1]["val_loss"])[: args.finalists]
    if args.no_grid:
        ranked = [("the quality preset: gru 2 layers, Adam", (dict(PRESET_POINT), {}))]
    for family, (point, _) in ranked:
        runs = []
        for seed in seeds:
            k = key("final", point, args.minutes, seed)
            keep = None if args.keep is None else args.keep / f"{point['cell']}-{point['hidden']}-seed{seed}"
            if args.stage in ("all", "final"):
                runs.append(res.get(k, lambda p=point, s=seed, d=keep: run_charrnn(p, args.minutes, s, d)))
            elif k in res.data:
                runs.append(res.data[k])
        final_rows.append((family, point, runs))
    torch_rows = []
    bf16 = torch_has_bf16()
    for hidden, eta in TORCH_GRID:
        k = key("torch", {"threads": threads, "hidden": hidden, "eta": eta, "bf16": bf16}, args.minutes, 0)
        if args.stage in ("all", "torch"):
            r = res.get(k, lambda h=hidden, e=eta: run_torch(args.minutes, 0, threads, h, e, bf16))
        else:
            r = res.data.get(k)
        if r:
            torch_rows.append(r)
    torch_runs = sorted(torch_rows, key=lambda r: r["val_loss"])[:1]

    # the tables
    lines = [
        "Command: `python -m benchmarks.quality "
        + (
            f"--no-grid --minutes {args.minutes:g} --seeds {args.seeds}"
            if args.no_grid
            else f"--minutes {args.minutes:g} --grid-minutes {args.grid_minutes:g} --seeds {args.seeds} "
            f"--finalists {args.finalists}"
        )
        + f"`; machine: {machine()}; "
        f"one run at a time, "
        f"{threads} threads each. Every run: `charrnn train --preset quality` with the options shown, "
        f"validation loss per character of the final model on the whole held-out 10 % of the built-in corpus.",
        "",
        f"### Finalists: {args.minutes:g} minutes, {args.seeds} seeds each",
        "",
        "| configuration | hidden | eta | parameters | chars/s | updates | validation loss (mean ± sd) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    scored = []
    for family, point, runs in final_rows:
        ok = [r for r in runs if r.get("val_loss") is not None]
        if not ok:
            continue
        m, sd = mean_sd([r["val_loss"] for r in ok])
        scored.append((m, sd, family))
        lines.append(
            f"| {family} | {point['hidden']} | {point['eta']:g} | {ok[0]['n_params']:,} | "
            f"{statistics.fmean(r['chars_per_s'] for r in ok):,.0f} | "
            f"{statistics.fmean(r['updates'] for r in ok):,.0f} | {m:.3f} ± {sd:.3f} (n={len(ok)}) |"
        )
    if torch_runs:
        m, sd = mean_sd([r["val_loss"] for r in torch_runs])
        scored.append((m, sd, "PyTorch"))
        t = torch_runs[0]
        lines.append(
            f"| PyTorch CPU, best of its grid: {t['description']} | {t['hidden']} | {t['eta']:g} | "
            f"{t['n_params']:,} | {t['chars_per_s']:,.0f} | {t['updates']:,} | {m:.3f} (seed 0) |"
        )
    scored.sort()
    if len(scored) > 1:
        (m0, sd0, f0), (m1, sd1, f1) = scored[0], scored[1]
        gap = m1 - m0
        noise = 2 * max(sd0 if sd0 == sd0 else 0.0, sd1 if sd1 == sd1 else 0.0)
        verdict = f"Lowest mean: {f0}, {gap:.3f} ahead of {f1}, " + (
            "more than twice the larger of their standard deviations."
            if gap > noise
            else "within twice their standard deviations: no winner is named."
        )
        lines += ["", verdict]
    if torch_rows:
        lines += [
            "",
            f"### PyTorch's grid: {args.minutes:g} minutes, seed 0",
            "",
            "| network | chars/s | updates | validation loss |",
            "|---|---:|---:|---:|",
        ]
        for r in torch_rows:
            lines.append(f"| {r['description']} | {r['chars_per_s']:,.0f} | {r['updates']:,} | {r['val_loss']:.3f} |")
    if grid_rows:
        lines += [
            "",
            f"### Grid: {args.grid_minutes:g} minutes, seed 0",
            "",
            "| configuration | hidden | eta | chars/s | updates | validation loss |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for family, point, r in grid_rows:
            v = "failed: " + " ".join(r.get("error", [])) if r.get("val_loss") is None else f"{r['val_loss']:.3f}"
            rate = f"{r['chars_per_s']:,.0f}" if "chars_per_s" in r else "n/a"
            updates = f"{r['updates']:,}" if "updates" in r else "n/a"
            lines.append(f"| {family} | {point['hidden']} | {point['eta']:g} | {rate} | {updates} | {v} |")
    text = "\n".join(lines)
    print(text)
    if args.readme:
        write_block(README, "quality", text, "Quality at a fixed time budget")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
