"""A factor oracle: read the seven synthetic-shapes factors back from an image, analytically.

Used to say what a counterfactual changed: read the factors of the image before and after an edit. It knows the
renderer (:mod:`stylex.data.synth`): one vivid shape (HSV saturation 1, value 1) on a plain, duller background,
mixed linearly at the edges. Every step uses quantities that a blur (and a GAN's soft edges) leaves nearly
unchanged: a median, pixel sums, a colour direction and a centroid.

1. Background: the per-channel median of the one-pixel border ring (the shape covers at most a quarter of it).
   ``bg_brightness`` is its HSV value, ``bg_hue`` its hue. For the steps below, the background *under* each pixel
   is interpolated from the border ring (`_background_field`): the renderer's backgrounds are plain, but a
   generator's are shaded, and a shading read as part of the object would move its shape and size readings
   whenever an edit recolours the background.
2. Object colour: the direction u from the background to the pixels that differ most from it (those at least
   :data:`CORE_FRACTION` of the largest difference). A pixel is ``bg + alpha * (obj - bg)``, and ``obj`` is a
   pure hue (one channel 1, one 0), so ``obj = bg + lambda * u`` with lambda where the ray from the background
   (its mean under those pixels) along u leaves the RGB cube's pure-hue surface; ``obj_hue`` is that colour's hue.
3. Coverage: ``alpha = <p - bg(p), obj - bg> / |obj - bg|^2`` per pixel, clipped to [0, 1] and zeroed where the
   pixel is within :data:`NOISE_FLOOR` of the largest difference (background texture). Its sum is the shape's
   area, its centroid the shape's centroid.
4. Shape: for each of circle, square and triangle, the size that gives the measured area and the centre that
   gives the measured centroid (a triangle's centroid lies r/3 below its box centre); the renderer draws the
   three candidates, each also blurred by every sigma of :data:`TEMPLATE_SIGMAS` (so that a blurred image is
   compared fairly), and the one nearest in L2 to the measured coverage wins. ``obj_size``, ``pos_x``, ``pos_y``
   are the winner's.

Measured on 300 fresh renders (``tests/test_groundtruth.py`` checks a smaller set with a margin), mean absolute
errors in factor units; shape as accuracy:

=========================  =====  =======  ========  =========  ======  ==========
images                     shape  obj_hue  obj_size  pos_x/y    bg_hue  bg_bright.
=========================  =====  =======  ========  =========  ======  ==========
32 px                      1.000  0.0002   0.002     0.001      0.0014  0.001
32 px, blur sigma 1 px     1.000  0.0002   0.007     0.001      0.0014  0.001
32 px, blur 1 + noise 10   0.997  0.0015   0.008     0.006      0.006   0.004
32 px, shaded, blur 1      1.000  0.0002   0.007     0.001-2    (0.05)  (0.03)
16 px                      1.000  0.0001   0.004     0.002      0.0014  0.001
16 px, blur sigma 1 px     0.933  0.0002   0.018     0.002-3    0.0014  0.001
=========================  =====  =======  ========  =========  ======  ==========

("noise 10": Gaussian pixel noise of std 10/255 after the blur. "shaded": the background plus a bilinear ramp
between random corner offsets of up to 0.12 per channel, as in ``tests/test_groundtruth.py``; its background
readings are those of the border, not of the plain colour the scene was drawn with. Redrawing only the shading
of 40 such scenes moved the readings of size, position and shape by 0.4% or less of a random redraw; with the
border colour taken as the whole background it moved size by 11% and position by 5-7%.) About 2-3 ms per image on
the 2-core CPU machine; the background interpolation costs about a third more than a single border colour did
(2.2 vs 1.7 ms on 200 shaded renders, measured back to back).
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Mapping

import numpy as np
import torch

from stylex.data.convert import to_uint8
from stylex.data.synth import FACTOR_NAMES, FACTORS, SHAPES, render_scene

CORE_FRACTION = 0.75
"""Pixels whose distance to the background is at least this share of the largest one give the object's colour."""
NOISE_FLOOR = 0.15
"""Pixels closer to the background than this share of the largest difference count as background (alpha = 0)."""
TEMPLATE_SIGMAS = (0.0, 0.5, 0.8, 1.1, 1.5)
"""Blurs (Gaussian sigma, pixels) of each shape template compared with the measured coverage; the best fit wins."""
BACKGROUND_REFITS = 2
"""Refits of the background surface without the border pixels far from the previous fit."""
BACKGROUND_TOLERANCE = 0.02
"""Border pixels within this RGB distance of the fitted surface always count as background."""
EDGE_SIGMA = 1.5
"""Smoothing (Gaussian sigma, pixels) of each border edge before the background is interpolated from them."""
FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
"""Area of each shape as a share of its bounding box (size x size)."""

_SPECS = {f.name: f for f in FACTORS}
CHANGE_SCALE = {
    f.name: (
        1.0 - 1.0 / len(f.categories)
        if f.is_categorical
        else 0.25
        if f.name.endswith("hue")
        else (f.high - f.low) / 3.0
    )
    for f in FACTORS
}
"""Expected change of each factor when it is redrawn independently from its sampling distribution: (high - low) / 3
for a uniform factor, 0.25 for a hue (circular distance), 1 - 1/3 for the shape (probability that it differs).
Changes are divided by these, so that 1.0 means "as much as replacing the factor by a random value"."""


def _as_float_images(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 [N, R, R, 3] or model tensors [N, 3, R, R] in [-1, 1] -> float64 [N, R, R, 3] in [0, 1]."""
    if isinstance(images, torch.Tensor):
        images = to_uint8(images)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    assert images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] == images.shape[2], images.shape
    return images.astype(np.float64) / 255.0


def _border(img: np.ndarray) -> np.ndarray:
    """Pixels of the one-pixel border ring [4R - 4, 3] of img [R, R, 3]."""
    return np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])


@functools.lru_cache(maxsize=8)
def _bilinear_basis(res: int) -> np.ndarray:
    """[R, R, 4] read-only: 1, x, y, x y at the pixel centres (fractions of the image), for `_background_field`."""
    t = (np.arange(res) + 0.5) / res
    gy, gx = np.meshgrid(t, t, indexing="ij")
    basis = np.stack([np.ones_like(gx), gx, gy, gx * gy], axis=-1)
    basis.flags.writeable = False
    return basis


def _background_field(img: np.ndarray) -> np.ndarray:
    """The background under the whole image [R, R, 3], interpolated from the border ring.

    1. Find the object where it touches the border: fit a bilinear surface a + b x + c y + d x y per channel to
       the border pixels (least squares), and refit without those far from the fit (:data:`BACKGROUND_REFITS`
       times; far = beyond 3x the median distance and :data:`BACKGROUND_TOLERANCE`).
    2. Replace those pixels by the surface, smooth each of the four edges along its length
       (:data:`EDGE_SIGMA`), and fill the inside with the Coons patch of the four edges (the bilinearly blended
       surface that passes through all four).

    On a plain background (the renderer's) this is that colour. On a generator's shaded one it follows the shading,
    so that the shading is not read as part of the object: a change of the background colour alone then does not
    move the object's shape, size or position readings.
    """
    res = img.shape[0]
    basis = _bilinear_basis(res)  # [R, R, 4]
    a, pixels = _border(basis), _border(img)  # [B, 4], [B, 3]
    keep = np.ones(len(a), dtype=bool)
    for _ in range(BACKGROUND_REFITS + 1):
        coef, *_ = np.linalg.lstsq(a[keep], pixels[keep], rcond=None)  # [4, 3]
        resid = np.linalg.norm(pixels - a @ coef, axis=-1)  # [B]
        limit = max(3.0 * float(np.median(resid[keep])), BACKGROUND_TOLERANCE)
        keep = resid <= limit
        if keep.sum() < 8:  # almost no background on the border: fall back to its median colour
            return np.broadcast_to(np.median(pixels, axis=0), img.shape).copy()
    edges = np.stack([img[0], img[-1], img[:, 0], img[:, -1]])  # [4, R, 3]: top, bottom, left, right
    planes = np.stack([basis[0], basis[-1], basis[:, 0], basis[:, -1]]) @ coef  # the surface along them
    edges = np.where((np.linalg.norm(edges - planes, axis=-1) > limit)[..., None], planes, edges)
    # each edge smoothed along its length (blurring a [R, 1] strip leaves its width of one pixel alone)
    top, bottom, left, right = gaussian_blur(edges[:, :, None, :], EDGE_SIGMA)[:, :, 0]
    u = np.linspace(0.0, 1.0, res)
    x, y = u[None, :, None], u[:, None, None]  # the border pixels sit at 0 and 1
    corners = (1 - x) * (1 - y) * top[0] + x * (1 - y) * top[-1] + (1 - x) * y * bottom[0] + x * y * bottom[-1]
    return (1 - y) * top[None] + y * bottom[None] + (1 - x) * left[:, None] + x * right[:, None] - corners


def _hue(rgb: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*np.clip(rgb, 0.0, 1.0))[0]


def _pure_hue_colour(bg: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The point bg + lambda u (lambda >= 1) where the ray leaves the cube through the pure-hue surface [3]."""
    lambdas = []
    up, down = u > 1e-9, u < -1e-9
    if up.any():  # the largest channel reaches 1
        lambdas.append(np.min((1.0 - bg[up]) / u[up]))
    if down.any():  # the smallest channel reaches 0
        lambdas.append(np.min(bg[down] / -u[down]))
    lam = max(1.0, float(np.sqrt(np.prod(lambdas)) if len(lambdas) == 2 else lambdas[0])) if lambdas else 1.0
    return np.clip(bg + lam * u, 0.0, 1.0)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with repeated edges (for blur-tolerant template matching, and to test the oracle).

    Args:
        images: float [N, H, W] (maps) or [N, H, W, 3] (RGB).
        sigma: standard deviation in pixels; <= 0 returns the input.
    """
    if sigma <= 0:
        return images
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    rgb = images.ndim == 4
    a = images if rgb else images[..., None]  # [N, H, W, C]
    a = np.pad(a, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    a = sum(k[i] * a[:, i : i + a.shape[1] - 2 * r, :, :] for i in range(len(k)))  # along H
    a = sum(k[i] * a[:, :, i : i + a.shape[2] - 2 * r, :] for i in range(len(k)))  # along W
    return a if rgb else a[..., 0]


def _coverage(shape: str, size: float, pos_x: float, pos_y: float, resolution: int) -> np.ndarray:
    """The renderer's coverage of one shape [R, R] in [0, 1] (drawn in pure red on black)."""
    scene: dict[str, float | int | str] = {
        "shape": shape,
        "obj_hue": 0.0,
        "obj_size": size,
        "pos_x": pos_x,
        "pos_y": pos_y,
    }
    scene.update(bg_hue=0.0, bg_brightness=0.0)
    return render_scene(scene, resolution)[..., 0].astype(np.float64) / 255.0


def _read_one(img: np.ndarray) -> dict[str, float]:
    """Factors of one image [R, R, 3] in [0, 1] (see the module docstring); ``shape`` as an int code."""
    res = img.shape[0]
    bg = np.median(_border(img), axis=0)  # [3]
    bg_h, _, bg_v = colorsys.rgb_to_hsv(*np.clip(bg, 0.0, 1.0))
    field = _background_field(img)  # [R, R, 3]
    diff = img - field  # [R, R, 3]
    dist = np.linalg.norm(diff, axis=-1)  # [R, R]
    out = {"bg_hue": bg_h, "bg_brightness": bg_v}
    peak = float(dist.max())
    if peak < 0.05:  # no object to speak of: a neutral reading
        out.update(shape=0, obj_hue=0.0, obj_size=0.0, pos_x=0.5, pos_y=0.5)
        return out
    core = dist >= CORE_FRACTION * peak
    u = diff[core].mean(axis=0)  # [3] direction background -> object
    bg_core = field[core].mean(axis=0)  # [3] the background under the object
    obj = _pure_hue_colour(bg_core, u)
    span = obj - bg_core
    alpha = (diff @ span) / max(float(span @ span), 1e-12)  # [R, R]
    alpha = np.where(dist >= NOISE_FLOOR * peak, np.clip(alpha, 0.0, 1.0), 0.0)
    area = float(alpha.sum()) / res**2  # share of the image
    t = (np.arange(res) + 0.5) / res
    cx = float((alpha.sum(axis=0) * t).sum() / max(alpha.sum(), 1e-12))
    cy = float((alpha.sum(axis=1) * t).sum() / max(alpha.sum(), 1e-12))
    best: tuple[float, int, float, float] | None = None
    for code, shape in enumerate(SHAPES):
        size = float(np.sqrt(area / FILL[shape]))
        pos_y = cy - size / 6 if shape == "triangle" else cy  # centroid r/3 = size/6 below the box centre
        coverage = _coverage(shape, size, cx, pos_y, res)[None]  # [1, R, R]
        for sigma in TEMPLATE_SIGMAS:  # the image may be blurred: compare with blurred templates too
            err = float(np.square(gaussian_blur(coverage, sigma)[0] - alpha).sum())
            if best is None or err < best[0]:
                best = (err, code, size, pos_y)
    assert best is not None  # SHAPES and TEMPLATE_SIGMAS are not empty
    _, code, size, pos_y = best
    out.update(shape=code, obj_hue=_hue(obj), obj_size=size, pos_x=cx, pos_y=pos_y)
    return out


def read_factors(images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Read the synthetic-shapes factors of images (the factor oracle; method in the module docstring).

    Args:
        images: uint8 RGB [N, R, R, 3] (the file convention) or a model tensor [N, 3, R, R] in [-1, 1].

    Returns:
        factor name -> values [N] for every name in :data:`FACTOR_NAMES`: ``shape`` int64 codes into
        :data:`SHAPES`, the others float64 in the units of :data:`stylex.data.synth.FACTORS`.
    """
    x = _as_float_images(images)
    rows = [_read_one(img) for img in x]
    return {
        name: np.array([r[name] for r in rows], dtype=np.int64 if _SPECS[name].is_categorical else np.float64)
        for name in FACTOR_NAMES
    }


def factor_change(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-image change of every factor between two readings, in natural units.

    Args:
        a, b: factor name -> values [N] (as from `read_factors` or `sample_factors`).

    Returns:
        factor name -> [N] float64: |b - a| for sizes, positions and brightness; the circular distance
        min(|d|, 1 - |d|) for hues; 1.0 where the shape differs, else 0.0.
    """
    out = {}
    for name in FACTOR_NAMES:
        va, vb = np.asarray(a[name]), np.asarray(b[name])
        if _SPECS[name].is_categorical:
            out[name] = (va != vb).astype(np.float64)
        else:
            d = np.abs(vb.astype(np.float64) - va.astype(np.float64))
            out[name] = np.minimum(d % 1.0, 1.0 - d % 1.0) if name.endswith("hue") else d
    return out


def oracle_errors(true: Mapping[str, np.ndarray], read: Mapping[str, np.ndarray]) -> dict[str, float]:
    """How well a reading matches the truth: mean absolute error per continuous factor (circular for hues) and
    ``shape_accuracy``; keys ``<factor>_mae`` and ``shape_accuracy``."""
    change = factor_change(true, read)
    out = {}
    for name in FACTOR_NAMES:
        if _SPECS[name].is_categorical:
            out[f"{name}_accuracy"] = float(1.0 - change[name].mean())
        else:
            out[f"{name}_mae"] = float(change[name].mean())
    return out
