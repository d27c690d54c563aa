"""Training throughput (images/second) of each preset on this machine, with the fp32 path as the baseline.

Usage: python benchmarks/train_speed.py [--rounds 4] [--steps 5] [--presets tiny shapes-32 mnist-32 plant-64]
       python benchmarks/train_speed.py --option pl_weight=2 [--option ...] --presets shapes-32

Each preset trains on random images with a randomly initialised SmallCNN as the classifier (speed does
not depend on what is learned). The fp32 path and the preset's own path (bf16 autocast + channels_last)
are timed in alternating rounds in one process, and each reports its best round, so the ratio is robust
to a noisy machine; the absolute figures are not. With `--option KEY=VALUE`, the baseline is the preset's own
path instead and the candidate the same with those overrides: the cost of a training option.
"""

from __future__ import annotations

import platform
import tempfile
import time

import torch

from stylex.classifier import ClassifierAdapter, InputSpec, SmallCNN
from stylex.config import apply_overrides, parse_override, preset
from stylex.scripting import ScriptParser, script_main
from stylex.training.trainer import Trainer


def make_trainer(name: str, fast: bool, out_dir: str, options: dict | None = None) -> Trainer:
    overrides = {"max_steps": 10**6, "max_minutes": 0, "sample_every": 0, "checkpoint_every": 0}
    if not fast:
        overrides.update(amp="none", channels_last=False)
    cfg = apply_overrides(preset(name, **overrides), options or {})
    r = cfg.model.resolution
    torch.manual_seed(0)
    clf = ClassifierAdapter(SmallCNN(num_classes=2, resolution=r), InputSpec(size=None, value_range=(-1.0, 1.0)))
    x = torch.rand(256, 3, r, r) * 2 - 1
    tr = Trainer(cfg, clf, x, x[:16], out_dir, quiet=True)
    tr.start(resume=False)
    tr.train_step()  # warm-up
    return tr


def images_per_second(tr: Trainer, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
        tr.step += 1
    return steps * tr.config.batch_size / (time.perf_counter() - t)


def main() -> None:
    ap = ScriptParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--presets", nargs="+", default=["tiny", "shapes-32", "mnist-32", "plant-64"])
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="time the preset path with these overrides against the preset path alone")  # fmt: skip
    args = ap.parse_args()
    options = dict(parse_override(o) for o in args.option)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    base_name, fast_name = ("preset path", " ".join(args.option)) if options else ("fp32", "preset path")
    print(f"| preset | resolution | batch | {base_name} img/s | {fast_name} img/s | ratio | {fast_name} s/step |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            if options:
                base, fast = make_trainer(name, True, d1), make_trainer(name, True, d2, options)
            else:
                base, fast = make_trainer(name, False, d1), make_trainer(name, True, d2)
            best_base = best_fast = 0.0
            for _ in range(args.rounds):
                best_base = max(best_base, images_per_second(base, args.steps))
                best_fast = max(best_fast, images_per_second(fast, args.steps))
        cfg = fast.config
        print(
            f"| {name} | {cfg.model.resolution} | {cfg.batch_size} | {best_base:.1f} | {best_fast:.1f} "
            f"| {best_fast / best_base:.2f}x | {cfg.batch_size / best_fast:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    script_main(main)
