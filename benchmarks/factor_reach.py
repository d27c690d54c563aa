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

``--probe FACTOR`` then asks whether the factor is *editable* along any linear direction of the styles: a ridge
regression from the styles (conv and toRGB) of 400 images to the factor ((cos, sin) for a hue), checked on other
images (R^2), and an edit of 32 further images along its minimal-norm direction that should move the factor to
its mirror value (a hue half-way round the circle; a size or position to low + high - value). A factor that is
decodable (high R^2) but does not move under this edit is held by the generator in a way no linear style edit
reaches. A few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stylex.errors import StylexError
from stylex.scripting import ScriptParser, script_main


@torch.no_grad()
def encode(model, classifier, dataset, num_images: int, seed: int, device: str):
    """The styles of `num_images` images picked as AttFind picks them, with their indices."""
    from stylex.attfind.run import encode_images, pick_indices

    indices = pick_indices(len(dataset), num_images, seed)
    return indices, encode_images(model, classifier, dataset.tensors(indices).to(device))


@torch.no_grad()
def reach(model, classifier, dataset, num_images: int, rgb: bool, seed: int, device: str) -> dict:
    from tqdm import tqdm

    from stylex.attfind.effects import image_noise
    from stylex.metrics.groundtruth import best_reach, factor_reach

    indices, s = encode(model, classifier, dataset, num_images, seed, device)
    noise = image_noise(model.G, indices, seed, device)
    bar = tqdm(desc="edits", unit="edit", leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    edits = factor_reach(model.G, s, noise, classifier, include_rgb=rgb, progress=progress)
    bar.close()
    return {
        "num_images": len(indices),
        "num_edits": len(edits),
        "best_conv": best_reach(edits, "conv"),  # the coordinates AttFind searches
        "best": best_reach(edits),  # every edited style (toRGB too with --rgb)
        "edits": edits,
    }


@torch.no_grad()
def linear_probe(model, classifier, dataset, factor: str, seed: int, device: str, num_fit: int = 400) -> dict:
    import numpy as np

    from stylex.attfind.effects import image_noise
    from stylex.data import FACTORS
    from stylex.metrics.groundtruth import normalised_changes
    from stylex.metrics.oracle import CHANGE_SCALE, read_factors
    from stylex.models.stylespace import StyleVector

    specs = {f.name: f for f in FACTORS}
    if factor not in specs or specs[factor].is_categorical:
        continuous = ", ".join(name for name, f in specs.items() if not f.is_categorical)
        raise StylexError(f"--probe needs a continuous factor ({continuous}), not {factor!r}.")
    if len(dataset) < num_fit + 64:
        raise StylexError(
            f"--probe fits on {num_fit} images and tests on 64: it needs {num_fit + 64}, {len(dataset)} given."
        )
    spec = specs[factor]
    indices, s = encode(model, classifier, dataset, num_fit + 64, seed, device)
    layout, n_conv = s.layout, s.flatten().shape[1]
    x = torch.cat([s.flatten(), *s.rgb], dim=1).double().cpu()  # [N, S + S_rgb]
    v = np.asarray(dataset.factors[factor], dtype=np.float64)[indices]
    hue = factor.endswith("hue")

    def targets(values: np.ndarray) -> torch.Tensor:
        cols = [np.cos(2 * np.pi * values), np.sin(2 * np.pi * values)] if hue else [values]
        return torch.tensor(np.stack(cols, axis=1))

    y = targets(v)
    fit, test, edit = slice(0, num_fit), slice(num_fit, num_fit + 32), slice(num_fit + 32, num_fit + 64)
    mu_x, mu_y = x[fit].mean(0), y[fit].mean(0)
    xc = x[fit] - mu_x
    w = torch.linalg.solve(xc.T @ xc + torch.eye(x.shape[1], dtype=x.dtype), xc.T @ (y[fit] - mu_y))  # ridge, 1.0
    pred = (x[test] - mu_x) @ w + mu_y
    r2 = [float(1 - ((pred[:, k] - y[test][:, k]) ** 2).mean() / y[test][:, k].var()) for k in range(y.shape[1])]
    mirror = (v[edit] + 0.5) % 1.0 if hue else spec.low + spec.high - v[edit]
    delta = (targets(mirror) - ((x[edit] - mu_x) @ w + mu_y)) @ torch.linalg.pinv(w)  # minimal-norm edit
    edited = (x[edit] + delta).float().to(device)
    conv = list(torch.split(edited[:, :n_conv], list(layout.conv_dims), dim=1))
    rgb = list(torch.split(edited[:, n_conv:], list(layout.rgb_dims), dim=1))
    rows = list(range(num_fit + 32, num_fit + 64))
    noise = image_noise(model.G, [indices[i] for i in rows], seed, device)
    before = model.G.synthesis(s.index(torch.tensor(rows, device=s.conv[0].device)), noise)
    after = model.G.synthesis(StyleVector(conv, rgb, layout), noise)
    changes = normalised_changes(read_factors(before), read_factors(after))
    flips = (classifier(before).argmax(1) != classifier(after).argmax(1)).float().mean()
    return {
        "factor": factor,
        "r2": [round(r, 3) for r in r2],
        "changes": {f: round(v, 3) for f, v in changes.items()},
        "intended_change": round(float(np.abs(mirror - v[edit]).mean() / CHANGE_SCALE[factor]) if not hue else 2.0, 3),
        "decision_flips": round(float(flips), 3),
    }


def main() -> None:
    p = ScriptParser(description=__doc__)
    p.add_argument("--model", required=True, help="a run folder or exported model")
    p.add_argument("--data", required=True, help="synthetic shapes with factors.csv")
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--rgb", action="store_true", help="also edit the toRGB styles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="write the full result as JSON")
    p.add_argument("--probe", metavar="FACTOR", help="also try a linear edit of the styles for this factor")
    args = p.parse_args()
    from stylex.data import load_dataset
    from stylex.pipeline import load_run

    model, classifier = load_run(args.model, None, args.device)
    dataset = load_dataset(args.data, resolution=model.resolution, progress=False)
    if dataset.factors is None:
        raise StylexError(f"{args.data} has no factors.csv: factor_reach needs synthetic shapes with their factors.")
    if args.probe:
        probe = linear_probe(model, classifier, dataset, args.probe, args.seed, args.device)
        print(
            f"linear probe of {args.probe}: held-out R^2 {probe['r2']}; an edit meant to change it by "
            f"{probe['intended_change']} changes {probe['changes']}; decisions changed {probe['decision_flips']}"
        )
    result = {"run": str(args.model), "data": str(args.data)}
    result.update(reach(model, classifier, dataset, args.num_images, args.rgb, args.seed, args.device))
    if args.probe:
        result["linear_probe"] = probe
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
    script_main(main)
