"""`stylex report`: one self-contained folder (index.html + images) that shows everything about a run.

The page opens from disk with no network: styles and script are inline (pinned by hash in a Content-Security-
Policy), plots are inline SVG, pictures are files beside index.html. Sections:

1. summary figures; 2. data and classifier (class balance, accuracy, confusion); 3. training curves and samples;
4. reconstructions (consistency, L1, identity beside two baselines); 5. per class its top attributes, each with a
slider over precomputed frames, the before/after strip, the animation, mean effect and flip share; sufficiency@K;
6. a few image-specific explanations; 7. the commands and configs that produced the run.

Everything a user named (class names, file names, paths, config values) is escaped; files are named by class
index (`img/c0/...`), never by class name. What is missing and cheap (the reconstruction figures, strips and
animations) is generated into the report folder; what is not (AttFind) is replaced by a note naming its command.
The run folder is only read.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import json
import os
import shlex
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stylex.data.dataset import _owner, _sweep_stale
from stylex.errors import StylexError, counted, option
from stylex.explain.html import PALETTE, Series, bar_row, esc, line_plot, page
from stylex.files import clear_stale_lock, share
from stylex.progress import progress_bar

MARKER = ".stylex-report"
"""A file every report folder holds, so that `write_report` only ever replaces a folder it wrote itself."""

LOSS_DOCS = {
    "loss_d": "discriminator loss",
    "g_adv": "generator adversarial loss",
    "l1": "L1(x, x_rec)",
    "perceptual": "perceptual distance",
    "w_rec": "L1(E(x), E(x_rec))",
    "kl": "KL(C(x) || C(x_rec))",
    "r1": "R1 penalty",
    "g_adv_z": "adversarial loss, z path",
}


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class _Run:
    """What the sections read, gathered once."""

    run_dir: Path
    out: Path  # the folder being written (a temporary sibling of the final one)
    model: Any
    classifier: Any
    names: list[str]
    device: str
    info: dict[str, Any]
    dataset: Any = None
    data_path: str | None = None
    data_note: str = ""
    attributes_dir: Path | None = None
    result: Any = None
    effects: Any = None
    attfind_note: str = ""
    export: dict[str, Any] | None = None  # the config's "export" entry: the run is a `stylex export` folder
    card: dict[str, Any] | None = None  # that folder's card.json, when it is beside the run folder
    flags: str = ""  # this report's options that differ from the defaults, as `stylex report` flags
    final: Path | None = None  # the folder the report becomes
    redact: bool = False  # images by index only (`write_report(redact_paths=True)`)
    read: dict[str, Any] = field(default_factory=dict)  # AttFind's data, once read (`_attfind_dataset`)

    def rel(self, path: Path) -> str:
        """A path inside the report folder as a relative URL."""
        return path.relative_to(self.out).as_posix()

    @property
    def name(self) -> str:
        """The model's name: an export's (its card's, else its config's), else the run folder's."""
        from stylex.zoo import model_name

        if self.card and isinstance(self.card.get("name"), str) and self.card["name"]:
            return self.card["name"]
        return model_name(self.info, self.run_dir)

    def model_ref(self) -> str:
        """How commands name the model: `zoo:NAME` for a shipped one, else the run folder's absolute path."""
        from stylex.zoo import PREFIX, is_shipped

        if self.export is not None and is_shipped(self.run_dir):
            return PREFIX + self.run_dir.resolve().parent.name
        return str(self.run_dir.resolve())

    def shows_samples(self) -> bool:
        """Whether the images shown are an export's shipped samples (the data its config records)."""
        if self.export is None or not self.data_path or not self.info.get("data"):
            return False
        return Path(self.data_path).resolve() == (self.run_dir / str(self.info["data"])).resolve()

    def num_samples(self) -> Any:
        """How many sample images an export ships ("?" when its card does not say)."""
        return ((self.card or {}).get("samples") or {}).get("num_images", "?")


def _load_export(run: _Run) -> None:
    """Recognise a `stylex export` folder (its config's "export" entry) and read the card beside it."""
    from stylex.zoo import CARD, read_card

    export = run.info.get("export")
    if not isinstance(export, dict):
        return
    run.export = export
    if (run.run_dir.parent / CARD).is_file():
        try:
            run.card = read_card(run.run_dir.parent)
        except StylexError:
            run.card = None  # the report still shows what the config records


def _load_dataset(run: _Run, data: str | os.PathLike | None) -> None:
    from stylex.data import load_dataset

    path = data or run.info.get("data")
    if not path:
        run.data_note = (
            f"The run does not record its data; pass {option('--data')} to show data figures and input images."
        )
        return
    if not Path(path).exists():
        run.data_note = (
            f"The run's data {path} is not here; pass {option('--data')} to show data figures and input images."
        )
        return
    try:
        run.dataset = load_dataset(path, resolution=run.model.resolution, progress=False)
        run.data_path = str(path)
    except StylexError as e:  # the message names files, which may name patients
        shown = "one of its files; a report without --redact-paths names it" if run.redact else str(e)
        run.data_note = f"The data could not be read ({shown})"


def _load_attfind(run: _Run, attributes_dir: Path) -> None:
    from stylex.attfind.effects import Effects
    from stylex.attfind.result import AttFindResult
    from stylex.attfind.run import ATTRIBUTES_FILE, EFFECTS_FILE, bind_results
    from stylex.zoo import is_shipped

    run.attributes_dir = attributes_dir
    images = min(100, run.num_samples()) if run.export is not None and isinstance(run.num_samples(), int) else 100
    command = f"stylex attfind --model {shlex.quote(run.model_ref())} --fast 30 --num-images {images}"
    if not (attributes_dir / ATTRIBUTES_FILE).is_file() or not (attributes_dir / EFFECTS_FILE).is_file():
        then = "then re-run"
        if is_shipped(run.run_dir) or run.export is not None:  # a shipped or received model: results go elsewhere
            command, then = command + " --out DIR", "then re-run with --attributes DIR"
        run.attfind_note = f"No AttFind results in {attributes_dir}; `{command}` finds the attributes ({then})."
        warnings.warn(f"{run.attfind_note[0].lower()}{run.attfind_note[1:]}", stacklevel=3)
        return
    result = AttFindResult.load(attributes_dir / ATTRIBUTES_FILE)
    effects = Effects.load(attributes_dir / EFFECTS_FILE)
    bind_results(run.model, result, effects, attributes_dir, run.run_dir, command)
    run.result, run.effects = result, effects


# ------------------------------------------------------------------------------------------------ the entry point
def write_report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    attributes_dir: str | os.PathLike | None = None,
    *,
    data: str | os.PathLike | None = None,
    classifier=None,
    top_k: int = 10,
    num_slider_images: int = 4,
    num_frames: int = 7,
    num_explanations: int = 3,
    generate: bool = True,
    device: str = "cpu",
    quiet: bool = False,
    redact_paths: bool = False,
) -> Path:
    """Write the HTML report of a run; returns the path of its index.html.

    Args:
        run_dir: a run folder written by `stylex train` (only read).
        out: the report folder; replaced when it holds an earlier report, refused when it holds anything else.
        attributes_dir: the `stylex attfind` output folder (default RUN/attfind).
        data: the images (default the data the run recorded); used for class balance and input images.
        classifier: a loaded classifier instead of the one the run recorded (same fingerprint).
        top_k: attributes shown per class (at most those AttFind selected).
        num_slider_images: images each attribute's slider moves.
        num_frames: slider frames per attribute (odd, so that the middle one is the unedited image).
        num_explanations: image-specific explanations shown.
        generate: make what is missing and cheap (reconstruction figures, strips and GIFs) into the report.
        device: where the model runs.
        quiet: no progress bars.
        redact_paths: name folders by their last name only, not by this machine's absolute paths (which may name
            users, projects or patients), and images by their index only, not their file names: for a report to
            share.

    Returns:
        out/index.html.
    """
    from stylex.attfind.run import class_names_of
    from stylex.data.dataset import check_out_of_data
    from stylex.errors import check_folder_args
    from stylex.pipeline import load_run

    check_folder_args(run_dir=run_dir, out=out, attributes_dir=attributes_dir, data=data)
    if attributes_dir is not None and Path(attributes_dir).name == "attributes.json" and Path(attributes_dir).is_file():
        attributes_dir = Path(attributes_dir).parent  # the file, as load_attfind and explain_images take it
    if attributes_dir is not None and not Path(attributes_dir).is_dir():  # given, so meant: not a report without
        raise StylexError(
            f"{attributes_dir} is not a folder; pass the folder `stylex attfind` wrote "
            f"({option('--attributes', 'attributes_dir=')})."
        )
    if num_frames < 3 or num_frames % 2 == 0:
        raise StylexError(f"the number of slider frames must be odd and at least 3, got {num_frames}.")
    if top_k < 1 or num_slider_images < 1 or num_explanations < 0:
        raise StylexError("top_k and num_slider_images must be at least 1, num_explanations at least 0.")
    from stylex.zoo import resolve_model

    run_dir, out = resolve_model(run_dir), Path(out)
    if out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
        raise StylexError(
            f"{option('--out')} {out} would replace the run folder {run_dir}; choose a folder of its own."
        )
    clear_stale_lock(out)  # what a killed train or explain left there
    if out.exists() and not (out / MARKER).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise StylexError(f"{out} exists and is not a stylex report; choose another {option('--out')} or remove it.")
    model, classifier = load_run(run_dir, classifier, device)
    check_out_of_data(out, data or model.run_info.get("data"))
    # written aside under a hidden name of this process's own (a fixed OUT.partial was deleted unasked, a user's
    # folder of that name with it, and two reports into one OUT wrote into each other), then renamed into place
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(out)  # what a killed report left
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{_owner()}-", dir=out.parent))
    share(partial, directory=True)
    try:
        (partial / "img").mkdir()
        run = _Run(run_dir, partial, model, classifier, class_names_of(model, classifier), device, model.run_info)
        run.final = out
        defaults = {name: p.default for name, p in inspect.signature(write_report).parameters.items()}
        given = [
            ("--top-k", "top_k", top_k),
            ("--slider-images", "num_slider_images", num_slider_images),
            ("--frames", "num_frames", num_frames),
            ("--explanations", "num_explanations", num_explanations),
        ]
        run.flags = "".join(f" {flag} {value}" for flag, name, value in given if value != defaults[name])
        run.flags += "" if generate else " --no-generate"
        run.flags += " --redact-paths" if redact_paths else ""
        run.redact = redact_paths
        _load_export(run)
        _load_dataset(run, data)
        _load_attfind(run, Path(attributes_dir) if attributes_dir else run_dir / "attfind")
        if run.result is not None:  # AttFind's images are shown too
            check_out_of_data(out, run.result.settings.get("data"))
        with torch.no_grad():
            body = _body(run, top_k, num_slider_images, num_frames, num_explanations, generate, quiet)
        html_text = page(f"StylEx report: {run.name}", body, _CSS, _JS)
        if redact_paths:  # the page, and the figures' JSON beside it (reconstruction.json names the data)
            html_text = _redacted_html(html_text, run, run_dir, out, attributes_dir, data)
            for record in partial.rglob("*.json"):
                text = record.read_text(encoding="utf-8")
                record.write_text(_redacted_html(text, run, run_dir, out, attributes_dir, data), encoding="utf-8")
        (partial / "index.html").write_text(html_text, encoding="utf-8")
        (partial / MARKER).write_text("written by `stylex report`; the folder is replaced when the report is redone\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    partial.replace(out)
    return out / "index.html"


# ------------------------------------------------------------------------------------------------ page
def _body(run: _Run, top_k, num_slider_images, num_frames, num_explanations, generate, quiet) -> str:
    from stylex import __version__

    sections = [
        ("data", "Data and classifier", _data_section(run)),
        ("training", "Training", _training_section(run)),
        ("reconstruction", "Reconstructions", _reconstruction_section(run, generate, quiet)),
        (
            "attributes",
            "Attributes per class",
            _attributes_section(run, top_k, num_slider_images, num_frames, generate, quiet),
        ),
        ("explanations", "Image explanations", _explanations_section(run, num_explanations)),
        ("reproduce", "How this run was made", _reproduce_section(run)),
    ]
    if generate and run.result is not None:
        _strips_and_gifs(run, top_k, quiet)  # fills the img tags the attributes section refers to
    _stills(run)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = " · ".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in sections)
    if run.export is not None:
        source = run.export.get("source_run")
        what = f"exported model <code>{esc(run.model_ref())}</code>"
        if source:
            what += f" (from the run <code>{esc(source)}</code>, step {esc(run.export.get('step', '?'))})"
    else:
        what = f"run <code>{esc(run.run_dir.resolve())}</code>"
    head = (
        f"<header><h1>StylEx report: {esc(run.name)}</h1>"
        f'<p class="meta">{what} · {esc(len(run.names))} classes · '
        f"written {esc(when)} by stylex {esc(__version__)}</p><nav>{nav}</nav></header>"
    )
    parts = [head, "<main>", _summary(run)]
    for key, title, content in sections:
        parts.append(f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>')
    parts.append("</main>")
    parts.append(
        '<footer>StylEx: Lang et al., "Explaining in Style: Training a GAN to explain a classifier in StyleSpace", '
        "ICCV 2021. This page needs no network; its pictures lie beside it.</footer>"
    )
    return "\n".join(parts)


def _card(label: str, value: str, hint: str = "") -> str:
    return (
        f'<div class="card"><div class="cv">{esc(value)}</div><div class="cl">{esc(label)}</div>'
        + (f'<div class="ch">{esc(hint)}</div>' if hint else "")
        + "</div>"
    )


def _summary(run: _Run) -> str:
    """The figures at the top; for an export, its card's (the figures it was shipped with)."""
    cards, notes = [], []
    card = run.card or {}
    clf = card.get("classifier") or {}
    metrics = _classifier_metrics(run) or {}
    accuracy = clf.get("val_accuracy", metrics.get("val_accuracy"))
    balanced = clf.get("val_balanced_accuracy", metrics.get("val_balanced_accuracy", _balanced(metrics)))
    present = sum(isinstance(v, int | float) for v in (metrics.get("per_class_accuracy") or {}).values()) or None
    checked = run.info.get("classifier_accuracy") or {}  # measured by `stylex train` on the run's held-out images
    of_classifier = isinstance(accuracy, int | float)  # the classifier's own figures (its metrics.json or card)
    if not isinstance(accuracy, int | float) and isinstance(checked.get("accuracy"), int | float):
        accuracy, balanced = checked["accuracy"], checked.get("balanced_accuracy")
        present = checked.get("classes_present")
        hint = _checked_on(checked)
    elif isinstance(accuracy, int | float):
        num_val = clf.get("num_val", metrics.get("num_val"))
        hint = f"{num_val} held-out images" if isinstance(num_val, int) else "held-out images"
        hint += " of the classifier's training data"  # not necessarily this run's data
    if isinstance(accuracy, int | float):
        from stylex.classifier.train import shows_balanced, weak_classifier_note

        balanced = balanced if isinstance(balanced, int | float) else None
        if shows_balanced(accuracy, balanced):  # unbalanced classes
            hint += f"; balanced (mean over classes) {balanced:.3f}"
        hint += f"; chance {1 / max(len(run.names), 1):.3f}"
        cards.append(_card("classifier accuracy", f"{accuracy:.3f}", hint))

        note = weak_classifier_note(float(accuracy), len(run.names), balanced, present)
        if note:
            notes.append(f'<p class="note">Note: {esc(note[0].upper() + note[1:])}.</p>')
        own = checked.get("accuracy")
        if isinstance(own, int | float) and of_classifier:
            # the figure above is of the classifier's own data; `stylex train` measured it on this run's too
            own_balanced = checked.get("balanced_accuracy")
            own_hint = _checked_on(checked)
            if shows_balanced(own, own_balanced):
                own_hint += f"; balanced {own_balanced:.3f}"
            cards.append(_card("accuracy on this data", f"{own:.3f}", own_hint))
            note = weak_classifier_note(float(own), len(run.names), own_balanced, checked.get("classes_present"))
            if note and not notes:
                notes.append(f'<p class="note">Note: on this run\'s data, {esc(note)}.</p>')
    rec = _reconstruction_figures(run)
    figures = (rec or {}).get("stylex") or {}
    n = (rec or {}).get("num_images")
    on = ""
    if isinstance(card.get("reconstruction"), dict):  # measured at export time on the shipped samples
        figures, n = card["reconstruction"], card["reconstruction"].get("num_images")
        on = f"on the {n} shipped samples; "
    if figures:
        chance = f"chance {1 / n:.3f}" if isinstance(n, int) and n > 0 else ""
        cards.append(_card("consistency", _num(figures.get("consistency")), f"{on}C(x_rec) agrees with C(x)"))
        cards.append(_card("identity", _num(figures.get("identity")), f"{on}{chance}".strip("; ")))
    if run.result is not None and run.result.sufficiency is not None:
        k = run.result.settings.get("top_k", "K")
        n = run.result.settings.get("num_images", "?")
        cards.append(
            _card(f"sufficiency@{k}", f"{run.result.sufficiency:.3f}", f"flips by top-K; this AttFind, {n} images")
        )
    training = _training_length(run)
    if training is not None:
        steps, minutes = training
        cards.append(_card("training", f"{steps} steps", f"{minutes:.1f} min" if minutes is not None else ""))
    return f'<div class="cards">{"".join(cards)}</div>' + "".join(notes) + _reading_guide(run)


def _checked_on(checked: dict[str, Any]) -> str:
    """ "512 of the 2000 held-out images of this run's data": what `stylex train` measured its classifier on."""
    n, of = checked.get("num_images", "?"), checked.get("num_held_out")
    return (
        f"{n} of the {of} held-out images of this run's data"
        if of and of != n
        else f"{n} held-out images of this run's data"
    )


def _reading_guide(run: _Run) -> str:
    """A few plain sentences for a reader who does not know StylEx (a clinician reading a team's report): what was
    made, what the attribute pictures show, and what they do not prove."""
    names = ", ".join(run.names)
    k = (run.result.settings.get("top_k") if run.result is not None else None) or "K"
    return (
        '<details class="guide" open><summary>How to read this report</summary>'
        f"<p>The classifier sorts images into {esc(counted(len(run.names), 'class'))} ({esc(names)}). StylEx trained "
        "an image generator that redraws this data so that the classifier gives the redrawn image the same answer "
        "(<em>consistency</em> above: how often it does). The generator has many controls, each changing one aspect "
        "of the picture. StylEx then searched for the controls that change the classifier's answer the most: the "
        "<em>attributes</em>.</p>"
        "<p>Under <em>Attributes per class</em>, each attribute is a row of pictures: the same image with that one "
        "control turned down and up, and the classifier's probability under each. Look at what changes between the "
        f"pictures: that is what the classifier responds to. <em>Sufficiency@{esc(k)}</em> is the share of images "
        f"whose answer flips when the top {esc(k)} attributes are applied together. <em>Image explanations</em> "
        "show, for single images, the few changes that flip the answer.</p>"
        "<p>An attribute shows what this classifier reacts to, not a finding about the images or a diagnosis: a "
        "classifier can react to something that should not matter (a marker, a scanner's tint, the image border). "
        "Names such as <code>b8.conv0[4]</code> only say where the control sits in the generator.</p></details>"
    )


def _training_length(run: _Run) -> tuple[Any, float | None] | None:
    """(steps, minutes) of the StylEx training: an export's recorded figures, else the last training record."""
    for d in ((run.card or {}).get("training"), (run.export or {}).get("training")):
        if isinstance(d, dict) and d.get("steps") is not None:
            minutes = d.get("minutes")
            return d["steps"], float(minutes) if isinstance(minutes, int | float) else None
    losses = _stats(run)["losses"]
    if not losses:
        return None
    last = losses[-1]
    return getattr(run.model, "step", None) or last.get("step", 0), float(last.get("seconds", 0) or 0) / 60


# ------------------------------------------------------------------------------------------------ data
def _redacted_html(text: str, run: _Run, *given: Any) -> str:
    """`text` with every path this report knows of (the run, its data, classifier and the classifier's own data,
    AttFind folder and data, the report itself, the runs it came from, the folder the run lies in) cut to its last
    name, in each form the page writes it: as it is, escaped into HTML, quoted for a shell, inside JSON."""
    info, result, spec = run.info, run.result, run.info.get("classifier") or {}
    places: list[Any] = [*given, run.run_dir, run.final, run.attributes_dir, run.data_path, info.get("data")]
    for key in ("location", "weights"):  # recorded relative to the run (an export's "../classifier") or absolute
        recorded = spec.get(key)
        if isinstance(recorded, str) and recorded:
            places += [recorded, Path(run.run_dir) / recorded]
            with contextlib.suppress(OSError, ValueError, AttributeError):  # the classifier's own data
                places.append(json.loads((Path(run.run_dir) / recorded / "config.json").read_text()).get("data"))
    places += [spec.get("search_path"), Path(run.run_dir).resolve().parent]  # and the folder the run lies in
    init = info.get("init_from")
    places.append(init.get("run") if isinstance(init, dict) else init)
    for record in (run.export or {}, run.card or {}):
        places += [record.get("source_run"), record.get("source_data")]
        source = str((record.get("samples") or {}).get("source") or "")
        places.append(source.removeprefix("all images of ").removeprefix("held-out split of ") or None)
        training = record.get("training") or {}
        places.append((training.get("init_from") or {}).get("run") if isinstance(training, dict) else None)
    if result is not None:
        places += [result.settings.get("data"), result.settings.get("run")]
    if run.effects is not None:
        places.append(run.effects.meta.get("data"))
    full: set[str] = set()
    for place in places:
        if isinstance(place, str | os.PathLike) and str(place):  # a relative one (`--out r`) shows up absolute too
            forms_of = (Path(place), Path(place).resolve()) if Path(place).is_absolute() else (Path(place).resolve(),)
            for form in forms_of:
                if form.name:
                    full.add(str(form))
    relative = info.get("data_relative")  # "../../data", shown in the run's config
    pairs = [(path, Path(path).name) for path in sorted(full, key=len, reverse=True)]  # a path before its folders
    if isinstance(relative, str) and Path(relative).name and not Path(relative).is_absolute():
        pairs.append((relative, Path(relative).name))
    forms = (str, esc, shlex.quote, lambda t: esc(shlex.quote(t)), lambda t: json.dumps(t)[1:-1],
             lambda t: esc(json.dumps(t)[1:-1]))  # fmt: skip
    for path, name in pairs:
        for form in forms:  # the name in the same form, so that it stays valid there (and escaped)
            text = text.replace(form(path), form(name))
    return text


def _balanced(metrics: dict[str, Any]) -> float | None:
    """The balanced accuracy of a classifier's metrics.json written before it was recorded: the mean of its per-class
    accuracies (over the classes with held-out images)."""
    values = [v for v in (metrics.get("per_class_accuracy") or {}).values() if isinstance(v, int | float)]
    return sum(values) / len(values) if values else None


def _classifier_metrics(run: _Run) -> dict[str, Any] | None:
    spec = run.info.get("classifier") or {}
    if spec.get("kind") != "stylex" or not spec.get("location"):
        return None
    location = Path(spec["location"])
    if not location.is_absolute():
        location = run.run_dir / location
    path = location / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _source_data(path: Any) -> str:
    """Where an exported model's training data was, saying so when it is not on this machine (only the samples ship)."""
    if not path:
        return "not recorded"
    if Path(str(path)).is_absolute() and Path(str(path)).exists():  # a name alone (redacted) is not a place here
        return str(path)
    return f"{path} (on the machine that trained it; the model ships only its samples)"


def _data_section(run: _Run) -> str:
    parts = []
    info = run.info
    if run.export is not None:
        samples = (run.card or {}).get("samples") or {}
        shown = run.data_path or info.get("data", "not recorded")
        if run.shows_samples():
            shown = f"the {run.num_samples()} shipped samples ({samples.get('source', 'held-out images')}): {shown}"
        rows = [
            ("training data", _source_data(run.export.get("source_data"))),
            ("images shown here", shown),
        ]
    else:
        own = info.get("data")
        rows = [("data", run.data_path or own or "not recorded")]
        if run.data_path and own and Path(run.data_path).resolve() != Path(own).resolve():
            rows = [("training data", own), ("images shown here", run.data_path)]
    rows += [
        ("training images (train / held out)", f"{info.get('num_train', '?')} / {info.get('num_val', '?')}"),
        ("resolution", f"{run.model.resolution} px"),
        ("classes", ", ".join(run.names)),
    ]
    spec = info.get("classifier") or {}
    location = spec.get("location", "?")
    if run.export is not None and spec.get("kind") in ("stylex", "torchscript") and not Path(location).is_absolute():
        location = (run.run_dir / location).resolve()  # the exported classifier, beside the model
    rows.append(("classifier", f"{spec.get('kind', '?')}: {location}"))
    rows.append(("classifier fingerprint", info.get("classifier_fingerprint", "not recorded")))
    parts.append(_table(rows))
    ds = run.dataset
    balance = []
    if ds is not None and ds.labels is not None:
        counts = [int((ds.labels == k).sum()) for k in range(len(ds.class_names))]
        total = sum(counts)
        labels = ds.class_names
        if run.shows_samples() and len(labels) == len(run.names):
            labels = run.names  # the shipped samples' folders are "<index>_<name>" (`class_dir_names`)
        for k, (name, n) in enumerate(zip(labels, counts, strict=True)):
            balance.append(bar_row(name, n, total, PALETTE[k % len(PALETTE)], f"{n} ({n / max(total, 1):.1%})"))
        of = "the shipped samples, " if run.shows_samples() else ""
        parts.append(f"<h3>Class balance ({of}{total} images)</h3>{''.join(balance)}")
    elif run.data_note:
        parts.append(f'<p class="note">{esc(run.data_note)}</p>')
    metrics = _classifier_metrics(run)
    if metrics:
        acc = metrics.get("val_accuracy")
        line = f"held-out accuracy {acc:.3f}" if isinstance(acc, int | float) else "held-out accuracy not recorded"
        if isinstance(metrics.get("train_accuracy"), int | float):
            line += f", training accuracy {metrics['train_accuracy']:.3f}"
        if metrics.get("epochs"):
            line += f", {metrics['epochs']} epochs"
        parts.append(f"<h3>Classifier</h3><p>{esc(line)}</p>")
        per_class = metrics.get("per_class_accuracy") or {}
        if isinstance(per_class, dict) and per_class:
            bars = [
                bar_row(str(name), float(v), 1.0, PALETTE[k % len(PALETTE)], f"{float(v):.3f}")
                if isinstance(v, int | float)
                else bar_row(str(name), 0.0, 1.0, text="no held-out image")  # said, not left out
                for k, (name, v) in enumerate(per_class.items())
            ]
            parts.append(f"<h4>Accuracy per class</h4>{''.join(bars)}")
        confusion = metrics.get("confusion")
        if isinstance(confusion, list) and len(confusion) == len(run.names):
            head = "".join(f'<th scope="col">{esc(n)}</th>' for n in run.names)
            body = "".join(
                f'<tr><th scope="row">{esc(n)}</th>' + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>"
                for n, row in zip(run.names, confusion, strict=True)
            )
            parts.append(
                "<h4>Confusion on held-out images (rows: true class, columns: predicted)</h4>"
                f'<table class="grid"><tr><td></td>{head}</tr>{body}</table>'
            )
    elif isinstance((run.info.get("classifier_accuracy") or {}).get("accuracy"), int | float):
        checked = run.info["classifier_accuracy"]
        parts.append(
            f"<h3>Classifier</h3><p>accuracy {checked['accuracy']:.3f} on {esc(_checked_on(checked))} (measured by "
            "`stylex train`; the classifier is not a `stylex train-classifier` folder, which would record more)</p>"
        )
    else:
        parts.append(
            '<p class="note">The classifier is not a `stylex train-classifier` folder, so its accuracy is not '
            "recorded here.</p>"
        )
    return "".join(parts)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


# ------------------------------------------------------------------------------------------------ training
def _stats(run: _Run) -> dict[str, list[dict[str, Any]]]:
    losses: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    path = run.run_dir / "stats.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if not isinstance(d, dict) or not isinstance(d.get("step"), int | float):
                continue
            (evals if isinstance(d.get("eval"), dict) else losses).append(d)
    return {"losses": losses, "evals": evals}


def _training_section(run: _Run) -> str:
    stats = _stats(run)
    losses, evals = stats["losses"], stats["evals"]
    if not losses:
        return f'<p class="note">No training records in {esc(run.run_dir / "stats.jsonl")}.</p>'
    keys = []
    for d in losses:
        for k, v in d.items():
            if k not in ("step", "images", "seconds") and isinstance(v, int | float) and k not in keys:
                keys.append(k)
    plots = []
    for i, k in enumerate(keys):
        pts = [(d["step"], d[k]) for d in losses if isinstance(d.get(k), int | float)]
        title = f"{k}: {LOSS_DOCS[k]}" if k in LOSS_DOCS else k
        plots.append(line_plot([Series(k, pts, PALETTE[i % len(PALETTE)], smooth=0.05)], title))
    if evals:
        names = [("consistency", PALETTE[0]), ("identity", PALETTE[1])]
        series = [
            Series(f"{n}", [(d["step"], d["eval"]["stylex"][n]) for d in evals if n in d["eval"].get("stylex", {})], c)
            for n, c in names
        ]
        plots.append(line_plot(series, "held-out reconstructions", y_range=(0.0, 1.0)))
        l1 = [(d["step"], d["eval"]["stylex"]["l1"]) for d in evals if "l1" in d["eval"].get("stylex", {})]
        plots.append(line_plot([Series("l1", l1, PALETTE[2])], "held-out L1(x, x_rec)"))
    last = losses[-1]
    seconds = float(last.get("seconds", 0) or 0)
    step = getattr(run.model, "step", None) or last["step"]  # the weights' step; the last log line may be earlier
    line = f"{step} steps in {seconds / 60:.1f} min"
    if seconds and last.get("images"):
        line += f" ({float(last['images']) / seconds:.0f} images/s)"
    if run.export is not None and run.export.get("source_run"):
        line = f"The training log of the run this model was exported from ({run.export['source_run']}): {line}"
    parts = [f"<p>{esc(line)}. Faint lines: logged values; solid: their moving average.</p>"]
    parts.append(f'<div class="plots">{"".join(plots)}</div>')
    samples = sorted((run.run_dir / "samples").glob("*.png")) if (run.run_dir / "samples").is_dir() else []
    if samples:
        dst = run.out / "img" / "samples.png"
        shutil.copyfile(samples[-1], dst)
        parts.append(
            f"<h3>Training samples at {esc(samples[-1].stem)}</h3>"
            "<p>Top row: training images; middle: their reconstructions G(E(x), C(x)); bottom: random z (that "
            "path is trained only with `z_path_every`).</p>"
            f'<img class="pic" src="{esc(run.rel(dst))}" alt="training images, reconstructions, random samples">'
        )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ reconstruction
def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else "n/a"


def _reconstruction_figures(run: _Run) -> dict[str, Any] | None:
    for folder in (run.out / "reconstruct", run.run_dir / "reconstruct"):
        path = folder / "reconstruction.json"
        if path.is_file():
            try:
                d = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if isinstance(d, dict) and isinstance(d.get("stylex"), dict):
                d["_folder"] = str(folder)
                return d
    return None


def consistency_note(ours: Any, median: Any, num_images: Any) -> str | None:
    """What the report says when the reconstructions keep the classifier's decision less often than the median image
    of each class does (None when they do not): a few changed images are counted, not read as a failed model."""
    if not (isinstance(ours, int | float) and isinstance(median, int | float) and ours < median):
        return None
    if ours >= 0.9 and median - ours <= 0.1:
        n = num_images if isinstance(num_images, int) and not isinstance(num_images, bool) and num_images > 0 else None
        changed = f"{round((1 - ours) * n)} of the {n}" if n else f"{1 - ours:.0%} of the"
        return (
            f"{changed} reconstructions change the classifier's decision (the median image of each class keeps it "
            f"{median:.0%} of the time): look at those before trusting what the attributes do on them; the others "
            "keep the class their input has."
        )
    return (
        f"The reconstructions keep the classifier's decision less often ({ours:.3f}) than the median image of each "
        f"class does ({median:.3f}): this model does not yet reconstruct what the classifier looks at, so its "
        "attributes are weak evidence; train it longer."
    )


def _reconstruction_section(run: _Run, generate: bool, quiet: bool) -> str:
    from stylex.pipeline import reconstruct

    rec = _reconstruction_figures(run)
    command = f"stylex reconstruct --model {shlex.quote(str(run.run_dir))}"
    generated = False
    if rec is None and generate and run.data_path:
        if not quiet:
            print("report: reconstructing held-out images")
        split = "all" if run.shows_samples() else "val"  # shipped samples are held-out images already
        reconstruct(
            run.run_dir,
            run.data_path,
            run.out / "reconstruct",
            split=split,
            classifier=run.classifier,
            device=run.device,
            dataset=run.dataset,
        )
        rec, generated = _reconstruction_figures(run), True
    if rec is None:
        return f'<p class="note">No reconstruction figures; `{esc(command)}` makes them.</p>'
    grid = Path(rec["_folder"]) / "reconstructions.png"
    parts = []
    if generated:
        parts.append(f'<p class="note">Made for this report (as `{esc(command)}` would).</p>')
    head = '<tr><td></td><th scope="col">consistency</th><th scope="col">L1</th><th scope="col">identity</th></tr>'
    rows = []
    labels = {
        "stylex": "StylEx G(E(x), C(x))",
        "class_median": "baseline: median image of the class",
        "shifted_input": "baseline: the input moved by 1 px",
    }
    for key, label in labels.items():
        r = rec.get(key)
        if isinstance(r, dict):
            cells = "".join(f"<td>{_num(r.get(k))}</td>" for k in ("consistency", "l1", "identity"))
            rows.append(f"<tr><th>{esc(label)}</th>{cells}</tr>")
    n = rec.get("num_images", "?")
    which = "held-out" if rec.get("split") == "val" else str(rec.get("split", ""))
    if run.export is not None and (run.shows_samples() or Path(rec["_folder"]) == run.run_dir / "reconstruct"):
        which = "shipped sample"
    parts.append(f'<table class="grid">{head}{"".join(rows)}</table>')
    note = consistency_note(
        (rec.get("stylex") or {}).get("consistency"), (rec.get("class_median") or {}).get("consistency"), n
    )
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    parts.append(
        f'<p class="small">{esc(n)} {esc(which)} images. Consistency: share of reconstructions the '
        "classifier assigns the class of their input. Identity: share whose nearest input (pixel L2) is their own "
        "(says whether a reconstruction depends on its input, not only on its class).</p>"
    )
    if grid.is_file():
        dst = run.out / "img" / "reconstructions.png"
        shutil.copyfile(grid, dst)
        parts.append(
            '<h3>Inputs (top) and reconstructions (bottom)</h3><img class="pic" '
            f'src="{esc(run.rel(dst))}" alt="inputs and reconstructions">'
        )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ attributes
def _attfind_images(run: _Run):
    """(styles, noise, dataset indices) of the N AttFind images, on the run's device."""
    from stylex.attfind.effects import image_noise

    effects, G = run.effects, run.model.G
    s = effects.style_vector(G.layout).to(run.device)
    indices = effects.meta.get("indices")
    if not isinstance(indices, list) or len(indices) != effects.num_images:
        indices = list(range(effects.num_images))
    noise = image_noise(G, indices, int(effects.meta.get("seed", 0)), run.device)
    return s, noise, indices


def _class_rows(run: _Run, y: int, j: int, d: int, n: int) -> torch.Tensor:
    """The n images not predicted as y whose score for y the edit (j, d) raises most (as the strips choose)."""
    from stylex.attfind.selection import class_scores

    effects = run.effects
    rows = torch.nonzero(effects.predicted != y).flatten()
    if rows.numel() == 0:
        return rows
    one_vs_all = run.result.settings.get("score") == "one_vs_all"
    scores = class_scores(effects, y, one_vs_all)[rows][:, d, j]  # [M]
    return rows[scores.argsort(descending=True)[:n]]


def _attributes_section(run: _Run, top_k: int, num_images: int, num_frames: int, generate: bool, quiet: bool) -> str:
    from stylex.explain.render import annotated_grid
    from stylex.explain.slider import sweep

    if run.result is None:
        return f'<p class="note">{esc(run.attfind_note)}</p>'
    result, effects, G, C = run.result, run.effects, run.model.G, run.classifier
    s_all, noise_all, _ = _attfind_images(run)
    s_min, s_max = effects.s_min.to(run.device), effects.s_max.to(run.device)
    settings = result.settings
    k_sel = settings.get("top_k", "K")
    mode = result.stats.get("mode", "exact")
    intro = (
        f"AttFind searched {effects.num_coords} StyleSpace coordinates on {effects.num_images} images ({mode} "
        f"effects). Per class, the attributes are the coordinate edits that raise its "
        f"{'one-vs-all log-odds' if settings.get('score') == 'one_vs_all' else 'logit'} most on images not "
        "predicted as it. Mean effect: the mean (clipped) change of that score over the images still counted when "
        "the attribute was picked; flip share: the share of those images this edit alone turns into the class. "
        f"Sufficiency@{k_sel}: the share whose decision flips when the top {k_sel} are applied together."
    )
    parts = [f'<p class="small">{esc(intro)}</p>']
    suff_rows = [
        (c.class_name, "n/a" if c.sufficiency is None else f"{c.sufficiency:.3f} of {c.num_images} images")
        for c in result.classes
    ]
    if result.sufficiency is not None:
        suff_rows.append(("all classes", f"{result.sufficiency:.3f}"))
    parts.append(f"<h3>Sufficiency@{esc(k_sel)}</h3>{_table(suff_rows)}")
    values = [round(-1 + 2 * f / (num_frames - 1), 6) for f in range(num_frames)]  # slider positions, 0 = unedited
    R = G.resolution
    scale = max(1, -(-96 // R))
    todo = sum(min(top_k, len(c.attributes)) for c in result.classes)
    bar = progress_bar(total=todo, desc="report: slider frames", unit="attribute", disable=True if quiet else None)
    if len(result.classes) > 2:  # a long page: a link to each class
        links = " · ".join(f'<a href="#class-{c.class_index}">{esc(c.class_name)}</a>' for c in result.classes)
        parts.append(f'<p class="small">Classes: {links}</p>')
    for c in result.classes:
        y = c.class_index
        parts.append(f'<h3 class="cls" id="class-{y}">Class <q>{esc(c.class_name)}</q></h3>')
        if not c.attributes:
            why = (
                "every image was predicted as it already"
                if c.num_images == 0
                else f"none found from the {counted(c.num_images, 'image')} not predicted as it"
            )
            parts.append(f'<p class="note">No attributes: {why}.</p>')
            continue
        note = c.dropout_note(settings.get("threshold", "?"))
        note = f" Note: {note[0].upper()}{note[1:]}." if note else ""
        parts.append(f'<p class="small">from {counted(c.num_images, "image")} not predicted as it.{esc(note)}</p>')
        cards = []
        for a in c.attributes[:top_k]:
            j, d = a.edit
            rows = _class_rows(run, y, j, d, num_images)
            sign = 1.0 if d == 1 else -1.0  # slider right = the attribute's direction
            frames, probs, each = [], [], []
            if rows.numel():
                r = rows.to(run.device)
                s_r, noise_r = s_all.index(r), [t[r] for t in noise_all]
                F, n = len(values), len(rows)
                imgs = G.synthesis(
                    sweep(s_r, j, [sign * v for v in values], s_min, s_max),
                    [t.repeat(F, 1, 1, 1) for t in noise_r],
                )  # [F * n, 3, R, R]
                p = C(imgs).softmax(dim=1)[:, y].reshape(F, n).cpu()  # [F, n]
                for f in range(F):
                    captions = [[[f"p={float(q):.2f}"] for q in p[f]]]
                    tile = annotated_grid([imgs[f * n : (f + 1) * n]], captions, scale=scale)
                    dst = run.out / "img" / f"c{y}" / f"a{a.rank:02d}_f{f}{_frame_suffix()}"
                    _save_frame(tile, dst)
                    frames.append(run.rel(dst))
                    probs.append(float(p[f].mean()))
                    each.append(", ".join(f"{float(q):.2f}" for q in p[f]))
            cards.append(_attribute_card(run, c, a, frames, probs, each, values, generate))
            bar.update(1)
        parts.append(f'<div class="attrs">{"".join(cards)}</div>')
    bar.close()
    return "".join(parts)


def _attribute_card(
    run: _Run, c, a, frames: list[str], probs: list[float], each: list[str], values: list[float], generate: bool
) -> str:
    """One attribute's card; `probs` / `each`: per slider frame the mean probability of the class / the probability
    of each image (as text, for the frame's alt text: the pictures carry them as drawn labels)."""
    from stylex.explain.attributes import attribute_file_stem

    y = c.class_index
    ident = f"c{y}a{a.rank}"
    head = (
        f'<div class="attr"><h4>#{esc(a.rank)} {esc(a.name())} &rarr; {esc(a.direction)}</h4>'
        f'<p class="small">mean effect {a.mean_effect:.3f} · flip share {a.flip_rate:.3f} · coordinate '
        f"{esc(a.flat_index)}</p>"
    )
    stability = c.stability_note(c.attributes.index(a))
    if stability is not None:
        head += f'<p class="small">{esc(stability)}</p>'

    body = []
    what = esc(f"{a.name()} toward {a.direction}, class {c.class_name}")  # names the attribute for screen readers
    if frames:
        mid = len(frames) // 2
        labels = [
            f"{'original' if v == 0 else ('toward ' + a.direction if v > 0 else 'away')} "
            f"({v:+.2f}) · mean p({c.class_name}) = {p:.3f}"
            for v, p in zip(values, probs, strict=True)
        ]
        named = f"{a.name()} toward {a.direction}, class {c.class_name}"  # `what` unescaped: escaped once below
        alts = [
            f"images with {named}, {t}; p({c.class_name}) per image: {ps}" for t, ps in zip(labels, each, strict=True)
        ]
        body.append(
            f'<div class="slider"><img id="{ident}img" src="{esc(frames[mid])}" alt="{esc(alts[mid])}">'
            f'<input type="range" class="frames" min="0" max="{len(frames) - 1}" value="{mid}" step="1" '
            f'aria-label="move {what}" aria-describedby="{ident}lab" data-target="{ident}img" data-label="{ident}lab" '
            f'aria-valuetext="{esc(labels[mid])}" data-frames="{esc(json.dumps(frames))}" '
            f'data-labels="{esc(json.dumps(labels))}" data-alts="{esc(json.dumps(alts))}">'
            f'<div class="slab"><span>away</span><output id="{ident}lab">{esc(labels[mid])}</output>'
            f"<span>toward {esc(a.direction)}</span></div></div>"
        )
    stem = attribute_file_stem(a)
    strip = run.out / "img" / f"c{y}" / f"a{a.rank:02d}_strip.png"
    gif = _animation(run, y, a.rank)
    for src, dst in ((f"{stem}.png", strip), (f"{stem}.gif", gif)):
        found = _attfind_picture(run, y, src)
        if found is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            _copy_picture(found, dst)
    # files still missing are rendered by `_strips_and_gifs` once every card is written
    left, right = body, []  # left: the slider and the GIF; right: the strip
    if generate or gif.is_file():
        still = gif.with_name(f"a{a.rank:02d}_still.png")  # made by `_stills`: the animation waits for Play
        left.append(
            f'<figure><img src="{esc(run.rel(still))}" alt="{what}: the coordinate at its minimum" '
            f'data-animation="{esc(run.rel(gif))}" data-still="{esc(run.rel(still))}" '
            f'data-playing="{what}: the coordinate swept from its minimum to its maximum and back">'
            '<figcaption><button type="button" class="play" hidden>Play</button> the coordinate swept from its '
            "minimum to its maximum and back (an animation)</figcaption></figure>"
        )
    if generate or strip.is_file():
        right.append(
            f'<figure><img src="{esc(run.rel(strip))}" alt="{what}: before and after"><figcaption>before (top) and '
            "after (bottom), on the images it moves most; p = probability of the class</figcaption></figure>"
        )
    if not (generate or gif.is_file() and strip.is_file()):
        right.append(f'<p class="note">Strip or GIF missing in {esc(run.attributes_dir)}; re-run AttFind.</p>')
    return f'{head}<div class="row"><div>{"".join(left)}</div><div>{"".join(right)}</div></div></div>'


ANIMATION_SUFFIX = ".webp"
"""The report's attribute animations: AttFind's GIFs re-encoded as lossless animated WebP, 2.2 times smaller (the
demo's 20: 6.8 MB as GIFs), with the same pixels; `.gif` (a copy) where Pillow was built without WebP."""


@functools.cache
def _webp() -> bool:
    """Whether this Pillow writes (animated) WebP (asked once: every slider frame's name depends on it)."""
    from PIL import features

    if not features.check("webp"):
        return False
    try:
        return bool(features.check_feature("webp_anim"))  # Pillow 10 could lack it; 11 has no such feature: always
    except ValueError:
        return True


def _frame_suffix() -> str:
    """Slider frames: lossless WebP (the demo's 140 in 5.5 MB against 6.5 as PNG), PNG without Pillow's WebP."""
    return ".webp" if _webp() else ".png"


def _save_frame(image, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".webp":  # effort 0: the demo's 140 in 0.25 s (PNG 1.2 s; effort 1: 4.5 MB in 2.5 s)
        image.save(dst, format="WEBP", lossless=True, method=0)
    else:
        image.save(dst, format="PNG")


def _animation(run: _Run, y: int, rank: int) -> Path:
    """Where the report keeps attribute `rank`'s animation of class `y`."""
    suffix = ANIMATION_SUFFIX if _webp() else ".gif"
    return run.out / "img" / f"c{y}" / f"a{rank:02d}{suffix}"


def _copy_picture(src: Path, dst: Path) -> None:
    """Copy AttFind's picture `src` into the report as `dst`; a GIF becomes a lossless animated WebP when `dst` says
    so (every frame, its duration, its transparency and its loop count kept)."""
    if src.suffix == dst.suffix:
        shutil.copyfile(src, dst)
        return
    from PIL import Image, ImageSequence

    with Image.open(src) as im:
        mode = "RGBA" if "transparency" in im.info or im.mode in ("RGBA", "LA") else "RGB"
        frames = [f.convert(mode) for f in ImageSequence.Iterator(im)]
        durations = [f.info.get("duration", 100) for f in ImageSequence.Iterator(im)]
        loop = im.info.get("loop")  # absent: the GIF plays once (WebP: 1); 0: forever, as AttFind's
    # effort 1: the demo's 20 in 2.7 s, 3.51 MB (effort 4: 4.1 s, 3.49 MB; effort 0: 1.4 s, 4.69 MB)
    frames[0].save(dst, format="WEBP", save_all=True, append_images=frames[1:], duration=durations,
                   loop=1 if loop is None else loop, lossless=True, method=1)  # fmt: skip


def _stills(run: _Run) -> None:
    """A still (the first frame) beside each attribute animation of the report, shown until the reader presses Play:
    an animation that starts by itself and cannot be paused fails WCAG 2.2.2."""
    from PIL import Image

    animations = (  # a01.webp, not the slider's frames a01_f0.webp
        p for p in (run.out / "img").glob("c*/a*.*") if p.suffix in (ANIMATION_SUFFIX, ".gif") and p.stem[1:].isdigit()
    )
    for gif in sorted(animations):
        still = gif.with_name(f"{gif.stem}_still.png")
        if not still.is_file():
            with Image.open(gif) as im:
                im.seek(0)
                im.convert("RGB").save(still)


def _attfind_picture(run: _Run, y: int, name: str) -> Path | None:
    from stylex.data import class_dir_names

    assert run.attributes_dir is not None  # set with run.result, whose attributes these are (_load_attfind)
    folder = class_dir_names(run.names)[y]
    path = run.attributes_dir / "attributes" / folder / name
    base = (run.attributes_dir / "attributes").resolve()
    if not path.is_file() or path.is_symlink() or base not in path.resolve().parents:  # a link could copy any file
        return None  # into a report meant to be shared: the picture is drawn anew instead
    return path


def _strips_and_gifs(run: _Run, top_k: int, quiet: bool) -> None:
    """Render the strips and GIFs the attributes section points at but the AttFind folder lacks."""
    from stylex.explain.attributes import render_attributes

    missing = [
        (c.class_index, a)
        for c in run.result.classes
        for a in c.attributes[:top_k]
        if not _animation(run, c.class_index, a.rank).is_file()
        or not (run.out / "img" / f"c{c.class_index}" / f"a{a.rank:02d}_strip.png").is_file()
    ]
    if not missing:
        return
    if not quiet:
        print(f"report: drawing {len(missing)} missing strips and GIFs")
    from stylex.data import class_dir_names
    from stylex.explain.attributes import attribute_file_stem

    s, noise, _ = _attfind_images(run)
    scratch = run.out / "_render"
    only = {(y, a.rank) for y, a in missing}  # not every attribute AttFind kept: the report shows the top-k
    render_attributes(run.model.G, run.classifier, s, noise, run.result, run.effects, scratch, only=only,
                      progress=not quiet)  # fmt: skip
    folders = class_dir_names(run.names)
    for y, a in missing:
        stem = attribute_file_stem(a)
        strip = run.out / "img" / f"c{y}" / f"a{a.rank:02d}_strip.png"
        for src, dst in ((f"{stem}.png", strip), (f"{stem}.gif", _animation(run, y, a.rank))):
            path = scratch / folders[y] / src
            if path.is_file():
                _copy_picture(path, dst)
    shutil.rmtree(scratch)


# ------------------------------------------------------------------------------------------------ explanations
def _explanations_section(run: _Run, num_explanations: int) -> str:
    from stylex.attfind.run import round_robin
    from stylex.explain.render import save_image
    from stylex.explain.run import explain_styles, sequence_image

    if run.result is None:
        return f'<p class="note">{esc(run.attfind_note)}</p>'
    if num_explanations == 0:
        return '<p class="note">None requested.</p>'
    effects, G, C = run.effects, run.model.G, run.classifier
    s_all, noise_all, indices = _attfind_images(run)
    dataset = _attfind_dataset(run)
    parts = [
        '<p class="small">For a few of the AttFind images: the "subset" strategy adds, one at a time, the edit of this '
        "image's styles that raises the target class most together with those chosen so far, until the decision "
        "flips (at most 5 edits). Under each picture: the classifier's probabilities.</p>"
    ]
    if dataset is not None and dataset is not run.dataset:
        parts.append(f'<p class="small">These images are AttFind\'s: {esc(effects.meta.get("data"))}.</p>')
    elif dataset is None and not effects.meta.get("data"):
        parts.append(
            '<p class="note">AttFind\'s images were not recorded (a search from Python): only their reconstructions '
            "are shown.</p>"
        )
    elif dataset is None:
        parts.append(
            f'<p class="note">AttFind\'s images ({esc(effects.meta.get("data"))}) are no longer there: only their '
            "reconstructions are shown.</p>"
        )
    for i, pos in enumerate(round_robin(effects.predicted.tolist(), num_explanations)):
        s, noise = s_all.index([pos]), [t[[pos]] for t in noise_all]
        index = indices[pos]
        x, name = None, f"image {index}"
        if dataset is not None and 0 <= index < len(dataset):
            x = dataset.tensors([index]).to(run.device)
            if dataset.filenames and not run.redact:  # a file's name may name a patient
                name = f"image {index}: {dataset.filenames[index]}"
        found, _, _ = explain_styles(
            G, C, s, noise, effects, run.result, row=effects.subset([pos]), strategies=("subset",), source=name
        )
        e = found["subset"]
        dst = save_image(sequence_image(G, C, x, s, noise, e, effects), run.out / "img" / "explain" / f"e{i}.png")
        names = e.class_names
        steps = "".join(
            f"<li>+ {esc(st.describe())}: p({esc(names[e.target_class])}) = {st.probs[e.target_class]:.3f}</li>"
            for st in e.steps
        )
        seen = None if x is None else int(C(x).argmax(1)[0])
        differs = (
            f' <span class="note">The image itself is classified {esc(names[seen])}; the explanation starts from '
            "its reconstruction.</span>"
            if seen is not None and seen != e.original_class
            else ""
        )
        parts.append(
            f'<div class="expl"><h3>{esc(name)}</h3><p>reconstruction predicted {esc(names[e.original_class])} &rarr; '
            f"{esc(names[e.target_class])}: {esc(e.outcome)} "
            f"(p({esc(names[e.target_class])}) = {e.base_probs[e.target_class]:.3f} before).{differs}</p>"
            f'<img class="pic" src="{esc(run.rel(dst))}" alt="explanation of {esc(name)}"><ol>{steps}</ol></div>'
        )
    return "".join(parts)


def _attfind_dataset(run: _Run):
    """The images AttFind searched (its effects record their data): the report's own data when it is the same,
    else AttFind's read again (e.g. a user's images for a shipped model), None when it is no longer there."""
    from stylex.data import load_dataset

    data = run.effects.meta.get("data")
    if run.dataset is not None and run.data_path is not None and str(Path(run.data_path).resolve()) == data:
        return run.dataset
    if not isinstance(data, str) or not Path(data).exists():
        return None
    if data not in run.read:  # read once: each section asked again, and a file's warnings came twice
        try:
            run.read[data] = load_dataset(data, resolution=run.model.resolution, progress=False)
        except StylexError:
            run.read[data] = None
    return run.read[data]


# ------------------------------------------------------------------------------------------------ commands
def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _commands(run: _Run) -> list[tuple[str, str]]:
    """(what, command) pairs that redo the run, rebuilt from the configs it recorded.

    For an exported model: the training chain on the data it was trained on (the export records it), into new
    folders under runs/<name>/, then `stylex export`; the later commands (AttFind, this report) name the exported
    model itself (`zoo:NAME` when it is shipped).
    """
    from stylex.config import preset

    q = shlex.quote
    rd = run.model_ref()
    info = run.info
    export = run.export
    data = str((export.get("source_data") if export is not None else info.get("data")) or "DATA")
    base = f"runs/{run.name}"  # an export's training chain writes new folders here
    out: list[tuple[str, str]] = []
    synth = Path(data) / "synth.json"
    if synth.is_file():
        try:
            meta = json.loads(synth.read_text(encoding="utf-8"))
            cmd = (
                f"stylex data synth --out {q(data)} --num-images {q(str(meta['num_images']))} "
                f"--resolution {q(str(meta['resolution']))} --seed {q(str(meta['seed']))} "
                f"--label {q(str(meta['label_rule']))}"
            )
            for k, v in (meta.get("correlate") or {}).items():
                cmd += f" --correlate {q(f'{k}={v}')}"
            out.append(("synthetic data", cmd))
        except (ValueError, KeyError, TypeError):
            pass
    spec = info.get("classifier") or {}
    location = str(spec.get("location", "CLASSIFIER"))
    if spec.get("kind") in ("stylex", "torchscript") and not Path(location).is_absolute():
        location = str((run.run_dir / location).resolve() if export is not None else run.run_dir / location)
    weights = spec.get("weights")
    if weights and export is not None and not Path(str(weights)).is_absolute():
        weights = str((run.run_dir / str(weights)).resolve())
    if spec.get("kind") == "stylex":
        loc = Path(location)
        clf_out = f"{base}/classifier" if export is not None else str(loc)
        try:
            clf = json.loads((loc / "config.json").read_text(encoding="utf-8"))
            metrics = _classifier_metrics(run) or {}
            t = clf["train"]
            own = clf.get("data") if export is None else None  # its own data, where its config records it
            cmd = (
                f"stylex train-classifier --data {q(str(own or data))} --out {q(clf_out)} "
                f"--resolution {q(str(clf['resolution']))} --epochs {q(str(t['epochs']))} "
                f"--width {q(str(t['width']))} --batch-size {q(str(t['batch_size']))} "
                f"--lr {q(str(t['lr']))} --seed {q(str(t['seed']))}"
            )
            if t.get("hflip"):
                cmd += " --hflip"
            n_train, n_val = metrics.get("num_train"), metrics.get("num_val")
            if isinstance(n_train, int) and isinstance(n_val, int) and n_train + n_val:
                cmd += f" --val-fraction {round(n_val / (n_train + n_val), 3)}"
            what = "classifier" if own else "classifier (its data is not recorded: the run's is assumed)"
            out.append((f"classifier (the exported one: {location})" if export is not None else what, cmd))
            location = clf_out
        except (OSError, ValueError, KeyError, TypeError):
            pass
    train = info.get("train") or {}
    train_out = f"{base}/stylex" if export is not None else rd
    cmd = f"stylex train --data {q(data)} --classifier {q(location)}"
    if weights:
        cmd += f" --classifier-weights {q(str(weights))}"
    cmd += f" --out {q(train_out)} --preset {q(str(train.get('preset', 'shapes-32')))}"
    try:
        defaults = _flat(preset(str(train.get("preset"))).to_dict())
    except StylexError:
        defaults = {}
    for k, v in _flat(train).items():
        if k == "preset" or defaults.get(k, object()) == v or (isinstance(v, list) and defaults.get(k) == tuple(v)):
            continue
        if isinstance(defaults.get(k), tuple) and list(defaults[k]) == v:
            continue
        flag = {"max_minutes": "--max-minutes", "max_steps": "--max-steps"}.get(k)
        cmd += f" {flag} {q(json.dumps(v))}" if flag else f" --set {q(f'{k}={json.dumps(v)}')}"
    out.append(("StylEx", cmd))
    rec = _reconstruction_figures(run)
    if export is not None:
        samples = (run.card or {}).get("samples") or {}
        cmd = f"stylex export {q(train_out)} --out {q(base + '/export')} --name {q(run.name)}"
        source = str(samples.get("source") or "")
        if source.startswith("all images of "):
            cmd += f" --samples {q(source.removeprefix('all images of '))}"
        if isinstance(samples.get("num_images"), int):
            cmd += f" --num-samples {samples['num_images']}"
        if export.get("weights_dtype") == "float32":
            cmd += " --no-half"
        out.append(("export (G_ema, E_ema, the classifier, samples, card.json, reconstruction figures)", cmd))
    elif rec is not None:
        out.append(("reconstructions", f"stylex reconstruct --model {q(rd)}"))
    if run.result is not None and "run" not in run.result.settings:  # searched from Python, on images it did not record
        out.append(("attributes", "# found from Python (stylex.AttFind(model, classifier).run(images)); the images "
                    "were not recorded, so no command repeats it"))  # fmt: skip
    elif run.result is not None:
        assert run.attributes_dir is not None  # set with run.result (_load_attfind)
        s, st = run.result.settings, run.result.stats
        cmd = f"stylex attfind --model {q(rd)}"
        own = info.get("data")
        if s.get("data") and not (own and Path(str(s["data"])).resolve() == (run.run_dir / str(own)).resolve()):
            cmd += f" --data {q(str(s['data']))}"
        cmd += f" --num-images {q(str(s.get('num_images', 250)))} --top-k {q(str(s.get('top_k', 10)))}"
        if st.get("fast"):
            cmd += f" --fast {q(str(st['fast']))}"
        if s.get("shift_size", 1.0) != 1.0:
            cmd += f" --shift-size {q(str(s['shift_size']))}"
        if s.get("threshold", 1.0) != 1.0:
            cmd += f" --threshold {q(str(s['threshold']))}"
        if st.get("precision") == "bf16":
            cmd += " --bf16"
        cmd += f" --seed {q(str(s.get('seed', 0)))} --out {q(str(run.attributes_dir.resolve()))}"
        out.append(("attributes", cmd))
    final = run.final or run.out
    cmd = f"stylex report {q(rd)} --out {q(str(final.resolve()))}"
    if run.attributes_dir is not None and run.attributes_dir != run.run_dir / "attfind":
        cmd += f" --attributes {q(str(run.attributes_dir.resolve()))}"
    if run.data_path and not run.shows_samples() and run.data_path != info.get("data"):
        cmd += f" --data {q(str(run.data_path))}"
    out.append(("this report", cmd + run.flags))
    return out


def _model_card(run: _Run) -> str:
    """An export's card as a table: what was trained on what, for how long, and how well it does."""
    card, export = run.card or {}, run.export or {}
    training = card.get("training") or export.get("training") or {}
    clf = card.get("classifier") or {}
    samples = card.get("samples") or {}
    rec = card.get("reconstruction") or {}
    rows: list[tuple[str, Any]] = [("name", run.name)]
    if run.model_ref() != str(run.run_dir.resolve()):  # zoo:NAME
        rows.append(("shipped as", f"{run.model_ref()} (stylex.load_zoo({run.name!r}))"))
    rows.append(("exported", f"{export.get('date', '?')} from {export.get('source_run', '?')} at step "
                             f"{export.get('step', '?')}"))  # fmt: skip
    rows.append(("training data", _source_data(export.get("source_data") or card.get("source_data"))))
    minutes = training.get("minutes")
    length = f"{training.get('steps', '?')} steps"
    if isinstance(minutes, int | float):
        length += f" in {minutes:.1f} min"
    if training.get("preset"):
        length += f", preset {training['preset']}"
    if training.get("batch_size"):
        length += f", batch {training['batch_size']}"
    if training.get("num_train"):
        length += f", {training['num_train']} training images"
    init = training.get("init_from")
    if isinstance(init, dict):
        earlier = f"{init['steps']} steps" if init.get("steps") is not None else "length not recorded"
        length += f"; fine-tuned from {init.get('run', '?')} ({earlier})"
    rows.append(("StylEx training", length))
    if isinstance(clf.get("val_accuracy"), int | float):
        acc = f"{clf['val_accuracy']:.3f} on {clf.get('num_val', '?')} held-out images"
        if isinstance(clf.get("train_accuracy"), int | float):
            acc += f" (training {clf['train_accuracy']:.3f})"
        rows.append(("classifier accuracy", f"{acc}; {clf.get('architecture') or clf.get('kind', '?')}"))
    if rec:
        rows.append((
            "reconstruction on the samples",
            f"consistency {_num(rec.get('consistency'))}, L1 {_num(rec.get('l1'))}, identity "
            f"{_num(rec.get('identity'))} ({rec.get('num_images', '?')} images)",
        ))  # fmt: skip
    if samples:
        per_class = ", ".join(f"{k} {v}" for k, v in (samples.get("per_class") or {}).items())
        rows.append(("shipped samples", f"{samples.get('num_images', '?')} ({per_class}); {samples.get('source', '')}"))
    for k, v in (card.get("metrics") or {}).items():  # `stylex export --metric`: measured before export, elsewhere
        rows.append((f"{k} (recorded at export)", _num(v) if isinstance(v, float) else v))
    if card.get("weights_dtype") or export.get("weights_dtype"):
        size = card.get("total_bytes")
        rows.append((
            "weights",
            f"{card.get('weights_dtype') or export.get('weights_dtype')}"
            + (f"; {size / 1e6:.1f} MB in all" if isinstance(size, int | float) else ""),
        ))  # fmt: skip
    machine = card.get("exported_by") or {}
    if machine:
        rows.append(("exported by", f"stylex {machine.get('stylex', '?')}, torch {machine.get('torch', '?')}, "
                                    f"{machine.get('platform', '?')}"))  # fmt: skip
    return _table(rows)


def _reproduce_section(run: _Run) -> str:
    lines = "\n".join(f"# {what}\n{cmd}" for what, cmd in _commands(run))
    parts = []
    if run.export is not None:
        parts.append(
            f"<p>An exported model (<code>stylex export</code>): G_ema and E_ema of a training run, its classifier "
            f"and {esc(run.num_samples())} held-out sample images. "
            + (
                "The images shown in this report are those shipped samples, not the data it was trained on.</p>"
                if run.shows_samples()
                else f"The images shown in this report are {esc(run.data_path or 'other images')}, not the shipped "
                "samples.</p>"
            )
        )
        parts.append(_model_card(run))
        notes = str((run.card or {}).get("notes") or "").strip()
        if notes:
            parts.append(f"<h3>Notes recorded at export</h3><pre>{esc(notes)}</pre>")
        elif run.card is None:
            parts.append(f'<p class="note">No card.json beside {esc(run.run_dir)}; the figures come from the '
                         "config alone.</p>")  # fmt: skip
        parts.append(
            '<p class="small">The commands below are rebuilt from the configs the source run recorded (a run does '
            "not store the command line it was started with; values equal to the preset's are left out): the "
            "training chain writes new folders, then AttFind and this report use the exported model.</p>"
        )
    else:
        parts.append(
            '<p class="small">Rebuilt from the configs the run recorded (a run does not store the command line it '
            "was started with); values equal to the preset's are left out.</p>"
        )
    parts += [
        f"<pre>{esc(lines)}</pre>",
        "<details><summary>config.json of the run</summary>"
        f"<pre>{esc(json.dumps(run.info, indent=2, default=str))}</pre></details>",
    ]
    if run.card is not None:
        parts.append(
            "<details><summary>card.json of the exported model</summary>"
            f"<pre>{esc(json.dumps(run.card, indent=2, default=str))}</pre></details>"
        )
    if run.result is not None:
        facts = {"settings": run.result.settings, "stats": run.result.stats}
        parts.append(
            "<details><summary>AttFind settings and timings</summary>"
            f"<pre>{esc(json.dumps(facts, indent=2, default=str))}</pre></details>"
        )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ style, script
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1280px;
padding:0 18px 40px;color:#222;background:#fafafa}
header{padding:14px 0 6px;border-bottom:1px solid #ddd}h1{font-size:24px;margin:6px 0}
h2{font-size:20px;margin:28px 0 8px;border-bottom:1px solid #e4e4e4;padding-bottom:4px}
h3{font-size:17px;margin:18px 0 6px}
h4{font-size:15px;margin:4px 0}.meta,.small{color:#555;font-size:13px}nav a{margin-right:4px}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#f0f0f0;padding:10px;overflow-x:auto;
white-space:pre-wrap;word-break:break-all}
.note{background:#fff6dd;border-left:4px solid #e0b100;padding:6px 10px;font-size:14px}
.guide{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px 14px;margin:0 0 14px;max-width:900px}
.guide summary{font-weight:600;cursor:pointer;padding:4px 0}.guide p{margin:6px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}.card{background:#fff;border:1px solid #ddd;
border-radius:6px;padding:8px 14px;min-width:130px}.cv{font-size:22px;font-weight:600}.cl{font-size:13px}
.ch{font-size:11px;color:#595959}
table{border-collapse:collapse;margin:6px 0;background:#fff;display:block;overflow-x:auto;max-width:100%;
width:fit-content}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:left;font-size:13px}table.grid td{text-align:right}
.bar{display:flex;align-items:center;gap:8px;font-size:13px;margin:2px 0}.bl{min-width:200px;max-width:320px;
overflow-wrap:anywhere}.bv{color:#444}
.plots{display:flex;flex-wrap:wrap;gap:8px}svg.plot{background:#fff;border:1px solid #e2e2e2}
.pt{font-size:12px;font-weight:600}.pl{font-size:10px;fill:#444}.pf{fill:none;stroke:#bbb}
.pg{stroke:#eee}
img{image-rendering:pixelated;max-width:100%;height:auto}.pic{border:1px solid #ddd;background:#fff}
h3.cls{background:#eef3fb;padding:4px 8px;border-radius:4px}q{font-weight:600}
.attrs{display:flex;flex-direction:column;gap:12px}.attr{background:#fff;border:1px solid #ddd;border-radius:6px;
padding:8px 12px}.slider{display:flex;flex-direction:column;gap:4px;margin:4px 0 10px}
.slider input{width:100%}.slab{display:flex;justify-content:space-between;gap:10px;font-size:12px;color:#555}
.slab output{color:#111}.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:4px 0}figcaption{font-size:12px;color:#555;max-width:420px}
.expl{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
footer{margin-top:30px;font-size:12px;color:#595959}.expl h3{overflow-wrap:anywhere}
button.play{font-size:12px;margin-right:4px}
@media (max-width:700px){body{padding:0 8px 30px}.bl{min-width:120px}}
"""

_JS = """
"use strict";
document.querySelectorAll("input.frames").forEach(function (input) {
  var frames = JSON.parse(input.dataset.frames);
  var labels = JSON.parse(input.dataset.labels);
  var img = document.getElementById(input.dataset.target);
  var out = document.getElementById(input.dataset.label);
  var alts = JSON.parse(input.dataset.alts);
  input.addEventListener("input", function () {
    var i = Number(input.value);
    img.src = frames[i];
    img.alt = alts[i];
    out.textContent = labels[i];
    input.setAttribute("aria-valuetext", labels[i]);
  });
});
// the attribute animations wait for Play (and stay still for readers who asked for less motion)
document.querySelectorAll("img[data-animation]").forEach(function (img) {
  var button = img.parentNode.querySelector("button.play");
  var still = img.alt;
  function play(on) {
    img.src = on ? img.dataset.animation : img.dataset.still;
    img.alt = on ? img.dataset.playing : still;
    button.textContent = on ? "Pause" : "Play";
    button.setAttribute("aria-pressed", String(on));
  }
  button.hidden = false;
  button.addEventListener("click", function () { play(button.getAttribute("aria-pressed") !== "true"); });
  play(false);
});
"""
