"""Image-specific explanations: which edits of this image's styles move the classifier toward another class.

Strategies (Lang et al. 2021, Sec. 3.3 / the official notebook):
- "independent": rank edits by this image's own effect on the target class's score and apply the top k
  cumulatively (1, then 1 + 2, ...);
- "subset": greedily add the edit that, together with those chosen so far, raises the target's score most
  (candidates: the image's best `num_candidates` edits), until the decision flips or k edits are used;
- "class": apply the target class's AttFind attributes (from `attributes.json`) cumulatively.

The target's score is its one-vs-all log-odds, logit_y - logsumexp_{k != y} logit_k (for two classes, the logit
difference), the quantity whose sign decides the flip.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stylex.attfind.effects import Effects, edit_styles
from stylex.attfind.result import DIRECTIONS
from stylex.attfind.selection import class_scores
from stylex.errors import StylexError, counted
from stylex.models.stylespace import StyleVector, coordinate_name

if TYPE_CHECKING:
    from stylex.models.generator import Generator

STRATEGIES = ("independent", "subset", "class")


@dataclass
class ExplanationStep:
    """The image after one more edit.

    Attributes:
        flat_index, layer, layer_name, channel, direction: the edit added at this step (tint: k for tint style k,
            else None; `StyleLayout.tint_index`).
        own_effect: the edit's effect alone on the target's score for this image (from the effect table).
        logits, probs: classifier output after all edits so far [K].
        predicted: argmax of `logits`.
    """

    flat_index: int
    layer: int
    layer_name: str
    channel: int
    direction: str
    own_effect: float
    logits: list[float]
    probs: list[float]
    predicted: int
    tint: int | None = None

    def describe(self) -> str:
        return f"{coordinate_name(self.layer_name, self.channel, self.tint)} -> {self.direction}"


def already_classified(name: str) -> str:
    """The refusal of a target class the image already has (as explanations see it: its reconstruction's class)."""
    return (
        f"the image's reconstruction, where the edits start, is already classified as {name!r}; pick another target "
        "class (or none, for the most likely other class)."
    )


NEAR_TIE = 0.05
"""A flip from a lead smaller than this (in probability) is called a near-tie: a 9-class image at 0.201 against
0.200 "flipped" at the first edit."""


@dataclass
class ImageExplanation:
    """An explanation of one image: the sequence of edits that moves it toward `target_class`.

    Attributes:
        strategy: "independent", "subset" or "class".
        source: the image file or "index <i> of <data>".
        class_names: [K].
        original_class: the class predicted for the unedited reconstruction.
        target_class: the class the edits move toward.
        base_logits, base_probs: of the unedited reconstruction [K].
        steps: one per added edit.
        flipped: True when the last step is predicted as the target class (an image that becomes the target
            class and then, with more than two classes, a third one has `edits_to_flip` but is not `flipped`;
            `outcome` says it in words). `to_dict` adds both and `final_class`.
        images: the pictures, on the CPU: [T + 2, 3, R, R] for T steps, the input, its reconstruction, then the
            image after each step, as the networks give them (the input in [-1, 1]; the generator's images may
            overshoot it a little, and are clipped when drawn). `stylex.counterfactual` fills it; None in an
            explanation made without pictures (`to_dict` leaves them out). `picture()` draws them as `stylex
            explain` does, `save(path)` writes that, and a notebook shows it (`_repr_png_`).
        image_probs: the classifier's probabilities on each of `images` [T + 2, K].
    """

    strategy: str
    source: str
    class_names: list[str]
    original_class: int
    target_class: int
    base_logits: list[float]
    base_probs: list[float]
    steps: list[ExplanationStep] = field(default_factory=list)
    images: torch.Tensor | None = field(default=None, repr=False, compare=False)
    image_probs: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def flipped(self) -> bool:
        return bool(self.steps) and self.steps[-1].predicted == self.target_class

    @property
    def edits_to_flip(self) -> int | None:
        """How many edits first make the image the target class (None if none does)."""
        return next((i + 1 for i, st in enumerate(self.steps) if st.predicted == self.target_class), None)

    @property
    def outcome(self) -> str:
        """In words: "flips at edit 1 of 5", "does not flip in 5 edits", "flips at edit 1 of 5, and is '4' by the
        last" (with more than two classes the later edits may carry it on to a third class)."""
        n, k = len(self.steps), self.edits_to_flip
        if k is None:
            return f"does not flip in {counted(n, 'edit')}"
        p_from, p_to = self.base_probs[self.original_class], self.base_probs[self.target_class]
        tie = f" (from a near-tie: p {p_from:.3f} against {p_to:.3f})" if p_from - p_to < NEAR_TIE else ""
        if self.flipped:
            return f"flips at edit {k} of {n}{tie}"
        last = self.steps[-1].predicted
        ends = "is back by the last" if last == self.original_class else f"is {self.class_names[last]!r} by the last"
        return f"flips at edit {k} of {n}{tie}, and {ends}"

    @property
    def edits(self) -> list[tuple[int, int]]:
        return [(st.flat_index, DIRECTIONS.index(st.direction)) for st in self.steps]

    def picture(self):
        """The input, its reconstruction and the image after each edit, each with the classifier's probabilities
        under it: the PIL image `stylex explain` writes."""
        from stylex.explain.run import sequence_picture

        if self.images is None or self.image_probs is None:
            raise StylexError(
                "this explanation has no pictures (to_dict and explanation.json leave them out); "
                "stylex.counterfactual(...) makes one with them."
            )
        return sequence_picture(self.images, self.image_probs, self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `picture()` to the file `path`, a PNG (.png, or no suffix); returns the path."""
        from stylex.explain.render import save_image

        path = Path(path)
        if path.is_dir():
            raise StylexError(f"{path} is a folder; pass the picture's file name, e.g. {path / 'explanation.png'}.")
        if path.suffix.lower() not in ("", ".png"):
            raise StylexError(f"{path}: the picture is written as a PNG; name it {path.with_suffix('.png').name}.")
        return save_image(self.picture(), path)

    def _repr_png_(self) -> bytes | None:
        """Jupyter shows the picture (when there is one)."""
        if self.images is None or self.image_probs is None:
            return None
        buf = io.BytesIO()
        self.picture().save(buf, "PNG")
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, images=None, image_probs=None))
        del d["images"], d["image_probs"]
        d["flipped"] = self.flipped
        d["num_edits_to_flip"] = self.edits_to_flip
        d["final_class"] = self.steps[-1].predicted if self.steps else self.original_class
        d["outcome"] = self.outcome
        return d


def target_score(logits: torch.Tensor, y: int) -> torch.Tensor:
    """One-vs-all log-odds of class y: logit_y - logsumexp_{k != y} logit_k, for logits [B, K] -> [B]."""
    others = [k for k in range(logits.shape[1]) if k != y]
    return logits[:, y] - torch.logsumexp(logits[:, others], dim=1)


class Counterfactuals:
    """Explains single images with style edits (one verb: `explain`).

    Args:
        G: the generator; classifier: images -> logits [N, K].
        s_min, s_max: [S] edit targets from the AttFind run (its `Effects`).
        shift_size: edit size from the AttFind run.
        class_names: [K].
        num_candidates: edits the "subset" strategy considers (the image's best by own effect).
    """

    def __init__(
        self,
        G: Generator,
        classifier: Callable[[torch.Tensor], torch.Tensor],
        s_min: torch.Tensor,
        s_max: torch.Tensor,
        shift_size: float,
        class_names: Sequence[str],
        num_candidates: int = 20,
    ):
        self.G, self.C = G, classifier
        self.s_min, self.s_max, self.shift_size = s_min, s_max, shift_size
        self.class_names = list(class_names)
        self.num_candidates = num_candidates

    @torch.no_grad()
    def explain(
        self,
        s: StyleVector,
        noise: list[torch.Tensor],
        effects: Effects,
        strategy: str = "independent",
        target: int | None = None,
        top_k: int = 5,
        class_edits: Sequence[tuple[int, int]] | None = None,
        source: str = "",
    ) -> ImageExplanation:
        """Explain one image.

        Args:
            s: the image's styles (batch 1); noise: its fixed noise.
            effects: its effect table (1 image; exact or fast).
            strategy: one of STRATEGIES.
            target: class to move toward; default the most likely class other than the predicted one.
            top_k: most edits to apply.
            class_edits: the target class's AttFind attributes (needed for "class").
            source: how the image is named in the result.
        """
        if strategy not in STRATEGIES:
            raise StylexError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}.")
        if s.batch_size != 1 or effects.num_images != 1:
            raise StylexError("Counterfactuals.explain takes one image at a time.")
        base = effects.base_logits[0]  # [K]
        original = int(base.argmax())
        K = base.numel()
        if target is None:
            target = int(base.clone().index_fill_(0, torch.tensor([original]), float("-inf")).argmax())
        if not 0 <= target < K:
            raise StylexError(f"target class {target} is outside [0, {K}).")
        if target == original:
            raise StylexError(already_classified(self.class_names[target]))
        own = class_scores(effects, target, one_vs_all=True)[0]  # [2, S]
        best_dir = own.argmax(dim=0)  # [S] the better direction per coordinate
        best = own.amax(dim=0)  # [S]
        order = best.argsort(descending=True)
        ranked = [(int(j), int(best_dir[j])) for j in order]
        if strategy == "independent":
            edits = ranked[:top_k]
        elif strategy == "class":
            if not class_edits:
                raise StylexError(f"class {self.class_names[target]!r} has no AttFind attributes to apply.")
            # AttFind may list both directions of one coordinate (each raises the class); edits keep a coordinate's
            # first, so the second would be a step that changes nothing
            edits = [e for i, e in enumerate(class_edits) if e[0] not in {j for j, _ in class_edits[:i]}][:top_k]
        else:
            edits = self._greedy_subset(s, noise, ranked[: max(self.num_candidates, top_k)], target, top_k)
        result = ImageExplanation(
            strategy,
            source,
            self.class_names,
            original,
            target,
            [round(float(v), 5) for v in base],
            [round(float(v), 5) for v in base.softmax(0)],
        )
        if not edits:
            return result
        # the image after the first t edits, t = 1..len(edits), in one batch
        prefix = [edit_styles(s, edits[: t + 1], self.s_min, self.s_max, self.shift_size) for t in range(len(edits))]
        logits = self._logits(StyleVector.cat(prefix), noise).cpu()  # [T, K]
        layout = s.layout
        for t, (j, d) in enumerate(edits):
            coord = layout.coord(j)
            result.steps.append(
                ExplanationStep(
                    flat_index=j,
                    layer=coord.layer,
                    layer_name=layout.names[coord.layer],
                    channel=coord.channel,
                    direction=DIRECTIONS[d],
                    own_effect=round(float(own[d, j]), 5),
                    logits=[round(float(v), 5) for v in logits[t]],
                    probs=[round(float(v), 5) for v in logits[t].softmax(0)],
                    predicted=int(logits[t].argmax()),
                    tint=layout.tint_index(j),
                )
            )
        return result

    def _logits(self, s: StyleVector, noise: list[torch.Tensor]) -> torch.Tensor:
        n = s.batch_size
        return self.C(self.G.synthesis(s, [t.expand(n, -1, -1, -1) for t in noise])).float()  # [n, K]

    def _greedy_subset(self, s, noise, candidates, target, top_k) -> list[tuple[int, int]]:
        chosen: list[tuple[int, int]] = []
        left = list(candidates)
        while left and len(chosen) < top_k:
            trials = StyleVector.cat(
                [edit_styles(s, chosen + [e], self.s_min, self.s_max, self.shift_size) for e in left]
            )
            logits = self._logits(trials, noise)  # [len(left), K]
            best = int(target_score(logits, target).argmax())
            chosen.append(left.pop(best))
            if int(logits[best].argmax()) == target:
                break
        return chosen
