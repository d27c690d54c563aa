"""A positive control for the ground-truth benchmark: AttFind with a generator whose coordinates are the factors.

Would AttFind name the shortcut if the generator had a coordinate for it? This replaces StylEx's generator by the
scene renderer itself: each image's "styles" are its factors, one coordinate each (the two hues as the cosine and
sine of their angle, since a hue is a circle; the shape as a code in [0, 3) whose integer part is drawn), and an
edit re-renders the scene. The effect table is computed exactly as AttFind's (each coordinate moved to its minimum
or maximum over the N images, the change of every logit recorded) and the attributes are selected by the library's
own `select_attributes`, so the only thing that differs from the benchmark is the generator.

Usage (one scenario folder of benchmarks/groundtruth.py, with its data and classifier):

    python benchmarks/factor_attfind.py --cell runs/groundtruth-cond/shortcut/seed0 [--num-images 100] [--top-k 5]

Prints, per class, the top-K attributes (the coordinate and its direction), then the benchmark's scores of them
(`stylex.metrics.groundtruth`: the oracle reads each edit on the images, against the classifier's true importance),
as `stylex evaluate` computes them for a StylEx model. About 20 s per scenario folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from stylex.attfind.effects import Effects
from stylex.attfind.run import pick_indices
from stylex.attfind.selection import select_attributes
from stylex.classifier import load_classifier
from stylex.data import FACTOR_NAMES, load_dataset, render_scene, to_tensor
from stylex.metrics.groundtruth import MIN_CHANGE, USED_THRESHOLD, read_attributes, score_explanation, true_importance
from stylex.models.stylespace import StyleLayout, StyleVector
from stylex.scripting import ScriptParser, script_main

COORDS = (
    "shape",
    "obj_hue_cos",
    "obj_hue_sin",
    "obj_size",
    "pos_x",
    "pos_y",
    "bg_hue_cos",
    "bg_hue_sin",
    "bg_brightness",
)
"""The control generator's coordinates, in order; each names the factor it moves (the prefix before _cos/_sin)."""


def factor_of(coord: str) -> str:
    return coord.rsplit("_", 1)[0] if coord.endswith(("_cos", "_sin")) else coord


def to_coords(factors: dict[str, np.ndarray]) -> np.ndarray:
    """Factors of N scenes -> coordinates [N, 9]."""
    cols = []
    for name in COORDS:
        if name == "shape":
            cols.append(np.asarray(factors["shape"], dtype=np.float64) + 0.5)
        elif name.endswith("_cos"):
            cols.append(np.cos(2 * math.pi * np.asarray(factors[factor_of(name)], dtype=np.float64)))
        elif name.endswith("_sin"):
            cols.append(np.sin(2 * math.pi * np.asarray(factors[factor_of(name)], dtype=np.float64)))
        else:
            cols.append(np.asarray(factors[name], dtype=np.float64))
    return np.stack(cols, axis=1)


def render(coords: np.ndarray, resolution: int) -> torch.Tensor:
    """Coordinates [N, 9] -> images [N, 3, R, R] in [-1, 1]."""
    images = []
    for row in coords:
        c = dict(zip(COORDS, row, strict=True))
        f = {
            "shape": int(np.clip(math.floor(c["shape"]), 0, 2)),
            "obj_hue": math.atan2(c["obj_hue_sin"], c["obj_hue_cos"]) / (2 * math.pi) % 1.0,
            "obj_size": c["obj_size"],
            "pos_x": c["pos_x"],
            "pos_y": c["pos_y"],
            "bg_hue": math.atan2(c["bg_hue_sin"], c["bg_hue_cos"]) / (2 * math.pi) % 1.0,
            "bg_brightness": c["bg_brightness"],
        }
        assert set(f) == set(FACTOR_NAMES)
        images.append(render_scene(f, resolution))
    return to_tensor(np.stack(images))


class FactorRenderer(torch.nn.Module):
    """The control generator: `synthesis` renders the scenes whose coordinates are the styles (noise unused)."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution

    def synthesis(self, s: StyleVector, noise=None) -> torch.Tensor:
        return render(s.flatten().double().cpu().numpy(), self.resolution)


@torch.no_grad()
def main() -> None:
    p = ScriptParser(description=__doc__)
    p.add_argument("--cell", type=Path, required=True, help="ROOT/<scenario>/seed<k> of benchmarks/groundtruth.py")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-scenes", type=int, default=256, help="scenes for the true importance")
    p.add_argument("--read-images", type=int, default=64, help="images per class the oracle reads per attribute")
    args = p.parse_args()

    ds = load_dataset(args.cell / "eval-data", progress=False)
    resolution = ds.resolution
    classifier = load_classifier(str(args.cell / "clf"), resolution=resolution)
    idx = pick_indices(len(ds), args.num_images, args.seed)
    s = to_coords({name: np.asarray(ds.factors[name])[idx] for name in FACTOR_NAMES})  # [N, S]
    s_min, s_max = s.min(axis=0), s.max(axis=0)
    base = classifier(render(s, resolution)).float()  # [N, K]
    n, S, K = s.shape[0], s.shape[1], base.shape[1]
    table = torch.zeros(n, 2, S, K)
    for j in range(S):
        for d, target in enumerate((s_min[j], s_max[j])):  # direction 0 = toward the minimum, 1 = the maximum
            edited = s.copy()
            edited[:, j] = target
            table[:, d, j] = classifier(render(edited, resolution)).float() - base
    effects = Effects(
        table,
        torch.as_tensor(s_min, dtype=torch.float32),
        torch.as_tensor(s_max, dtype=torch.float32),
        base,
        torch.as_tensor(s, dtype=torch.float32),
        torch.zeros(n, 1),
        torch.ones(n, 2, S, dtype=torch.bool),
        1.0,
    )
    layout = StyleLayout(conv_dims=(S,), rgb_dims=(1,), conv_names=("factors",))
    result = select_attributes(effects, layout, top_k=args.top_k)
    print(f"{args.cell}: {n} images, {int((base.argmax(1) == 0).sum())} predicted as class 0")
    for cls in result.classes:
        ranked = ", ".join(
            f"#{a.rank} {COORDS[a.flat_index]} {a.direction} (effect {a.mean_effect:.2f}, flips {a.flip_rate:.2f})"
            for a in cls.attributes
        )
        print(f"  class {cls.class_name} ({cls.num_images} images to turn): {ranked}")

    importance = true_importance(classifier, resolution, args.num_scenes, 4, args.seed, USED_THRESHOLD, 256, "cpu")
    styles = StyleVector([torch.as_tensor(s, dtype=torch.float32)], [torch.zeros(n, 1)], layout)
    readings = read_attributes(
        FactorRenderer(resolution), styles, [], result, effects.s_min, effects.s_max, 1.0, base.argmax(1),
        args.top_k, args.read_images, MIN_CHANGE,
    )  # fmt: skip
    print(f"  truly used: {', '.join(importance.used())}")
    for k in sorted({3, 5, args.top_k}):
        if k > args.top_k:
            continue
        sc = score_explanation(readings, importance, k)
        first = ", ".join(f"{f} #{r}" for f, r in sc.first_rank.items() if r is not None)
        print(f"  @{k}: precision {sc.precision:.3f}, coverage {sc.coverage:.3f}, first ranks: {first}")
    flips = {(c.class_index, a.rank): a.flip_rate for c in result.classes for a in c.attributes}
    strong = [r for r in readings if r.rank <= args.top_k and flips[(r.class_index, r.rank)] >= 0.1]
    if strong:  # another reading of precision: only the attributes that alone flip >= 10% of the decisions
        share = sum(r.dominant in importance.used() for r in strong) / len(strong)
        print(f"  @{args.top_k}, only the {len(strong)} attributes that alone flip >= 10%: precision {share:.3f}")


if __name__ == "__main__":
    script_main(main)
