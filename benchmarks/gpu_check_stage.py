"""Run one `stylex` command in this process and append its figures to a JSON-lines file (for gpu_check.sh).

Usage:
    python benchmarks/gpu_check_stage.py FIGURES LABEL -- train --out RUN ...     (or: -- attfind ...)
    python benchmarks/gpu_check_stage.py FIGURES --table                        (print the figures as a table)

Figures of a stage: wall seconds; images/second (train: global images over the time stats.jsonl records
after its first logged interval, which holds the warm-up and any compilation; attfind: --num-images over
the wall time of the whole command); the CUDA memory peak of this process (`torch.cuda.max_memory_allocated`,
GiB; none on the CPU). Under torchrun every rank runs the command and rank 0 records the figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _train_images_per_second(run_dir: Path) -> float | None:
    rows = [json.loads(s) for s in (run_dir / "stats.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "images" in r]
    if len(rows) < 2 or rows[-1]["seconds"] <= rows[0]["seconds"]:
        return None
    return (rows[-1]["images"] - rows[0]["images"]) / (rows[-1]["seconds"] - rows[0]["seconds"])


def run_stage(figures: Path, label: str, args: list[str]) -> int:
    import torch

    from stylex.cli import main

    t0 = time.perf_counter()
    error = None
    try:
        main(args, standalone_mode=False)
    except SystemExit as e:
        error = None if e.code in (0, None) else f"exit status {e.code}"
    except Exception as e:  # noqa: BLE001 - a failed stage is reported, and the check goes on
        error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    wall = time.perf_counter() - t0
    if int(os.environ.get("RANK", "0")) != 0:
        return 1 if error else 0
    record = {"label": label, "ok": error is None, "wall_s": round(wall, 1), "img_s": None, "peak_gib": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        record["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if error:
        record["error"] = error
    elif args[0] == "train":
        record["img_s"] = _train_images_per_second(Path(_option(args, "--out")))
    elif args[0] == "attfind":
        record["img_s"] = int(_option(args, "--num-images") or 250) / wall
    if record["img_s"] is not None:
        record["img_s"] = round(record["img_s"], 1)
    with open(figures, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"== {label}: {json.dumps(record)}", flush=True)
    return 1 if error else 0


def print_table(figures: Path) -> None:
    rows = [json.loads(s) for s in figures.read_text().splitlines()] if figures.is_file() else []
    print("| stage | images/s | CUDA memory peak (GiB) | wall (s) | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        note = "" if r["ok"] else f"FAILED: {r.get('error', '')}"
        img_s = "" if r["img_s"] is None else f"{r['img_s']:.1f}"
        peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {r['label']} | {img_s} | {peak} | {r['wall_s']:.1f} | {note} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[2] == "--table":
        print_table(Path(sys.argv[1]))
        sys.exit(0)
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit(__doc__)
    sys.exit(run_stage(Path(sys.argv[1]), sys.argv[2], sys.argv[4:]))
