"""Explaining N images: one `stylex explain` call with N `--index` against N calls with one each.

Usage:
    python benchmarks/explain_batch.py --model zoo:digits-32 --attributes AF [--images 10] [--strategy subset]

AF is a `stylex attfind` folder of the model (e.g. `stylex attfind --model zoo:digits-32 --fast 32 --num-images 40
--no-render --out AF`). Runs the command as a user does (a new process each time, so the single calls pay for
starting Python, loading the model and reading the data once per image), alternating the two ways over --rounds,
and prints the seconds per image of each and the ratio. Both explain the same images (the first --images indices of
AttFind's data) with the same options, into scratch folders.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stylex.scripting import ScriptParser, script_main


def seconds(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stylex", *args], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    parser = ScriptParser(description=__doc__)
    parser.add_argument("--model", required=True, help="A run, an exported model or zoo:NAME.")
    parser.add_argument("--attributes", required=True, help="Its AttFind folder.")
    parser.add_argument("--images", type=int, default=10, help="Images to explain.")
    parser.add_argument("--strategy", default="subset", help="The explanation strategy.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds of both ways.")
    args = parser.parse_args()
    common = ["explain", "--model", args.model, "--attributes", args.attributes, "--strategy", args.strategy, "--quiet"]
    batch, single = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            indices = [a for i in range(args.images) for a in ("--index", str(i))]
            batch.append(seconds([*common, *indices, "--out", str(Path(tmp) / f"batch{r}")]))
            single.append(
                sum(
                    seconds([*common, "--index", str(i), "--out", str(Path(tmp) / f"one{r}-{i}")])
                    for i in range(args.images)
                )
            )
    b, s = statistics.median(batch) / args.images, statistics.median(single) / args.images
    print(f"| way | seconds per image (median of {args.rounds} rounds x {args.images} images) |")
    print("|---|---|")
    print(f"| one call, {args.images} x --index | {b:.2f} |")
    print(f"| {args.images} calls, one --index each | {s:.2f} |")
    print(f"\none call per image / one call for all: {s / b:.1f}x")


if __name__ == "__main__":
    script_main(main)
