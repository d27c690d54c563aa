"""Command line: argv -> validation -> one library call per subcommand. The only module that touches argv."""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path

import click

from stylex.errors import StylexError, counted, on_command_line

PRESET_HELP = "tiny (tests), shapes-32, mnist-32, plant-64, faces-64 (DiffAugment)"


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


class _Group(click.Group):
    """Ends every error a user can cause in one `error:` line on stderr, never a traceback.

    StylexError (exit status 1): its message. A usage error inside a subcommand (missing option, a path that
    does not exist, a bad value; exit status 2): click's message and where to look for help. An OSError on a
    named file (permissions, a file where a folder should be, a full disk; exit status 1): the file and why.
    Ctrl-C that reaches here (a training stops by itself after the step under way), or SIGTERM: "interrupted", with
    what the command keeps (exit status 130, 143 for SIGTERM); `serve` stops with "viewer stopped." instead.
    A warning is one `warning:` line.
    """

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings(), _terminate_as_interrupt(), on_command_line():
                warnings.showwarning = _one_line_warning  # a warning is one `warning:` line, without the source line
                return super().invoke(ctx)
        except StylexError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            if os.environ.get("RANK", "0") != "0":  # under torchrun every rank meets it: rank 0 says it, once
                sys.exit(e.exit_code)
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            said = " ".join(e.format_message().split()).replace(" ,", ",")  # click's choice lists hold line breaks
            said = said.rstrip(".")
            if "--trust-code" in said:  # `stylex attfind --trust-code`: the flag belongs to stylex itself
                said += " (it goes before the command: `stylex --trust-code COMMAND ...`)"
            click.echo(f"error: {said}{' See' if said.endswith('?') else '; see'} `{where} --help`.", err=True)
            sys.exit(e.exit_code)
        except OSError as e:
            if e.errno in _DISK_ERRORS and e.filename2 is not None:  # a copy: the file written is the second
                e.filename = e.filename2
            if e.filename is None and e.errno in _DISK_ERRORS:  # a write cut short names no file
                click.echo(f"error: a write failed ({e.strerror or e}); check the free disk space (of the output "
                           "folder, and wherever the output and the log go) and any limit on file sizes (ulimit -f) "
                           "or quotas, then run the command again.", err=True)  # fmt: skip
                sys.exit(1)
            if e.filename is None:
                raise
            click.echo(
                f"error: {e.filename}: {e.strerror or e}; check the path, its permissions and the free disk space.",
                err=True,
            )
            sys.exit(1)
        except KeyboardInterrupt as e:
            if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 says it (torchrun stops the others)
                sys.exit(143 if isinstance(e, _Terminated) else 130)
            name = ctx.invoked_subcommand or ""
            kept = _KEPT_WHEN_INTERRUPTED.get(name, "")
            signal_name = "SIGTERM" if isinstance(e, _Terminated) else "Ctrl-C"
            start = "\n" if sys.stderr.isatty() else ""  # below a progress bar, not on its line
            click.echo(f"{start}interrupted ({signal_name}){'; ' + kept if kept else ''}.", err=True)
            sys.exit(143 if isinstance(e, _Terminated) else 130)


_DISK_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}
"""OSErrors of a write that the disk refused: said in one line even when they name no file."""

_KEPT_WHEN_INTERRUPTED = {
    "attfind": "any effects computed so far are kept, and the same command continues from them",
    "data": "nothing was written",
    "demo": "what it wrote so far stays in its --out folder",
    "explain": "with several images, those explained so far stay in their folders, listed in OUT/explanations.json",
    "train": "a training keeps its last complete checkpoint, if it wrote one; continue with --resume",
    "train-classifier": "no classifier was written",
}


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `timeout`) turned into an interrupt, so that it ends like Ctrl-C: with the
    command's clean-up and one line, not a silent death."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    def terminated(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stylex")
@click.option("--trust-code", is_flag=True, help="Load the classifier code (module:function, TorchScript) that "
              "a run names although this machine has not trusted it before; only for runs you trust.")  # fmt: skip
def main(trust_code):
    """StylEx: explain an image classifier with a GAN trained in its StyleSpace.

    Stages: `data synth` -> `train-classifier` -> `train` -> `reconstruct` -> `attfind` -> `explain` -> `report`;
    `serve` is the live viewer. `data pack` decodes an image folder once, `data heldout` writes a run's held-out
    images. `demo` explains a shipped model without training (`demo --train` runs the whole chain); `export` makes
    a shipped model of a run, `zoo` lists them. `evaluate` measures an explanation (sufficiency, consistency and,
    on synthetic data, ground truth); `baseline` ranks coordinates as Wu et al. do, or at random, to compare with.
    """
    if trust_code:
        from stylex.classifier.trust import TRUST_CODE_ENV

        os.environ[TRUST_CODE_ENV] = "1"  # for this process and the ones it starts


SHARED_COMMANDS = ("train", "attfind")
"""The commands that share their work between torchrun's processes; the others run in one process."""


class _Command(click.Command):
    """A command that, under torchrun, runs only if it shares its work (`_one_process_unless_shared`); checked once
    its options are parsed, so that `--help` still answers."""

    def invoke(self, ctx):
        names, c = [], ctx
        while c.parent is not None:  # the names below `stylex` (its own name differs: `python -m stylex`, a script)
            names.append(c.info_name or "")
            c = c.parent
        _one_process_unless_shared(" ".join(reversed(names)))
        return super().invoke(ctx)


_Group.command_class = _Command


def _one_process_unless_shared(command: str) -> None:
    """Under torchrun (WORLD_SIZE > 1) a command that does not share its work is refused on rank 0 and ends quietly on
    the others: each rank ran it whole, `demo` died on rank 1 with a traceback, and `report` drew everything twice."""
    from stylex.training.distributed import one_process

    if command in SHARED_COMMANDS:
        return
    try:
        one_process(f"`stylex {command}`")
    except StylexError:
        if os.environ.get("RANK", "0") != "0":
            _leave_to_rank_0()
        raise


def _leave_to_rank_0() -> None:
    """End a rank other than 0 quietly after an error that rank 0 says (torchrun then stops the others)."""
    with contextlib.suppress(KeyboardInterrupt):  # torchrun's SIGTERM, when rank 0 has already exited
        time.sleep(1.0)  # let rank 0 report before torchrun, seeing this rank exit, stops the others
    sys.exit(1)


class _Path(click.Path):
    """click.Path that expands a leading `~` (the shell leaves `--out=~/x` and "~/x" as they are: an output went to a
    folder literally named `~` in the working directory)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith("~"):
            value = os.path.expanduser(value)
        return super().convert(value, param, ctx)


class _OutPath(_Path):
    """An --out path: never inside a shipped model (the package's folder), and not below a file (the error named
    a temporary folder there, or came after minutes of work)."""

    def convert(self, value, param, ctx):
        from stylex.zoo import is_shipped

        path = Path(super().convert(value, param, ctx))
        if is_shipped(path):
            self.fail(f"{path} is inside a shipped model, which stylex does not write into; choose another folder")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    self.fail(f"{parent} is a file, so {path} cannot be made there")
                break
        return str(path)


# ------------------------------------------------------------------------------------------------ model arguments
class _ModelArg(click.ParamType):
    """A trained model: a run folder, the folder `stylex export` wrote (its `stylex/` inside is the model), or
    `zoo:NAME` for a shipped model (see `stylex zoo`); converts to the run folder's path. The one place the command
    line resolves model arguments."""

    name = "RUN|zoo:NAME"
    _folder = _Path(exists=True, file_okay=False)

    def convert(self, value, param, ctx):
        from stylex.zoo import PREFIX, resolve_model

        if not str(value).startswith(PREFIX):
            value = self._folder.convert(value, param, ctx)  # click's own message for a missing folder; ~ expanded
        try:
            return str(resolve_model(value))
        except StylexError as e:
            self.fail(str(e).rstrip("."), param, ctx)


MODEL = _ModelArg()


def _model_argument(f):
    """The model of report, serve and export: positional (`stylex report RUN`), or --model as the other commands
    take it (`stylex report --model RUN`); exactly one of the two reaches the command as `run_dir`."""

    @functools.wraps(f)
    def command(*args, run_dir=None, model_option=None, **kwargs):
        if run_dir is not None and model_option is not None:
            raise click.UsageError("give the model once: as the RUN argument or as --model, not both")
        if run_dir is None and model_option is None:
            raise click.UsageError("Missing the model: RUN (a run folder, an export or zoo:NAME), or --model RUN")
        return f(*args, run_dir=run_dir if run_dir is not None else model_option, **kwargs)

    command = click.option("--model", "model_option", type=MODEL,
                           help="The model, as the other commands take it (instead of RUN).")(command)  # fmt: skip
    return click.argument("run_dir", type=MODEL, required=False, metavar="[RUN]")(command)


DEVICE_HELP = "Where the networks run: cpu, cuda or cuda:N."


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--device: a device this PyTorch can use, else a usage error (it was a traceback from deep inside torch)."""
    from stylex.device import check_device

    try:
        return check_device(value)
    except StylexError as e:
        raise click.BadParameter(str(e).rstrip(".")) from None


SUMMARY_CLASSES = 20  # attfind and baseline print the tables of this many classes, then a line for the rest
MODEL_HELP = "Run folder, an exported model's folder, or zoo:NAME for a shipped model (`stylex zoo` lists them)."


def _out_dir(run_dir: str, out: str | None, default: str) -> Path:
    """--out, or RUN/<default> when it is not given; a shipped model's folder belongs to the package, so there
    --out is required."""
    from stylex.zoo import is_shipped

    if out is not None:
        return Path(out)
    if is_shipped(run_dir):
        raise click.UsageError(f"{run_dir} is a shipped model, which stylex does not write into; pass --out DIR")
    return Path(run_dir) / default


# ------------------------------------------------------------------------------------------------ data
@main.group()
def data():
    """Datasets: write the synthetic shapes set with ground-truth factors, a run's held-out split, or a folder
    packed into an .npz."""


data.command_class = _Command  # its subcommands too


@data.command("heldout")
@click.option("--model", "run_dir", required=True, type=MODEL, help=MODEL_HELP)
@click.option("--data", type=_Path(exists=True), help="Images to split (default: the run's own data).")
@click.option("--out", required=True, type=_OutPath(dir_okay=False), help="The .npz file to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_heldout(run_dir, data, out, overwrite, quiet):
    """Write the images a run held out from training (its own split) as an .npz, for `--data` of attfind,
    evaluate, baseline, explain and report."""
    from stylex.pipeline import write_held_out

    n = write_held_out(run_dir, out, data, overwrite=overwrite, quiet=quiet)
    click.echo(f"wrote {n} held-out images to {out}")


@data.command("pack")
@click.argument("source", type=_Path(exists=True))
@click.option("--out", required=True, type=_OutPath(dir_okay=False), help="The .npz file to write.")
@click.option("--resolution", required=True, type=click.IntRange(min=8), help="Image size in pixels: the model's.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_pack(source, out, resolution, overwrite, quiet):
    """Decode an image folder once into an .npz at the model's resolution, for `--data` of every command.

    Every command decodes its whole dataset: a folder of large photos takes minutes each time, the .npz seconds.
    Train on the .npz to make it the run's data (its held-out split is then the .npz's). Images, labels, class
    names and file names are kept; the synthetic shapes' ground-truth factors are not.
    """
    from stylex.data import load_dataset, save_npz
    from stylex.data.dataset import check_npz_out

    out = check_npz_out(out, source, overwrite, "packed")
    dataset = load_dataset(source, resolution=resolution, progress=not quiet)
    if dataset.factors is not None:
        warnings.warn(f"{source}'s ground-truth factors (factors.csv) are not kept in the .npz; `stylex evaluate` "
                      "needs the folder.", stacklevel=2)  # fmt: skip
    save_npz(dataset, out)
    classes = f"{len(dataset.class_names)} classes" if dataset.labels is not None else "no labels"
    click.echo(f"wrote {len(dataset)} images ({resolution} px, {classes}) to {out}")


@data.command("synth")
@click.option("--out", required=True, type=_OutPath(file_okay=False), help="New folder to write.")
@click.option("--num-images", default=2000, show_default=True, type=click.IntRange(min=1), help="Images to render.")
@click.option("--resolution", default=32, show_default=True, type=click.IntRange(min=8), help="Image size in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the scenes.")
@click.option(
    "--label",
    "label_rule",
    default="shape==circle",
    show_default=True,
    help="Label rule over the factors: 'shape==circle', 'obj_hue<0.5 and pos_x>0.5', 'shape' (one class "
    "per shape), 'bg_hue:3' (3 bins). Factors: shape, obj_hue, obj_size, pos_x, pos_y, bg_hue, bg_brightness.",
)
@click.option(
    "--correlate",
    multiple=True,
    help="FACTOR=P: make a factor outside the rule agree with the label with probability P (a shortcut), "
    "e.g. bg_hue=0.95. Repeatable.",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds an earlier `data synth` (synth.json).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_synth(out, num_images, resolution, seed, label_rule, correlate, overwrite, quiet):
    """Render synthetic shapes with ground-truth factors into an image folder plus factors.csv."""
    from stylex.data import parse_correlate, write_synth

    ds = write_synth(
        out,
        num_images,
        resolution=resolution,
        seed=seed,
        label_rule=label_rule,
        correlate=parse_correlate(list(correlate)) if correlate else None,
        overwrite=overwrite,
        progress=not quiet,
    )
    assert ds.labels is not None  # synthetic images are labelled (render_shapes)
    counts = {name: int((ds.labels == i).sum()) for i, name in enumerate(ds.class_names)}
    click.echo(f"wrote {len(ds)} images to {out}: {counts}")


# ------------------------------------------------------------------------------------------------ classifier
def _classifier_options(f):
    options = [
        click.option(
            "--classifier",
            required=True,
            help="A folder from `stylex train-classifier`, a TorchScript file, or package.module:factory.",
        ),
        click.option("--classifier-weights", type=_Path(dir_okay=False), help="safetensors state dict."),
        click.option("--classifier-input-size", type=int, help="Square input size the classifier expects."),
        click.option("--classifier-range", help="Input value range LO,HI, e.g. 0,1 or 0,255 (default -1,1)."),
        click.option(
            "--classifier-mean", help="Per-channel mean after the range, e.g. 0.485,0.456,0.406, or imagenet."
        ),
        click.option("--classifier-std", help="Per-channel std after the range, e.g. 0.229,0.224,0.225, or imagenet."),
        click.option(
            "--classifier-classes",
            help="Names of the classifier's outputs in logit order, comma-separated, e.g. cat,dog (for a model "
            "that does not name them; replaces the names it declares).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _load_classifier(kw: dict, resolution: int, device: str):
    from stylex.classifier import InputSpec, load_classifier

    spec_keys = ("classifier_input_size", "classifier_range", "classifier_mean", "classifier_std")
    spec = None
    if any(kw.get(k) is not None for k in spec_keys):
        spec = InputSpec.from_options(
            size=kw.get("classifier_input_size"),
            value_range=kw.get("classifier_range"),
            mean=kw.get("classifier_mean"),
            std=kw.get("classifier_std"),
        )
    names = kw.get("classifier_classes")
    source = kw["classifier"]  # a path (~ expanded, as for _Path options) or module:factory
    return load_classifier(
        os.path.expanduser(source) if source.startswith("~") else source,
        kw.get("classifier_weights"),
        spec,
        device=device,
        resolution=resolution,
        class_names=None if names is None else names.split(","),
    )


@contextlib.contextmanager
def _rank_messages(dist):
    """Under torchrun, rank 0 shows warnings and errors; the other ranks, meeting the same ones, exit quietly."""
    if not dist.is_main:
        warnings.simplefilter("ignore")
    try:
        yield
    except StylexError:
        if not dist.is_main:
            _leave_to_rank_0()
        raise
    except KeyboardInterrupt:
        if not dist.is_main:
            sys.exit(130)
        raise


@main.command("train-classifier")
@click.option("--data", required=True, type=_Path(), help="Labelled image folder (class subfolders) or .npz.")
@click.option("--out", required=True, type=_OutPath(file_okay=False), help="Folder for the classifier.")
@click.option("--resolution", default=32, show_default=True, type=int, help="Image size the classifier sees.")
@click.option(
    "--epochs", default=5, show_default=True, type=click.IntRange(min=1), help="Passes over the training images."
)
@click.option("--width", default=32, show_default=True, type=click.IntRange(min=4), help="Channels of the first conv.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images per step.")
@click.option("--lr", default=3e-3, show_default=True, type=float, help="Peak learning rate (AdamW, one-cycle).")
@click.option("--hflip/--no-hflip", default=False, show_default=True, help="Random horizontal flips.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of each class held out for validation.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the split, the weights and the batches.")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--overwrite", is_flag=True, help="Replace the classifier --out holds (never a folder of other files).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_classifier_cmd(
    data, out, resolution, epochs, width, batch_size, lr, hflip, val_fraction, seed, device, overwrite, quiet
):
    """Train the built-in SmallCNN classifier; writes config.json, weights.safetensors, metrics.json."""
    from stylex.classifier import ClassifierTrainConfig, train_classifier
    from stylex.data import load_dataset

    _check_classifier_out(Path(out), overwrite)

    ds = load_dataset(data, resolution=resolution, progress=not quiet)
    if ds.labels is None:
        raise StylexError(f"{data} has no labels; a classifier needs class subfolders or an npz with 'labels'.")
    counts = ", ".join(f"{name} {int((ds.labels == k).sum())}" for k, name in enumerate(ds.class_names))
    if not quiet:
        click.echo(f"{counted(len(ds), 'image')} in {counted(len(ds.class_names), 'class')} ({counts}) from {data}")
    train_set, val_set = ds.split(val_fraction, seed)
    if len(train_set) == 0:
        raise StylexError(f"--val-fraction {val_fraction:g} holds out all {len(ds)} images; lower it.")
    cfg = ClassifierTrainConfig(width=width, epochs=epochs, batch_size=batch_size, lr=lr, hflip=hflip, seed=seed)
    metrics = train_classifier(train_set, val_set, out, cfg, device=device, quiet=quiet)
    val = metrics.get("val_accuracy")
    val_text = "no validation images" if val is None else f"validation accuracy {val:.3f}"
    balanced = metrics.get("val_balanced_accuracy")
    from stylex.classifier.train import shows_balanced, weak_classifier_note

    if shows_balanced(val, balanced):  # unbalanced classes
        val_text += f", balanced {balanced:.3f}"
    chance = f", chance {1 / len(ds.class_names):.3f}" if ds.class_names else ""
    click.echo(f"{val_text} (train {metrics['train_accuracy']:.3f}{chance}); wrote {out}")

    present = sum(v is not None for v in (metrics.get("per_class_accuracy") or {}).values())
    note = weak_classifier_note(val, len(ds.class_names), balanced, present) if val is not None else None
    if note:
        warnings.warn(note + "; train it longer (--epochs) or on more images.", stacklevel=2)


def _check_classifier_out(out: Path, overwrite: bool) -> None:
    """train-classifier writes its three files into --out: refuse a folder of other files (a StylEx run lost its
    weights that way), and an earlier classifier unless --overwrite."""
    import json

    from stylex.classifier.store import CONFIG_NAME
    from stylex.files import clear_stale_lock

    clear_stale_lock(out)  # what a killed train or explain left there
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    try:
        is_classifier = "architecture" in json.loads((out / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        is_classifier = False
    if not is_classifier:
        raise StylexError(
            f"--out {out} holds other files (not a classifier of `stylex train-classifier`), which training would "
            "replace; choose a new folder."
        )
    if not overwrite:
        raise StylexError(
            f"--out {out} already holds a classifier; choose a new folder, or replace it with --overwrite."
        )


# ------------------------------------------------------------------------------------------------ stylex
@main.command("train")
@click.option("--data", required=True, type=_Path(), help="Image folder or .npz (labels not needed).")
@_classifier_options
@click.option("--out", required=True, type=_OutPath(file_okay=False), help="Run folder.")
@click.option("--preset", "preset_name", default="shapes-32", show_default=True,
              help=PRESET_HELP + "; with --resume or --init-from, the run's own unless given.")  # fmt: skip
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set lr_g=0.001 --set model.w_dim=64 (see stylex.config.TrainConfig).",
)
@click.option("--max-minutes", type=float, help="Wall-clock budget (shorthand for --set max_minutes=...; default "
              "the preset's: 10 minutes, plant-64 and faces-64 60, tiny none (4 steps); alone, it is the whole "
              "budget).")  # fmt: skip
@click.option("--max-steps", type=int, help="Step budget (shorthand for --set max_steps=...; default none: the "
              "minutes stop the run; alone, it is the whole budget).")  # fmt: skip
@click.option("--seed", type=int, help="Seeds the weights, the data order and the noise (shorthand for --set "
              "seed=...; default 0).")  # fmt: skip
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its last checkpoint (any number of processes), with the run's own config "
    "unless --preset is given; --set and the budgets may change the stopping and logging values.",
)
@click.option(
    "--init-from",
    type=_Path(exists=True, file_okay=False),
    help="Start a new run from this training run's networks (fresh optimisers, step 0): a fine-tune, e.g. with "
    "another --set recipe. Same network sizes (its preset unless --preset is given) and classifier. StylEx may "
    "start from an unconditioned run (--set conditional=false): D's class projection then starts fresh.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, cuda or cuda:N (under torchrun, cuda means cuda:LOCAL_RANK).",
    callback=_check_device,
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_cmd(data, out, preset_name, overrides, max_minutes, max_steps, seed, resume, init_from, device, quiet, **kw):
    """Train StylEx (G, E, D) for a frozen classifier; checkpoints, stats.jsonl and samples go into --out.

    Several processes: `torchrun --nproc_per_node=N -m stylex train ...` (DDP; batch_size stays the global batch).
    """
    from stylex.config import parse_override
    from stylex.pipeline import train_stylex
    from stylex.training.distributed import process_group

    values = dict(parse_override(o) for o in overrides)
    shorthands = (("max_minutes", "--max-minutes", max_minutes), ("max_steps", "--max-steps", max_steps),
                  ("seed", "--seed", seed))  # fmt: skip
    for key, flag, given in shorthands:
        if given is not None and key in values and values[key] != given:
            warnings.warn(f"{flag} {given:g} replaces --set {key}={values[key]:g}; give one of them.", stacklevel=1)
    if seed is not None:
        values["seed"] = seed
    if max_minutes is not None:
        values["max_minutes"] = max_minutes
    if max_steps is not None:
        values["max_steps"] = max_steps
        values.setdefault("max_minutes", 0)
    elif max_minutes is not None:  # a budget in minutes alone is the whole budget, as --max-steps alone is
        values.setdefault("max_steps", 0)
    config = _train_config(out, preset_name, values, resume, init_from)
    with process_group(device) as dist:
        with _rank_messages(dist):
            dist.check_batch(config.batch_size)
            device = str(dist.device(device))
            classifier = _load_classifier(kw, config.model.resolution, device)
            result = train_stylex(
                data, classifier, out, config, resume=resume, device=device, quiet=quiet, init_from=init_from
            )
    if dist.is_main and result.stopped_by:
        click.echo(
            f"stopped by {result.stopped_by} at step {result.step}, checkpointed; continue with --resume.", err=True
        )
        sys.exit(130 if result.stopped_by == "SIGINT" else 143)
    if dist.is_main and (result.step != result.start_step or not resume):  # a spent budget: the trainer warned
        took = f"{result.seconds:.0f} s" if result.seconds < 60 else f"{result.seconds / 60:.1f} min"
        click.echo(f"trained to step {result.step} in {took}; run folder {out}")


def _train_config(out, preset_name: str, values: dict, resume: bool, init_from=None):
    """The preset with the overrides; with --resume and no --preset given, the run's saved config with them; with
    --init-from and no --preset, the preset of the run it starts from (its network sizes must match)."""
    from stylex.config import TrainConfig, apply_overrides, preset, read_json

    source = click.get_current_context().get_parameter_source("preset_name")
    given = source is not click.core.ParameterSource.DEFAULT
    saved = Path(out) / "config.json"
    if resume and not given and saved.is_file():
        train = read_json(saved).get("train")
        if isinstance(train, dict):
            return apply_overrides(TrainConfig.from_dict(train, str(saved)), values)
    if init_from is not None and not given and (Path(init_from) / "config.json").is_file():
        earlier = (read_json(Path(init_from) / "config.json").get("train") or {}).get("preset")
        if isinstance(earlier, str) and earlier:
            preset_name = earlier
    return preset(preset_name, **values)


@main.command("reconstruct")
@click.option("--model", "run_dir", required=True, type=MODEL, help=MODEL_HELP)
@click.option("--data", type=_Path(), help="Images to reconstruct (default: the run's own data).")
@click.option("--split", type=click.Choice(["val", "all"]), default="val", show_default=True,
              help="val: the run's held-out split of its own data (other --data, e.g. `stylex data heldout`'s file, "
              "is used whole); all: every image.")  # fmt: skip
@click.option("--num-images", default=256, show_default=True, type=click.IntRange(min=2), help="Images reconstructed.")
@click.option("--out", type=_OutPath(file_okay=False), help="Output folder (default RUN/reconstruct).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def reconstruct_cmd(run_dir, data, split, num_images, out, device, quiet):
    """Encode and regenerate images: a grid, and consistency / L1 / identity beside two trivial baselines."""
    from stylex.pipeline import format_report, reconstruct

    out = _out_dir(run_dir, out, "reconstruct")
    report = reconstruct(run_dir, data, out, num_images=num_images, split=split, device=device, quiet=quiet)
    click.echo(format_report(report))
    click.echo(f"grid: {report['grid']}")


@main.command("demo")
@click.option("--out", type=_OutPath(file_okay=False), help="Output folder, relative to the current folder "
              "[default: runs/demo; with --train, runs/demo-train].")  # fmt: skip
@click.option("--model", "model_name", default="pepper-64", show_default=True, metavar="NAME",
              help="The shipped model to explain (`stylex zoo` lists them).")  # fmt: skip
@click.option("--train", is_flag=True, help="Instead: the whole chain from nothing (synthetic shapes -> classifier -> "
              "short StylEx run -> AttFind -> report).")  # fmt: skip
@click.option("--minutes", default=5.0, show_default=True, type=float, help="StylEx training budget (with --train).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(out, model_name, train, minutes, quiet):
    """Explain a shipped classifier with its shipped StylEx model (the leaf classifier and pepper-64 unless --model
    says otherwise), no training: AttFind (fast mode) on its sample images, a few image explanations and the HTML
    report, whose path comes last."""
    from stylex.pipeline import demo, demo_train

    if train:
        demo_train(Path(out or "runs/demo-train"), minutes=minutes, quiet=quiet)
    else:
        demo(Path(out or "runs/demo"), model=model_name.removeprefix("zoo:"), quiet=quiet)


# ------------------------------------------------------------------------------------------------ shipped models
@main.command("export")
@_model_argument
@click.option("--out", required=True, type=_OutPath(file_okay=False), help="New folder for the exported model.")
@click.option("--samples", type=_Path(exists=True), help="Images to ship (default: the held-out split of the "
              "run's own data).")  # fmt: skip
@click.option("--num-samples", default=24, show_default=True, type=click.IntRange(min=2),
              help="Images to ship, balanced over the classes.")  # fmt: skip
@click.option("--half/--no-half", default=True, show_default=True, help="Store the weights as float16.")
@click.option("--name", help="The model's name in its card (default: the --out folder's name).")
@click.option("--notes", default="", help="Free text for the card, e.g. the training command and its duration.")
@click.option("--metric", "metric_values", multiple=True, metavar="KEY=VALUE",
              help="A further figure for the card, e.g. --metric sufficiency@10=0.47. Repeatable.")  # fmt: skip
@click.option(
    "--best",
    is_flag=True,
    help="Export the run's best checkpoint by its held-out figure (best.safetensors, kept with --set keep_best=...) "
    "instead of the last.",
)
@click.option("--redact-paths", is_flag=True, help="Record the source run, its data and the run it was fine-tuned "
              "from by name only, not by this machine's absolute paths (which card.json otherwise keeps), and ship "
              "the sample images as 0000.png, 0001.png, ... instead of under their file names (which may name "
              "patients): for a folder shared outside.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists and holds an earlier export (card.json).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_cmd(run_dir, out, samples, num_samples, half, name, notes, metric_values, best, redact_paths, overwrite,
               device, quiet):  # fmt: skip
    """Write a trained run as a self-contained model folder to ship: stylex/ (G_ema and E_ema only), classifier/,
    samples/ (held-out images in class folders) and card.json (what it is and how well it reconstructs)."""
    from stylex.zoo import export_run

    metrics = {}
    for item in metric_values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StylexError(f"--metric takes KEY=VALUE, e.g. sufficiency@10=0.47; got {item!r}.")
        try:
            metrics[key.strip()] = float(value)
        except ValueError:
            metrics[key.strip()] = value
    card = export_run(
        run_dir,
        out,
        samples=samples,
        num_samples=num_samples,
        half=half,
        name=name,
        notes=notes,
        metrics=metrics,
        overwrite=overwrite,
        device=device,
        best=best,
        redact_paths=redact_paths,
        quiet=quiet,
    )
    rec, training = card["reconstruction"], card["training"]
    init = training.get("init_from")
    step = f"step {training['steps']}" + (f" (fine-tuned from {Path(init['run']).name})" if init else "")
    step += ", its best checkpoint" if training.get("checkpoint") else ""
    click.echo(
        f"{card['name']}: {card['resolution']} px, {len(card['class_names'])} classes, {step}; "
        f"on {rec['num_images']} shipped images: consistency {rec['consistency']:.3f}, L1 {rec['l1']:.3f}, "
        f"identity {rec['identity']:.3f}"
    )
    for path, size in card["files"].items():
        if not path.startswith("samples/"):
            click.echo(f"  {path:48s}{size / 1e6:9.3f} MB")
    click.echo(f"  {'samples/ (' + str(card['samples']['num_images']) + ' images)':48s}"
               f"{sum(v for k, v in card['files'].items() if k.startswith('samples/')) / 1e6:9.3f} MB")  # fmt: skip
    per_class = card["samples"].get("per_class") or {}
    click.echo("    " + ", ".join(f"{name} {n}" for name, n in per_class.items()))
    click.echo(f"wrote {out} ({card['total_bytes'] / 1e6:.2f} MB)")
    if (Path(run_dir) / "attfind" / "attributes.json").is_file():  # said, so that nobody expects them there
        click.echo(
            f"not shipped: {Path(run_dir) / 'attfind'} (AttFind's effects are of your images, not the shipped "
            f"samples); the receiver runs `stylex attfind --model {shlex.quote(str(out))} --out DIR` (its sufficiency "
            "goes in the card with --metric sufficiency@10=VALUE)."
        )


@main.command("zoo")
def zoo_cmd():
    """List the shipped models (use one as --model zoo:NAME)."""
    from stylex.zoo import format_models, zoo_root

    lines = format_models()
    if not lines:
        where = shlex.quote(f"{zoo_root()}/NAME")
        click.echo(f"no shipped models in {zoo_root()}; `stylex export RUN --out {where}` adds one.")
    for line in lines:
        click.echo(line)


# ------------------------------------------------------------------------------------------------ attfind / explain
@main.command("attfind")
@click.option("--model", "run_dir", required=True, type=MODEL, help=MODEL_HELP)
@click.option("--data", type=_Path(exists=True), help="Images to search with (default: the run's own data).")
@click.option("--num-images", default=250, show_default=True, type=click.IntRange(min=2), help="N images (seeded).")
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(min=1), help="Attributes per class.")
@click.option("--out", type=_OutPath(file_okay=False), help="Output folder (default RUN/attfind).")
@click.option(
    "--fast",
    type=click.IntRange(min=1),
    metavar="M",
    help="Fast mode: rank (coordinate, direction) pairs by a first-order estimate, evaluate only the top 2M per "
    "image exactly (2M edits instead of 2S).",
)
@click.option("--shift-size", default=1.0, show_default=True, type=float, help="Edit size toward the min / max.")
@click.option(
    "--include-rgb/--no-include-rgb",
    default=None,
    help="Search the toRGB styles too (colour attributes: a tint, a background colour); not in the paper, "
    "which searches the modulated-conv styles only. Default: on for a model trained with tint styles "
    "(--set model.tint_styles=N), off otherwise.",
)
@click.option(
    "--threshold",
    default=1.0,
    show_default=True,
    type=float,
    help="Logit change at which an image stops counting in the selection (the notebook's 5 x 0.2).",
)
@click.option(
    "--resamples",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="Bootstrap resamples of the images: how often each attribute is picked again, and at which ranks "
    "(the 'stable' and 'ranks' columns; seconds, no network runs). 0 skips it.",
)
@click.option(
    "--discriminator-filter",
    "discriminator_threshold",
    type=click.FloatRange(min=0, min_open=True),
    metavar="T",
    help="The official notebook's optional filter (off by default there too): skip a coordinate whose edit moves the "
    "run's discriminator score by more than T (0.2 in the notebook) on any of the first 10 images whose target "
    "logit it raises by more than 0.2. Needs the run folder (an exported model has no discriminator).",
)
@click.option(
    "--unstable-filter",
    type=(click.FloatRange(min=0, min_open=True), click.IntRange(min=0)),
    default=None,
    metavar="T COUNT",
    help="The official notebook's other optional filter (off by default there too): leave out of the selection each "
    "image with more than COUNT logit changes larger than T (0.3 750 in the notebook); sufficiency still counts it.",
)
@click.option("--max-batch", default=256, show_default=True, type=click.IntRange(min=1), help="Edits per forward.")
@click.option("--memory-mb", default=2048.0, show_default=True, type=float, help="Rough memory bound (MiB).")
@click.option("--bf16", is_flag=True, help="bf16 autocast + channels_last (faster; bf16 rounding blurs small effects).")
@click.option("--seed", default=0, show_default=True, type=int, help="Picks the images and their fixed noise.")
@click.option("--no-render", is_flag=True, help="Skip the strips and GIFs.")
@click.option("--frames", default=16, show_default=True, type=click.IntRange(min=2),
              help="GIF sweep positions from each coordinate's minimum to its maximum (the GIF goes there and back: "
              "2N-2 frames); fewer draw faster.")  # fmt: skip
@click.option(
    "--recompute",
    is_flag=True,
    help="Replace an effects.safetensors in --out made from other weights, images or settings.",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Reuse the finished chunks an interrupted run of the same command left in --out.",
)
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def attfind_cmd(
    run_dir,
    data,
    num_images,
    top_k,
    out,
    fast,
    shift_size,
    include_rgb,
    threshold,
    resamples,
    discriminator_threshold,
    unstable_filter,
    max_batch,
    memory_mb,
    bf16,
    seed,
    no_render,
    frames,
    recompute,
    resume,
    device,
    quiet,
):
    """Find the StyleSpace attributes that move the classifier, per class; writes effects, attributes, pictures.

    Several processes: `torchrun --nproc_per_node=N -m stylex attfind ...` (each computes the effects of its share
    of the images; rank 0 writes the same files as one process would).
    """

    from stylex.attfind import run_attfind
    from stylex.training.distributed import process_group

    if not (0 < shift_size < math.inf and 0 < memory_mb < math.inf):  # NaN fails both
        raise StylexError(f"--shift-size and --memory-mb must be finite positive numbers, got {shift_size:g} and "
                          f"{memory_mb:g}.")  # fmt: skip
    out = _out_dir(run_dir, out, "attfind")
    with process_group(device) as dist:
        with _rank_messages(dist):
            result = run_attfind(
                run_dir,
                data,
                out,
                num_images=num_images,
                top_k=top_k,
                fast=fast,
                shift_size=shift_size,
                include_rgb=include_rgb,
                threshold=threshold,
                resamples=resamples,
                discriminator_threshold=discriminator_threshold,
                unstable_filter=unstable_filter,
                max_batch=max_batch,
                memory_mb=memory_mb,
                precision="bf16" if bf16 else "fp32",
                channels_last=bf16,
                seed=seed,
                render=not no_render,
                num_frames=frames,
                recompute=recompute,
                resume=resume,
                device=str(dist.device(device)),
                quiet=quiet,
            )
    if not dist.is_main:
        return
    assert result is not None  # run_attfind returns None on the other ranks only
    stats = result.stats
    if stats.get("reused_effects"):
        click.echo(f"reused the effects in {out / 'effects.safetensors'} (pass --recompute to redo them)")
    else:
        line = f"effects: {stats['mode']} mode, {stats['num_images']} images, {stats['seconds_per_image']:.2f} s/image"
        if stats.get("fast"):
            line += f"; first-order estimate kept {stats['estimate_top10_overlap']:.0%} of the exact top-10"
        click.echo(line)
    click.echo(result.summary(max_classes=SUMMARY_CLASSES))
    click.echo(f"wrote {out / 'attributes.json'}")


@main.command("baseline")
@click.option("--model", "run_dir", required=True, type=MODEL, help=MODEL_HELP)
@click.option(
    "--method",
    required=True,
    type=click.Choice(["wu", "random"]),
    help="wu: Wu et al.'s StyleSpace detector (class-typical mean styles vs the mean; as in their paper, on a model "
    "trained without the classifier: `stylex train --set conditional=false --set cls_weight=0 --set "
    "perceptual_weight=0`); random: random "
    "coordinates and directions.",
)
@click.option("--data", type=_Path(exists=True), help="Images (default: the run's own data).")
@click.option("--num-images", default=250, show_default=True, type=click.IntRange(min=2), help="N images (seeded).")
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(min=1), help="Attributes per class.")
@click.option("--seed", default=0, show_default=True, type=int, help="Picks the images (as `stylex attfind --seed`).")
@click.option("--out", type=_OutPath(file_okay=False), help="Output folder (default RUN/<method>).")
@click.option(
    "--include-rgb/--no-include-rgb",
    default=None,
    help="Search the toRGB styles too (colour attributes: a tint, a background colour); not in the paper, "
    "which searches the modulated-conv styles only. Default: on for a model trained with tint styles "
    "(--set model.tint_styles=N), off otherwise.",
)
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def baseline_cmd(run_dir, method, data, num_images, top_k, seed, out, include_rgb, device, quiet):
    """A baseline explanation on the images AttFind would use: attributes.json with flip rates and sufficiency@K,
    to compare with `stylex attfind` (and to pass to `stylex evaluate --attributes`)."""
    from stylex.attfind.baselines import run_baseline

    out = _out_dir(run_dir, out, method)
    result = run_baseline(run_dir, method, data, out, num_images=num_images, top_k=top_k, seed=seed,
                          include_rgb=include_rgb, device=device, quiet=quiet)  # fmt: skip
    click.echo(result.summary(max_classes=SUMMARY_CLASSES))
    click.echo(f"wrote {out / 'attributes.json'}")


@main.command("explain")
@click.option("--model", "run_dir", required=True, type=MODEL, help=MODEL_HELP)
@click.option(
    "--attributes", "attributes_dir", required=True, type=_Path(exists=True, file_okay=False),
    help="The `stylex attfind` output folder.",
)  # fmt: skip
@click.option("--image", "images", multiple=True, type=_Path(exists=True),
              help="An image file to explain, or a folder of them; repeatable.")  # fmt: skip
@click.option("--index", "indices", multiple=True, type=click.IntRange(min=0),
              help="Or an index into the data AttFind used (or --data); repeatable.")  # fmt: skip
@click.option("--data", type=_Path(exists=True), help="Dataset for --index (default: AttFind's).")
@click.option("--out", required=True, type=_OutPath(file_okay=False), help="Output folder.")
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    type=click.Choice(["independent", "subset", "class"]),
    help="Repeatable; default all three.",
)
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Most edits per strategy.")
@click.option("--target", help="Class to move toward: a class name, else an index; default the most likely other "
              "class.")  # fmt: skip
@click.option("--fast", type=click.IntRange(min=1), metavar="M", help="Fast-mode effects for a new image.")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def explain_cmd(run_dir, attributes_dir, images, indices, data, out, strategies, top_k, target, fast, device, quiet):
    """Explain images: the style edits that move each toward another class, as PNG sequences and JSON.

    One image in all (--image FILE, --index I, or a folder holding one) is explained into OUT itself:
    explanation.json and a PNG per strategy.
    Several (--image and --index repeated, or --image FOLDER) are explained with one load of the model, each into
    OUT/<name>/ (the file's name without its suffix, under its class folder for a folder with class folders:
    OUT/<class>/<name>/; index-<i> for an index), with OUT/explanations.json listing them; an image
    that already is the --target class is skipped, and listed with the reason. What an earlier explain wrote into
    OUT is replaced; OUT may not lie inside an input folder, nor inside the image folder of the run or of AttFind.
    """
    from stylex.explain.run import SUMMARY_FILE, explain_images

    if not images and not indices:
        raise click.UsageError("pass --image FILE (or FOLDER) or --index I; each may be repeated.")
    reports = explain_images(
        run_dir,
        attributes_dir,
        out,
        images=images,
        indices=indices,
        data=data,
        strategies=tuple(strategies) or ("independent", "subset", "class"),
        top_k=top_k,
        target=target,
        fast=fast,
        device=device,
        quiet=quiet,
    )
    several = len(reports) > 1
    for report in reports:
        lead = f"{report['source']}: " if several else ""
        if "error" in report:
            click.echo(f"{lead}skipped ({report['error']})")
        for name, e in report.get("explanations", {}).items():
            names = e.class_names
            click.echo(
                f"{lead}{name}: {names[e.original_class]} -> {names[e.target_class]} {e.outcome}: "
                + ", ".join(st.describe() for st in e.steps)
            )
        for name, why in report["skipped"].items():
            click.echo(f"{lead}{name}: skipped ({why})")
    click.echo(f"wrote {Path(out) / SUMMARY_FILE if several else out}")


# ------------------------------------------------------------------------------------------------ report / serve
@main.command("report")
@_model_argument
@click.option("--out", required=True, type=_OutPath(), help="Report folder (index.html + images); replaced if it "
              "holds an earlier report.")  # fmt: skip
@click.option("--attributes", "attributes_dir", type=_Path(exists=True, file_okay=False),
              help="The `stylex attfind` output folder (default RUN/attfind).")  # fmt: skip
@click.option("--data", type=_Path(exists=True), help="Images (default: the run's own data).")
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(min=1), help="Attributes per class.")
@click.option("--slider-images", default=4, show_default=True, type=click.IntRange(min=1),
              help="Images each attribute's slider moves.")  # fmt: skip
@click.option("--frames", default=7, show_default=True, type=click.IntRange(min=3), help="Slider frames (odd).")
@click.option("--explanations", default=3, show_default=True, type=click.IntRange(min=0),
              help="Image-specific explanations shown.")  # fmt: skip
@click.option("--no-generate", is_flag=True, help="Do not make missing reconstruction figures, strips or animations.")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--redact-paths", is_flag=True, help="Name folders by their last name only, not by this machine's "
              "absolute paths, and images by their index only, not their file names (which may name patients): for "
              "a report to share.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bars.")
def report_cmd(run_dir, out, attributes_dir, data, top_k, slider_images, frames, explanations, no_generate, device,
               redact_paths, quiet):  # fmt: skip
    """Write a self-contained HTML report of a run (opens from disk, no network): data, training, reconstructions,
    attributes with sliders, explanations and the commands that made the run."""
    from stylex.explain.report import write_report

    if frames % 2 == 0:
        raise StylexError(f"--frames must be odd (the middle frame is the unedited image), got {frames}.")
    index = write_report(
        run_dir,
        out,
        attributes_dir,
        data=data,
        top_k=top_k,
        num_slider_images=slider_images,
        num_frames=frames,
        num_explanations=explanations,
        generate=not no_generate,
        device=device,
        quiet=quiet,
        redact_paths=redact_paths,
    )
    click.echo(f"report: {index}  (open {index.resolve().as_uri()} in a browser)")


@main.command("serve")
@_model_argument
@click.option("--attributes", "attributes_dir", type=_Path(exists=True, file_okay=False),
              help="The `stylex attfind` output folder (default RUN/attfind).")  # fmt: skip
@click.option("--data", type=_Path(exists=True), help="Images to offer (default: AttFind's data).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; keep a loopback address "
              "unless others should reach the viewer.")  # fmt: skip
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 = any free port.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another name (or address) browsers may use to reach the viewer, e.g. a DNS alias, or NAME:PORT "
              "for a tunnel or proxy on another port (localhost:9000); repeatable. Requests addressed to other "
              "names are refused.")  # fmt: skip
@click.option("--token", envvar="STYLEX_VIEWER_TOKEN", show_envvar=True, metavar="TOKEN",
              help="The token browsers must present (16-256 letters, digits, . _ ~ -); default: a random one, "
              "printed in the viewer's address. Prefer the environment variable: a command line is visible to "
              "the machine's other users.")  # fmt: skip
@click.option("--no-token", is_flag=True, help="Serve without a token (overrides STYLEX_VIEWER_TOKEN): anyone who "
              "can reach the address can use it.")  # fmt: skip
@click.option("--num-images", default=12, show_default=True, type=click.IntRange(min=0), help="Images offered.")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--quiet", is_flag=True, help="Do not log requests.")
def serve_cmd(run_dir, attributes_dir, data, host, port, allowed_hosts, token, no_token, num_images, device, quiet):
    """Serve a live viewer: pick or upload an image, move the top attributes, watch the classifier (Ctrl-C stops).

    Open the address it prints: it carries a token (as Jupyter's does), which the browser then keeps in a cookie.
    """
    from stylex.explain.viewer import serve

    from_env = click.get_current_context().get_parameter_source("token") == click.core.ParameterSource.ENVIRONMENT
    if no_token and token and not from_env:  # the flag beats a token exported in the shell
        raise click.UsageError("--no-token and --token contradict each other; drop one.")
    if token and not no_token and from_env:
        from stylex.explain.viewer import check_token

        check_token(token, "STYLEX_VIEWER_TOKEN")
    try:
        serve(run_dir, host, port, attributes_dir, data, num_images, device=device, quiet=quiet,
              allowed_hosts=allowed_hosts, token=None if no_token else token or "auto")  # fmt: skip
    except KeyboardInterrupt:
        click.echo("viewer stopped.")


# ------------------------------------------------------------------------------------------------ evaluate
@main.command("evaluate")
@click.option("--model", "run_dir", required=True, type=MODEL, help=MODEL_HELP)
@click.option(
    "--attributes", "attributes_dir", required=True, type=_Path(exists=True, file_okay=False),
    help="Folder with attributes.json: `stylex attfind --out`, or a baseline's.",
)  # fmt: skip
@click.option("--out", required=True, type=_OutPath(file_okay=False), help="Folder for metrics.json.")
@click.option("--data", type=_Path(exists=True), help="Images (default: those the attributes were found on).")
@click.option("--k", "ks", default="3,5,10", show_default=True, help="The K of sufficiency@K and precision@K, etc.")
@click.option("--num-images", type=click.IntRange(min=2), help="Images (default: as many as AttFind used).")
@click.option("--seed", type=int, help="Picks the images and their noise (default: AttFind's).")
@click.option("--num-scenes", default=256, show_default=True, type=click.IntRange(min=1),
              help="Fresh scenes for the true importance of each factor (synthetic data only).")  # fmt: skip
@click.option("--num-values", default=4, show_default=True, type=click.IntRange(min=1),
              help="Interventions per scene on a continuous factor.")  # fmt: skip
@click.option("--used-threshold", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Decision-change rate at which a factor counts as truly used.")  # fmt: skip
@click.option("--min-change", default=0.1, show_default=True, type=click.FloatRange(min=0),
              help="Normalised change an attribute needs to have a dominant factor.")  # fmt: skip
@click.option("--read-images", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images per class on which the oracle reads each attribute.")  # fmt: skip
@click.option("--reach", "reach_images", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also edit every conv coordinate alone on this many images and report, per factor, the largest "
                   "change one coordinate makes (synthetic data; 0 = off; ~2 min for 32 images at 32 px).")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP, callback=_check_device)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate_cmd(run_dir, attributes_dir, out, data, ks, num_images, seed, num_scenes, num_values, used_threshold,
                 min_change, read_images, reach_images, device, quiet):  # fmt: skip
    """Measure an explanation: sufficiency@K, consistency, reconstruction and, on synthetic shapes, whether the
    attributes name the factors the classifier really uses (precision, coverage, purity, rank correlation)."""
    from stylex.metrics.evaluate import METRICS_FILE, evaluate_run, format_metrics

    try:
        k_values = [int(k) for k in ks.split(",") if k.strip()]
    except ValueError:
        k_values = []
    if not k_values or min(k_values) < 1:
        raise StylexError(f"--k must list whole numbers >= 1 separated by commas, e.g. 3,5,10; got {ks!r}.")
    metrics = evaluate_run(
        run_dir,
        attributes_dir,
        out,
        data=data,
        ks=k_values,
        num_images=num_images,
        seed=seed,
        num_scenes=num_scenes,
        num_values=num_values,
        used_threshold=used_threshold,
        min_change=min_change,
        max_read_images=read_images,
        reach_images=reach_images,
        device=device,
        quiet=quiet,
    )
    click.echo(format_metrics(metrics))
    click.echo(f"wrote {Path(out) / METRICS_FILE}")


if __name__ == "__main__":
    main()
