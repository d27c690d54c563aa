"""AttFind speed: the plain per-coordinate loop, the exact batched + cached path, and fast mode, on one model.

Usage:
    python benchmarks/attfind_speed.py --model RUN [--data PATH] --num-images 20 [--loop-images 2] \
        [--fast 50] [--bf16] [--max-batch 256]

All paths run in this process on the same images (drawn like `stylex attfind --seed`), the same fixed noise
and the same machine. The loop (one edit, one full forward pass at batch 1, as in the public ports) is timed on
`--loop-images` images only and also checks that the batched path gives the same effects there. Prints seconds
per image for each path, the speed-up over the loop, and how much of the exact top-10 fast mode kept:
- per image: |top-10 coordinates (fast table) ∩ top-10 coordinates (exact table)| / 10, mean over images;
- per class: |AttFind's top-10 attributes from the fast table ∩ those from the exact table| / 10.
Targets (issue 4): exact >= 5x the loop; fast >= 50x the loop with top-10 overlap >= 9/10.
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


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Run folder from `stylex train`.")
    ap.add_argument("--data", help="Images (default: the run's own data).")
    ap.add_argument("--num-images", type=int, default=20, help="Images for the batched paths.")
    ap.add_argument("--loop-images", type=int, default=2, help="Images for the (slow) plain loop.")
    ap.add_argument("--fast", type=int, default=50, help="M, coordinates per image evaluated exactly in fast mode.")
    ap.add_argument("--bf16", action="store_true", help="Also time bf16 autocast + channels_last.")
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
    print(f"images: {n} (loop on {min(args.loop_images, n)}), M = {args.fast}, max batch {args.max_batch}\n")

    def finder(**kw):
        return StyleEffects(G, C, max_batch=args.max_batch, progress=False, **kw)

    # warm-up (first calls allocate and pick kernels)
    finder().compute(s.index([0]), [t[:1] for t in noise])

    rows: list[tuple[str, float]] = []
    nl = min(args.loop_images, n)
    s_loop, noise_loop = s.index(list(range(nl))), [t[:nl] for t in noise]
    s_flat = s.flatten()
    s_min, s_max = s_flat.min(0).values, s_flat.max(0).values
    loop, sec = timed(lambda: reference_effects(G, C, s_loop, noise_loop, s_min=s_min, s_max=s_max))
    rows.append(("plain loop (batch 1, no cache, fp32)", sec / nl))

    exact, sec = timed(lambda: finder().compute(s, noise))
    rows.append(("exact: batched + cached, fp32", sec / n))
    check = (exact.effects[:nl] - loop).abs().max().item()

    fast, sec = timed(lambda: finder(fast=args.fast).compute(s, noise))
    rows.append((f"fast (M = {args.fast}), fp32", sec / n))
    variants = [fast]
    if args.bf16:
        exact16, sec = timed(lambda: finder(precision="bf16", channels_last=True).compute(s, noise))
        rows.append(("exact: batched + cached, bf16 + channels_last", sec / n))
        fast16, sec = timed(lambda: finder(fast=args.fast, precision="bf16", channels_last=True).compute(s, noise))
        rows.append((f"fast (M = {args.fast}), bf16 + channels_last", sec / n))
        variants.append(fast16)

    loop_s = rows[0][1]
    print("| path | s / image | vs loop |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {loop_s / t:.1f}x |")
    print(f"\nbatched vs loop on {nl} images: max |difference| {check:.2e} (logits)")

    ref = select_attributes(exact, G.layout, top_k=args.top_k, class_names=names)
    for label, eff in zip(["fp32", "bf16"], variants, strict=False):
        per_image = top_overlap(eff, exact, k=10)
        sel = select_attributes(eff, G.layout, top_k=args.top_k, class_names=names)
        per_class = [
            f"{a.class_name} {len(set(a.edits) & set(b.edits)) / len(a.attributes):.2f}"
            for a, b in zip(ref.classes, sel.classes, strict=True)
            if a.attributes
        ]
        print(
            f"fast {label}: per-image top-10 overlap {per_image:.3f}; per-class top-{args.top_k} attribute overlap "
            + (", ".join(per_class) or "n/a")
            + f"; first-order estimate kept {eff.meta['estimate_top10_overlap']:.3f} of the evaluated top-10"
        )


if __name__ == "__main__":
    main()
