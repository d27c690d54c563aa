"""End-to-end CLI on tiny synthetic data, and the errors a user can cause ending in one clear line."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import pytest

from conftest import make_tiny_run, run_cli

run = run_cli


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """synth -> train-classifier -> train (tiny) -> reconstruct, once for the module."""
    return make_tiny_run(tmp_path_factory.mktemp("chain"), num_images=64, steps=3)


def test_chain_writes_every_stage(chain):
    assert (chain / "data" / "factors.csv").is_file()
    assert json.loads((chain / "clf" / "metrics.json").read_text())["val_accuracy"] >= 0
    run_dir = chain / "run"
    for name in ("config.json", "weights.safetensors", "state.pt", "stats.jsonl"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "samples").glob("*.png"))
    info = json.loads((run_dir / "config.json").read_text())
    assert info["train"]["max_steps"] == 3 and info["classifier_fingerprint"]


def test_reconstruct_prints_figures_and_baselines(chain):
    result = run("reconstruct", "--model", chain / "run", "--out", chain / "rec")
    for word in ("stylex", "class_median", "shifted_input", "identity", "consistency"):
        assert word in result.output
    report = json.loads((chain / "rec" / "reconstruction.json").read_text())
    assert 0 <= report["stylex"]["identity"] <= 1
    assert report["shifted_input"]["identity"] > report["class_median"]["identity"]
    assert (chain / "rec" / "reconstructions.png").is_file()


def test_data_heldout_writes_the_runs_own_validation_split(chain, tmp_path):
    import numpy as np

    from stylex.config import TrainConfig
    from stylex.data import load_dataset

    out = tmp_path / "val.npz"
    result = run("data", "heldout", "--model", chain / "run", "--out", out)
    info = json.loads((chain / "run" / "config.json").read_text())
    cfg = TrainConfig.from_dict(info["train"])
    _, val = load_dataset(chain / "data").split(cfg.val_fraction, cfg.seed)
    written = load_dataset(out)
    assert f"wrote {len(val)} held-out images" in result.output and 0 < len(val) < 64
    assert np.array_equal(written.images, val.images) and np.array_equal(written.labels, val.labels)
    assert written.filenames == val.filenames and written.class_names == val.class_names
    # the file is a --data like any other
    run("reconstruct", "--model", chain / "run", "--data", out, "--split", "all", "--out", tmp_path / "rec")
    _error(run("data", "heldout", "--model", chain / "run", "--out", tmp_path / "val.png", ok=False), ".npz")
    _error(run("data", "heldout", "--model", chain / "run", "--out", out, ok=False), "already exists", "--overwrite")
    run("data", "heldout", "--model", chain / "run", "--out", out, "--overwrite")
    data = tmp_path / "all.npz"  # the run's data itself, even with --overwrite: refused
    np.savez(data, images=load_dataset(chain / "data").images)
    args = ("data", "heldout", "--model", chain / "run", "--data", data, "--out", data, "--overwrite")
    _error(run(*args, ok=False), "is the data being split")
    tricky = tmp_path / "missing" / ".." / "all.npz"  # exists() is False for it, yet it names the data
    for extra in ((), ("--overwrite",)):
        _error(run(*args[:-2], tricky, *extra, ok=False), "is the data being split")


def test_the_held_out_split_is_refused_when_images_were_added_or_removed(chain, tmp_path):
    """One image deleted from the run's data folder after training, and `data heldout`, `reconstruct` and `export`
    recomputed the split without a word: 699 of 2,000 "held-out" images were training images in a user's test.
    Now they say so; edited pixels (same images) only warn, as the split is the same."""
    import shutil

    from PIL import Image

    data, run_dir = tmp_path / "data", tmp_path / "run"
    shutil.copytree(chain / "data", data)
    (data / "factors.csv").unlink()  # a plain image folder (the synthetic one lists its files)
    make_tiny_run(tmp_path, steps=1, data=data)
    first = sorted(data.rglob("*.png"))[0]
    Image.new("RGB", (16, 16), (0, 0, 0)).save(first)  # the same images, one edited
    result = run("data", "heldout", "--model", run_dir, "--out", tmp_path / "edited.npz")
    assert "warning: the images of" in result.output and "not the pixels the run was trained on" in result.output
    assert "the same files, edited" in result.output
    swapped = first.with_name("a-new-name.png")
    first.rename(swapped)  # the same count, another file (its pixels too, at another place in the order)
    _error(run("data", "heldout", "--model", run_dir, "--out", tmp_path / "swapped.npz", ok=False),
           "not those the run was trained on (replaced or renamed)")  # fmt: skip
    swapped.unlink()
    why = "holds 63 images, but the run was trained on 64"
    _error(run("data", "heldout", "--model", run_dir, "--out", tmp_path / "val.npz", ok=False), why)
    _error(run("reconstruct", "--model", run_dir, "--out", tmp_path / "rec", ok=False), why)
    _error(run("export", run_dir, "--out", tmp_path / "exp", "--num-samples", 2, ok=False), why)
    # other data is used whole, as before
    run("reconstruct", "--model", run_dir, "--data", tmp_path / "edited.npz", "--out", tmp_path / "rec2")


def test_data_pack_decodes_a_folder_once_into_an_npz_with_the_same_pixels(chain, tmp_path):
    from stylex.data import load_dataset

    out = tmp_path / "packed.npz"
    result = run("data", "pack", chain / "data", "--out", out, "--resolution", 16, "--quiet")
    assert "wrote 64 images (16 px, 2 classes)" in result.output
    assert "factors (factors.csv) are not kept" in result.output
    folder, packed = load_dataset(chain / "data", 16, progress=False), load_dataset(out, 16, progress=False)
    assert packed.fingerprint() == folder.fingerprint() and packed.filenames == folder.filenames
    assert packed.class_names == folder.class_names
    _error(run("data", "pack", chain / "data", "--out", out, "--resolution", 16, ok=False), "already exists")
    _error(run("data", "pack", chain / "data", "--out", tmp_path / "x.png", "--resolution", 16, ok=False), ".npz")
    _error(run("data", "pack", out, "--out", out, "--resolution", 16, "--overwrite", ok=False), "being packed")
    run("data", "pack", out, "--out", out.with_name("again.npz"), "--resolution", 8)  # an .npz packs too
    assert load_dataset(out.with_name("again.npz"), progress=False).images.shape == (64, 8, 8, 3)
    assert not list(tmp_path.glob(".*partial*")), "no temporary file left"


def test_resume_continues_the_step_counter(chain, tmp_path):
    import shutil

    from PIL import Image

    run_dir = tmp_path / "run"
    shutil.copytree(chain / "run", run_dir)
    run(
        "train",
        "--data",
        chain / "data",
        "--classifier",
        chain / "clf",
        "--out",
        run_dir,
        "--preset",
        "tiny",
        "--max-steps",
        5,
        "--resume",
        "--quiet",
    )
    lines = [json.loads(s) for s in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "step" in r][-1] == 5
    # other data: fewer images (its saved order indexed past their end) or as many other ones (silently taken)
    config = (run_dir / "config.json").read_text()
    fewer, other = tmp_path / "fewer", tmp_path / "other"
    run("data", "synth", "--out", fewer, "--num-images", 40, "--resolution", 16, "--quiet")
    shutil.copytree(chain / "data", other)
    first = sorted(other.rglob("*.png"))[0]
    Image.open(first).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(first)  # the same counts, one image other
    for data, why in ((fewer, "36 and 4 from"), (other, "and other pixels")):
        args = ["--classifier", chain / "clf", "--out", run_dir, "--preset", "tiny", "--max-steps", 6, "--resume"]
        _error(run("train", "--data", data, *args, ok=False), "was trained on other data", why)
        assert (run_dir / "config.json").read_text() == config, "the refused resume leaves the run's record alone"


def test_resume_without_preset_keeps_the_runs_own_config(chain, tmp_path):
    out = tmp_path / "tuned"
    args = ["train", "--data", chain / "data", "--classifier", chain / "clf", "--out", out, "--quiet"]
    run(*args, "--preset", "tiny", "--max-steps", 2, "--set", "cond_rgb=false", "--set", "cond_sparsity=0.1")
    run(*args, "--max-steps", 3, "--resume")  # neither the preset nor the --set values repeated
    saved = json.loads((out / "config.json").read_text())["train"]
    assert (saved["preset"], saved["cond_rgb"], saved["cond_sparsity"], saved["max_steps"]) == ("tiny", False, 0.1, 3)
    records = [json.loads(s) for s in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r][-1] == 3
    # a preset given explicitly is still checked against the run
    _error(run(*args, "--preset", "tiny", "--max-steps", 4, "--resume", ok=False), "cond_rgb", "cond_sparsity")


def test_a_project_moved_as_a_whole_still_finds_its_data_and_classifier(tmp_path):
    """The run records the data's and the classifier's absolute places; when the three move together, the places
    relative to the run find them (reconstruct, attfind, report and explain --index failed on the old paths)."""
    make_tiny_run(tmp_path / "before", num_images=24, steps=1)
    attfind = ["--num-images", 4, "--top-k", 1, "--fast", 4, "--no-render", "--quiet"]
    run("attfind", "--model", tmp_path / "before" / "run", *attfind)  # records the data's place before the move
    (tmp_path / "before").rename(tmp_path / "after")
    run_dir = tmp_path / "after" / "run"
    run("reconstruct", "--model", run_dir, "--num-images", 4)
    run("explain", "--model", run_dir, "--attributes", run_dir / "attfind", "--index", 0, "--out", tmp_path / "ex",
        "--strategy", "independent", "--top-k", 1, "--quiet")  # fmt: skip
    run("attfind", "--model", run_dir, *attfind, "--out", tmp_path / "af")
    from stylex.pipeline import load_run

    model, classifier = load_run(run_dir)
    assert model.run_info["data"] == str((tmp_path / "after" / "data").resolve())
    assert classifier.source.location == str((tmp_path / "after" / "clf").resolve())
    (tmp_path / "after" / "clf").rename(tmp_path / "after" / "gone")
    _error(run("reconstruct", "--model", run_dir, ok=False), "is not there", "config.json")


def test_init_from_fine_tunes_with_another_recipe(chain, tmp_path):
    out = tmp_path / "tuned"
    args = ["train", "--data", chain / "data", "--classifier", chain / "clf", "--out", out, "--preset", "tiny",
            "--max-steps", 2, "--quiet", "--set", "cond_rgb=false", "--set", "cond_sparsity=0.1"]  # fmt: skip
    run(*args, "--init-from", chain / "run")
    saved = json.loads((out / "config.json").read_text())
    assert saved["init_from"] == str((chain / "run").resolve())
    assert saved["train"]["cond_rgb"] is False
    records = [json.loads(s) for s in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "cond_norm" in r][-1] == 2  # a new run: steps count from 0
    _error(run(*args, "--resume", "--init-from", chain / "run", ok=False), "drop it to --resume")
    # without --preset, the preset of the run it starts from (the default one's networks did not fit it)
    plain = [a for a in args if a not in ("--preset", "tiny")]
    run(*[tmp_path / "inherits" if a == out else a for a in plain], "--init-from", chain / "run")
    assert json.loads((tmp_path / "inherits" / "config.json").read_text())["train"]["preset"] == "tiny"
    other = [tmp_path / "other" if a == out else ("shapes-32" if a == "tiny" else a) for a in args]
    _error(run(*other, "--init-from", chain / "run", ok=False), "trained with preset tiny", "drop --preset")


def _error(result, *words):
    """A failure that ends in one `error:` line, after nothing but one-line warnings, and no traceback."""
    assert result.exit_code != 0
    lines = result.output.rstrip("\n").split("\n")
    assert lines[-1].startswith("error: "), result.output
    assert all(line.startswith("warning: ") for line in lines[:-1]), result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output, result.output


def test_missing_data_path(chain, tmp_path):
    _error(
        run(
            "train",
            "--data",
            tmp_path / "nope",
            "--classifier",
            chain / "clf",
            "--out",
            tmp_path / "r",
            "--preset",
            "tiny",
            ok=False,
        ),
        "nope",
    )


def test_empty_folder(chain, tmp_path):
    (tmp_path / "empty").mkdir()
    _error(
        run(
            "train",
            "--data",
            tmp_path / "empty",
            "--classifier",
            chain / "clf",
            "--out",
            tmp_path / "r",
            "--preset",
            "tiny",
            ok=False,
        ),
        "empty",
    )
    assert not (tmp_path / "r").exists(), "no half-written output"


def test_bad_image_file(chain, tmp_path):
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _error(
        run(
            "train",
            "--data",
            tmp_path / "imgs",
            "--classifier",
            chain / "clf",
            "--out",
            tmp_path / "r",
            "--preset",
            "tiny",
            ok=False,
        ),
        "broken.png",
    )


def test_classifier_with_wrong_output_shape(chain, tmp_path, monkeypatch):
    (tmp_path / "flat_clf.py").write_text(
        textwrap.dedent("""
        import torch
        class Flat(torch.nn.Module):
            def forward(self, x):
                return x.mean(dim=(1, 2, 3))  # [N], no class dimension
        def make():
            return Flat()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _error(
        run(
            "train",
            "--data",
            chain / "data",
            "--classifier",
            "flat_clf:make",
            "--out",
            tmp_path / "r",
            "--preset",
            "tiny",
            ok=False,
        ),
        "flat_clf",
    )


def test_train_classifier_says_what_it_loaded(chain, tmp_path):
    result = run("train-classifier", "--data", chain / "data", "--out", tmp_path / "c", "--resolution", 16,
                 "--epochs", 1, "--width", 4)  # fmt: skip
    counts = {p.name: len(list(p.glob("*.png"))) for p in sorted((chain / "data").iterdir()) if p.is_dir()}
    listed = ", ".join(f"{k} {v}" for k, v in counts.items())
    assert f"64 images in 2 classes ({listed}) from {chain / 'data'}" in result.output
    base = ["train-classifier", "--data", chain / "data", "--out", tmp_path / "c2", "--resolution", 16, "--quiet"]
    _error(run(*base, "--val-fraction", 1, ok=False), "--val-fraction", "0<=x<1")
    _error(run(*base, "--val-fraction", 0.999, ok=False), "holds out all 64 images")
    # --out: an earlier classifier only with --overwrite; a folder of other files (a StylEx run) never
    again = ["train-classifier", "--data", chain / "data", "--resolution", 16, "--epochs", 1, "--width", 4, "--quiet"]
    weights = (tmp_path / "c" / "weights.safetensors").read_bytes()
    _error(run(*again, "--out", tmp_path / "c", ok=False), "already holds a classifier", "--overwrite")
    assert (tmp_path / "c" / "weights.safetensors").read_bytes() == weights
    run(*again, "--out", tmp_path / "c", "--overwrite")
    run_files = {p.name: p.read_bytes() for p in (chain / "run").iterdir() if p.is_file()}
    _error(run(*again, "--out", chain / "run", "--overwrite", ok=False), "holds other files", "new folder")
    assert {p.name: p.read_bytes() for p in (chain / "run").iterdir() if p.is_file()} == run_files


def test_a_model_smaller_than_the_classifier_input_is_named(chain, tmp_path):
    """A 16 px model for a 32 px classifier: the classifier sees enlarged images; trained silently before."""
    clf = tmp_path / "clf32"
    run("train-classifier", "--data", chain / "data", "--out", clf, "--resolution", 32, "--epochs", 1, "--width", 4,
        "--quiet")  # fmt: skip
    args = ("train", "--data", chain / "data", "--preset", "tiny", "--max-steps", 1, "--quiet")
    result = run(*args, "--classifier", clf, "--out", tmp_path / "r")
    assert "warning: the model draws 16 px images and the classifier takes 32 px" in result.output
    assert "--set model.resolution=32" in result.output
    assert "classifier takes" not in run(*args, "--classifier", chain / "clf", "--out", tmp_path / "r2").output


def test_a_model_far_smaller_than_its_images_is_named(chain, tmp_path):
    """`stylex train` on 64 px photos with the default preset trained a 32 px model without a word. A fresh run
    now says the size it learns at and the preset for the images' own; a resume does not repeat it."""
    import warnings

    from stylex.config import preset
    from stylex.pipeline import _warn_if_shrunk

    data = tmp_path / "d32"
    run("data", "synth", "--out", data, "--num-images", 12, "--resolution", 32, "--quiet")
    args = ("train", "--data", data, "--classifier", chain / "clf", "--preset", "tiny", "--max-steps", 1, "--quiet")
    result = run(*args, "--out", tmp_path / "r")
    assert (
        "warning: the images are 32 px (the median shorter side) and the model draws 16 px (preset tiny)"
        in (result.output)
        and "shrunk 2x" in result.output
        and "to train at 32 px pass --preset shapes-32." in result.output
    )
    assert "the images are" not in run(*args, "--out", tmp_path / "r", "--resume", "--max-steps", 2).output
    assert "the images are" not in run(*args[:2], chain / "data", *args[3:], "--out", tmp_path / "r2").output

    def said(side, name="shapes-32", classifier_size=None):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _warn_if_shrunk(side, preset(name), classifier_size)
        return " ".join(str(w.message) for w in caught)

    assert said(None) == said(63) == said(64, classifier_size=64) == ""
    assert "shrunk 2x" in said(64) and 'pass stylex.preset("plant-64").' in said(64)  # from Python: Python's words
    assert "shrunk 9x" in said(300) and 'stylex.preset("plant-64") with model.resolution=256 (a larger' in said(300)
    assert "shrunk 78x" in said(5000, "plant-64") and "to train at 256 px pass" in said(5000, "plant-64")
    assert 'stylex.preset("faces-64") with model.resolution=128' in said(200, "faces-64"), "its augmentation kept"


def test_fewer_training_images_than_a_batch_is_one_error_line(chain, tmp_path):
    """12 images and the shapes-32 batch of 16 ended in a RuntimeError traceback from the noise layer."""
    data = tmp_path / "d12"
    run("data", "synth", "--out", data, "--num-images", 12, "--resolution", 16, "--quiet")
    args = ("train", "--data", data, "--classifier", chain / "clf", "--preset", "tiny", "--max-steps", 1, "--quiet")
    result = run(*args, "--set", "batch_size=16", "--out", tmp_path / "r", ok=False)
    assert (
        result.exit_code == 1
        and "error: the run has 10 training images (2 more held out), fewer than one batch" in (result.output)
        and "pass --set batch_size=8 or add images." in result.output
    )
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
    run(*args, "--set", "batch_size=8", "--out", tmp_path / "r8")


def test_train_seed_is_a_shorthand(chain, tmp_path):
    args = ("train", "--data", chain / "data", "--classifier", chain / "clf", "--preset", "tiny", "--max-steps", 1)
    run(*args, "--out", tmp_path / "r", "--seed", 3, "--quiet")
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["seed"] == 3
    result = run(*args, "--out", tmp_path / "r2", "--seed", 3, "--set", "seed=4", "--quiet")
    assert "--seed 3 replaces --set seed=4" in result.output


def test_classifier_classes_names_the_outputs(chain, tmp_path):
    args = ("train", "--data", chain / "data", "--classifier", chain / "clf", "--preset", "tiny", "--max-steps", 1)
    _error(run(*args, "--out", tmp_path / "r0", "--classifier-classes", "a,b,c", ok=False), "3 class names")
    result = run(*args, "--out", tmp_path / "r", "--classifier-classes", "yes, no", "--quiet")
    assert "taken by position" in result.output, "the data's class folders are not these names"
    info = json.loads((tmp_path / "r" / "config.json").read_text())
    assert info["class_names"] == info["classifier"]["class_names"] == ["yes", "no"]


def test_unknown_override_key(chain, tmp_path):
    _error(
        run(
            "train",
            "--data",
            chain / "data",
            "--classifier",
            chain / "clf",
            "--out",
            tmp_path / "r",
            "--preset",
            "tiny",
            "--set",
            "lr_q=1",
            ok=False,
        ),
        "lr_q",
    )


@pytest.mark.parametrize("method", ["wu", "random"])
def test_baseline_writes_attributes_with_sufficiency(chain, tmp_path, method):
    out = tmp_path / method
    result = run(
        "baseline", "--model", chain / "run", "--method", method, "--num-images", 8, "--top-k", 2, "--out", out
    )
    assert f"wrote {out / 'attributes.json'}" in result.output
    effect = "Wu et al.'s score |mean_typical - mean_all| / std" if method == "wu" else "not measured (0)"
    assert f"\neffect: {effect}; flips: " in result.output, "the effect column says what it holds"
    info = json.loads((out / "attributes.json").read_text())
    assert info["classes"] and all(len(c["attributes"]) <= 2 for c in info["classes"])
    assert 0 <= info["sufficiency"] <= 1


def test_counts_read_as_sentences():
    from stylex.errors import counted

    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert [counted(n, "more class") for n in (1, 2)] == ["1 more class", "2 more classes"]


def test_a_budget_in_minutes_alone_is_the_whole_budget_and_a_spent_one_says_so(chain, tmp_path):
    """--max-minutes alone used to keep the preset's (or the resumed run's) max_steps, so `--preset tiny
    --max-minutes 1` stopped at tiny's 4 steps, and a resumed run at its old step budget trained nothing, silently."""
    run = tmp_path / "run"
    base = ["train", "--data", chain / "data", "--classifier", chain / "clf", "--out", run, "--preset", "tiny",
            "--quiet"]  # fmt: skip
    run_cli(*base, "--max-steps", 2)
    result = run_cli(*base, "--resume", "--max-steps", 2)
    assert "nothing trained" in result.output and "at step 2, its budget is max_steps 2" in result.output
    run_cli(*base[:-3], "--quiet", "--resume", "--max-minutes", 0.0001)
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 0
    both = run_cli(*base[:-3], "--quiet", "--resume", "--max-steps", 3, "--set", "max_steps=9")
    assert both.output.startswith("warning: --max-steps 3 replaces --set max_steps=9; give one of them.")
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 3


def test_training_from_python(chain, tmp_path):
    """The training side from a notebook: a classifier given by its place or as a module, the caller's random numbers
    left alone, and the library's own errors for what it cannot take."""
    import torch

    from stylex.classifier import load_classifier
    from stylex.config import ModelConfig, TrainConfig, preset
    from stylex.data import load_dataset
    from stylex.errors import StylexError
    from stylex.pipeline import load_run, train_stylex
    from stylex.zoo import export_run

    cfg = preset("tiny", max_steps=1, max_minutes=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    result = train_stylex(chain / "data", str(chain / "clf"), tmp_path / "by-place", cfg, quiet=True)
    assert result.step == 1 and torch.equal(torch.rand(3), expected), "training leaves the caller's RNG alone"
    with pytest.warns(UserWarning, match="nothing trained: .* is at step 1, its budget is max_steps 1"):
        again = train_stylex(chain / "data", str(chain / "clf"), tmp_path / "by-place", cfg, resume=True, quiet=True)
    assert again.step == again.start_step == 1
    net = load_classifier(str(chain / "clf")).model  # an in-memory module
    train_stylex(chain / "data", net, tmp_path / "in-memory", cfg, quiet=True)
    with pytest.raises(StylexError, match="pass the same module again"):
        load_run(tmp_path / "in-memory")
    assert (
        load_run(tmp_path / "in-memory", classifier=net)[1].fingerprint()
        == load_classifier(str(chain / "clf")).fingerprint()
    )
    with pytest.raises(StylexError, match="in-memory classifier, which an export cannot ship"):
        export_run(tmp_path / "in-memory", tmp_path / "exp")
    with pytest.raises(StylexError, match="data must be the path"):
        train_stylex(load_dataset(chain / "data"), net, tmp_path / "x", cfg)
    with pytest.raises(StylexError, match="config must be a TrainConfig"):
        train_stylex(chain / "data", net, tmp_path / "x", None)
    with pytest.raises(StylexError, match="batch_size must be of type int"):
        TrainConfig(batch_size="8").validate()
    with pytest.raises(StylexError, match="betas must be a list of 2 numbers"):
        TrainConfig(betas=(0.5,)).validate()  # from Python (--set checks the length as it parses)
    assert preset("tiny", model=ModelConfig(resolution=32)).model.resolution == 32  # as its docstring says
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_command_says_what_it_keeps(chain, tmp_path, monkeypatch, sig):
    """Outside training, Ctrl-C printed the training's message, and SIGTERM killed attfind without a word."""
    import os
    import time

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), sig)
        time.sleep(5)
        raise AssertionError("the signal did not stop the command")

    monkeypatch.setattr("stylex.attfind.search.AttFind.run", stopped)
    result = run("attfind", "--model", chain / "run", "--num-images", 4, "--out", tmp_path / "af", "--quiet", ok=False)
    name, code = ("Ctrl-C", 130) if sig == signal.SIGINT else ("SIGTERM", 143)
    assert result.exit_code == code
    said = f"interrupted ({name}); any effects computed so far are kept, and the same command continues"
    assert said in result.output
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "SIGTERM's handler restored"


def test_a_leading_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """`--out=~/x` and a quoted "~/x" reach stylex unexpanded: they made a folder named `~` in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run("data", "synth", "--out", "~/shapes", "--num-images", 4, "--resolution", 8, "--quiet")
    assert (tmp_path / "home" / "shapes" / "synth.json").is_file() and not (tmp_path / "~").exists()
    _error(run("reconstruct", "--model", "~/nope", ok=False), str(tmp_path / "home" / "nope"))
    _error(run("train", "--data", "~/shapes", "--classifier", "~/clf", "--out", "~/r", ok=False),
           str(tmp_path / "home" / "clf"))  # fmt: skip


def test_report_serve_and_export_take_the_model_as_the_others_do(chain, tmp_path):
    """`stylex report --model RUN` was "No such option"; the positional RUN still works; one of the two, once."""
    run("export", "--model", chain / "run", "--out", tmp_path / "e1", "--num-samples", 2)
    run("export", chain / "run", "--out", tmp_path / "e2", "--num-samples", 2)
    assert (tmp_path / "e1" / "card.json").is_file() and (tmp_path / "e2" / "card.json").is_file()
    for command in ("report", "serve", "export"):
        out = () if command == "serve" else ("--out", tmp_path / f"{command}-x")
        _error(run(command, chain / "run", "--model", chain / "run", *out, ok=False), "give the model once")
        _error(run(command, *out, ok=False), "Missing the model", "--model RUN")


def test_every_command_that_reads_images_takes_quiet():
    """A script that passes --quiet to every command got "No such option" from export, reconstruct, baseline,
    evaluate and data heldout; each reads a folder (with a progress bar when it is large)."""
    import click

    from stylex.cli import main

    def commands(group, prefix=""):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, prefix + name + " ")
            else:
                yield prefix + name, command

    reading = {name: {o for p in c.params for o in p.opts} for name, c in commands(main)}
    reading = {name: opts for name, opts in reading.items() if opts & {"--data", "--samples", "--model", "--image"}}
    assert {"export", "reconstruct", "baseline", "evaluate", "data heldout", "attfind", "train"} <= set(reading)
    assert [name for name, opts in reading.items() if "--quiet" not in opts] == []


def test_trust_code_is_a_flag_of_every_command(monkeypatch):
    """`stylex --trust-code COMMAND` lets the commands import the factory classifier a run names (see
    test_classifier's factory test for the refusal without it)."""
    import os

    monkeypatch.setenv("STYLEX_TRUST_CODE", "0")
    run("zoo")
    assert os.environ["STYLEX_TRUST_CODE"] == "0"
    run("--trust-code", "zoo")
    assert os.environ["STYLEX_TRUST_CODE"] == "1"
    _error(run("zoo", "--trust-code", ok=False), "it goes before the command: `stylex --trust-code COMMAND ...`")


def test_attfind_into_a_folder_of_other_effects_is_refused_and_says_how_to_go_on(chain, tmp_path):
    args = ("attfind", "--model", chain / "run", "--fast", 4, "--top-k", 2, "--no-render", "--quiet", "--out",
            tmp_path / "af")  # fmt: skip
    run(*args, "--num-images", 8)
    run(*args, "--num-images", 8)  # the same inputs: its effects are reused
    _error(run(*args, "--num-images", 6, ok=False), "holds effects of other images, weights or settings",
           "older stylex", "--recompute")  # fmt: skip
    run(*args, "--num-images", 6, "--recompute")


def test_a_torchscript_classifier_trains_and_runs_attfind(chain, tmp_path):
    """The README says "save the classifier as TorchScript and train with that", yet `stylex train` crashed on the
    first step ("backward through the graph a second time") and `attfind` on such a run ("Inference tensors cannot
    be saved for backward"): the JIT's optimising executor ignored torch.no_grad once it had profiled a call with
    gradients (the classifier check's)."""
    import torch

    from stylex.classifier import load_classifier

    path = tmp_path / "clf.pt"
    torch.jit.script(load_classifier(str(chain / "clf")).model.eval()).save(str(path))
    run("train", "--data", chain / "data", "--classifier", path, "--out", tmp_path / "run", "--preset", "tiny",
        "--max-steps", 2, "--quiet")  # fmt: skip
    run("attfind", "--model", tmp_path / "run", "--fast", 4, "--num-images", 8, "--top-k", 2, "--no-render",
        "--quiet")  # fmt: skip
    assert (tmp_path / "run" / "attfind" / "attributes.json").is_file()


def test_train_classifier_says_chance_and_warns_near_it(tmp_path):
    """Its line gave the accuracy alone: 0.167 for 9 classes read as a result. It now gives chance, and warns when the
    accuracy is nearer chance than perfect (the report says so too)."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "noise.npz"  # labels unrelated to the pixels: chance is all a classifier can reach
    np.savez(data, images=rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8), labels=np.arange(60) % 3,
             class_names=np.array(["a", "b", "c"]))  # fmt: skip
    out = run("train-classifier", "--data", data, "--out", tmp_path / "clf", "--resolution", 16, "--epochs", 1,
              "--width", 4, "--quiet").output  # fmt: skip
    assert "chance 0.333" in out and "warning: the classifier's held-out accuracy" in out
    # unbalanced classes (mostly "a"): the line gives the balanced accuracy too, and the warning judges that
    np.savez(data, images=rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8), labels=(np.arange(60) % 10 == 0) * 1,
             class_names=np.array(["a", "b"]))  # fmt: skip
    out = run("train-classifier", "--data", data, "--out", tmp_path / "clf2", "--resolution", 16, "--epochs", 1,
              "--width", 4, "--quiet").output  # fmt: skip
    metrics = json.loads((tmp_path / "clf2" / "metrics.json").read_text())
    assert f"validation accuracy {metrics['val_accuracy']:.3f}, balanced {metrics['val_balanced_accuracy']:.3f}" in out
    assert "hides unbalanced classes" in out


def test_train_writes_plain_progress_lines_into_a_log(chain, tmp_path, monkeypatch):
    """Under nohup (stderr a file, so no bar) a 6-minute run wrote nothing until its last line."""
    import stylex.training.trainer as trainer

    monkeypatch.setattr(trainer, "PLAIN_PROGRESS_SECONDS", 0)
    out = run("train", "--data", chain / "data", "--classifier", chain / "clf", "--out", tmp_path / "run",
              "--preset", "tiny", "--max-steps", 4, "--set", "log_every=2").output  # fmt: skip
    assert "train: step 2/4, " in out and "train: step 4/4, " in out and " l1 " in out
    monkeypatch.setattr(trainer, "PLAIN_PROGRESS_SECONDS", 3600)  # a line a minute: the first at once, then none
    out = run("train", "--data", chain / "data", "--classifier", chain / "clf", "--out", tmp_path / "run2",
              "--preset", "tiny", "--max-steps", 4, "--set", "log_every=2").output  # fmt: skip
    assert "train: step 2/4, " in out and "train: step 4/4" not in out
    quiet = run("train", "--data", chain / "data", "--classifier", chain / "clf", "--out", tmp_path / "q",
                "--preset", "tiny", "--max-steps", 2, "--set", "log_every=1", "--quiet").output  # fmt: skip
    assert "train: step" not in quiet


def test_the_command_reference_is_what_the_code_says():
    """docs/cli.md holds every command's --help (an audit found options no document named); rewrite it with
    `python scripts/cli_reference.py` when a command changes."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.markdown()
    assert module.OUT.read_text(encoding="utf-8") == text, "docs/cli.md is stale: run python scripts/cli_reference.py"
    for command in ("stylex attfind", "stylex data synth", "stylex train-classifier", "stylex zoo"):
        assert f"## `{command}`" in text and f"Usage: {command} [OPTIONS]" in text
    assert "--memory-mb" in text and "--slider-images" in text and "--used-threshold" in text
