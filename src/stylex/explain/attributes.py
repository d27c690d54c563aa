"""Pictures of class attributes: before/after strips for the images an attribute moves most, and GIF sweeps."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from stylex.attfind.effects import Effects, edit_styles
from stylex.attfind.result import AttFindResult, Attribute
from stylex.attfind.selection import class_scores
from stylex.errors import StylexError
from stylex.models.stylespace import StyleVector

if TYPE_CHECKING:
    from stylex.models.generator import Generator


def attribute_file_stem(attribute: Attribute) -> str:
    """e.g. "01_b16.conv0_c12_max"."""
    return f"{attribute.rank:02d}_{attribute.layer_name}_c{attribute.channel}_{attribute.direction}"


_PICTURE = re.compile(r"\d{2,}_.+_c\d+_(min|max)\.(png|gif)")
"""The names `render_attributes` gives its pictures (`attribute_file_stem` + .png or .gif)."""


def remove_attribute_pictures(folder: Path) -> None:
    """Delete the pictures `render_attributes` wrote under `folder` (and class folders left empty), nothing else:
    files of one's own there stay."""
    if not folder.is_dir():
        return
    for sub in folder.iterdir():
        if not sub.is_dir() or sub.is_symlink():
            continue
        for f in sub.iterdir():
            if f.is_file() and _PICTURE.fullmatch(f.name):
                f.unlink()
        if not any(sub.iterdir()):
            sub.rmdir()


@torch.no_grad()
def render_attributes(
    G: Generator,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    s: StyleVector,
    noise: list[torch.Tensor],
    result: AttFindResult,
    effects: Effects,
    out_dir: str | Path,
    num_images: int = 6,
    num_gif_images: int = 4,
    num_frames: int = 16,
    scale: int | None = None,
    only: Collection[tuple[int, int]] | None = None,
    progress: bool = False,
) -> list[Path]:
    """For every class and attribute: `<class>/<stem>.png` (a strip) and `<class>/<stem>.gif` (a sweep).

    The strip shows, for the `num_images` images (not predicted as the class) whose score for the class the
    edit raises most, the reconstruction above the edited image, each captioned with the class probability.
    The GIF sweeps the coordinate from its minimum to its maximum over the AttFind images and back, for the
    first `num_gif_images` of them.

    Args:
        G, classifier: the model and classifier.
        s, noise: styles and fixed noise of the N AttFind images.
        result: the selected attributes; effects: the table they came from.
        out_dir: folder to write into (class subfolders are made).
        num_images: images in each strip.
        num_gif_images: images each GIF sweeps.
        num_frames: sweep positions from the coordinate's minimum to its maximum, at least 2. The GIF goes there
            and back (2 * num_frames - 2 frames; the way back shows the same pictures again); each position costs
            one synthesis of `num_gif_images` images, most of the drawing time. Each way takes about 1.8 s
            whatever the count (fewer frames are shown longer).
        scale: tile upscaling; default so that tiles are at least 96 px.
        only: the (class index, rank) pairs to draw; None = every attribute.
        progress: a tqdm bar over the attributes (when stderr is a terminal).

    Returns:
        the files written.
    """
    from stylex.data import class_dir_names
    from stylex.explain.render import annotated_grid, save_gif, save_image

    if num_frames < 2:
        raise StylexError(f"a GIF sweep needs at least 2 frames (the minimum and the maximum), got {num_frames}.")
    out_dir = Path(out_dir)
    R = G.resolution if hasattr(G, "resolution") else None
    scale = scale or max(1, -(-96 // (R or 96)))
    device = s.conv[0].device
    s_min, s_max = effects.s_min.to(device), effects.s_max.to(device)
    one_vs_all = result.settings.get("score") == "one_vs_all"
    names = result.class_names
    folders = class_dir_names(names)
    pred = effects.predicted
    written: list[Path] = []
    wanted = [
        (c, folder, [a for a in c.attributes if only is None or (c.class_index, a.rank) in only])
        for c, folder in zip(result.classes, folders, strict=True)
        if torch.any(pred != c.class_index)
    ]
    from stylex.progress import progress_bar

    bar = progress_bar(total=sum(len(w[2]) for w in wanted), desc="strips and GIFs", unit="attribute",
               disable=None if progress else True)  # fmt: skip
    for c, folder, attributes in wanted:
        y = c.class_index
        rows = torch.nonzero(pred != y).flatten()
        scores = class_scores(effects, y, one_vs_all)[rows]  # [M, 2, S]
        for a in attributes:
            j, d = a.edit
            order = scores[:, d, j].argsort(descending=True)[:num_images]
            r = rows[order].to(device)
            s_r, noise_r = s.index(r), [n[r] for n in noise]
            before = G.synthesis(s_r, noise_r)  # [n, 3, R, R]
            after = G.synthesis(edit_styles(s_r, [(j, d)], s_min, s_max, effects.shift_size), noise_r)
            p_before = classifier(before).softmax(dim=1)[:, y].cpu()  # [n]
            p_after = classifier(after).softmax(dim=1)[:, y].cpu()
            caption = [[f"before {float(p):.2f}"] for p in p_before], [[f"after {float(p):.2f}"] for p in p_after]
            title = f"{c.class_name}: #{a.rank} {a.describe()} (effect {a.mean_effect:.2f}); p = p({c.class_name})"
            strip = annotated_grid([before, after], list(caption), scale=scale, title=title)
            stem = attribute_file_stem(a)
            written.append(save_image(strip, out_dir / folder / f"{stem}.png"))

            g = r[:num_gif_images]
            s_g, noise_g = s.index(g), [n[g] for n in noise]
            lo, hi = float(s_min[j]), float(s_max[j])
            frames = []
            for v in torch.linspace(lo, hi, num_frames):
                flat = s_g.flatten().clone()
                flat[:, j] = v
                img = G.synthesis(s_g.unflatten(flat), noise_g)
                p = classifier(img).softmax(dim=1)[:, y].cpu()
                lines = [[f"p={float(q):.2f}"] for q in p]
                frames.append(
                    annotated_grid(
                        [img],
                        [lines],
                        scale=scale,
                        title=f"{a.name()} = {float(v):+.2f} ({lo:+.2f} .. {hi:+.2f}); p = p({c.class_name})",
                    )
                )
            frames += frames[-2:0:-1]  # and back: the same pictures (fixed noise), not drawn twice
            duration = max(40, round(1800 / (num_frames - 1)))  # ms: each way takes about 1.8 s at any frame count
            written.append(save_gif(frames, out_dir / folder / f"{stem}.gif", duration_ms=duration))
            bar.update(1)  # counted when drawn
    bar.close()
    return written
