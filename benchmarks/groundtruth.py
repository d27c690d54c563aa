"""Ground-truth benchmark: do the explanations name the factors the classifier really uses?

Usage (the lead's full run; see "Durations" below):

    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/groundtruth.py --root runs/groundtruth --minutes 30 \\
        > runs/groundtruth.log 2>&1 &

Rehearsal (16 px, a handful of steps, about 2-3 minutes):

    .venv/bin/python benchmarks/groundtruth.py --root /tmp/gt-rehearsal --preset tiny --steps 5 --num-images 200 \\
        --eval-images 64 --attfind-images 12 --fast 8 --num-scenes 32 --read-images 8 --classifier-epochs 1

Two scenarios by default, each with every seed (default 0, 1, 2):

- ``two-factor``: the label is ``shape==circle or obj_hue<0.25`` (balanced: 1/3 + 2/3 x 1/4 = 1/2); both factors
  cause the label, nothing else does.
- ``shortcut``: the label is ``obj_size>0.375`` (balanced), and in the training data ``bg_hue`` agrees with the
  label 95% of the time (``--correlate bg_hue=0.95``). Measured (seed 0, 3,000 images, 4 epochs): the classifier
  learns the size and partly the background: decision-change rates obj_size 0.45, bg_hue 0.16 (others <= 0.06),
  accuracy 0.99 on its own validation split but 0.86 on uncorrelated images.
- ``shortcut-shape`` (not run by default): the label is ``shape==circle`` with the same ``bg_hue`` shortcut. With
  4 epochs the SmallCNN learns the shape alone and ignores the background (bg_hue 0.007; accuracy 0.998 on
  uncorrelated images), so there is no shortcut to find; with 1 epoch it learns the background alone (bg_hue
  0.53, shape 0.01; accuracy 0.51 on uncorrelated images). Shape is easy for this classifier, size is not, which
  is why ``shortcut`` uses the size.

Per (scenario, seed), in ``ROOT/<scenario>/seed<k>/``:

1. ``data/`` (the training set, with the shortcut) and ``eval-data/`` (the same rule without any correlation, other
   images): every explanation and metric uses ``eval-data``; true importance renders its own independent scenes.
2. ``clf/``: the built-in SmallCNN trained on ``data`` (and its accuracy on ``eval-data``).
3. Two trainings, each a background process with a wall-clock budget (``--minutes``) or a step budget
   (``--steps``), logging to ``<run>.log``: ``stylex/`` (StylEx, the preset as it is) and ``plain/`` (the
   unconditioned baseline model: ``conditional=false``, ``cls_weight=0``, ``perceptual_weight=0``). ``--jobs``
   trainings run at once (default 1: these machines have 2 cores).
4. Explanations: AttFind on both models (``stylex attfind --fast M``), Wu et al.'s detector on both, random
   coordinates on StylEx; then ``stylex evaluate`` of each into ``<model>/<method>/eval/metrics.json``.

Everything finished is reused: a training whose ``benchmark.json`` records the same budget (steps or minutes, the
``--set`` and ``--stylex-set`` overrides, the model it started from) is skipped, one with a checkpoint and another
budget is resumed (``--resume``; ``stylex train`` refuses, with a sentence, to resume a run with other overrides), one
still running (its ``benchmark.pid`` is alive) is waited for, not started twice; explanations and metrics whose files
exist are kept (``--redo-explanations`` recomputes them, ``--redo-metrics`` the metrics alone). Re-running the command
after an interruption continues where it stopped. The trainings run in their own sessions, so stopping this script
(Ctrl-C) leaves a running training running; the next invocation waits for it, or stop it with
``kill $(cat ROOT/<scenario>/seed<k>/<model>.benchmark.pid)``.

The table (``ROOT/table.md``, also printed) gives mean +- std over seeds per scenario and method: precision@5,
coverage@5, mean purity@5, Spearman@10, sufficiency@10, the shortcut's best rank (``bg_hue``, shortcut scenario)
and reconstruction consistency.

Durations on the 2-core CPU machine (shapes-32, measured with OMP_NUM_THREADS=1 beside another training): each
training takes its budget (``--minutes``; 30 suggested: the README's 10-minute run reached identity 0.90); the
classifier ~1 min; AttFind ``--fast 64`` on 100 images ~1.2 min per model; a baseline ~0.5 min; each evaluation
~20 s; so about 2 x minutes + 7 min per (scenario, seed): ~6.7 h for 2 scenarios x 3 seeds at 30 minutes, run
sequentially (``--jobs 1``). On a GPU machine pass ``--device cuda`` (and more ``--jobs`` if memory allows).
Measured for the README's table (``--steps 1800 --threads 2``, nothing else running most of the time): StylEx
8.7-9.3 min, the unconditioned model 6.7 min, explanations and metrics about 2.7 min per (scenario, seed); 137.5 min
in all.

Fine-tuning an earlier root (``--init-root ROOT``): the data, classifiers and unconditioned models are linked from
ROOT, and each StylEx model starts from ROOT's (``stylex train --init-from``) with ``--stylex-set`` overrides (the
StylEx model alone), e.g. the README's swap table:

    python benchmarks/groundtruth.py --root runs/groundtruth-swap --init-root runs/groundtruth-cond --steps 3200 \\
        --stylex-set cond_rgb=false --stylex-set cond_sparsity=0.15 --stylex-set swap_weight=1.0 --threads 2

Measured: each fine-tune about 20 min on the CPU with 2 threads (0.4 s/step with the swap term); explanations and
metrics of the three StylEx methods 5.9 min for all six cells. ``--prepare-only`` renders the data (and trains any
missing classifier) and stops, e.g. on a GPU machine before ``benchmarks/gpu_train.sh``.

Other StylEx models on the same data (``--link-root ROOT``): the data, classifiers and unconditioned models are
linked from ROOT as with ``--init-root``, but each StylEx model trains from scratch, e.g. with other sizes
(``--stylex-set model.channel_max=128``), or with ``--stylex-from-plain`` starts from ROOT's unconditioned model
(a plain StyleGAN2 + encoder, fine-tuned as StylEx). ``--plain-only`` trains a base ROOT's unconditioned models
alone (with ``--link-root``, on the linked data and classifiers), e.g. with ``--set model.tint_styles=3`` for the
README's best recipe. ``--include-rgb`` lets AttFind and the baselines search the
toRGB styles too. Models trained elsewhere (a GPU) are used as they are when their
``stylex.benchmark.json`` records the budget that the command line gives; ``--adopt DIR`` writes that marker for
the archives of ``benchmarks/gpu_groundtruth.sh`` (DIR/<scenario>-seed<k>.tgz), after checking each run's
config.json against the command line (training settings, classifier fingerprint, the model it started from).

Every invocation that computes something is recorded in ``ROOT/runs.json`` (its command line, whether it searched
the toRGB styles, the root it links to), and ``table.md`` starts with those commands in a comment, each followed by
the recorded commands of the root it links to, so a table says how it was made, from the data on.
``--table-only`` takes ``--include-rgb`` from that record when the command line does not say
(``--no-include-rgb`` asks for the conv-only results of a root that has both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = {
    "two-factor": {"rule": "shape==circle or obj_hue<0.25", "correlate": None, "shortcut": None},
    "shortcut": {"rule": "obj_size>0.375", "correlate": {"bg_hue": 0.95}, "shortcut": "bg_hue"},
    "shortcut-shape": {"rule": "shape==circle", "correlate": {"bg_hue": 0.95}, "shortcut": "bg_hue"},
}
DEFAULT_SCENARIOS = ["two-factor", "shortcut"]
UNCONDITIONED = ["conditional=false", "cls_weight=0", "perceptual_weight=0"]
METHODS = [  # (label in the table, model folder, method folder)
    ("StylEx + AttFind", "stylex", "attfind"),
    ("Wu et al. (unconditioned)", "plain", "wu"),
    ("AttFind (unconditioned)", "plain", "attfind"),
    ("random (StylEx)", "stylex", "random"),
    ("Wu et al. (StylEx model)", "stylex", "wu"),
]


def method_folder(method: str, include_rgb: bool) -> str:
    """The folder of a method's attributes in its model folder: `--include-rgb` results beside, not over, the
    conv-only ones (a linked unconditioned model keeps both)."""
    return f"{method}-rgb" if include_rgb else method


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stylex_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "stylex", *[str(a) for a in args]]


def run_checked(cmd: list[str], env: dict[str, str], log_file: Path | None = None) -> None:
    """Run a command in the foreground; on failure print its output's tail and stop."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if log_file is not None:
        log_file.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{tail}")


# ------------------------------------------------------------------------------------------------ cells
@dataclass
class Cell:
    scenario: str
    seed: int
    root: Path

    @property
    def name(self) -> str:
        return f"{self.scenario}/seed{self.seed}"


def prepare_cell(cell: Cell, args, resolution: int) -> None:
    """Data, evaluation data and the classifier (foreground: a minute or two each at 32 px)."""
    import torch

    from stylex.classifier import ClassifierTrainConfig, load_classifier, train_classifier
    from stylex.data import load_dataset, write_synth

    spec = SCENARIOS[cell.scenario]
    data, eval_data, clf = cell.root / "data", cell.root / "eval-data", cell.root / "clf"
    if args.init_root is not None or args.link_root is not None:  # data, classifier, unconditioned model: linked
        source = init_cell(cell, args)
        if args.init_root is not None and not (source / "stylex" / "weights.safetensors").is_file():
            raise SystemExit(f"{cell.name}: --init-root has no StylEx run to start from ({source / 'stylex'})")
        cell.root.mkdir(parents=True, exist_ok=True)
        names = ["data", "eval-data", "clf", "classifier.json"]
        if not args.plain_only:  # --plain-only trains the unconditioned models anew (e.g. with other --set sizes)
            names += ["plain", "plain.benchmark.json"]
        for name in names:
            link = cell.root / name
            if not link.exists() and (source / name).exists():
                link.symlink_to((source / name).resolve())
    if not (data / "factors.csv").is_file():
        log(f"{cell.name}: rendering {args.num_images} training images ({spec['rule']}, correlate {spec['correlate']})")
        write_synth(data, args.num_images, resolution, cell.seed, spec["rule"], spec["correlate"], True, False)
    if not (eval_data / "factors.csv").is_file():
        log(f"{cell.name}: rendering {args.eval_images} evaluation images (no correlation)")
        write_synth(eval_data, args.eval_images, resolution, 10_000 + cell.seed, spec["rule"], None, True, False)
    if not (clf / "weights.safetensors").is_file():
        log(f"{cell.name}: training the classifier ({args.classifier_epochs} epochs)")
        train_set, val_set = load_dataset(data, resolution, progress=False).split(0.1, cell.seed)
        config = ClassifierTrainConfig(epochs=args.classifier_epochs, seed=cell.seed)
        train_classifier(train_set, val_set, clf, config, quiet=True)
    info = cell.root / "classifier.json"
    if not info.is_file():
        classifier = load_classifier(str(clf), resolution=resolution)
        ds = load_dataset(eval_data, resolution, progress=False)
        with torch.no_grad():
            pred = torch.cat(
                [classifier(ds.tensors(list(range(a, min(a + 256, len(ds)))))) for a in range(0, len(ds), 256)]
            )
        acc = float((pred.argmax(1).numpy() == ds.labels).mean())
        val = json.loads((clf / "metrics.json").read_text()).get("val_accuracy")
        info.write_text(json.dumps({"val_accuracy": val, "eval_accuracy_uncorrelated": acc}, indent=2))
    figures = json.loads(info.read_text())
    log(f"{cell.name}: classifier val accuracy {figures['val_accuracy']}, on uncorrelated data "
        f"{figures['eval_accuracy_uncorrelated']:.3f}")  # fmt: skip


def init_cell(cell: Cell, args) -> Path:
    """The same (scenario, seed) under --init-root (or --link-root)."""
    return (args.init_root or args.link_root) / cell.scenario / f"seed{cell.seed}"


# ------------------------------------------------------------------------------------------------ trainings
@dataclass
class Training:
    cell: Cell
    kind: str  # "stylex" or "plain"
    process: subprocess.Popen | None = None
    started: float = 0.0

    @property
    def out(self) -> Path:
        return self.cell.root / self.kind

    @property
    def marker(self) -> Path:
        return self.cell.root / f"{self.kind}.benchmark.json"

    @property
    def pid_file(self) -> Path:
        return self.cell.root / f"{self.kind}.benchmark.pid"

    def budget(self, args) -> dict:
        budget = {"steps": args.steps} if args.steps else {"minutes": args.minutes}
        if args.set:  # both models; left out when empty, so that markers written before it was recorded still match
            budget["set"] = args.set
        if self.kind == "stylex" and args.stylex_set:
            budget["stylex_set"] = args.stylex_set
        if self.kind == "stylex" and args.init_root is not None:
            budget["init_from"] = str(init_cell(self.cell, args).resolve() / "stylex")
        if self.kind == "stylex" and args.stylex_from_plain:
            budget["init_from"] = str(init_cell(self.cell, args).resolve() / "plain")
        return budget

    def done(self, args) -> bool:
        if not self.marker.is_file():
            return False
        return json.loads(self.marker.read_text()).get("budget") == self.budget(args)

    def running_pid(self) -> int | None:
        """The pid of a training of this run that an earlier invocation started and that is still alive."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.is_file() and str(self.out) not in cmdline.read_text().replace("\0", " "):
            return None  # the pid was reused by another program
        return pid

    def command(self, args) -> list[str]:
        c = self.cell.root
        cmd = stylex_cmd("train", "--data", c / "data", "--classifier", c / "clf", "--out", self.out,
                         "--preset", args.preset, "--device", args.device, "--quiet")  # fmt: skip
        cmd += ["--max-steps", args.steps] if args.steps else ["--max-minutes", args.minutes, "--max-steps", 0]
        overrides = UNCONDITIONED + args.set if self.kind == "plain" else args.set + args.stylex_set
        for override in overrides:
            cmd += ["--set", override]
        if (self.out / "weights.safetensors").is_file():
            cmd.append("--resume")
        elif self.kind == "stylex" and (args.init_root is not None or args.stylex_from_plain):
            cmd += ["--init-from", init_cell(self.cell, args) / ("plain" if args.stylex_from_plain else "stylex")]
        return [str(a) for a in cmd]

    def start(self, args, env) -> None:
        cmd = self.command(args)
        log(
            f"{self.cell.name}: training {self.kind} ({self.budget(args)})" + (" resuming" if "--resume" in cmd else "")
        )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cell.root / f"{self.kind}.log", "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            self.process = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(str(self.process.pid))
        self.started = time.time()

    def finished(self, args) -> bool | None:
        """None while running; True when it ended well (marker written); raises when it failed."""
        rc = self.process.poll()
        if rc is None:
            limit = (args.steps * 10 if args.steps else args.minutes * 60 * 1.5) + 900  # generous hard limit
            if time.time() - self.started > limit:
                os.killpg(self.process.pid, 15)
                raise SystemExit(f"{self.cell.name}: training {self.kind} ran past {limit / 60:.0f} min; stopped it.")
            return None
        self.pid_file.unlink(missing_ok=True)
        if rc != 0:
            tail = "\n".join((self.cell.root / f"{self.kind}.log").read_text().splitlines()[-10:])
            raise SystemExit(f"{self.cell.name}: training {self.kind} failed ({rc}):\n{tail}")
        self.marker.write_text(json.dumps({"budget": self.budget(args), "finished": time.ctime()}))
        log(f"{self.cell.name}: training {self.kind} done in {(time.time() - self.started) / 60:.1f} min")
        return True


# Settings of a run that say how it was trained, not what: an adopted run may differ in these (a GPU's own cap on
# minutes, how often it logged or wrote samples, the compiled path).
RUN_CONTROL = {"max_steps", "max_minutes", "log_every", "sample_every", "checkpoint_every", "eval_every",
               "eval_every_minutes", "keep_best", "compile"}  # fmt: skip


def adoption_problems(saved: dict, cell: Cell, args, resolution: int) -> list[str]:
    """How the run whose config.json is `saved` differs from the StylEx model this command line would train for
    `cell`: its training settings (the preset with --set and --stylex-set; RUN_CONTROL aside), the classifier (by
    fingerprint) and the model it started from (the same cell's, by the last three parts of its path)."""
    from stylex.classifier import load_classifier
    from stylex.config import apply_overrides, parse_override, preset

    overrides = dict(parse_override(o) for o in args.set + args.stylex_set)
    expected = json.loads(json.dumps(apply_overrides(preset(args.preset), overrides).to_dict()))  # as config.json
    got = saved.get("train", {})
    problems = [f"{key} is {got.get(key)!r}, the command line gives {value!r}"
                for key, value in expected.items() if key not in RUN_CONTROL and got.get(key) != value]  # fmt: skip
    fingerprint = load_classifier(str(cell.root / "clf"), resolution=resolution).fingerprint()
    if (theirs := saved.get("classifier_fingerprint")) != fingerprint:
        problems.append(f"its classifier's fingerprint is {theirs}, this cell's {fingerprint}")
    start = "plain" if args.stylex_from_plain else "stylex" if args.init_root is not None else None
    want = None if start is None else (cell.scenario, f"seed{cell.seed}", start)
    started = saved.get("init_from")
    if (tuple(Path(started).parts[-3:]) if started else None) != want:
        problems.append(f"it started from {started or 'nothing'}, the command line from "
                        f"{'/'.join(want) if want else 'nothing'}")  # fmt: skip
    return problems


def adopt_run(cell: Cell, args, resolution: int) -> None:
    """--adopt DIR: take this cell's StylEx run from DIR/<scenario>-seed<k>.tgz (as `benchmarks/gpu_groundtruth.sh`
    writes them) instead of training it, once its config.json shows it was trained as the command line says; the
    marker records the command line's budget, the archive and the steps the run made."""
    training = Training(cell, "stylex")
    if training.done(args):
        return
    archive = args.adopt / f"{cell.scenario}-seed{cell.seed}.tgz"
    if not archive.is_file():
        raise SystemExit(f"{cell.name}: --adopt {args.adopt} holds no {archive.name}")
    if training.out.exists():
        raise SystemExit(f"{cell.name}: {training.out} exists with another budget; --adopt fills an empty cell only")
    unpacked = training.out.with_name("stylex.adopting")
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    problems = adoption_problems(json.loads((unpacked / "config.json").read_text()), cell, args, resolution)
    if problems:
        shutil.rmtree(unpacked)
        raise SystemExit(f"{cell.name}: {archive} was not trained as this command line says: " + "; ".join(problems))
    unpacked.rename(training.out)
    steps = json.loads((training.out / "stats.jsonl").read_text().splitlines()[-1]).get("step")
    marker = {"budget": training.budget(args), "finished": time.ctime(), "adopted_from": str(archive.resolve())}
    training.marker.write_text(json.dumps({**marker, "steps_trained": steps}))
    short = f", short of the {args.steps} the budget gives" if args.steps and steps < args.steps else ""
    log(f"{cell.name}: StylEx run adopted from {archive} ({steps} steps{short})")


def run_trainings(trainings: list[Training], args, env) -> None:
    """Start up to args.jobs trainings at once, wait for all; skip finished ones, wait for orphaned ones."""
    pending = [t for t in trainings if not t.done(args)]
    for t in trainings:
        if t.done(args):
            log(f"{t.cell.name}: training {t.kind} already done ({t.budget(args)}), reused")
    for t in pending:  # an earlier invocation's training still running: wait for it
        pid = t.running_pid()
        while pid is not None and t.running_pid() is not None:
            log(f"{t.cell.name}: waiting for the running training {t.kind} (pid {pid})")
            time.sleep(60)
    pending = [t for t in pending if not t.done(args)]
    running: list[Training] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            t = pending.pop(0)
            t.start(args, env)
            running.append(t)
        time.sleep(args.poll)
        running = [t for t in running if not t.finished(args)]


# ------------------------------------------------------------------------------------------------ explanations
def explain_and_evaluate(cell: Cell, args, env) -> None:
    """AttFind, baselines and `stylex evaluate` for both models of one cell (foreground)."""
    import torch

    from stylex.attfind.baselines import run_baseline

    torch.set_num_threads(args.threads)
    eval_data = cell.root / "eval-data"
    common = ["--num-scenes", args.num_scenes, "--read-images", args.read_images, "--k", "3,5,10"]
    for _, model, method in METHODS:
        run_dir = cell.root / model
        folder = run_dir / method_folder(method, args.include_rgb)
        attributes = folder / "attributes.json"
        if args.redo_explanations or not attributes.is_file():
            log(f"{cell.name}: {method} on {model}")
            t0 = time.time()
            if method == "attfind":
                cmd = stylex_cmd("attfind", "--model", run_dir, "--data", eval_data, "--out", folder,
                                 "--num-images", args.attfind_images, "--top-k", args.top_k, "--no-render",
                                 "--recompute", "--quiet", "--device", args.device)  # fmt: skip
                if args.fast:
                    cmd += ["--fast", str(args.fast)]
                if args.include_rgb:
                    cmd.append("--include-rgb")
                run_checked(cmd, env, folder.parent / f"{folder.name}.log")
            else:
                run_baseline(run_dir, method, data=eval_data, out=folder, num_images=args.attfind_images,
                             top_k=args.top_k, seed=0, device=args.device, include_rgb=args.include_rgb)  # fmt: skip
            log(f"{cell.name}: {method} on {model} took {time.time() - t0:.0f} s")
        metrics = folder / "eval" / "metrics.json"
        if args.redo_explanations or args.redo_metrics or not metrics.is_file():
            t0 = time.time()
            cmd = stylex_cmd("evaluate", "--model", run_dir, "--attributes", folder, "--out", folder / "eval",
                             "--device", args.device, *common)  # fmt: skip
            run_checked(cmd, env, folder / "evaluate.log")
            log(f"{cell.name}: evaluated {method} on {model} in {time.time() - t0:.0f} s")


# ------------------------------------------------------------------------------------------------ table
def _mean_std(values: list[float]) -> str:
    """Mean ± sample std of the values that exist; fewer than the row's n (a seed where the figure is n/a, e.g.
    coverage when the classifier truly uses no factor) says how many with "(n=k)"."""
    given = [v for v in values if v is not None]
    if not given:
        return "n/a"
    text = f"{given[0]:.3f}" if len(given) == 1 else f"{statistics.mean(given):.3f} ± {statistics.stdev(given):.3f}"
    return text if len(given) == len(values) else f"{text} (n={len(given)})"


def shortcut_rank(metrics: dict, factor: str, k: str = "10") -> str:
    """The best rank of `factor` among the top-k attributes, with that attribute's resampled ranks [q1-q3] when its
    attributes file has them (AttFind), e.g. "4 [3-6]"; "-" when no attribute names the factor."""
    rank = metrics["groundtruth"]["scores"][k]["first_rank"][factor]
    if rank is None:
        return "-"
    try:
        classes = json.loads(Path(metrics["attributes"]).read_text())["classes"]
    except (OSError, KeyError, ValueError):
        return str(rank)
    for a in metrics["groundtruth"]["attributes"]:
        if a["dominant"] == factor and a["rank"] == rank:
            quartiles = classes[a["class_index"]].get("resampled_ranks")
            if quartiles:
                q1, _, q3 = quartiles[rank - 1]
                return f"{rank} [{q1}]" if q1 == q3 else f"{rank} [{q1}-{q3}]"
    return str(rank)


RUNS_FILE = "runs.json"


def record_run(
    root: Path, argv: list[str], include_rgb: bool, explains: bool = True, linked: Path | None = None
) -> None:
    """Append this command line to ROOT/runs.json (once: a rerun of the same command adds nothing).

    Args:
        explains: whether the command makes explanations (not --prepare-only or --plain-only).
        linked: the --link-root or --init-root it builds on, whose own record the table cites.
    """
    runs = recorded_runs(root)
    entry = {"argv": list(argv), "include_rgb": bool(include_rgb), "explains": explains}
    if linked is not None:
        entry["linked"] = str(Path(linked).resolve())
    if all(r["argv"] != entry["argv"] for r in runs):
        runs.append(entry)
        root.mkdir(parents=True, exist_ok=True)
        (root / RUNS_FILE).write_text(json.dumps(runs, indent=1) + "\n")


def recorded_runs(root: Path) -> list[dict]:
    path = root / RUNS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def recorded_include_rgb(root: Path) -> bool | None:
    """Whether the recorded runs of ROOT searched the toRGB styles: None if nothing is recorded; an error if the
    record holds both kinds (then the command line has to choose)."""
    kinds = {r["include_rgb"] for r in recorded_runs(root) if r.get("explains", True)}
    if len(kinds) > 1:
        raise SystemExit(
            f"{root / RUNS_FILE} records runs with and without --include-rgb: pass --include-rgb or --no-include-rgb"
        )
    return kinds.pop() if kinds else None


def _commands(runs: list[dict], seen: set[str] | None = None) -> list[str]:
    """The recorded command lines, each followed by those of the root it links to (recursively, once each)."""
    seen = set() if seen is None else seen
    out = []
    for r in runs:
        out.append("     benchmarks/groundtruth.py " + " ".join(r["argv"]))
        linked = r.get("linked")
        if linked and linked not in seen:
            seen.add(linked)
            out += _commands(recorded_runs(Path(linked)), seen)
    return out


def table(cells: list[Cell], root: Path, include_rgb: bool = False) -> str:
    """Markdown: per scenario, mean ± std over seeds of each method's figures, after a comment with the recorded
    commands that made ROOT (benchmarks/groundtruth.py's arguments)."""
    lines = []
    runs = [r for r in recorded_runs(root) if r["include_rgb"] == include_rgb and r.get("explains", True)]
    if runs:
        lines += [f"<!-- Made by (recorded in {RUNS_FILE}):\n" + "\n".join(_commands(runs)) + " -->"]
    for scenario in dict.fromkeys(c.scenario for c in cells):
        spec = SCENARIOS[scenario]
        group = [c for c in cells if c.scenario == scenario]
        lines += [
            f"### {scenario}: `{spec['rule']}`" + (f", correlate {spec['correlate']}" if spec["correlate"] else "")
        ]
        facts = []
        for c in group:
            clf = json.loads((c.root / "classifier.json").read_text()) if (c.root / "classifier.json").is_file() else {}
            m = c.root / "stylex" / method_folder("attfind", include_rgb) / "eval" / "metrics.json"
            used = ""
            if m.is_file():
                ti = json.loads(m.read_text())["groundtruth"]["true_importance"]
                used = ", ".join(f"{f} {ti['flip_rate'][f]:.2f}" for f in ti["used"]) or "none"
            acc = clf.get("eval_accuracy_uncorrelated")
            acc = "n/a" if acc is None else f"{acc:.3f}"
            facts.append(f"seed {c.seed}: classifier accuracy on uncorrelated data {acc}; truly used (decision-change "
                         f"rate): {used}")  # fmt: skip
        lines += ["", *[f"- {f}" for f in facts], ""]
        head = ["method", "precision@5", "coverage@5", "purity@5", "Spearman@10", "sufficiency@10", "consistency"]
        if spec["shortcut"]:
            head.insert(6, f"{spec['shortcut']} best rank (top-3 hits)")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        found = len(lines)
        for label, model, method in METHODS:
            rows = []
            for c in group:
                m = c.root / model / method_folder(method, include_rgb) / "eval" / "metrics.json"
                if m.is_file():
                    rows.append(json.loads(m.read_text()))
            if not rows:
                continue
            gt = [r["groundtruth"]["scores"] for r in rows]
            cells_ = [
                label + f" (n={len(rows)})",
                _mean_std([g["5"]["precision"] for g in gt]),
                _mean_std([g["5"]["coverage"] for g in gt]),
                _mean_std([g["5"]["mean_purity"] for g in gt]),
                _mean_std([g["10"]["spearman"] for g in gt]),
                _mean_std([r["sufficiency"]["10"]["overall"] for r in rows]),
                _mean_std([r["reconstruction"]["stylex"]["consistency"] for r in rows]),
            ]
            if spec["shortcut"]:
                ranks = [g["10"]["first_rank"][spec["shortcut"]] for g in gt]
                hits = sum(r is not None and r <= 3 for r in ranks)
                shown = [shortcut_rank(r, spec["shortcut"]) for r in rows]
                cells_.insert(6, f"{', '.join(shown)} ({hits}/{len(ranks)})")
            lines.append("| " + " | ".join(cells_) + " |")
        if len(lines) == found:  # nothing evaluated yet, or a table of --include-rgb results asked for without it
            where = f"{root / scenario}/seed*/<model>/{method_folder('<method>', include_rgb)}/eval"
            other = "without" if include_rgb else "with"
            any_eval = any((root / scenario).glob("seed*/*/*/eval/metrics.json"))
            why = f"were they made {other} --include-rgb?" if any_eval else "nothing under it is evaluated yet."
            lines.append(f"\nNo metrics found in {where}; {why}")
        lines.append("")
    lines.append(
        "K per class (2 classes: 2K attributes). Truly used: redrawing the factor alone changes the decision in >= 10% "
        "of interventions on fresh, uncorrelated scenes. Purity: the dominant factor's share of an attribute's "
        "normalised factor changes (oracle readings before/after the edit; 0 if it changes no factor by 0.1). "
        "Best rank [q1-q3]: the middle half of that attribute's rank when the search is rerun on bootstrap resamples "
        "of the images (`stylex attfind --resamples`; 11 = not in the top 10)."
    )
    text = "\n".join(lines)
    (root / "table.md").write_text(text + "\n")
    return text


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    class Help(argparse.RawTextHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """Line breaks kept, and every option's default shown."""

    p = argparse.ArgumentParser(
        description="\n\n".join(__doc__.split("\n\n")[:5]),  # what it does, the full run and the rehearsal
        formatter_class=Help,
    )
    p.add_argument("--root", type=Path, default=Path("runs/groundtruth"), help="folder of every cell and the table")
    p.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS), help="scenarios")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of each scenario")
    p.add_argument("--preset", default="shapes-32", help="training preset (its resolution sets the data's)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per training")
    p.add_argument("--steps", type=int, default=0, help="step budget per training instead of --minutes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra overrides, both models")
    p.add_argument(
        "--stylex-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra overrides of the StylEx model alone (e.g. swap_weight=1.0, which needs conditioning)",
    )
    p.add_argument(
        "--init-root",
        type=Path,
        default=None,
        help="an earlier ROOT: link its data, classifier and unconditioned model, and fine-tune its StylEx "
        "model (--init-from) instead of training one from scratch",
    )
    p.add_argument(
        "--link-root",
        type=Path,
        default=None,
        help="an earlier ROOT: link its data, classifier and unconditioned model, and train the StylEx model from "
        "scratch (e.g. with other --stylex-set sizes); not with --init-root",
    )
    p.add_argument(
        "--stylex-from-plain",
        action="store_true",
        help="with --link-root: each StylEx model starts from the linked unconditioned model (--init-from ROOT's "
        "plain/), i.e. a plain StyleGAN2 + encoder pre-trained, then fine-tuned as StylEx",
    )
    p.add_argument(
        "--include-rgb",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="AttFind and the baselines search the toRGB styles too (stylex attfind --include-rgb); with "
        "--table-only, taken from ROOT/runs.json when not given",
    )
    p.add_argument("--prepare-only", action="store_true", help="render the data and train the classifiers, then stop")
    p.add_argument(
        "--plain-only",
        action="store_true",
        help="train the data, classifiers and unconditioned models alone (no StylEx model, no explanations), e.g. "
        "a base ROOT for --link-root ROOT --stylex-from-plain; with --link-root, its data and classifiers are "
        "linked and the unconditioned models trained anew",
    )
    p.add_argument("--num-images", type=int, default=3000, help="training images per scenario and seed")
    p.add_argument("--eval-images", type=int, default=500, help="uncorrelated images for explanations")
    p.add_argument("--classifier-epochs", type=int, default=4, help="epochs of each classifier")
    p.add_argument("--attfind-images", type=int, default=100, help="N images for AttFind and the baselines")
    p.add_argument("--top-k", type=int, default=10, help="attributes per class")
    p.add_argument("--fast", type=int, default=64, help="AttFind fast mode M (0 = exact effects)")
    p.add_argument("--num-scenes", type=int, default=256, help="scenes for the true importance")
    p.add_argument("--read-images", type=int, default=64, help="images per class the oracle reads per attribute")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    p.add_argument("--device", default="cpu", help="where every process runs")
    p.add_argument("--poll", type=float, default=20.0, help="seconds between checks on running trainings")
    p.add_argument("--redo-explanations", action="store_true", help="recompute attributes and metrics")
    p.add_argument("--redo-metrics", action="store_true",
                   help="recompute the metrics only, keep the attributes (after an oracle change)")  # fmt: skip
    p.add_argument("--table-only", action="store_true", help="only (re)write the table from existing metrics")
    p.add_argument("--adopt", type=Path, default=None,
                   help="a folder of StylEx runs trained elsewhere, <scenario>-seed<k>.tgz (benchmarks/"
                        "gpu_groundtruth.sh): use each in place of training it, once its config.json matches the "
                        "command line; with --link-root or --init-root")  # fmt: skip
    args = p.parse_args()
    if args.init_root is not None and args.link_root is not None:
        p.error("--init-root fine-tunes the earlier StylEx models, --link-root trains new ones: give one of them")
    if args.stylex_from_plain and args.link_root is None:
        p.error("--stylex-from-plain starts from the unconditioned models of --link-root ROOT: give it")
    if args.plain_only and (args.init_root is not None or args.stylex_from_plain or args.table_only):
        p.error("--plain-only trains unconditioned models: not with --init-root, --stylex-from-plain or --table-only")
    if args.adopt is not None and (args.link_root is None and args.init_root is None or args.plain_only):
        p.error(
            "--adopt takes StylEx runs for a root that links its data and unconditioned models: give --link-root "
            "or --init-root" + (", not --plain-only" if args.plain_only else "")
        )

    def refuse(message: str) -> None:  # one line, without argparse's usage block
        p.exit(2, f"{p.prog}: error: {message}\n")

    for flag, root in (("--link-root", args.link_root), ("--init-root", args.init_root), ("--adopt", args.adopt)):
        if root is not None and not root.is_dir():
            refuse(f"{flag} {root} is not a folder")  # a typo would start every training from scratch
    if args.table_only and not args.root.is_dir():
        refuse(f"--root {args.root} is not a folder: there is no table to write from it")
    if args.adopt is not None:
        missing = [f"{s}-seed{k}.tgz" for k in args.seeds for s in args.scenarios
                   if not (args.adopt / f"{s}-seed{k}.tgz").is_file()]  # fmt: skip
        if missing:
            refuse(f"--adopt {args.adopt} lacks {', '.join(missing)}")
    if args.include_rgb is None:
        recorded = recorded_include_rgb(args.root) if args.table_only else None
        args.include_rgb = bool(recorded)
        if recorded:
            log(f"--include-rgb, as recorded in {args.root / RUNS_FILE}")

    from stylex.config import preset

    resolution = preset(args.preset).model.resolution
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    # seed-major, so that an interrupted run has every scenario for its first seeds
    cells = [Cell(s, seed, args.root / s / f"seed{seed}") for seed in args.seeds for s in args.scenarios]
    t0 = time.time()
    if not args.table_only:
        explains = not (args.prepare_only or args.plain_only)
        record_run(args.root, sys.argv[1:], args.include_rgb, explains, args.link_root or args.init_root)
        for cell in cells:
            prepare_cell(cell, args, resolution)
            if args.adopt is not None:
                adopt_run(cell, args, resolution)
        if args.prepare_only:
            return
        kinds = ("stylex",) if args.init_root is not None or args.link_root is not None else ("stylex", "plain")
        if args.plain_only:
            run_trainings([Training(c, "plain") for c in cells], args, env)
            log(f"unconditioned models trained under {args.root} ({(time.time() - t0) / 60:.1f} min)")
            return
        if args.jobs == 1:  # one cell after another: its table rows exist as soon as it is done
            for cell in cells:
                run_trainings([Training(cell, kind) for kind in kinds], args, env)
                explain_and_evaluate(cell, args, env)
                table(cells, args.root, args.include_rgb)
        else:
            run_trainings([Training(c, kind) for c in cells for kind in kinds], args, env)
            for cell in cells:
                explain_and_evaluate(cell, args, env)
    text = table(cells, args.root, args.include_rgb)
    print(text)
    log(f"table written to {args.root / 'table.md'} ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
