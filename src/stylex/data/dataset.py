"""Image datasets in memory: loading image folders, .npz files and factor folders; writing image folders.

Every loader returns an :class:`ImageDataset` whose pixels are uint8 RGB [N, H, W, 3] with H == W.
Conversions applied to every file, in this order:

1. EXIF orientation is applied (photos from phones come out upright).
2. Mode to 8-bit RGB: grey ``L``/``1``/``CMYK``/``YCbCr`` via Pillow; 16-bit grey (``I;16*``, ``I``) is
   scaled by 255/65535 (Pillow would clip it instead; files whose values stay at or below 4095, i.e. 12-bit
   scans, are named in a warning, since they load nearly black); float ``F`` is read as [0, 1] when its maximum is
   at most 1 and as [0, 255] otherwise; anything with alpha (``RGBA``, ``LA``, ``PA``, palette with a
   transparent colour) is composited on black, i.e. ``rgb * alpha / 255``, so that the arbitrary colours
   hidden under fully transparent pixels never reach the model.
3. Non-square images are centre-cropped to a square (side = the shorter side; a dataset warns once).
4. When ``resolution`` is given and differs from the side, the square is resized with Pillow LANCZOS.
   Without ``resolution`` all images must already share one size.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from stylex.data.convert import to_tensor
from stylex.errors import StylexError, counted, option
from stylex.files import atomic_write, clear_stale_lock, share

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
"""File name endings read as images (compared case-insensitively); other files are skipped."""

PROGRESS_MIN_FILES = 500
"""Loading more files than this shows a tqdm bar (on a terminal, unless ``progress=False``)."""

FACTORS_CSV = "factors.csv"
CLASS_NAMES_JSON = "class_names.json"
"""Written beside class folders whose names are not the class names (`class_dir_names`: "8_70+" for "70+"):
{"folders": [...], "class_names": [...]}; `load_dataset` gives the class names back while the folders match."""
"""A folder holding this file is a factor folder: one row per image, see :func:`load_dataset`."""

SYNTH_JSON = "synth.json"
"""Written next to ``factors.csv`` by :func:`stylex.data.synth.write_synth`: arguments, class names, factors."""

MAX_CLASSES = 100_000
"""Labels must stay below this (a larger label is a mistake in the file, and would make a class list that big)."""


@dataclass
class ImageDataset:
    """Images with optional labels and ground-truth factors, all held in memory.

    Attributes:
        images: uint8 RGB pixels [N, H, W, 3] with H == W (the file convention; see ``tensors`` for the
            model convention).
        labels: int64 class indices [N] in ``[0, num_classes)``, or None when unlabelled.
        class_names: name of each class, indexed by label; empty when unlabelled. Filled with
            ``"0", "1", ...`` when labels are given without names.
        filenames: one name per image [N], relative to the folder it was loaded from (e.g. ``"cat/001.jpg"``).
        factors: ground-truth generative factors, each a per-image array [N] (float64 for continuous factors,
            int64 codes for categorical ones), or None when unknown.
        source: where the images came from (a path, or a description of a synthetic dataset).
        factor_categories: for each categorical factor, the names its int codes stand for
            (e.g. ``{"shape": ("circle", "square", "triangle")}``); factors not listed are continuous.
        native_side: the median shorter side of the images as stored, before any resizing (None: not known), so
            that a model far smaller than its data can say so.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    filenames: list[str] = field(default_factory=list)
    factors: dict[str, np.ndarray] | None = None
    source: str = ""
    factor_categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    native_side: int | None = None

    def __post_init__(self) -> None:
        images = self.images
        if not (images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] == images.shape[2]):
            raise ValueError(f"images must be [N, H, W, 3] with H == W, got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        n = len(images)
        if not self.filenames:
            self.filenames = [f"{i:06d}.png" for i in range(n)]
        if len(self.filenames) != n:
            raise ValueError(f"{len(self.filenames)} filenames for {n} images")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise ValueError(f"labels must be [{n}], got {self.labels.shape}")
            if n and self.labels.min() < 0:
                raise ValueError("labels must be >= 0")
            if not self.class_names:
                self.class_names = [str(i) for i in range(int(self.labels.max()) + 1 if n else 0)]
            if n and self.labels.max() >= len(self.class_names):
                raise ValueError(f"label {self.labels.max()} but only {len(self.class_names)} class names")
        elif self.class_names:
            raise ValueError("class_names given without labels")
        for name, values in (self.factors or {}).items():
            if np.shape(values) != (n,):
                raise ValueError(f"factor {name!r} must be [{n}], got {np.shape(values)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        """Side of the square images in pixels."""
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``); 0 when unlabelled."""
        return len(self.class_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """The images at ``indices`` (ints [M], or a bool mask [N]), with their labels, names and factors."""
        idx = np.arange(len(self))[_as_index(indices)]
        return ImageDataset(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            class_names=list(self.class_names),
            filenames=[self.filenames[i] for i in idx],
            factors=None if self.factors is None else {k: v[idx] for k, v in self.factors.items()},
            source=self.source,
            factor_categories=dict(self.factor_categories),
            native_side=self.native_side,
        )

    def fingerprint(self) -> str:
        """Short sha256 of the pixels (and labels): the same images in the same order, wherever they are stored."""
        h = hashlib.sha256(np.ascontiguousarray(self.images).data)
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.int64).data)
        return h.hexdigest()[:16]

    def files_fingerprint(self) -> str:
        """Short sha256 of the file names in order: images replaced by others, renamed, added or removed (a split
        by position then holds other images) change it; edited pixels do not."""
        return hashlib.sha256("\n".join(self.filenames).encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def relabelled(self, class_names: Sequence[str]) -> ImageDataset:
        """The same images with their labels re-indexed to `class_names` (e.g. a classifier's classes, in its
        order), when every class of this dataset is named there; itself otherwise (unlabelled, or a class that
        `class_names` lacks: labels then stay positions)."""
        names = list(class_names)
        if self.labels is None or self.class_names == names or not set(self.class_names) <= set(names):
            return self
        new = np.array([names.index(name) for name in self.class_names], dtype=np.int64)
        return replace(self, labels=new[self.labels], class_names=names)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Deterministic (train, val) split; stratified by label when labelled.

        Args:
            val_fraction: share of the images that go to val, in [0, 1). Per class, ``round(n_class *
                val_fraction)`` images are drawn by a permutation seeded with ``seed``; 0 gives an empty val.
            seed: seed of the permutation; the same seed gives the same split.

        Returns:
            (train, val), disjoint, together all images, each in the original order.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        rng = np.random.default_rng(seed)
        groups = (
            [np.arange(len(self))]
            if self.labels is None
            else [np.flatnonzero(self.labels == y) for y in range(self.num_classes)]
        )
        is_val = np.zeros(len(self), dtype=bool)
        for group in groups:
            is_val[rng.permutation(group)[: int(round(len(group) * val_fraction))]] = True
        return self.subset(~is_val), self.subset(is_val)

    def tensors(self, indices: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """Images as the models want them: float [N, 3, H, W] in [-1, 1] (all, or those at ``indices``)."""
        images = self.images if indices is None else self.images[_as_index(indices)]
        return to_tensor(images)


def _as_index(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """ints [M] or bool mask [N] -> a numpy index (an empty list stays a valid int index)."""
    idx = np.asarray(indices)
    return idx if idx.dtype == bool else idx.astype(np.int64)


# ---------------------------------------------------------------------------------------------- loading


def load_dataset(
    path: str | os.PathLike, resolution: int | None = None, progress: bool = True, skip_unreadable: bool = False
) -> ImageDataset:
    """Load images (and labels, factors) from a folder or an ``.npz`` file.

    What ``path`` may be:

    - a folder with class subfolders of images: labels are the sorted subfolder names, files are taken
      recursively from each subfolder and sorted by path; images directly in the folder are then an error;
    - a flat folder of images (unlabelled), sorted by name;
    - a factor folder, as written by :func:`stylex.data.synth.write_synth`: ``factors.csv`` with a
      ``filename`` column (relative to the folder), an optional int ``label`` column and one column per
      factor (numbers, or category names), plus optionally ``synth.json`` with ``class_names`` and the
      category names of each categorical factor; images are loaded in the order of the csv rows;
    - an ``.npz`` file (loaded with ``allow_pickle=False``) with ``images`` uint8 [N, H, W, 3] (or grey
      [N, H, W] / [N, H, W, 1], or RGBA [N, H, W, 4]), optional int ``labels`` [N], ``class_names`` [K]
      and ``filenames`` [N] as string arrays.

    Files whose name does not end in one of :data:`IMAGE_EXTENSIONS` are skipped. Pixel conversions are
    listed in the module docstring.

    Args:
        path: the folder or ``.npz`` file.
        resolution: side in pixels of the returned square images; None keeps the files' size, which must
            then be the same for every image.
        progress: show a progress bar when loading more than :data:`PROGRESS_MIN_FILES` files.
        skip_unreadable: in a folder of images (not a factor folder), leave out the files that cannot be read,
            naming them in one warning, instead of refusing the folder (for `stylex explain`: each image stands
            alone; a training set with a broken file is refused, so that the data a run records are its files).

    Returns:
        The dataset, ``images`` uint8 [N, resolution, resolution, 3].

    Raises:
        StylexError: missing path, no images, an unreadable image, mixed sizes without ``resolution``, or
            a malformed ``.npz`` / ``factors.csv``; the message names the file and the fix.
    """
    root = Path(path)
    if resolution is not None and resolution < 1:
        raise StylexError(f"Resolution must be a positive number of pixels, got {resolution}.")
    if not root.exists():
        raise StylexError(f"Dataset path {root} does not exist; check the path.")
    if root.is_file():
        if root.suffix.lower() == ".npz":
            return _load_npz(root, resolution)
        raise StylexError(f"Dataset path {root} is a file but not an .npz; pass a folder of images or an .npz file.")
    if (root / FACTORS_CSV).is_file():
        return _load_factor_folder(root, resolution, progress)
    return _load_image_folder(root, resolution, progress, skip_unreadable)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


_SYSTEM_FOLDERS = {"__MACOSX", "@eaDir", "#recycle", "$RECYCLE.BIN", "System Volume Information", "lost+found"}


def _skipped_folder(name: str) -> bool:
    """Folders that hold no data: hidden ones (.thumbs, .ipynb_checkpoints), macOS's __MACOSX from a zip, and the
    ones NAS boxes and file systems add (@eaDir, #recycle, $RECYCLE.BIN, System Volume Information, lost+found)."""
    return name.startswith(".") or name in _SYSTEM_FOLDERS


def _rel(p: Path, root: Path) -> str:
    return readable(p.relative_to(root).as_posix())


def readable(name: str) -> str:
    """A file or folder name as text: a name whose bytes are not UTF-8 (Python keeps them as surrogates, which no
    JSON, HTML or terminal can write: the report crashed on a folder named café in Latin-1) is read as Windows-1252,
    the usual origin of such names ("caf\\udce9" -> "café")."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("cp1252", "replace")
    return name


def _load_image_folder(root: Path, resolution: int | None, progress: bool, skip_unreadable: bool) -> ImageDataset:
    entries = sorted(root.iterdir())
    top_images = [p for p in entries if _is_image(p)]
    subdirs = [p for p in entries if p.is_dir() and not _skipped_folder(p.name)]
    # class names in NFC form: macOS and some zip tools write folder names decomposed (NFD)
    class_files = {
        unicodedata.normalize("NFC", d.name): sorted(
            p
            for p in d.rglob("*")
            if _is_image(p) and not any(_skipped_folder(part) for part in p.relative_to(d).parts[:-1])
        )
        for d in subdirs
    }
    class_files = {name: files for name, files in class_files.items() if files or not top_images}
    if any(class_files.values()):
        if top_images:
            raise StylexError(
                f"Folder {root} holds both images ({top_images[0].name}, ...) and class subfolders; "
                "move the loose images into a class subfolder or elsewhere."
            )
        for name, files in class_files.items():
            if not files:
                raise StylexError(
                    f"Class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    "add images or remove the folder."
                )
        folders = sorted(class_files)
        paths = [p for name in folders for p in class_files[name]]
        labels = np.concatenate([np.full(len(class_files[name]), y, dtype=np.int64) for y, name in enumerate(folders)])
        class_names = _named_classes(root, [readable(name) for name in folders])
    elif top_images:
        class_names, paths, labels = [], top_images, None
    else:
        raise StylexError(
            f"Folder {root} has no images ({', '.join(IMAGE_EXTENSIONS)}) in it or in class subfolders; "
            "point to a folder of images."
        )
    images, side, kept = _read_images(paths, resolution, progress, f"loading {root.name}", skip_unreadable)
    if kept is not None:
        paths = [p for p, keep in zip(paths, kept, strict=True) if keep]
        labels = None if labels is None else labels[kept]
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=class_names,
        filenames=[_rel(p, root) for p in paths],
        source=str(root),
        native_side=side,
    )


def _named_classes(root: Path, folders: list[str]) -> list[str]:
    """The class names of `folders`: those `class_names.json` records for exactly these folders, else the folder
    names (an exported model's samples/8_70+ loaded back as the class "8_70+")."""
    path = root / CLASS_NAMES_JSON
    if not path.is_file():
        return folders
    record: Any  # parsed JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    names: Any = record.get("class_names") if isinstance(record, dict) else None  # checked below
    ok = (
        isinstance(names, list)
        and record.get("folders") == folders
        and len(names) == len(folders)
        and all(isinstance(n, str) and n for n in names)
        and len(set(names)) == len(names)
    )
    if not ok:
        warnings.warn(f"{path} does not name these class folders; the folder names are the class names.", stacklevel=4)
        return folders
    return list(names)


def _load_factor_folder(root: Path, resolution: int | None, progress: bool) -> ImageDataset:
    csv_path = root / FACTORS_CSV
    meta = _read_synth_json(root / SYNTH_JSON)
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise StylexError(f"Cannot read {csv_path} ({e}); fix or delete the file.") from e
    columns = list(rows[0]) if rows else []
    if "filename" not in columns:
        raise StylexError(f"{csv_path} has no rows or no 'filename' column; rewrite it with one row per image.")
    for i, row in enumerate(rows):
        if None in row or None in row.values():  # more or fewer fields than the header
            raise StylexError(
                f"Row {i + 2} of {csv_path} has {len(row) - (None in row) + len(row.get(None) or [])} fields but the "
                f"header has {len(columns)}; give every row one value per column."
            )
    paths = [root / row["filename"] for row in rows]
    inside = root.resolve()
    for row, path in zip(rows, paths, strict=True):  # a folder's list names its own files, nothing elsewhere
        if Path(row["filename"]).is_absolute() or inside not in path.resolve().parents:
            raise StylexError(
                f"{csv_path} lists {row['filename']!r}, which is not inside {root}; its filenames are relative to "
                "the folder and stay inside it."
            )
    for p in paths:
        if not p.is_file():
            raise StylexError(f"Image {p} listed in {csv_path} does not exist; restore it or regenerate the folder.")

    labels = None
    class_names: list[str] = []
    if "label" in columns:
        try:
            labels = np.array([int(row["label"]) for row in rows], dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise StylexError(f"Column 'label' of {csv_path} must hold integers ({e}); fix the file.") from e
        if labels.min() < 0 or labels.max() >= MAX_CLASSES:
            raise StylexError(
                f"Column 'label' of {csv_path} has label {labels.min() if labels.min() < 0 else labels.max()}; "
                f"labels must be class indices 0, 1, ... below {MAX_CLASSES}."
            )
        num_classes = int(labels.max()) + 1
        class_names = [str(c) for c in meta.get("class_names", [])]
        if not class_names:  # name each class after the one folder its images lie in, when there is one
            dirs = [
                {Path(rows[i]["filename"]).parts[0] for i in np.flatnonzero(labels == y)} for y in range(num_classes)
            ]
            named = [next(iter(d)) if len(d) == 1 and len(Path(next(iter(d))).parts) else None for d in dirs]
            found = [n for n in named if n is not None]
            class_names = found if len(found) == len(named) and len(set(found)) == num_classes else []
            class_names = class_names or [str(y) for y in range(num_classes)]
        if num_classes > len(class_names):
            raise StylexError(
                f"{csv_path} has label {num_classes - 1} but {root / SYNTH_JSON} names only "
                f"{len(class_names)} classes; regenerate the folder."
            )

    known_categories = {
        k: tuple(str(c) for c in v["categories"]) for k, v in meta["factors"].items() if v.get("categories")
    }
    factors: dict[str, np.ndarray] = {}
    factor_categories: dict[str, tuple[str, ...]] = {}
    for name in columns:
        if name in ("filename", "label"):
            continue
        values = [row[name] for row in rows]
        categories = known_categories.get(name)
        if categories is None:
            try:
                factors[name] = np.array([float(v) for v in values], dtype=np.float64)
                continue
            except (TypeError, ValueError):
                categories = tuple(sorted(set(values)))
        lookup = {c: i for i, c in enumerate(categories)}
        unknown = sorted(set(values) - set(lookup))
        if unknown:
            raise StylexError(
                f"Column {name!r} of {csv_path} has {unknown[0]!r}, not one of {', '.join(categories)}; fix the file."
            )
        factors[name] = np.array([lookup[v] for v in values], dtype=np.int64)
        factor_categories[name] = categories

    images, side, _ = _read_images(paths, resolution, progress, desc=f"loading {root.name}")
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=class_names,
        filenames=[row["filename"] for row in rows],
        factors=factors,
        source=str(root),
        factor_categories=factor_categories,
        native_side=side,
    )


def _read_synth_json(path: Path) -> dict:
    """The parts of ``synth.json`` the loader uses (``class_names``, ``factors``), checked; {} when absent."""
    if not path.is_file():
        return {"class_names": [], "factors": {}}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise StylexError(f"Cannot read {path} ({e}); fix or delete the file.") from None
    if not isinstance(meta, dict):
        raise StylexError(f"{path} is not a JSON object; fix or delete the file.")
    class_names = meta.get("class_names", [])
    factors = meta.get("factors", {})
    ok = isinstance(class_names, list) and isinstance(factors, dict)
    ok = ok and all(
        isinstance(v, dict) and isinstance(v.get("categories", []), list | tuple | type(None)) for v in factors.values()
    )
    if not ok:
        raise StylexError(
            f"{path} has malformed 'class_names' (a list) or 'factors' (objects with 'categories' lists); "
            "fix or delete the file."
        )
    return {"class_names": class_names, "factors": factors}


def _load_npz(path: Path, resolution: int | None) -> ImageDataset:
    if not zipfile.is_zipfile(path):
        raise StylexError(f"{path} is not an .npz archive; save the arrays with numpy.savez(path, images=...).")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise StylexError(f"Cannot read {path} as an .npz file ({e}); re-save it with numpy.savez.") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise StylexError(f"{path} holds a single array, not an .npz archive; save it with numpy.savez(images=...).")
    try:
        with npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise StylexError(
                f"{path} holds object arrays, which are not loaded for safety; save strings with dtype=str "
                "and numbers as numeric arrays."
            ) from e
        raise StylexError(f"Cannot read {path} as an .npz file ({e}); re-save it with numpy.savez.") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise StylexError(f"Cannot read {path} as an .npz file ({e}); re-save it with numpy.savez.") from e

    if "images" not in arrays:
        raise StylexError(
            f"{path} has no 'images' array (it has: {', '.join(arrays) or 'nothing'}); "
            "save the pixels as images=uint8 [N, H, W, 3]."
        )
    images = arrays["images"]
    if images.dtype != np.uint8:
        raise StylexError(
            f"'images' in {path} is {images.dtype}, not uint8; save pixels as uint8 in [0, 255] "
            "(e.g. (x * 255).round().astype(np.uint8))."
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or 0 in images.shape:
        hint = " (this looks like NCHW: transpose to NHWC)" if images.ndim == 4 and images.shape[1] in (1, 3) else ""
        raise StylexError(
            f"'images' in {path} has shape {tuple(arrays['images'].shape)}, expected [N, H, W, 3] or grey "
            f"[N, H, W] with N, H, W > 0{hint}; re-save it in that layout."
        )
    n = len(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 4:
        images = _composite_on_black(images)
    side = int(min(images.shape[1], images.shape[2]))
    images = _square_and_resize_batch(images, resolution)

    labels = None
    class_names: list[str] = []
    if "labels" in arrays:
        raw = arrays["labels"]
        if raw.shape != (n,) or not np.issubdtype(raw.dtype, np.integer) or (n and raw.min() < 0):
            raise StylexError(
                f"'labels' in {path} must be non-negative integers [N={n}], got {raw.dtype} {tuple(raw.shape)}; "
                "save one class index per image."
            )
        if raw.max() >= MAX_CLASSES:
            raise StylexError(
                f"'labels' in {path} go up to {raw.max()}; labels must be class indices 0, 1, ... below {MAX_CLASSES}."
            )
        labels = raw.astype(np.int64)
        class_names = [str(c) for c in _names(arrays, "class_names", path)]
        if class_names and labels.max() >= len(class_names):
            raise StylexError(
                f"'labels' in {path} go up to {labels.max()} but 'class_names' has {len(class_names)} names; "
                "save one name per class."
            )
    filenames = [str(f) for f in _names(arrays, "filenames", path)]
    if filenames and len(filenames) != n:
        raise StylexError(f"'filenames' in {path} has {len(filenames)} entries for {n} images; save one per image.")
    return ImageDataset(
        images=images, labels=labels, class_names=class_names, filenames=filenames, source=str(path), native_side=side
    )


def _names(arrays: dict[str, np.ndarray], key: str, path: Path) -> list:
    """The 1-D array ``arrays[key]`` as a list ([] when absent)."""
    if key not in arrays:
        return []
    if arrays[key].ndim != 1:
        raise StylexError(f"'{key}' in {path} has shape {tuple(arrays[key].shape)}; save it as a 1-D array of strings.")
    return arrays[key].tolist()


# ------------------------------------------------------------------------------------------------ pixels


def _composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """uint8 [..., 4] RGBA -> uint8 [..., 3] RGB over black (rgb * alpha / 255, rounded)."""
    rgb = rgba[..., :3].astype(np.uint32) * rgba[..., 3:].astype(np.uint32)
    return ((rgb + 127) // 255).astype(np.uint8)


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> uint8 [H, W, 3] RGB (rules in the module docstring)."""
    mode = im.mode
    if mode.startswith("I"):  # I;16, I;16B, I;16L: 16-bit range; I (32-bit): 8-bit, 16-bit or its own range
        a = np.asarray(im).astype(np.float64)
        top = float(a.max(initial=0.0))
        full = 65535.0 if mode != "I" or 255.0 < top <= 65535.0 else (255.0 if top <= 255.0 else top)
        return np.repeat(np.clip(np.round(a * (255.0 / full)), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        return np.repeat(np.clip(np.round(np.nan_to_num(a)), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        return _composite_on_black(np.asarray(im.convert("RGBA")))
    return np.asarray(im.convert("RGB"))


def _center_square(a: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [S, S, C] centre crop, S = min(H, W)."""
    h, w = a.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return a[top : top + s, left : left + s]


def _resize(a: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [S, S, 3] -> uint8 [resolution, resolution, 3] (LANCZOS); unchanged when S == resolution."""
    if a.shape[0] == resolution:
        return a
    return np.asarray(Image.fromarray(a).resize((resolution, resolution), Image.Resampling.LANCZOS))


def _square_and_resize_batch(images: np.ndarray, resolution: int | None) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, R, R, 3]: centre crop to a square, then resize when R differs."""
    images = np.stack([_center_square(a) for a in images]) if images.shape[1] != images.shape[2] else images
    if resolution is None or images.shape[1] == resolution:
        return np.ascontiguousarray(images)
    return np.stack([_resize(a, resolution) for a in images])


def read_image(path: str | os.PathLike, resolution: int | None = None) -> np.ndarray:
    """Read one image file as uint8 RGB [S, S, 3] (S = ``resolution``, or the shorter side of the file).

    Raises:
        StylexError: the file is missing, not an image, truncated or otherwise unreadable.
    """
    a, notes = _read_image(path, resolution)
    if notes.dim_max is not None:
        warnings.warn(f"{path}: {_dim_advice(notes.dim_max)}", stacklevel=2)
    if notes.size[0] != notes.size[1]:
        w, h = notes.size
        warnings.warn(f"{path} is {w}x{h}; stylex keeps its centre square, so its edges are not seen.", stacklevel=2)
    if notes.transparent:  # as a folder of images says
        warnings.warn(f"{path} has transparent pixels; stylex composites them on black.", stacklevel=2)
    if resolution is not None and 2 * notes.side < resolution:
        warnings.warn(
            f"{path} is {notes.side} px on its shorter side, less than half of {resolution} px; it is enlarged and "
            "blurred.",
            stacklevel=2,
        )
    return a


class _FileNotes(NamedTuple):
    """What `_read_image` noticed about one file, for the dataset's one-line warnings."""

    transparent: bool  # some pixel was not opaque (composited on black)
    side: int  # the shorter side before resizing
    size: tuple[int, int]  # width, height as stored (after the EXIF rotation)
    dim_max: int | None  # 16-bit grey whose maximum is at most 4095 (12-bit data): that maximum; else None


MAX_LISTED = 20
"""Unreadable files named one by one in the error (the rest are counted)."""
DIM_16BIT_MAX = 4095  # 16-bit files whose values stay at or below this (12-bit scans) load nearly black


def _read_image(path: str | os.PathLike, resolution: int | None) -> tuple[np.ndarray, _FileNotes]:
    """`read_image`, and what it noticed about the file (`_FileNotes`)."""
    path = Path(path)
    if path.is_dir():
        raise StylexError(f"{path} is a folder, not an image file; pass one of its images.")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            transparent = _transparent(im)
            dim_max = _dim_16bit_max(im)
            size = im.size
            a = _to_rgb8(im)
    except FileNotFoundError as e:
        raise StylexError(f"Image {path} does not exist; check the path.") from e
    except Exception as e:  # noqa: BLE001
        # Pillow raises many types for unreadable, truncated or hostile files: OSError, SyntaxError, ValueError,
        # EOFError, struct.error, DecompressionBombError and (found by fuzzing) TypeError from a TIFF tag of the
        # wrong type, among others. Each means: this file cannot be read.
        if path.suffix.lower() not in IMAGE_EXTENSIONS:  # e.g. synth.json or notes.txt given as the image
            raise StylexError(
                f"Cannot read image {path}: it is not an image file ({type(e).__name__}: {e}); pass an image "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            ) from e
        raise StylexError(f"Cannot read image {path} ({type(e).__name__}: {e}); re-export or delete the file.") from e
    a = _center_square(a)
    side = a.shape[0]
    notes = _FileNotes(transparent, side, size, dim_max)
    return np.ascontiguousarray(a if resolution is None else _resize(a, resolution)), notes


def _dim_16bit_max(im: Image.Image) -> int | None:
    """The maximum of a 16-bit grey image scaled by 255/65535 that uses 12 bits or fewer (it loads nearly
    black: a 12-bit scan's 4095 becomes 16 of 255); None for every other image."""
    if not im.mode.startswith("I"):
        return None
    top = float(np.asarray(im).max(initial=0))
    if im.mode == "I" and not 255.0 < top <= 65535.0:  # 32-bit I: read as 8-bit, or by its own maximum
        return None
    return int(top) if 0 < top <= DIM_16BIT_MAX else None  # an all-black file is not a 12-bit scan


def _transparent(im: Image.Image) -> bool:
    """Whether some pixel of `im` is not fully opaque (it will be composited on black)."""
    if not (im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info):
        return False
    alpha = np.asarray(im.convert("RGBA"))[..., 3]
    return bool((alpha < 255).any())


def _read_images(
    paths: Sequence[Path], resolution: int | None, progress: bool, desc: str, skip_unreadable: bool = False
) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    """Read ``paths`` into one uint8 array [N, S, S, 3], and the median shorter side of the files; sizes must agree
    when ``resolution`` is None. Warns once when images had transparent pixels (composited on black) or were
    enlarged more than twice. Unreadable files are an error, all named in it; with ``skip_unreadable`` they are named
    in a warning and left out, and the third value is the mask [N] of the files kept (None: every file)."""
    disable = True if not progress or len(paths) <= PROGRESS_MIN_FILES else None
    images: np.ndarray | None = None
    transparent, small, cropped, dim, sides = [], [], [], [], []
    unreadable: list[str] = []  # all of them in one message, not one per run over a large folder
    bad: list[int] = []
    from stylex.progress import progress_bar

    for i, p in enumerate(progress_bar(paths, desc=desc, unit="img", disable=disable)):
        try:
            a, notes = _read_image(p, resolution)
        except StylexError as e:
            unreadable.append(str(e))
            bad.append(i)
            continue
        sides.append(notes.side)
        if notes.transparent:
            transparent.append(p)
        if resolution is not None and 2 * notes.side < resolution:
            small.append((notes.side, p))
        if notes.size[0] != notes.size[1]:
            cropped.append((p, notes.size))
        if notes.dim_max is not None:
            dim.append((notes.dim_max, p))
        if images is None:
            images = np.empty((len(paths), *a.shape), dtype=np.uint8)
        elif a.shape != images.shape[1:]:
            raise StylexError(
                f"Image {p} is {a.shape[0]}x{a.shape[1]} after cropping to a square but {paths[0]} is "
                f"{images.shape[1]}x{images.shape[2]}; pass a resolution to resize them all to one size."
            )
        images[i] = a
    kept = None
    if unreadable:
        shown = "\n  ".join(u.removesuffix("; re-export or delete the file.") for u in unreadable[:MAX_LISTED])
        more = f"\n  ... and {len(unreadable) - MAX_LISTED} more" if len(unreadable) > MAX_LISTED else ""
        if skip_unreadable and images is not None:
            warnings.warn(
                f"{len(unreadable)} of {len(paths)} images cannot be read and are left out:\n  {shown}{more}",
                stacklevel=4,
            )
            kept = np.ones(len(paths), dtype=bool)
            kept[bad] = False
            images = images[kept]
        elif len(unreadable) == 1:
            raise StylexError(unreadable[0])
        else:
            raise StylexError(
                f"{len(unreadable)} of {len(paths)} images cannot be read; re-export or delete them:\n  {shown}{more}"
            )
    assert images is not None
    if dim:
        top, p = max(dim)
        warnings.warn(
            f"{counted(len(dim), 'image')} of {len(paths)} (e.g. {p}) {_have(dim)} 16-bit values no higher than "
            f"{top}: {_dim_advice(top)}",
            stacklevel=4,
        )
    if cropped:
        p, (w, h) = cropped[0]
        warnings.warn(
            f"{counted(len(cropped), 'image')} of {len(paths)} {_are(cropped)} not square (e.g. {p}, {w}x{h}); "
            "stylex keeps the centre square of each, so their edges are not seen. Pad them to squares first "
            "to keep everything.",
            stacklevel=4,
        )
    if transparent:
        warnings.warn(
            f"{counted(len(transparent), 'image')} of {len(paths)} (e.g. {transparent[0]}) {_have(transparent)} "
            "transparent pixels; stylex composites them on black.",
            stacklevel=4,
        )
    if small:
        side, p = min(small)
        warnings.warn(
            f"{counted(len(small), 'image')} of {len(paths)} {_have(small)} less than half of {resolution} px; "
            f"{'it is' if len(small) == 1 else 'they are'} enlarged and blurred (the smallest, {p}, is {side} px on "
            "its shorter side).",
            stacklevel=4,
        )
    return images, int(np.median(sides)) if sides else None, kept


def _have(items: Sequence) -> str:
    return "has" if len(items) == 1 else "have"


def _are(items: Sequence) -> str:
    return "is" if len(items) == 1 else "are"


def _dim_advice(top: int) -> str:
    """What a 16-bit file whose values stay at or below `top` looks like to stylex, and the remedy."""
    return (
        f"stylex scales 16-bit grey by 255/65535, so {top} becomes {round(top * 255 / 65535)} of 255 and the "
        "image is nearly black. For 12-bit (or fewer) scans, stretch the values to the 16-bit range (x 16 for 12 "
        "bits) or save 8-bit images with the window you read them in."
    )


# ------------------------------------------------------------------------------------------------ saving

_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_OPERATOR_WORDS = (("<=", "_le_"), (">=", "_ge_"), ("<", "_lt_"), (">", "_gt_"))


def _clip_bytes(name: str, limit: int) -> str:
    """`name` cut to at most `limit` bytes of UTF-8, at a character boundary (file systems count bytes: 255)."""
    return name.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def _is_safe_dirname(name: str) -> bool:
    return (
        bool(name)
        and len(name) <= 100
        and len(name.encode("utf-8", "surrogateescape")) <= 240  # file systems count bytes (255)
        and not _FORBIDDEN.search(name)
        and name[0] != "."
        and name[-1] not in ". "
    )


def class_dir_names(class_names: Sequence[str]) -> list[str]:
    """Folder name for each class, such that loading the folder back gives the same label order.

    Class names are used as they are when every name is a safe folder name on Linux, macOS and Windows,
    the names are unique ignoring case, and they are already in sorted order. Otherwise each folder is
    ``<zero-padded label>_<name>``, with ``< <= > >=`` spelled ``_lt_ _le_ _gt_ _ge_`` and other unsafe
    characters replaced by ``_`` (e.g. ``bg_hue<0.5`` -> ``1_bg_hue_lt_0.5``).

    Args:
        class_names: [K] names, indexed by label.

    Returns:
        [K] folder names that sort in label order.
    """
    names = [str(c) for c in class_names]
    if (
        all(_is_safe_dirname(c) for c in names)
        and len({c.lower() for c in names}) == len(names)
        and sorted(names) == names
    ):
        return names
    width = len(str(max(len(names) - 1, 0)))
    out = []
    for y, name in enumerate(names):
        for op, word in _OPERATOR_WORDS:
            name = name.replace(op, word)
        name = _clip_bytes(_FORBIDDEN.sub("_", name).strip(" .")[:90], 200).strip(" .")
        out.append(f"{y:0{width}d}_{name}" if name else f"{y:0{width}d}")
    return out


@contextmanager
def atomic_dir(
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    owner: tuple[str, Callable[[Path], str | None]] | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir`` that becomes ``out_dir`` only when the block succeeds.

    A failure leaves no half-written ``out_dir`` behind (the temporary folder is removed).

    Args:
        out_dir: the folder to create; it may exist only if empty, unless ``overwrite``.
        overwrite: replace an existing ``out_dir`` (its old content is deleted after the new one is in place).
        owner: (writer, check), e.g. ("`stylex export`", check): ``overwrite`` then replaces only a folder that
            writer made and that holds nothing else; ``check(folder)`` says why a folder is not one (None: it is),
            so that a mistyped ``--out`` (the run's classifier, its data, a folder of one's own) is refused rather
            than deleted.

    Raises:
        StylexError: ``out_dir`` exists, is not empty and ``overwrite`` is False, or ``owner`` refuses it.
    """
    out = Path(out_dir)
    clear_stale_lock(out)  # what a killed train or explain left there
    full = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if full and not overwrite:
        raise StylexError(
            f"Output folder {out} already exists and is not empty; choose a new folder, or replace it with "
            f"{option('--overwrite', 'overwrite=True')}."
        )
    problem = owner[1](out) if full and owner is not None else None
    if problem is not None and owner is not None:  # owner is not None when there is a problem
        raise StylexError(
            f"{option('--overwrite', 'overwrite=True')} replaces only a folder that {owner[0]} wrote and nothing "
            f"else; {out} {problem}, which it would delete. Choose another folder, or delete this one yourself."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{_owner()}-", dir=out.parent))
    except OSError as e:  # named by the folder asked for, not by the temporary one beside it
        raise StylexError(f"cannot create {out} ({e.strerror or e}); choose a folder you can write to.") from e
    share(tmp, directory=True)
    try:
        yield tmp
        old = None
        if out.exists():
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            else:
                old = out.with_name(f".{out.name}.old-{tmp.name[len(f'.{out.name}.tmp-') :]}")
                os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _owner() -> str:
    """This process in the names of its temporary folders: host and pid, so that a later run can tell a folder left
    by a killed process (SIGKILL cleans nothing up) from one a live process is still writing."""
    return f"{re.sub(r'[^A-Za-z0-9]', '', socket.gethostname())[:24]}~{os.getpid()}"


def _sweep_stale(out: Path) -> None:
    """Remove the temporary folders beside `out` that a killed process of this machine left (`.NAME.tmp-HOST~PID-*`
    and `.NAME.old-*` of a pid no longer running): 11,778 PNGs of a killed `data synth` stayed there unseen."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)-([A-Za-z0-9]*)~(\d+)-")
    host = _owner().split("~")[0]
    for entry in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        m = pattern.match(entry.name)
        if m is None or m.group(1) != host or _alive(int(m.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def check_out_of_data(out: str | os.PathLike, *data: str | os.PathLike | None) -> None:
    """Refuse an output folder that a later load of one of `data` would read as images: one inside an image folder
    (including the folder itself). Not refused: below a hidden folder (loading skips it), inside a factor folder
    (which reads only the files its factors.csv lists), and data that is an .npz file or is not there.

    Raises:
        StylexError: `out` lies inside one of `data`; the message says why that would break later commands.
    """
    target = Path(out).resolve()
    for folder in data:
        if folder is None or not Path(folder).is_dir() or (Path(folder) / FACTORS_CSV).is_file():
            continue
        roots = [Path(folder).resolve()]  # and the class folders that are links elsewhere, which loading follows
        with contextlib.suppress(OSError):
            roots += [c.resolve() for c in Path(folder).iterdir() if c.is_symlink() and c.is_dir()]
        if any(
            target.is_relative_to(root) and not any(_skipped_folder(p) for p in target.relative_to(root).parts)
            for root in roots
        ):
            raise StylexError(
                f"the output folder {out} is inside the image folder {folder}: the next command to read those images "
                "would take what is written there for more of them (and a run would find its data changed); choose "
                "an output folder outside it."
            )


def check_npz_out(out: str | os.PathLike, data: str | os.PathLike, overwrite: bool, verb: str) -> Path:
    """`out` as the .npz file a command may write from `data` (`verb`: what it does to it, for the message): an .npz
    name, not the data itself ("missing/../data.npz" too), and new unless `overwrite`."""
    out = Path(out)
    if out.suffix != ".npz":
        raise StylexError(f"--out must name an .npz file, got {out}.")
    if Path(data).exists() and out.resolve() == Path(data).resolve():
        raise StylexError(f"--out {out} is the data being {verb}; name a new .npz file.")
    if out.resolve().exists() and not overwrite:
        raise StylexError(f"{out} already exists; name a new .npz file, or replace it with --overwrite.")
    return out


def save_npz(dataset: ImageDataset, path: str | os.PathLike) -> Path:
    """Write ``dataset`` as an ``.npz`` that `load_dataset` reads back with the same pixels (images, labels,
    class_names, filenames; ground-truth factors are not kept), through a temporary file renamed into place."""
    path = Path(path)
    arrays: dict[str, Any] = {"images": dataset.images, "class_names": np.array(dataset.class_names, dtype=str)}
    arrays["filenames"] = np.array(dataset.filenames, dtype=str)
    if dataset.labels is not None:
        arrays["labels"] = dataset.labels

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)  # a temporary file of its own, named in the error when the write is cut short
    return path


def write_image_tree(dataset: ImageDataset, root: Path, record_names: bool = True) -> list[str]:
    """Write ``dataset`` as PNGs under an existing ``root`` (layout as in :func:`save_image_folder`), with a
    ``class_names.json`` when the folder names cannot be the class names (``record_names=False``: the caller
    records them itself, as the synthetic shapes' synth.json does).

    Returns:
        [N] the written paths, relative to ``root``, in dataset order.
    """
    dirs = class_dir_names(dataset.class_names) if dataset.labels is not None else []
    # the folders cannot carry the names: a file does (dirs is empty without labels)
    if record_names and dataset.labels is not None and dirs and dirs != list(dataset.class_names):
        present = sorted({int(y) for y in dataset.labels})  # folders are made for the classes that have images
        record = {"folders": [dirs[y] for y in present], "class_names": [dataset.class_names[y] for y in present]}
        (root / CLASS_NAMES_JSON).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    used: set[str] = set()
    written = []
    for i, (image, filename) in enumerate(zip(dataset.images, dataset.filenames, strict=True)):
        folder = dirs[dataset.labels[i]] + "/" if dataset.labels is not None else ""
        stem = _clip_bytes(_FORBIDDEN.sub("_", Path(filename).stem), 200) or f"{i:06d}"  # room for "_12.png"
        rel, k = f"{folder}{stem}.png", 0
        while rel.lower() in used:  # two sources with one stem (a.jpg, a.png) must not overwrite each other
            k += 1
            rel = f"{folder}{stem}_{k}.png"
        used.add(rel.lower())
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel)
        written.append(rel)
    return written


def save_image_folder(dataset: ImageDataset, out_dir: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """Write ``dataset`` as ``<out_dir>/<class folder>/<stem>.png`` (flat ``<out_dir>/<stem>.png`` if unlabelled).

    ``<stem>`` is the file name of ``dataset.filenames[i]`` without its folder and extension (made unique
    within a folder with a ``_1``, ``_2``, ... suffix); class folders are named by :func:`class_dir_names`,
    so :func:`load_dataset` on ``out_dir`` gives back the same images, labels and label order. The folder is
    written under a temporary name and renamed into place, so a failure leaves no partial ``out_dir``.

    Args:
        dataset: the images to write.
        out_dir: a new (or empty) folder.
        overwrite: replace ``out_dir`` if it exists.

    Returns:
        [N] the written paths relative to ``out_dir``, in dataset order.
    """
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        return write_image_tree(dataset, tmp)


def foreign_entries(folder: Path, mine: set[str]) -> str | None:
    """For `atomic_dir`'s owner checks: what `folder` holds beyond the top-level names `mine` (None if nothing)."""
    if not folder.is_dir():
        return "is a file"
    extra = sorted(p.name for p in folder.iterdir() if p.name not in mine)
    if not extra:
        return None
    shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
    return f"also holds {shown}"
