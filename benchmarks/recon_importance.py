"""True importance through a StylEx model: does the classifier use a factor on the generator's pictures?

The ground-truth benchmark calls a factor *truly used* when redrawing it alone in the renderer changes the
classifier's decision (`stylex.metrics.groundtruth.true_importance`). AttFind, though, sees the classifier only on
the generator's pictures, which draw soft, in-between shapes. This measures the same interventions twice on the same
scenes: on the renders, and on their StylEx reconstructions (``C(G(E(x), C(x)))``, x the render). A factor with a
decision-change rate well above its rate on renders is one the classifier uses only as the generator draws it, and
an attribute that changes it is an explanation of the model's pictures that the renders do not bear out.

Usage (a StylEx run folder of benchmarks/groundtruth.py, or any run trained on synthetic shapes):

    python benchmarks/recon_importance.py --run runs/gt-tint-fp3200s/two-factor/seed0/stylex [--num-scenes 256]

Prints, per factor, the decision-change rate and mean probability change on renders and through the model, and
which factors each calls truly used. About 1 min per run on the 2-core CPU at 32 px.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stylex.data.dataset import FACTORS_CSV
from stylex.errors import StylexError
from stylex.metrics.groundtruth import true_importance
from stylex.pipeline import load_run
from stylex.scripting import ScriptParser, script_main


def through_model(model, classifier, batch_size: int = 128, seed: int = 0):
    """images [N, 3, R, R] -> the classifier's logits of their reconstructions, every image with the same fixed noise
    maps (so that a scene and its intervened copy differ only by the intervention)."""
    noise = model.G.make_noise(1, generator=torch.Generator().manual_seed(seed))  # one draw, shared by every image

    @torch.no_grad()
    def classify(x: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in x.split(batch_size):
            maps = [n.expand(len(chunk), *n.shape[1:]) for n in noise]
            out.append(classifier(model.reconstruct(chunk, classifier(chunk), maps)))
        return torch.cat(out)

    return classify


def main() -> None:
    p = ScriptParser(description=__doc__)
    p.add_argument("--run", required=True, help="a StylEx run folder trained on synthetic shapes")
    p.add_argument("--num-scenes", type=int, default=256)
    p.add_argument("--num-values", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    model, classifier = load_run(args.run)
    data = model.run_info.get("data")
    if not data or not (Path(data) / FACTORS_CSV).is_file():
        raise StylexError(
            f"{args.run} was not trained on synthetic shapes (its data {data} has no {FACTORS_CSV}); the renderer's "
            "interventions mean nothing to its classifier."
        )
    common = dict(resolution=model.resolution, num_scenes=args.num_scenes, num_values=args.num_values, seed=args.seed)
    renders = true_importance(classifier, **common)
    recon = true_importance(through_model(model, classifier), **common)

    print(f"{args.run}: {args.num_scenes} scenes x {args.num_values} values per factor")
    print(f"{'factor':<14} {'renders: rate':>14} {'prob':>6}   {'through the model: rate':>24} {'prob':>6}")
    for i, name in enumerate(renders.factors):
        print(
            f"{name:<14} {renders.flip_rate[i]:>14.3f} {renders.prob_change[i]:>6.3f}   "
            f"{recon.flip_rate[i]:>24.3f} {recon.prob_change[i]:>6.3f}"
        )
    used = {kind: ", ".join(t.used()) or "-" for kind, t in (("renders", renders), ("model", recon))}
    print(f"truly used on renders: {used['renders']}; through the model: {used['model']}")
    if args.json:
        figures = {"renders": renders.to_dict(), "through_model": recon.to_dict()}
        with open(args.json, "w") as f:
            json.dump({"run": args.run, **common, **figures}, f, indent=1)


if __name__ == "__main__":
    script_main(main)
