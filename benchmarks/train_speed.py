"""Training throughput (images/second) of each preset on this machine, with the fp32 path as the baseline.

Usage: python benchmarks/train_speed.py [--steps 20] [--presets tiny shapes-32 mnist-32 plant-64]

Each preset trains on random images with a randomly initialised SmallCNN as the classifier (speed does
not depend on what is learned). Both paths are timed in the same process, alternating, so the ratio
bf16+channels_last / fp32 is robust to a noisy machine; the absolute figures are not.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from stylex.classifier import ClassifierAdapter, InputSpec, SmallCNN
from stylex.config import preset
from stylex.training.trainer import Trainer


def time_steps(name: str, steps: int, fast: bool) -> float:
    overrides = {"max_steps": steps + 3, "max_minutes": 0, "sample_every": 0, "checkpoint_every": 0}
    if not fast:
        overrides.update(amp="none", channels_last=False)
    cfg = preset(name, **overrides)
    r = cfg.model.resolution
    torch.manual_seed(0)
    clf = ClassifierAdapter(SmallCNN(num_classes=2, resolution=r), InputSpec(size=None, value_range=(-1.0, 1.0)))
    x = torch.rand(256, 3, r, r) * 2 - 1
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, clf, x, x[:16], d, quiet=True)
        tr.start(resume=False)
        for _ in range(3):  # warm-up
            tr.train_step()
        t = time.perf_counter()
        for _ in range(steps):
            tr.train_step()
            tr.step += 1
        return steps * cfg.batch_size / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--presets", nargs="+", default=["tiny", "shapes-32", "mnist-32", "plant-64"])
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print("| preset | resolution | batch | fp32 img/s | bf16+channels_last img/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name in args.presets:
        cfg = preset(name)
        fp32 = time_steps(name, args.steps, fast=False)
        fast = time_steps(name, args.steps, fast=True)
        print(
            f"| {name} | {cfg.model.resolution} | {cfg.batch_size} | {fp32:.1f} | {fast:.1f} | {fast / fp32:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
