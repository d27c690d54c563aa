"""Factor reach: can a single StyleSpace coordinate change a given factor at all?

AttFind (and every baseline here) explains with single-coordinate edits. A factor that no single coordinate moves
cannot be named by any of them, however the coordinates are ranked. This diagnostic edits every coordinate of a
model alone, in both directions, exactly as AttFind does (toward the coordinate's minimum or maximum over the
images), reads the images before and after with the factor oracle (`stylex.metrics.oracle`), and reports per
factor the coordinates that change it most, with the classifier's response to the same edit.

    python benchmarks/factor_reach.py --model RUN --data EVAL_DATA [--num-images 32] [--rgb] [--out reach.json]

``--rgb`` also edits the toRGB styles, which AttFind does not search (paper semantics: modulated-conv styles only).
Changes are normalised as in `stylex evaluate`: 1.0 = as much as redrawing the factor at random. Needs synthetic
shapes (the oracle reads their seven factors). About 3 minutes for a shapes-32 model on 32 images with --rgb on
the 2-core CPU machine (the oracle reads ~45,000 images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


@torch.no_grad()
def reach(run: str, data: str, num_images: int, rgb: bool, seed: int, device: str) -> dict:
    from tqdm import tqdm

    from stylex.attfind.effects import image_noise
    from stylex.attfind.run import encode_images, pick_indices
    from stylex.data import load_dataset
    from stylex.metrics.groundtruth import best_reach, factor_reach
    from stylex.pipeline import load_run

    model, classifier = load_run(run, None, device)
    dataset = load_dataset(data, resolution=model.resolution, progress=False)
    indices = pick_indices(len(dataset), num_images, seed)
    s = encode_images(model, classifier, dataset.tensors(indices).to(device))
    noise = image_noise(model.G, indices, seed, device)
    bar = tqdm(desc="edits", unit="edit", leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    edits = factor_reach(model.G, s, noise, classifier, include_rgb=rgb, progress=progress)
    bar.close()
    names = {"conv": s.layout.conv_names, "rgb": [f"toRGB{i}" for i in range(len(s.layout.rgb_dims))]}
    for e in edits:
        e["layer_name"] = names[e["kind"]][e["layer"]]
    return {
        "run": str(run),
        "data": str(data),
        "num_images": len(indices),
        "num_edits": len(edits),
        "best_conv": best_reach(edits, "conv"),  # the coordinates AttFind searches
        "best": best_reach(edits),  # every edited style (toRGB too with --rgb)
        "edits": edits,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a run folder or exported model")
    p.add_argument("--data", required=True, help="synthetic shapes with factors.csv")
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--rgb", action="store_true", help="also edit the toRGB styles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="write the full result as JSON")
    args = p.parse_args()
    result = reach(args.model, args.data, args.num_images, args.rgb, args.seed, args.device)
    print(f"{args.model}: {result['num_edits']} single-coordinate edits on {result['num_images']} images")
    for title, key in (("conv styles (what AttFind searches)", "best_conv"), ("all edited styles", "best")):
        if key == "best" and not args.rgb:
            break
        print(
            f"\n{title}\nfactor          best change  coordinate            its next largest change   |d logit|  flips"
        )
        for f, ranked in result[key].items():
            e = ranked[0]
            others = sorted(((v, g) for g, v in e["changes"].items() if g != f), reverse=True)[0]
            coord = f"{e['layer_name']}[{e['channel']}] {e['direction']}"
            print(
                f"{f:15s} {e['changes'][f]:11.3f}  {coord:20s} {others[1]:>14s} {others[0]:.3f}"
                f"     {e['mean_abs_logit_change']:9.3f}  {e['decision_flips']:.2f}"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
