"""AttFind speed: the plain per-coordinate loop, the exact batched + cached path, and fast mode, on one model.

Usage:
    python benchmarks/attfind_speed.py --model RUN [--data PATH] --num-images 20 [--loop-images 2] \
        [--fast 30 [35 ...]] [--fast-points 3] [--bf16] [--ablation] [--max-batch 256]

All paths run in this process, back to back, on the same images (drawn like `stylex attfind --seed`), the same
fixed noise and the same machine. The loop (one edit, one full forward pass at batch 1, as in the public ports)
is timed on `--loop-images` images only and also checks that the batched path gives the same effects there.
Prints, per path, seconds per image (wall clock; CPU seconds of this process beside it, the fairer figure when
other work shares the machine), the speed-up over the loop, and how much of the exact fp32 table's top-10 the
path kept:
- per image: |top-10 coordinates (its table) ∩ top-10 coordinates (exact fp32 table)| / 10, mean over images,
  coordinates ranked by `Effects.coordinate_scores` (max |effect| over directions and classes);
- per class: |AttFind's top-k attributes from its table ∩ those from the exact fp32 table| / k.
The effects are deterministic, so the overlaps do not depend on the machine's load; the times do.
Targets (issue 4): exact >= 5x the loop; fast >= 50x the loop with per-image top-10 overlap >= 0.9.
`--ablation` adds fast mode without the perturbed gradient points (`fast_points=0`) and all-bf16 rows.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from stylex.attfind import StyleEffects, reference_effects, select_attributes, top_overlap
from stylex.attfind.run import class_names_of, encode_dataset, pick_indices
from stylex.data import load_dataset
from stylex.pipeline import load_run
from stylex.scripting import ScriptParser, script_main


def timed(fn):
    """(fn(), wall seconds, CPU seconds of this process)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    ap = ScriptParser(description=__doc__)
    ap.add_argument("--model", required=True, help="Run folder from `stylex train`.")
    ap.add_argument("--data", help="Images (default: the run's own data).")
    ap.add_argument("--num-images", type=_positive, default=20, help="Images for the batched paths.")
    ap.add_argument("--loop-images", type=_positive, default=2, help="Images for the (slow) plain loop.")
    ap.add_argument(
        "--fast", type=int, nargs="+", default=[30], help="M (one row each): fast mode evaluates 2M edits per image."
    )
    ap.add_argument("--fast-points", type=int, default=3, help="Fast mode's perturbed gradient points per image.")
    ap.add_argument("--bf16", action="store_true", help="Also time bf16 autocast + channels_last.")
    ap.add_argument("--ablation", action="store_true", help="Also fast mode without perturbed points, all-bf16.")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    model, C = load_run(args.model, device=args.device)
    data = args.data or model.run_info["data"]
    dataset = load_dataset(data, resolution=model.resolution, progress=False)
    indices = pick_indices(len(dataset), args.num_images, args.seed)
    s, noise = encode_dataset(model, C, dataset, indices, args.seed, args.device)
    G, n = model.G, len(indices)
    S = G.layout.num_coords
    names = class_names_of(model, C)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, device {args.device}"
    )
    print(f"model: {args.model}, {model.resolution} px, S = {S} conv coordinates, K = {model.num_classes}")
    print(
        f"images: {n} (loop on {min(args.loop_images, n)}), M = {', '.join(map(str, args.fast))} (2M edits per "
        f"image), {args.fast_points} perturbed gradient points, max batch {args.max_batch}\n"
    )

    def finder(**kw):
        return StyleEffects(G, C, max_batch=args.max_batch, progress=False, **kw)

    # warm-up (first calls allocate and pick kernels)
    two = (s.index([0, 1 % n]), [t[[0, 1 % n]] for t in noise])
    finder().compute(*two)
    if args.bf16:
        finder(fast=args.fast[0], precision="bf16", channels_last=True).compute(*two)

    nl = min(args.loop_images, n)
    s_loop, noise_loop = s.index(list(range(nl))), [t[:nl] for t in noise]
    s_flat = s.flatten()
    s_min, s_max = s_flat.min(0).values, s_flat.max(0).values
    # Warm the loop up like the batched paths (one image), so that first-call costs do not inflate its time.
    reference_effects(G, C, s.index([0]), [t[:1] for t in noise], s_min=s_min, s_max=s_max)
    loop, wall, cpu = timed(lambda: reference_effects(G, C, s_loop, noise_loop, s_min=s_min, s_max=s_max))
    rows: list[tuple[str, float, float, object]] = [("plain loop (batch 1, no cache, fp32)", wall / nl, cpu / nl, None)]

    def run(name: str, **kw) -> None:
        eff, wall, cpu = timed(lambda: finder(**kw).compute(s, noise))
        rows.append((name, wall / n, cpu / n, eff))

    bf16_kw = dict(precision="bf16", channels_last=True)
    run("exact: batched + cached, fp32")
    exact = rows[-1][3]
    check = (exact.effects[:nl] - loop).abs().max().item()
    for m in args.fast:
        run(f"fast (M = {m}), fp32", fast=m, fast_points=args.fast_points)
    if args.ablation:
        run(f"fast (M = {args.fast[0]}), fp32, no perturbed points", fast=args.fast[0], fast_points=0)
    if args.bf16:
        run("exact: batched + cached, bf16 + channels_last", **bf16_kw)
        for m in args.fast:
            run(f"fast (M = {m}), bf16 + channels_last", fast=m, fast_points=args.fast_points, **bf16_kw)
        if args.ablation:
            m = args.fast[0]
            run(f"fast (M = {m}), all layers bf16", fast=m, fast_points=args.fast_points, bf16_from=0, **bf16_kw)
            run(f"fast (M = {m}), bf16, no perturbed points", fast=m, fast_points=0, **bf16_kw)

    ref = select_attributes(exact, G.layout, top_k=args.top_k, class_names=names)
    loop_wall, loop_cpu = rows[0][1], rows[0][2]
    head = "| path | s / image | vs loop | CPU s / image | vs loop (CPU) | per-image top-10 "
    print(head + f"| per-class top-{args.top_k} |")
    print("|---|---|---|---|---|---|---|")
    for name, wall, cpu, eff in rows:
        per_image = per_class = "-"
        if eff is not None and eff is not exact:
            per_image = f"{top_overlap(eff, exact, k=10):.3f}"
            sel = select_attributes(eff, G.layout, top_k=args.top_k, class_names=names)
            per_class = ", ".join(
                f"{len(set(a.edits) & set(b.edits)) / len(a.attributes):.2f}"
                for a, b in zip(ref.classes, sel.classes, strict=True)
                if a.attributes
            )
        print(
            f"| {name} | {wall:.3f} | {loop_wall / wall:.1f}x | {cpu:.3f} | {loop_cpu / cpu:.1f}x | {per_image} "
            f"| {per_class} |"
        )
    print(f"\nbatched vs loop on {nl} images: max |difference| {check:.2e} (logits)")
    for name, _, _, eff in rows:
        if eff is not None and eff.meta.get("mode") == "fast":
            kept = eff.meta["estimate_top10_overlap"]
            print(f"{name}: the first-order estimate kept {kept:.3f} of the evaluated top-10")


if __name__ == "__main__":
    script_main(main)
