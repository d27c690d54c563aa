"""`stylex explain` as library calls: explain images (files, folders, dataset indices) with style edits.

Reads the AttFind folder (`effects.safetensors` for the edit targets and size, `attributes.json` for the class
attributes) and writes into the output folder, for one image (`explain_image`):
    explanation.json      per strategy the `ImageExplanation` (edits, logits and probabilities after each)
    <strategy>.png        input, reconstruction, then the image after each added edit, probabilities printed
and for several (`explain_images`) the same in one folder per image, with explanations.json listing them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from stylex.classifier.store import write_json_atomic
from stylex.errors import StylexError, option
from stylex.explain.counterfactual import STRATEGIES, Counterfactuals, ImageExplanation, already_classified


def _resolve_class(target: str | int | None, names: list[str]) -> int | None:
    """A class index from a target: an int is an index; a str is a name, else an index written out (the command
    line's `--target 2`). So with classes named "1", "2", "3", target=1 (Python) is "2" and "1" (text) is "1"."""
    if target is None:
        return None
    if isinstance(target, str):  # NFC on both sides: a name typed on one system, folders named on another (NFD)
        nfc = [unicodedata.normalize("NFC", n) for n in names]
        if unicodedata.normalize("NFC", target) in nfc:
            return nfc.index(unicodedata.normalize("NFC", target))
    try:
        k = int(target)
    except ValueError:
        raise StylexError(f"unknown class {target!r}; classes are {names} (a name or an index).") from None
    if not 0 <= k < len(names):
        raise StylexError(f"class index {k} is outside [0, {len(names)}); classes are {names}.")
    return k


def explain_image(
    run_dir: str | os.PathLike,
    attributes_dir: str | os.PathLike,
    out: str | os.PathLike,
    image: str | os.PathLike | None = None,
    index: int | None = None,
    data: str | os.PathLike | None = None,
    strategies: tuple[str, ...] = STRATEGIES,
    top_k: int = 5,
    target: str | int | None = None,
    fast: int | None = None,
    num_candidates: int = 20,
    classifier=None,
    device: str = "cpu",
    quiet: bool = False,
) -> dict[str, Any]:
    """Explain one image: which edits of its styles move the classifier toward another class.

    Args:
        run_dir: the run folder; attributes_dir: the `stylex attfind` output folder for that run.
        out: folder for explanation.json and one PNG per strategy.
        image: an image file; or index: an index into `data` (default the data AttFind used).
        strategies: any of "independent", "subset", "class".
        top_k: most edits per strategy.
        target: class name or index to move toward; default the most likely other class.
        fast: None: the image's exact effects (2 S forward passes); M: fast mode (see `StyleEffects`).
            An image AttFind already measured reuses its row of the saved table.
        num_candidates: edits the "subset" strategy considers.

    Returns:
        {"explanations": {strategy: ImageExplanation}, "files": [paths], "reused_effects": bool,
        "skipped": {strategy: reason}, "source": how the image is named, "folder": `out`}.
    """
    if (image is None) == (index is None):
        raise StylexError(f"pass exactly one of {option('--image')} FILE or {option('--index')} I.")
    if image is not None and Path(image).is_dir():  # it explained the whole folder and returned the first
        raise StylexError(
            f"{image} is a folder; explain_image takes one image file (stylex.explain_images(..., images=[FOLDER]) "
            "explains a folder's images)."
        )
    return explain_images(
        run_dir,
        attributes_dir,
        out,
        images=[] if image is None else [image],
        indices=[] if index is None else [index],
        data=data,
        strategies=strategies,
        top_k=top_k,
        target=target,
        fast=fast,
        num_candidates=num_candidates,
        classifier=classifier,
        device=device,
        quiet=quiet,
    )[0]


SUMMARY_FILE = "explanations.json"
"""Written beside the per-image folders of `explain_images` with several images: one entry per image."""


def explain_images(
    run_dir: str | os.PathLike,
    attributes_dir: str | os.PathLike,
    out: str | os.PathLike,
    images: Sequence[str | os.PathLike] = (),
    indices: Sequence[int] = (),
    data: str | os.PathLike | None = None,
    strategies: tuple[str, ...] = STRATEGIES,
    top_k: int = 5,
    target: str | int | None = None,
    fast: int | None = None,
    num_candidates: int = 20,
    classifier=None,
    device: str = "cpu",
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Explain several images with one load of the model (`stylex explain` with several --image / --index).

    Args:
        images: image files, or folders of them (read like data: flat, or in class subfolders); indices: indices
            into `data` (default the data AttFind used). Every image is read before any is explained.
        the others: as `explain_image`.

    Writes: with one image in all, `out` holds its explanation (as `explain_image`); with several, `out/<name>/`
    holds each (the file's name without its suffix, under its folder's subfolders; `index-<i>` for an index) and
    `out/explanations.json` lists them: per image its source, folder, and per strategy the classes and outcome; an
    image skipped whole (one that already is the --target class) is listed with the reason and no folder. Once an
    image is explained, what an earlier explain wrote into `out` and this run did not write again (the folders its
    explanations.json lists, a single explanation.json and its PNGs) is removed, so that `out` describes this run
    alone; other files are left, and a run that explains nothing leaves `out` as it was. Interrupted (Ctrl-C) or
    failing midway, explanations.json lists the images explained so far.

    Returns:
        one dict per image, as `explain_image` returns (an image skipped whole has "error" and no "explanations").

    Raises:
        StylexError: besides bad input, `out` inside a folder of `images` (the next run would read its pictures as
        images), and, with several images, none of them explained (the message gives the reason).
    """
    from stylex.attfind.effects import Effects
    from stylex.attfind.result import AttFindResult
    from stylex.attfind.run import ATTRIBUTES_FILE, EFFECTS_FILE, bind_results
    from stylex.data.dataset import check_out_of_data
    from stylex.errors import check_folder_args
    from stylex.files import folder_lock
    from stylex.pipeline import load_run

    check_folder_args(run_dir=run_dir, attributes_dir=attributes_dir, out=out, data=data)
    if isinstance(strategies, str):  # one strategy given alone, not a sequence of its letters
        strategies = (strategies,)
    if top_k < 1:
        raise StylexError(f"top_k must be at least 1, got {top_k}.")
    if Path(attributes_dir).name == ATTRIBUTES_FILE and Path(attributes_dir).is_file():  # the file, as load_attfind
        attributes_dir = Path(attributes_dir).parent
    for st in strategies:
        if st not in STRATEGIES:
            raise StylexError(f"unknown strategy {st!r}; choose from {', '.join(STRATEGIES)}.")
    if isinstance(images, str | os.PathLike):  # one image given alone, not a sequence of its characters
        images = [images]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StylexError(f"the output folder {out} is a file; choose a folder (new, or one explain wrote before).")
    for image in images:  # a later run would read the pictures as images to explain (a hidden folder: skipped)
        if Path(image).is_dir():
            check_out_of_data(out, image)
    attributes_dir = Path(attributes_dir)
    saved = Effects.load(attributes_dir / EFFECTS_FILE)
    attrs = AttFindResult.load(attributes_dir / ATTRIBUTES_FILE)
    model, classifier = load_run(run_dir, classifier, device)
    bind_results(model, attrs, saved, attributes_dir, run_dir)
    y = _resolve_class(target, attrs.class_names)
    measured = saved.meta.get("data")  # AttFind's data: its images may reuse AttFind's rows of the table
    check_out_of_data(out, data, measured, model.run_info.get("data"))
    items = _read_inputs(model.resolution, images, indices, data or measured, attributes_dir, measured)
    if not items:
        raise StylexError(
            f"pass an image ({option('--image', 'images=')} FILE or FOLDER) or a dataset index "
            f"({option('--index', 'indices=')} I)."
        )
    several = len(items) > 1
    folders = _folder_names([item.name for item in items]) if several else [""]
    done: list[dict[str, Any]] = []
    from stylex.progress import progress_bar

    with folder_lock(out, "stylex explain"):  # one writer: two explains into one OUT lost one's pictures
        try:
            for item, folder in zip(
                progress_bar(
                    items,
                    desc="explaining",
                    unit="image",
                    disable=True if quiet or not several else None,
                    dynamic_ncols=True,
                ),
                folders,
                strict=True,
            ):
                dst = out / folder if several else out

                def record(report, dst=dst, source=item.source):
                    done.append({**report, "folder": str(dst), "source": source})

                try:
                    if several and dst.resolve() != out.resolve() / folder:  # a link at any depth, out of OUT or in it
                        raise StylexError(f"{dst} goes through a link; explain does not write through links in {out}")
                    _explain_one(
                        model, classifier, saved, attrs, item, dst, y, strategies, top_k, fast, num_candidates, device,
                        quiet=quiet or several, lead=f"{item.source}: " * several, on_written=record,
                    )  # fmt: skip
                except StylexError as e:
                    if not several:  # the earlier results stay as they were
                        raise
                    done.append({"error": str(e), "skipped": {}, "source": item.source})
        finally:  # also when interrupted or failing midway: `out` then lists the images explained so far
            with _signals_held():
                if any("error" not in r for r in done):  # else `out` keeps what an earlier run wrote
                    written = {str(Path(r["folder"]).relative_to(out)) for r in done if "error" not in r}
                    _clear_earlier(out, keep=written if several else {""})
                    if several:
                        _write_summary(out / SUMMARY_FILE, done, None if len(done) == len(items) else len(items))
    if several and all("error" in r for r in done):
        reasons = list(dict.fromkeys(r["error"] for r in done))
        raise StylexError(
            f"none of the {len(done)} images was explained, so {out} was left as it was: {reasons[0]}"
            + (f" ({len(reasons) - 1} other reasons too)" if len(reasons) > 1 else "")
        )
    return done


class _Input(NamedTuple):
    """One image to explain: its pixels, its noise key, how it is named, its folder name, and its key in AttFind's
    table when it is an image of AttFind's data (else -1)."""

    pixels: np.ndarray  # [1, R, R, 3] uint8
    key: int
    source: str
    name: str
    measured_key: int


def _read_inputs(resolution, images, indices, data, attributes_dir, measured=None) -> list[_Input]:
    """The images to explain: files and folders, then dataset indices, each image once (a file given twice, a file
    of a given folder, an index of a file given: the first). An image of AttFind's data (`measured`), however given,
    gets its index there as its key: the noise AttFind gave it, and its row of the effect table."""
    from stylex.data import load_dataset, read_image

    if isinstance(indices, int):  # one index given alone
        indices = [indices]
    ours = None  # AttFind's data, read once if an image lies in it
    if measured is not None and Path(measured).is_dir():
        if any(Path(p).resolve().is_relative_to(Path(measured)) for p in images) or (
            indices and data is not None and str(Path(data).resolve()) == measured
        ):
            ours = load_dataset(measured, resolution=resolution, progress=False)
    index_of = {(Path(measured) / f).resolve(): k for k, f in enumerate(ours.filenames)} if ours is not None else {}
    # {resolved file of AttFind's data: its index there}

    items: list[_Input] = []
    seen: set[Any] = set()

    def add(pixels: np.ndarray, key: int, source: str, name: str, ident: Any, of_measured: bool) -> None:
        """Add an image unless already there; `ident` names it (its resolved file, or (data, index) in an .npz)."""
        if ident in index_of:  # a file of AttFind's data, however it was given
            key, of_measured = index_of[ident], True
        if ident not in seen:
            seen.add(ident)
            items.append(_Input(pixels, key, source, name, key if of_measured else -1))

    for image in images:
        path = Path(image)
        if path.is_dir():
            same = ours is not None and str(path.resolve()) == measured  # AttFind's data itself: read once
            ds = (
                ours
                if same and ours is not None
                else load_dataset(path, resolution=resolution, progress=False, skip_unreadable=True)
            )
            for k, name in enumerate(ds.filenames):
                file = (path / name).resolve()
                add(ds.images[k : k + 1], -1, str(path / name), str(Path(name).with_suffix("")), file, False)
        else:
            add(read_image(path, resolution)[None], -1, str(path), path.stem, path.resolve(), False)
    if indices:
        if data is None:
            raise StylexError(
                f"{attributes_dir} does not record its data; pass the data the indices refer to ({option('--data')})."
            )
        if not Path(data).exists():  # moved since AttFind ran (or a copy of the run on another machine)
            raise StylexError(
                f"the data the indices refer to, {data}, is not here (moved?); pass it with {option('--data')}, or "
                f"explain image files with {option('--image', 'images=')}."
            )
        place = str(Path(data).resolve())
        dataset = ours if ours is not None and place == measured else load_dataset(data, resolution, progress=False)
        for index in indices:
            if not 0 <= index < len(dataset):
                raise StylexError(f"index {index} is outside [0, {len(dataset)}) for {data}.")
            source = f"index {index} ({dataset.filenames[index]}) of {data}"
            ident = (Path(data) / dataset.filenames[index]).resolve() if Path(data).is_dir() else (place, index)
            add(dataset.images[index : index + 1], index, source, f"index-{index}", ident, place == measured)
    return items


_WRITTEN = tuple(f"{k}.png" for k in STRATEGIES) + ("explanation.json",)
"""The files `explain` writes into an image's folder (and into OUT itself for one image)."""
_RESERVED = {n.casefold() for n in (*_WRITTEN, SUMMARY_FILE)} | {
    f"{n}.tmp".casefold() for n in (*_WRITTEN, SUMMARY_FILE)
}


def _folder_names(names: list[str]) -> list[str]:
    """Each name once: a second "x" (x.png beside x.jpg) becomes "x-2", or "x-3" where an image is named x-2; a
    part that is one of the files explain writes ("subset.png" from subset.png.jpg, or a class folder named
    explanations.json), or "." or "..", gets "-2"."""
    names = [
        "/".join(p + "-2" if p.casefold() in _RESERVED or p in (".", "..") else p for p in name.split("/"))
        for name in names
    ]  # ".." from an image named ...png would be OUT's parent
    taken = {name.casefold() for name in names}  # case-insensitive file systems (macOS, Windows) merge X and x
    used: set[str] = set()
    unique = []
    for name in names:
        candidate, n = name, 1
        while candidate.casefold() in used or (candidate != name and candidate.casefold() in taken):
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate.casefold())
        unique.append(candidate)
    return unique


def _clear_earlier(out: Path, keep: set[str]) -> None:
    """Remove what an earlier `explain` wrote into `out` and this run did not write again: the image folders its
    explanations.json lists but `keep` does not (their explanation.json and strategy PNGs; a folder left empty goes
    too), and a single explanation's files (unless `keep` holds "", this run's single image). A listing that is
    not one of ours is left alone, and so is any entry that is not a folder of `out`."""
    import json

    summary = out / SUMMARY_FILE
    if summary.is_file():
        try:
            entries = json.loads(summary.read_text()).get("images", [])
        except (ValueError, AttributeError, OSError, UnicodeDecodeError):
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            folder = entry.get("folder") if isinstance(entry, dict) else None
            if not isinstance(folder, str) or folder in keep or not _plain_relative(folder):
                continue
            target = out / folder
            try:
                if not target.is_dir() or target.resolve() != out.resolve() / folder:
                    continue  # a user's file now, or through a link: not a folder explain made
                for name in _WRITTEN:
                    (target / name).unlink(missing_ok=True)
                for d in [target, *target.parents]:  # up to `out`: the folders it made, once empty
                    if d == out or not d.is_relative_to(out):
                        break
                    d.rmdir()
            except OSError:
                continue
        if "" in keep:  # one image this time: no listing
            summary.unlink(missing_ok=True)
    if "" not in keep and (out / "explanation.json").is_file():
        for name in _WRITTEN:
            (out / name).unlink(missing_ok=True)


def _plain_relative(folder: str) -> bool:
    """A folder name explain could have written: relative, no '..' or '.' part, no NUL."""
    parts = Path(folder).parts
    return bool(parts) and "\0" not in folder and not Path(folder).is_absolute() and not {"..", "."} & set(parts)


def _write_summary(path: Path, done: list[dict[str, Any]], interrupted: int | None = None) -> None:
    entries = []
    for r in done:
        entry: dict[str, Any] = {"source": r["source"]}
        if "error" in r:
            entry["skipped"] = r["error"]
        else:
            entry["folder"] = Path(r["folder"]).relative_to(path.parent).as_posix()
            entry["strategies"] = {
                k: {
                    "from": e.class_names[e.original_class],
                    "to": e.class_names[e.target_class],
                    "outcome": e.outcome,
                    "edits": [st.describe() for st in e.steps],
                }
                for k, e in r["explanations"].items()
            }
            entry["skipped_strategies"] = r["skipped"]
        entries.append(entry)
    summary: dict[str, Any] = {"images": entries}
    if interrupted is not None:
        summary["interrupted"] = f"after {len(done)} of {interrupted} images"
    write_json_atomic(path, summary)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM wait until the block is done, then act as they would have: for the few file
    renames that must happen all or none. Outside the main thread, where Python cannot set handlers, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []
    # keyed by number: a handler gets the signal as an int
    previous: dict[int, Any] = {
        sig: signal.signal(sig, lambda signum, frame: held.append((signum, frame))) for sig in _HELD
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if held:
            signum, frame = held[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)  # e.g. KeyboardInterrupt, or the CLI's SIGTERM as an interrupt
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


_HELD = (signal.SIGINT, signal.SIGTERM)


def measured_row(effects, key: int, s):
    """The effects AttFind already measured for an image (the image of `key` in its table, with the same styles
    `s`, batch 1), as `stylex explain --index` and `stylex.counterfactual(..., key=)` reuse them; None otherwise."""
    keys = effects.meta.get("indices") or []
    if key < 0 or key not in keys:
        return None
    pos = keys.index(key)
    if not torch.allclose(effects.styles[pos], s.flatten()[0].float().cpu(), atol=1e-4):
        return None
    return effects.subset([pos])


def _explain_one(
    model, classifier, saved, attrs, item: _Input, out: Path, y, strategies, top_k, fast, num_candidates, device,
    quiet, lead="", on_written=lambda result: None,
) -> dict[str, Any]:  # fmt: skip
    """Explain one image into `out`; see `explain_image`. `lead` starts a warning (the image's name among several);
    `on_written(result)` runs as the files are swapped in, with signals held, so that the caller's record of what
    is written never misses an image."""
    from stylex.attfind.effects import image_noise
    from stylex.attfind.run import encode_images
    from stylex.data import to_tensor

    G = model.G
    names = attrs.class_names
    source = item.source
    px = item.pixels
    if getattr(G, "grey", False) and not (
        np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2])
    ):
        warnings.warn(
            f"{lead}the image has colour, but the model draws grey images (it was trained on grey data): its "
            "reconstruction and the edits lose the colour.",
            stacklevel=3,
        )
    x = to_tensor(item.pixels.copy()).to(device)  # [1, 3, R, R]
    s = encode_images(model, classifier, x)
    noise = image_noise(G, [item.key], int(saved.meta.get("seed", 0)), device)
    row = measured_row(saved, item.measured_key, s)
    reused = row is not None
    explanations, skipped, row = explain_styles(
        G,
        classifier,
        s,
        noise,
        saved,
        attrs,
        row=row,
        strategies=strategies,
        target=y,
        top_k=top_k,
        fast=fast,
        num_candidates=num_candidates,
        source=source,
        progress=not quiet,
    )
    y = _other_class(row, y)
    with torch.no_grad():
        seen = int(classifier(x).argmax(1)[0])
    drawn = int(row.base_logits[0].argmax())
    if seen != drawn:
        warnings.warn(
            f"{lead}the image is classified {names[seen]!r} but its reconstruction {names[drawn]!r}; the "
            "explanation starts from the reconstruction, which this model does not draw close enough to the image.",
            stacklevel=3,
        )
    report = {
        "source": source,
        "target": names[y],
        "image_class": names[seen],
        "reconstruction_class": names[drawn],
        "reused_effects": reused,
        "effects_mode": row.meta.get("mode", "exact"),
        "strategies": {k: v.to_dict() for k, v in explanations.items()},
        "skipped": skipped,
    }
    names_written = [f"{k}.png" for k in explanations] + ["explanation.json"]
    made = [d for d in [out, *out.parents] if not d.exists()]  # the folders this image's explanation creates
    out.mkdir(parents=True, exist_ok=True)
    stage: Path | None = None
    result = {
        "explanations": explanations,
        "files": [out / name for name in names_written],
        "reused_effects": reused,
        "skipped": skipped,
    }
    try:  # drawn and written aside, then swapped in at once: an interrupt never leaves two explanations mixed
        stage = Path(tempfile.mkdtemp(prefix=".explain-", suffix=".tmp", dir=out))
        for k, e in explanations.items():
            _render_sequence(G, classifier, x, s, noise, e, saved, stage / f"{k}.png")
        write_json_atomic(stage / "explanation.json", report)
        with _signals_held():  # the swap, and the caller's record of it, all or none
            for name in _WRITTEN:  # an earlier explanation's files that this one does not write again
                if name not in names_written:
                    (out / name).unlink(missing_ok=True)
            for name in names_written:
                os.replace(stage / name, out / name)
            shutil.rmtree(stage, ignore_errors=True)
            on_written(result)
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if not (out / "explanation.json").exists():
            for d in made:  # nearest first; only while empty
                with contextlib.suppress(OSError):
                    d.rmdir()
        raise
    return result


def _other_class(row, target: int | None) -> int:
    """`target`, or the most likely class other than the predicted one for a one-image effects row."""
    if target is not None:
        return target
    base = row.base_logits[0].clone()
    base[int(base.argmax())] = float("-inf")
    return int(base.argmax())


def explain_styles(
    G,
    classifier,
    s,
    noise: list[torch.Tensor],
    saved,
    attributes,
    *,
    row=None,
    strategies: tuple[str, ...] = STRATEGIES,
    target: int | None = None,
    top_k: int = 5,
    fast: int | None = None,
    num_candidates: int = 20,
    source: str = "",
    progress: bool = False,
) -> tuple[dict[str, ImageExplanation], dict[str, str], Any]:
    """Explain one image given its styles: the core of `explain_image`, `stylex.explain` and the report.

    Args:
        G, classifier: generator and classifier (images [N, 3, R, R] in [-1, 1] -> logits [N, K]).
        s: the image's styles (batch 1); noise: its fixed noise maps [1, 1, r, r] per layer.
        saved: the AttFind `Effects` (edit targets s_min / s_max [S] and the shift size).
        attributes: the `AttFindResult` (class names; class attributes for the "class" strategy).
        row: the image's effects [1, 2, S, K] if already known (e.g. a row of `saved`); else computed here.
        strategies: any of "independent", "subset", "class".
        target: class index to move toward; default the most likely class other than the predicted one.
        top_k, num_candidates: see `Counterfactuals`.
        fast: None for the exact effects row (2 S forward passes), M for fast mode (see `StyleEffects`).
        source: how the image is named in the result.

    Returns:
        ({strategy: ImageExplanation}, {strategy: why it was skipped}, the effects row).
    """
    from stylex.attfind.effects import StyleEffects

    device = s.conv[0].device
    names = attributes.class_names
    if row is None and target is not None:  # refuse at once, before the effects of every coordinate
        with torch.no_grad():
            if int(classifier(G.synthesis(s, noise)).argmax(1)[0]) == target:
                raise StylexError(already_classified(names[target]))
    if row is None:
        finder = StyleEffects(G, classifier, shift_size=saved.shift_size, fast=fast, progress=progress)
        row = finder.compute(s, noise, s_min=saved.s_min, s_max=saved.s_max)
    cf = Counterfactuals(
        G, classifier, saved.s_min.to(device), saved.s_max.to(device), saved.shift_size, names, num_candidates
    )
    y = _other_class(row, target)
    class_edits = attributes.for_class(y).edits
    explanations: dict[str, ImageExplanation] = {}
    skipped: dict[str, str] = {}
    for st in strategies:
        if st == "class" and not class_edits:
            skipped[st] = f"AttFind found no attributes for class {names[y]!r}"
            continue
        explanations[st] = cf.explain(
            s, noise, row, strategy=st, target=y, top_k=top_k, class_edits=class_edits, source=source
        )
    return explanations, skipped, row


@torch.no_grad()
def _render_sequence(G, classifier, x, s, noise, e: ImageExplanation, effects, path: Path) -> Path:
    """One row: input (when `x` is given), reconstruction, then the image after each step, with the class
    probabilities under each."""
    from stylex.explain.render import save_image

    return save_image(sequence_image(G, classifier, x, s, noise, e, effects), path)


@torch.no_grad()
def sequence_image(G, classifier, x, s, noise, e: ImageExplanation, effects):
    """The PIL image `_render_sequence` writes; `x` [1, 3, R, R] may be None (no input tile)."""
    tiles, probs = sequence_tiles(G, classifier, x, s, noise, e, effects)
    return sequence_picture(tiles, probs, e, with_input=x is not None)


@torch.no_grad()
def sequence_tiles(G, classifier, x, s, noise, e: ImageExplanation, effects) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of an explanation and the classifier's probabilities on each, on the CPU.

    Returns:
        tiles [T + 2, 3, R, R] in [-1, 1] (the input `x`, the reconstruction, then the image after each of the T
        steps; without the input when `x` is None) and probs [T + 2, K] (or T + 1 rows).
    """
    from stylex.attfind.effects import edit_styles
    from stylex.models.stylespace import StyleVector

    device = s.conv[0].device
    s_min, s_max = effects.s_min.to(device), effects.s_max.to(device)
    edits = e.edits
    prefix = [s] + [edit_styles(s, edits[: t + 1], s_min, s_max, effects.shift_size) for t in range(len(edits))]
    images = G.synthesis(StyleVector.cat(prefix), [n.expand(len(prefix), -1, -1, -1) for n in noise])  # [T+1, ...]
    tiles = images if x is None else torch.cat([x.to(images.device, images.dtype), images])
    return tiles.float().cpu(), classifier(tiles).softmax(dim=1).float().cpu()


def sequence_picture(tiles: torch.Tensor, probs: torch.Tensor, e: ImageExplanation, with_input: bool = True):
    """The annotated row of `sequence_tiles`: each tile with its title and class probabilities (a PIL image)."""
    from stylex.explain.render import annotated_grid, probability_lines

    names = e.class_names
    titles = (["input"] if with_input else []) + ["reconstruction"]
    titles += [f"+{st.layer_name}[{st.channel}]{st.direction}" + ("" if st.tint is None else f" tint {st.tint}")
               for st in e.steps]  # fmt: skip
    captions = [[t, *probability_lines(p, names, e.target_class)] for t, p in zip(titles, probs, strict=True)]
    R = tiles.shape[-1]
    title = f"{e.strategy}: {names[e.original_class]} -> {names[e.target_class]}, {e.outcome}"
    return annotated_grid([tiles], [captions], scale=max(1, -(-96 // R)), title=title)
