"""Command line: argv -> validation -> one library call per subcommand. The only module that touches argv."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stylex.errors import StylexError

PRESET_HELP = "tiny (tests), shapes-32, mnist-32, plant-64"


class _Group(click.Group):
    """Turns a StylexError into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StylexError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; the last complete checkpoint is kept (continue with --resume).", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stylex")
def main():
    """StylEx: explain an image classifier with a GAN trained in its StyleSpace.

    Stages: `data synth` -> `train-classifier` -> `train` -> `reconstruct`; `demo` runs the chain.
    """


# ------------------------------------------------------------------------------------------------ data
@main.group()
def data():
    """Datasets: write the synthetic shapes set with ground-truth factors."""


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New folder to write.")
@click.option("--num-images", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--resolution", default=32, show_default=True, type=click.IntRange(min=8))
@click.option("--seed", default=0, show_default=True, type=int)
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
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
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
        click.option("--classifier-weights", type=click.Path(dir_okay=False), help="safetensors state dict."),
        click.option("--classifier-input-size", type=int, help="Square input size the classifier expects."),
        click.option("--classifier-range", help="Input value range LO,HI, e.g. 0,1 or 0,255 (default -1,1)."),
        click.option(
            "--classifier-mean", help="Per-channel mean after the range, e.g. 0.485,0.456,0.406, or imagenet."
        ),
        click.option("--classifier-std", help="Per-channel std after the range, e.g. 0.229,0.224,0.225, or imagenet."),
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
    return load_classifier(kw["classifier"], kw.get("classifier_weights"), spec, device=device, resolution=resolution)


@main.command("train-classifier")
@click.option("--data", required=True, type=click.Path(), help="Labelled image folder (class subfolders) or .npz.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the classifier.")
@click.option("--resolution", default=32, show_default=True, type=int, help="Image size the classifier sees.")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--width", default=32, show_default=True, type=click.IntRange(min=4))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--hflip/--no-hflip", default=False, show_default=True, help="Random horizontal flips.")
@click.option("--val-fraction", default=0.1, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", is_flag=True)
def train_classifier_cmd(
    data, out, resolution, epochs, width, batch_size, lr, hflip, val_fraction, seed, device, quiet
):
    """Train the built-in SmallCNN classifier; writes config.json, weights.safetensors, metrics.json."""
    from stylex.classifier import ClassifierTrainConfig, train_classifier
    from stylex.data import load_dataset

    ds = load_dataset(data, resolution=resolution, progress=not quiet)
    if ds.labels is None:
        raise StylexError(f"{data} has no labels; a classifier needs class subfolders or an npz with 'labels'.")
    train_set, val_set = ds.split(val_fraction, seed)
    cfg = ClassifierTrainConfig(width=width, epochs=epochs, batch_size=batch_size, lr=lr, hflip=hflip, seed=seed)
    metrics = train_classifier(train_set, val_set, out, cfg, device=device, quiet=quiet)
    click.echo(
        f"validation accuracy {metrics['val_accuracy']:.3f} (train {metrics['train_accuracy']:.3f}); wrote {out}"
    )


# ------------------------------------------------------------------------------------------------ stylex
@main.command("train")
@click.option("--data", required=True, type=click.Path(), help="Image folder or .npz (labels not needed).")
@_classifier_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--preset", "preset_name", default="shapes-32", show_default=True, help=PRESET_HELP)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set lr_g=0.001 --set model.w_dim=64 (see stylex.config.TrainConfig).",
)
@click.option("--max-minutes", type=float, help="Wall-clock budget (shorthand for --set max_minutes=...).")
@click.option("--max-steps", type=int, help="Step budget (shorthand for --set max_steps=...).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", is_flag=True)
def train_cmd(data, out, preset_name, overrides, max_minutes, max_steps, resume, device, quiet, **kw):
    """Train StylEx (G, E, D) for a frozen classifier; checkpoints, stats.jsonl and samples go into --out."""
    from stylex.config import parse_override, preset
    from stylex.pipeline import train_stylex

    values = dict(parse_override(o) for o in overrides)
    if max_minutes is not None:
        values["max_minutes"] = max_minutes
    if max_steps is not None:
        values["max_steps"] = max_steps
        values.setdefault("max_minutes", 0)
    config = preset(preset_name, **values)
    classifier = _load_classifier(kw, config.model.resolution, device)
    result = train_stylex(data, classifier, out, config, resume=resume, device=device, quiet=quiet)
    click.echo(f"trained to step {result.step} in {result.seconds / 60:.1f} min; run folder {out}")


@main.command("reconstruct")
@click.option("--model", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Run folder.")
@click.option("--data", type=click.Path(), help="Images to reconstruct (default: the run's own data).")
@click.option("--split", type=click.Choice(["val", "all"]), default="val", show_default=True)
@click.option("--num-images", default=256, show_default=True, type=click.IntRange(min=2))
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default RUN/reconstruct).")
@click.option("--device", default="cpu", show_default=True)
def reconstruct_cmd(run_dir, data, split, num_images, out, device):
    """Encode and regenerate images: a grid, and consistency / L1 / identity beside two trivial baselines."""
    from stylex.pipeline import format_report, reconstruct

    report = reconstruct(run_dir, data, out, num_images=num_images, split=split, device=device)
    click.echo(format_report(report))
    click.echo(f"grid: {report['grid']}")


@main.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--minutes", default=5.0, show_default=True, type=float, help="StylEx training budget.")
@click.option("--quiet", is_flag=True)
def demo_cmd(out, minutes, quiet):
    """Synthetic shapes -> classifier -> short StylEx run -> reconstruction grid and figures."""
    from stylex.pipeline import demo

    demo(Path(out), minutes=minutes, quiet=quiet)


if __name__ == "__main__":
    main()
