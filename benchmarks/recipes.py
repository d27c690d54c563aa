"""Training recipes compared on the same wall-clock budget (issue 3): held-out identity, consistency and L1.

Train each named recipe, one after another, for the same minutes of training, evaluating the held-out split
every `--eval-minutes` of training time (`TrainConfig.eval_every_minutes`) and keeping the best EMA weights by
identity (`best.safetensors`):

    python benchmarks/recipes.py --data D --classifier C --preset plant-64 --minutes 30 \\
        --recipes default,paper,recon-first --root runs/recipes [--resume]

A recipe whose run already reached the budget is skipped; one with a checkpoint short of it is continued with
`--resume` (a larger `--minutes` extends finished runs). Then, or alone with `--table-only`, every run's
stats.jsonl becomes `ROOT/table.md` (per recipe: identity, consistency and L1 beside the class-median image's
L1, at fixed minutes) and `ROOT/curves.svg` (identity and consistency against minutes, one line per recipe).

Recipes are override dicts on the preset (`RECIPES`); `--set key=value` adds overrides to every recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from stylex.config import TrainConfig, apply_overrides, parse_override, preset
from stylex.errors import StylexError
from stylex.scripting import ScriptParser, script_main

RECON_FIRST_STEPS = 500  # default warm-up length of `recon-first` (--recon-steps)

# name -> (what it changes, overrides computed from the preset's config)
RECIPES: dict[str, tuple[str, Callable[[TrainConfig, argparse.Namespace], dict[str, Any]]]] = {
    "default": ("the preset as it is", lambda cfg, args: {}),
    "paper": (
        "the paper's schedule: a z-path GAN step every 2nd step, L1 1, perceptual 0.1, w 0.1, lr_e = lr_g",
        lambda cfg, args: {
            "z_path_every": 2,
            "l1_weight": 1.0,
            "perceptual_weight": 0.1,
            "w_rec_weight": 0.1,
            "lr_e": cfg.lr_g,
        },
    ),
    "recon-first": (
        "no adversarial terms for the first --recon-steps steps",
        lambda cfg, args: {"adv_start_step": args.recon_steps},
    ),
    "enc-lr-low": ("encoder learning rate lr_g / 20", lambda cfg, args: {"lr_e": cfg.lr_g / 20}),
    "w-scale": ("E(x) rescaled to mapping(z)'s RMS", lambda cfg, args: {"w_scale": "match_mapping"}),
    "no-perceptual": ("no perceptual term", lambda cfg, args: {"perceptual_weight": 0.0}),
}
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def recipe_config(name: str, args: argparse.Namespace) -> TrainConfig:
    """The preset with the recipe's overrides, the shared budget, the evaluation clock and `--set` values."""
    if name not in RECIPES:
        raise StylexError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}.")
    base = preset(args.preset)
    overrides = dict(RECIPES[name][1](base, args))
    overrides.update(
        max_minutes=args.minutes,
        max_steps=0,
        eval_every_minutes=min(args.eval_minutes, args.minutes),
        keep_best="identity",
    )
    overrides.update(dict(parse_override(o) for o in args.set))
    return apply_overrides(base, overrides)


def trained_seconds(run_dir: Path) -> float | None:
    """Training seconds of the run's last checkpoint, or None without one."""
    from stylex.training.checkpoint import STATE, WEIGHTS, load_state

    if not (run_dir / WEIGHTS).is_file() or not (run_dir / STATE).is_file():
        return None
    return float(load_state(run_dir / STATE)["seconds"])


def train_recipes(args: argparse.Namespace) -> None:
    """Train each recipe of `args.recipes` in turn under `args.root` (skip finished runs, resume short ones)."""
    from stylex.classifier import load_classifier
    from stylex.pipeline import train_stylex

    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    configs = {name: recipe_config(name, args) for name in names}  # every error before the first run
    classifier = None
    for name, cfg in configs.items():
        out = Path(args.root) / name
        done = trained_seconds(out)
        if done is not None and done >= args.minutes * 60:
            print(f"{name}: done ({done / 60:.1f} min trained), skipped")
            continue
        if done is not None and not args.resume:
            print(f"{name}: a run stopped at {done / 60:.1f} min is in {out}; pass --resume to continue it")
            continue
        if classifier is None:
            classifier = load_classifier(args.classifier, device=args.device, resolution=cfg.model.resolution)
        print(f"{name}: {RECIPES[name][0]}; training {args.minutes:g} min into {out}", flush=True)
        result = train_stylex(
            args.data, classifier, out, cfg, resume=done is not None, device=args.device, quiet=args.quiet
        )
        print(f"{name}: step {result.step}, {result.seconds / 60:.2f} min", flush=True)


def read_evals(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation records of a run's stats.jsonl: [{"minutes", "step", "identity", "consistency", "l1",
    "median_l1"}], in order of time."""
    path = run_dir / "stats.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        report = record.get("eval") if isinstance(record, dict) else None
        if not isinstance(report, dict):
            continue
        fig, median = report["stylex"], report["class_median"]
        out.append(
            {
                "minutes": record["seconds"] / 60,
                "step": record["step"],
                "identity": fig["identity"],
                "consistency": fig["consistency"],
                "l1": fig["l1"],
                "median_l1": median["l1"],
            }
        )
    return sorted(out, key=lambda r: r["minutes"])


def at_minutes(evals: list[dict[str, Any]], minutes: float) -> dict[str, Any] | None:
    """The evaluation nearest to `minutes` of training time, or None when the run has not got that far (none
    within 10 % of it)."""
    if not evals:
        return None
    best = min(evals, key=lambda r: abs(r["minutes"] - minutes))
    return best if abs(best["minutes"] - minutes) <= 0.1 * minutes + 1e-9 else None


def write_table(root: Path, runs: dict[str, list[dict[str, Any]]], marks: list[float]) -> Path:
    """`root/table.md`: one row per recipe and time mark, and each recipe's best identity."""
    lines = [
        "| recipe | minutes | step | identity | consistency | L1 | class-median L1 | best identity (at min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, evals in runs.items():
        top = max(evals, key=lambda r: r["identity"]) if evals else None
        best = f"{top['identity']:.3f} ({top['minutes']:.2f})" if top else "-"
        for m in marks:
            r = at_minutes(evals, m)
            if r is None:
                lines.append(f"| {name} | {m:g} | - | - | - | - | - | {best} |")
                continue
            lines.append(
                f"| {name} | {r['minutes']:.2f} | {r['step']} | {r['identity']:.3f} | {r['consistency']:.3f} | "
                f"{r['l1']:.3f} | {r['median_l1']:.3f} | {best} |"
            )
    lines.append("")
    lines += [f"- `{name}`: {RECIPES[name][0]}" for name in runs if name in RECIPES]
    path = root / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _nice_step(span: float) -> float:
    """A tick spacing of 1, 2 or 5 x 10^k giving about 5 ticks over `span`."""
    raw = span / 5 if span > 0 else 1.0
    p = 10 ** math.floor(math.log10(raw))
    return next(m * p for m in (1, 2, 5, 10) if m * p >= raw)


def write_svg(root: Path, runs: dict[str, list[dict[str, Any]]]) -> Path:
    """`root/curves.svg`: identity (left) and consistency (right) against training minutes, one polyline per
    recipe, written by hand (no plotting library)."""
    w, h, pad_l, pad_r, pad_t, pad_b = 360, 260, 48, 12, 28, 40
    legend_h = 18 * len(runs) + 10
    width, height = 2 * w, h + legend_h
    x_max = max((r["minutes"] for evals in runs.values() for r in evals), default=1.0) or 1.0
    step = _nice_step(x_max)
    x_max = math.ceil(x_max / step) * step
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for panel, key in enumerate(("identity", "consistency")):
        ox = panel * w
        x0, x1, y0, y1 = ox + pad_l, ox + w - pad_r, h - pad_b, pad_t

        def sx(m: float, x0: float = x0, x1: float = x1) -> float:
            return x0 + (x1 - x0) * m / x_max

        def sy(v: float, y0: float = y0, y1: float = y1) -> float:
            return y0 + (y1 - y0) * v

        parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="16" text-anchor="middle" font-size="13">{key}</text>')
        parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#444"/>')
        for i in range(6):  # y ticks 0 .. 1
            v = i / 5
            parts.append(f'<line x1="{x0}" x2="{x1}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{x0 - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
        n_ticks = round(x_max / step)
        for i in range(n_ticks + 1):
            m = i * step
            parts.append(f'<line x1="{sx(m):.1f}" x2="{sx(m):.1f}" y1="{y0}" y2="{y0 + 4}" stroke="#444"/>')
            parts.append(f'<text x="{sx(m):.1f}" y="{y0 + 16}" text-anchor="middle">{m:g}</text>')
        parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + 32}" text-anchor="middle">training minutes</text>')
        for j, evals in enumerate(runs.values()):
            colour = COLOURS[j % len(COLOURS)]
            pts = " ".join(f"{sx(r['minutes']):.1f},{sy(r[key]):.1f}" for r in evals)
            if pts:
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
            for r in evals:
                parts.append(f'<circle cx="{sx(r["minutes"]):.1f}" cy="{sy(r[key]):.1f}" r="2.2" fill="{colour}"/>')
    for j, name in enumerate(runs):
        y = h + 14 + 18 * j
        colour = COLOURS[j % len(COLOURS)]
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + 24}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
                     f'stroke-width="2.5"/>')  # fmt: skip
        label = escape(f"{name}: {RECIPES[name][0]}" if name in RECIPES else name)
        parts.append(f'<text x="{pad_l + 30}" y="{y}">{label}</text>')
    parts.append("</svg>")
    path = root / "curves.svg"
    path.write_text("\n".join(parts) + "\n")
    return path


def write_outputs(args: argparse.Namespace) -> None:
    """table.md and curves.svg from the runs under `args.root` (the recipes named, or every run folder)."""
    root = Path(args.root)
    if args.recipes:
        names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    else:
        names = sorted(p.name for p in root.iterdir() if (p / "stats.jsonl").is_file()) if root.is_dir() else []
    runs = {name: read_evals(root / name) for name in names}
    if not any(runs.values()):
        raise StylexError(f"no evaluation records under {root}; train the recipes first (drop --table-only).")
    marks = [float(m) for m in args.at.split(",")] if args.at else [args.minutes]
    root.mkdir(parents=True, exist_ok=True)
    table, svg = write_table(root, runs, marks), write_svg(root, runs)
    print(table.read_text())
    print(f"wrote {table} and {svg}")


def main(argv: list[str] | None = None) -> None:
    p = ScriptParser(description=__doc__)
    p.add_argument("--data", help="Image folder or .npz.")
    p.add_argument("--classifier", help="Classifier folder (stylex train-classifier) or other stylex source.")
    p.add_argument("--preset", default="shapes-32", help="Preset every recipe starts from.")
    p.add_argument("--minutes", type=float, default=30.0, help="Training minutes per recipe.")
    p.add_argument("--eval-minutes", type=float, default=2.0, help="Held-out evaluation every this many minutes.")
    p.add_argument("--recipes", default="", help=f"Comma-separated, from: {', '.join(RECIPES)}.")
    p.add_argument("--root", default="runs/recipes", help="Folder with one run folder per recipe.")
    p.add_argument("--recon-steps", type=int, default=RECON_FIRST_STEPS, help="Warm-up steps of recon-first.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override for every recipe.")
    p.add_argument("--resume", action="store_true", help="Continue runs stopped short of --minutes.")
    p.add_argument("--table-only", action="store_true", help="Only write table.md and curves.svg.")
    p.add_argument("--at", default="", help="Comma-separated minutes for the table rows (default: --minutes).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        if not args.table_only:
            if not (args.data and args.classifier and args.recipes):
                raise StylexError("training needs --data, --classifier and --recipes (or pass --table-only).")
            train_recipes(args)
        write_outputs(args)
    except StylexError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    script_main(main)
