"""Image grids and files (PIL lives here, nowhere else in the library)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylex.data.convert import to_uint8
from stylex.files import atomic_write


def grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Rows of images (each [N, 3, R, R] in [-1, 1], same N and R) -> one uint8 image [H, W, 3], white gaps."""
    arrays = [to_uint8(r) for r in rows]  # each [N, R, R, 3]
    n, r = arrays[0].shape[0], arrays[0].shape[1]
    out = np.full((len(rows) * (r + pad) + pad, n * (r + pad) + pad, 3), 255, np.uint8)
    for i, a in enumerate(arrays):
        for j in range(n):
            y, x = pad + i * (r + pad), pad + j * (r + pad)
            out[y : y + r, x : x + r] = a[j]
    return out


def save_png(image: np.ndarray, path: str | Path, scale: int = 1) -> None:
    """Write uint8 [H, W, 3] as PNG (nearest-neighbour upscaled by `scale`), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 2) -> None:
    """Rows of images -> PNG grid."""
    save_png(grid(rows), path, scale=scale)


# --------------------------------------------------------------------------------- captioned images and GIFs
def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def drawable(text: str) -> str:
    """`text` in the characters Pillow's default font draws (ASCII): accents dropped ("dögs" -> "dogs"), anything
    else as "?", rather than the empty boxes the font draws for them. The HTML report shows the names as they are."""
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return "".join(ch if " " <= ch <= "~" else _ASCII_LOOKALIKES.get(ch, "?") for ch in plain)


def _drawn(text: str) -> str:
    """`drawable(text)` with each space doubled: the default font's space is 2 px at its size 10, so that "flips at
    edit" read as "flipsatedit"."""
    return drawable(text).replace(" ", "  ")


_ASCII_LOOKALIKES = {  # punctuation that NFKD leaves alone, drawn as the ASCII it stands for
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),  # hyphens, dashes, minus
    **dict.fromkeys("\u2018\u2019\u201a\u2032", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u2033\u00ab\u00bb", '"'),  # and guillemets
    **dict.fromkeys("\u2039\u203a", "'"),
    "\u2044": "/",  # the fraction slash NFKD gives for 1/2
    "\u0152": "OE",
    "\u1e9e": "SS",
    "\u0110": "D",
    "\u0111": "d",
    "\u00d0": "D",
    "\u00f0": "d",
    "\u00de": "Th",
    "\u00fe": "th",
    "\u00d7": "x",
    "\u00b7": ".",
    "\u2022": "*",
    "\u00df": "ss",
    "\u00e6": "ae",
    "\u00c6": "AE",
    "\u0153": "oe",
    "\u00f8": "o",
    "\u00d8": "O",
    "\u0142": "l",
    "\u0141": "L",
    "\u00b0": "deg",
}


def _line_height(font) -> int:
    from PIL import ImageDraw

    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag[]", font=font)
    return int(box[3] - box[1]) + 3  # ints already (typed float: textbbox takes float positions)


def annotated_grid(
    rows: list[torch.Tensor],
    captions: list[list[list[str]]] | None = None,
    scale: int = 4,
    title: str | None = None,
    pad: int = 4,
) -> Image.Image:
    """Rows of images with text under every tile (Pillow's default font), and an optional title line.

    Args:
        rows: each [N_r, 3, R, R] in [-1, 1] (same R; rows may differ in length).
        captions: captions[r][i] = lines of text under tile i of row r; None for no text.
        scale: nearest-neighbour upscaling of every tile.
        title: a line of text above the grid.
        pad: white gap in pixels.

    Returns:
        an RGB PIL image.
    """
    from PIL import ImageDraw

    font = _font()
    lh = _line_height(font)
    arrays = [to_uint8(r) for r in rows]  # each [N_r, R, R, 3]
    size = arrays[0].shape[1] * scale
    num_lines = [max((len(c) for c in captions[r]), default=0) if captions else 0 for r in range(len(rows))]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = []
    for r in range(len(rows)):  # a tile is as wide as its longest caption line
        for lines in captions[r] if captions else []:
            for line in lines:
                widths.append(int(measure.textlength(_drawn(line), font=font)) + 2)
    cell = max([size] + widths)
    cols = max(a.shape[0] for a in arrays)
    top = lh + pad if title else 0
    height = top + pad + sum(size + n * lh + pad for n in num_lines)
    width = pad + cols * (cell + pad)
    if title:  # a title longer than the tiles widens the picture rather than being cut off
        width = max(width, 2 * pad + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(_drawn(title), font=font)))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), _drawn(title), fill=(0, 0, 0), font=font)
    y = top + pad
    for r, a in enumerate(arrays):
        for i in range(a.shape[0]):
            x = pad + i * (cell + pad)
            tile = Image.fromarray(a[i]).resize((size, size), Image.Resampling.NEAREST)
            canvas.paste(tile, (x + (cell - size) // 2, y))
            for n, line in enumerate(captions[r][i] if captions else []):
                draw.text((x, y + size + n * lh), _drawn(line), fill=(0, 0, 0), font=font)
        y += size + num_lines[r] * lh + pad
    return canvas


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a PIL image (PNG by the suffix), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def save_gif(frames: list[Image.Image], path: str | Path, duration_ms: int = 120) -> Path:
    """Write an animated GIF that loops forever, atomically (a frame listed twice is converted once).

    Every frame shares one 256-colour palette made from all of them, without dithering. Dithered frames, each with
    its own palette, were 2.6x larger (the demo's 20 GIFs: 18.2 MB against 7.0 MB), since their noise changes every
    pixel of every frame, and colours flickered where the palettes differed.
    """
    path = Path(path)
    unique: dict[int, Image.Image] = {}
    for f in frames:
        unique.setdefault(id(f), f.convert("RGB"))
    palette = _shared_palette(list(unique.values()))
    converted = {k: f.quantize(palette=palette, dither=Image.Dither.NONE) for k, f in unique.items()}
    frames = [converted[id(f)] for f in frames]
    atomic_write(
        path,
        lambda tmp: frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0
        ),
    )
    return path


def _shared_palette(frames: list[Image.Image], max_pixels: int = 4_000_000) -> Image.Image:
    """A 256-colour palette image for all `frames` (RGB, one size): median cut over them stacked, every n-th frame
    when they hold more than `max_pixels` pixels."""
    w, h = frames[0].size
    step = max(1, -(-len(frames) * w * h // max_pixels))
    picked = frames[::step]
    stack = Image.new("RGB", (w, h * len(picked)))
    for i, f in enumerate(picked):
        stack.paste(f, (0, h * i))
    return stack.quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def probability_lines(probs: torch.Tensor, class_names: list[str], highlight: int | None = None, max_lines: int = 4):
    """Caption lines "name: 0.93" for a probability vector [K]: all classes if K <= max_lines, else the top ones
    (always including `highlight`). A name longer than 20 characters is cut with "..", and one the font cannot
    draw whole gets its class index in front ("2 ?????"), so that classes stay apart."""
    order = list(range(len(class_names)))
    if len(order) > max_lines:
        order = probs.argsort(descending=True).tolist()[:max_lines]
        if highlight is not None and highlight not in order:
            order[-1] = highlight

    def label(k: int) -> str:
        name = class_names[k] if len(class_names[k]) <= 20 else class_names[k][:18] + ".."
        return name if "?" not in drawable(name) or "?" in name else f"{k} {name}"

    return [f"{label(k)}: {float(probs[k]):.2f}" for k in order]
