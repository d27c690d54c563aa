"""AttFind: which StyleSpace coordinates move the classifier, per class (Lang et al. 2021, Sec. 3.2).

- `effects`: the effect table [N, 2, S, K] (batched, cached, chunked; exact or fast), `Effects` on disk;
- `selection`: the greedy per-class search (official notebook semantics), one-vs-all for K > 2;
- `filters`: optional image filter; `result`: `AttFindResult` and its JSON;
- `search.AttFind`: the algorithm as one object, `AttFind(G, C).run(s, noise) -> AttFindResult`;
- `run.run_attfind`: the `stylex attfind` command as one call.
"""

from stylex.attfind.effects import (
    Effects,
    StyleEffects,
    edit_styles,
    image_noise,
    reference_effects,
    style_deltas,
    top_overlap,
)
from stylex.attfind.filters import stable_images
from stylex.attfind.result import DIRECTIONS, AttFindResult, Attribute, ClassAttributes
from stylex.attfind.run import run_attfind
from stylex.attfind.search import AttFind
from stylex.attfind.selection import class_scores, greedy_select, select_attributes

__all__ = [
    "DIRECTIONS",
    "AttFind",
    "AttFindResult",
    "Attribute",
    "ClassAttributes",
    "Effects",
    "StyleEffects",
    "class_scores",
    "edit_styles",
    "greedy_select",
    "image_noise",
    "reference_effects",
    "run_attfind",
    "select_attributes",
    "stable_images",
    "style_deltas",
    "top_overlap",
]
