"""The library on a CUDA device (marker `gpu`): skipped where there is none, so CI (CPU only) never runs them.

On a machine with a GPU: `pytest -m gpu tests/test_gpu.py`. To rehearse them on the CPU before a short GPU lease,
`STYLEX_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py` runs the same tests with device "cpu".

What they check that the CPU suite cannot: every command with `--device cuda` (train with bf16 autocast and
channels_last, train-classifier, attfind exact and fast with --bf16, explain, reconstruct, evaluate, baseline,
report, export), a TorchScript classifier on the GPU, a run moving between the GPU and the CPU (loading and
resuming), AttFind's effects agreeing between the two, the viewer rendering on the GPU, torch.compile, and one
process under torchrun with NCCL.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import run_cli

DEVICE = os.environ.get("STYLEX_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(scope="module")
def on_device(tmp_path_factory):
    """synth (16 px) -> train-classifier -> train, all three on DEVICE (the train with bf16 and channels_last)."""
    root = tmp_path_factory.mktemp("gpu")
    run_cli("data", "synth", "--out", root / "data", "--num-images", 48, "--resolution", 16, "--quiet")
    run_cli("train-classifier", "--data", root / "data", "--out", root / "clf", "--resolution", 16, "--epochs", 2,
            "--width", 8, "--device", DEVICE, "--quiet")  # fmt: skip
    run_cli("train", "--data", root / "data", "--classifier", root / "clf", "--out", root / "run", "--preset", "tiny",
            "--max-steps", 3, "--set", "amp=bf16", "--set", "channels_last=true", "--set", "checkpoint_every=1",
            "--device", DEVICE, "--quiet")  # fmt: skip
    return root


def _finite_weights(run_dir) -> None:
    for name, tensor in load_file(str(run_dir / "weights.safetensors")).items():
        assert torch.isfinite(tensor.float()).all(), name


def test_every_command_runs_on_the_device(on_device, tmp_path):
    run_dir = on_device / "run"
    _finite_weights(run_dir)
    stats = [json.loads(s) for s in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [1, 2, 3]
    assert all(math.isfinite(v) for r in stats for v in r.values() if isinstance(v, float)), stats[-1]

    dev = ("--device", DEVICE)
    run_cli("attfind", "--model", run_dir, "--num-images", 8, "--top-k", 2, "--quiet", *dev)
    run_cli("attfind", "--model", run_dir, "--num-images", 8, "--top-k", 2, "--fast", 4, "--bf16", "--no-render",
            "--out", tmp_path / "fast", "--quiet", *dev)  # fmt: skip
    attributes = json.loads((run_dir / "attfind" / "attributes.json").read_text())
    assert attributes["classes"], attributes
    run_cli("explain", "--model", run_dir, "--attributes", run_dir / "attfind", "--index", 0, "--out",
            tmp_path / "ex", "--top-k", 2, "--quiet", *dev)  # fmt: skip
    assert list((tmp_path / "ex").rglob("*.png"))
    image = next((on_device / "data").rglob("*.png"))
    run_cli("explain", "--model", run_dir, "--attributes", run_dir / "attfind", "--index", 0, "--index", 1, "--image",
            image, "--out", tmp_path / "many", "--top-k", 2, "--quiet", *dev)  # fmt: skip
    assert len(json.loads((tmp_path / "many" / "explanations.json").read_text())["images"]) == 3
    rec = run_cli("reconstruct", "--model", run_dir, "--num-images", 8, "--out", tmp_path / "rec", *dev)
    assert "consistency" in rec.output
    figures = json.loads((tmp_path / "rec" / "reconstruction.json").read_text())
    assert figures, figures
    run_cli("evaluate", "--model", run_dir, "--attributes", run_dir / "attfind", "--out", tmp_path / "ev", "--k", "1,2",
            "--num-scenes", 8, "--num-values", 1, "--read-images", 4, *dev)  # fmt: skip
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics, metrics
    for method in ("random", "wu"):
        run_cli("baseline", "--model", run_dir, "--method", method, "--num-images", 8, "--top-k", 2, "--out",
                tmp_path / method, *dev)  # fmt: skip
    run_cli("report", run_dir, "--out", tmp_path / "report", "--slider-images", 2, "--quiet", *dev)
    assert "<main" in (tmp_path / "report" / "index.html").read_text()
    run_cli("export", run_dir, "--out", tmp_path / "export", "--num-samples", 2, *dev)
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert card["class_names"] and card["reconstruction"], card


def test_a_run_moves_between_the_device_and_the_cpu(on_device, tmp_path):
    """Weights and state saved on the GPU load on the CPU (and back): AttFind there, and resume there."""
    from stylex.pipeline import load_run

    model, classifier = load_run(on_device / "run")
    assert next(model.parameters()).device.type == "cpu"

    run = tmp_path / "run"
    run_cli("train", "--data", on_device / "data", "--classifier", on_device / "clf", "--out", run, "--preset", "tiny",
            "--max-steps", 2, "--set", "checkpoint_every=1", "--device", DEVICE, "--quiet")  # fmt: skip
    resume = ["train", "--data", on_device / "data", "--classifier", on_device / "clf", "--out", run, "--resume"]
    run_cli(*resume, "--max-steps", 3, "--device", "cpu", "--quiet")
    run_cli(*resume, "--max-steps", 4, "--device", DEVICE, "--quiet")
    steps = [json.loads(s)["step"] for s in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    _finite_weights(run)
    run_cli("attfind", "--model", run, "--num-images", 6, "--top-k", 2, "--fast", 4, "--no-render", "--quiet",
            "--device", "cpu")  # fmt: skip


def test_attfind_effects_agree_between_the_device_and_the_cpu(on_device, tmp_path):
    """Exact AttFind in float32 on both: the same effects up to the GPU's own arithmetic (TF32 convolutions)."""
    from stylex.attfind import Effects

    args = ["attfind", "--model", on_device / "run", "--num-images", 8, "--top-k", 3, "--no-render", "--quiet"]
    run_cli(*args, "--out", tmp_path / "cpu", "--device", "cpu")
    run_cli(*args, "--out", tmp_path / "dev", "--device", DEVICE)
    a, b = (Effects.load(tmp_path / d / "effects.safetensors") for d in ("cpu", "dev"))
    for name in ("effects", "base_logits", "styles"):
        x, y = getattr(a, name).float(), getattr(b, name).float()
        scale = x.abs().max().clamp_min(1e-6)
        assert ((x - y).abs().max() / scale) < 0.02, f"{name} differs by {(x - y).abs().max():.3g} of {scale:.3g}"


def test_a_torchscript_classifier_on_the_device(on_device, tmp_path):
    """The JIT's optimising executor (off in the adapter) behaves differently on CUDA: train and attfind there."""
    from stylex.classifier import load_classifier

    path = tmp_path / "clf.pt"
    torch.jit.script(load_classifier(str(on_device / "clf")).model.eval()).save(str(path))
    run_cli("train", "--data", on_device / "data", "--classifier", path, "--out", tmp_path / "run", "--preset", "tiny",
            "--max-steps", 2, "--device", DEVICE, "--quiet")  # fmt: skip
    run_cli("attfind", "--model", tmp_path / "run", "--fast", 4, "--num-images", 8, "--top-k", 2, "--no-render",
            "--quiet", "--device", DEVICE)  # fmt: skip
    assert (tmp_path / "run" / "attfind" / "attributes.json").is_file()


def test_the_viewer_renders_on_the_device(on_device, tmp_path):
    from stylex.explain.viewer import load_viewer

    run_cli("attfind", "--model", on_device / "run", "--num-images", 6, "--top-k", 2, "--fast", 4, "--no-render",
            "--out", tmp_path / "af", "--quiet", "--device", DEVICE)  # fmt: skip
    viewer = load_viewer(on_device / "run", tmp_path / "af", num_images=4, device=DEVICE)
    base = viewer.render("i0")
    assert abs(sum(base["probs"]) - 1) < 1e-3 and base["edited"].startswith("data:image/png;base64,")
    moved = viewer.render("i0", {"0": 1.0})
    assert abs(sum(moved["probs"]) - 1) < 1e-3
    png = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 30, 30)).save(png, "PNG")
    uploaded = viewer.upload(png.getvalue())  # decoded on the CPU, encoded on the device
    assert abs(sum(uploaded["probs"]) - 1) < 1e-3


def test_compiled_training_on_the_device(on_device, tmp_path):
    run_cli("train", "--data", on_device / "data", "--classifier", on_device / "clf", "--out", tmp_path / "run",
            "--preset", "tiny", "--max-steps", 2, "--set", "compile=true", "--device", DEVICE, "--quiet")  # fmt: skip
    _finite_weights(tmp_path / "run")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
def test_one_process_under_torchrun_on_the_device(on_device, tmp_path):
    """DistributedDataParallel with NCCL on CUDA (gloo on the CPU): train and attfind as a user launches them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "stylex"]
    device = "cuda" if DEVICE.startswith("cuda") else "cpu"  # under torchrun cuda means cuda:LOCAL_RANK
    train = ["train", "--data", on_device / "data", "--classifier", on_device / "clf", "--out", tmp_path / "run",
             "--preset", "tiny", "--max-steps", 2, "--set", "z_path_every=1", "--set", "r1_interval=1",
             "--device", device, "--quiet"]  # fmt: skip
    attfind = ["attfind", "--model", tmp_path / "run", "--num-images", 5, "--top-k", 2, "--no-render", "--quiet",
               "--device", device]  # fmt: skip
    for args in (train, attfind):
        proc = subprocess.run(cmd + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    _finite_weights(tmp_path / "run")
    assert (tmp_path / "run" / "attfind" / "attributes.json").is_file()
