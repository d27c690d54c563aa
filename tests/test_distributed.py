"""Several processes: batch shards keep D's minibatch-std groups; 2 processes under torchrun (gloo, CPU) train
exactly what 1 process trains on the same global batch, write one run folder, and resume with 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from stylex.cli import main
from stylex.errors import StylexError
from stylex.models.discriminator import minibatch_stddev
from stylex.models.generator import Generator
from stylex.training.distributed import Distributed, ModuleView


def _shards(batch_size: int, group: int, world_size: int, z_path: bool) -> tuple[list[torch.Tensor], bool]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shards = [Distributed(r, world_size, r).batch_shard(batch_size, group, z_path) for r in range(world_size)]
    return shards, bool(caught)


@pytest.mark.parametrize(
    "batch_size, group, world_size", [(8, 4, 2), (16, 4, 4), (32, 4, 2), (12, 3, 2), (8, 0, 4), (64, 8, 8)]
)
def test_shards_keep_minibatch_std_groups(batch_size, group, world_size):
    shards, warned = _shards(batch_size, group, world_size, z_path=True)
    assert not warned
    assert torch.equal(torch.cat(shards).sort().values, torch.arange(batch_size)), "shards partition the batch"
    assert all(len(s) == batch_size // world_size for s in shards)
    if not group:
        return
    g = torch.Generator().manual_seed(0)
    real = torch.randn(batch_size, 2, 4, 4, generator=g)
    fake = torch.randn(batch_size, 2, 4, 4, generator=g)
    both = torch.cat([real, fake])  # what D sees on z-path steps: [reconstructions; z-path fakes]
    full_real = minibatch_stddev(real, group)[:, -1]
    full_both = minibatch_stddev(both, group)[:, -1]
    for s in shards:
        assert torch.allclose(minibatch_stddev(real[s], group)[:, -1], full_real[s])
        s2 = torch.cat([s, s + batch_size])
        assert torch.allclose(minibatch_stddev(both[s2], group)[:, -1], full_both[s2])


def test_shards_that_would_split_groups_warn():
    shards, warned = _shards(8, 4, 4, z_path=False)  # 2 samples per process, groups of 4
    assert warned
    assert torch.equal(torch.cat(shards), torch.arange(8))


def test_batch_must_split_evenly():
    with pytest.raises(StylexError, match="multiple of 2"):
        Distributed(0, 2, 0).batch_shard(7, 4, z_path=False)


def test_single_process_changes_nothing():
    dist = Distributed()
    G = Generator(16, 8, 16, 2, 2, 256, 16)
    assert not dist.enabled and dist.is_main
    assert dist.batch_shard(8, 4, z_path=True) is None
    assert dist.wrap(G, without=("mapping_net",)) is G
    x = torch.ones(3)
    assert dist.mean(x) is x and dist.share_error("e") == "e"


def test_module_view_owns_all_but_the_excluded_child():
    G = Generator(16, 8, 16, 2, 2, 256, 16)
    view = ModuleView(G, ("mapping_net",))
    own = {id(p) for p in view.parameters()}
    mapping = {id(p) for p in G.mapping_net.parameters()}
    assert own == {id(p) for p in G.parameters()} - mapping
    w, c = torch.randn(2, 16), torch.randn(2, 2)
    noise = G.make_noise(2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(view(w, c, noise), G(w, c, noise))


# ------------------------------------------------------------------------------------------------ torchrun


def test_under_torchrun_a_command_that_does_not_share_its_work_is_refused_once(monkeypatch, tmp_path):
    """`torchrun ... -m stylex demo` died on rank 1 with a traceback (AttFind leaves it without a result), and the
    other one-process commands ran whole on every rank; rank 0 now says so in one line and the others end quietly."""
    import time

    from stylex import pipeline

    monkeypatch.setattr(time, "sleep", lambda s: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    commands = [
        ["demo", "--out", tmp_path / "demo"],
        ["report", "zoo:digits-32", "--out", tmp_path / "report"],
        ["data", "synth", "--out", tmp_path / "data", "--num-images", 8],
        ["serve", "zoo:digits-32"],
        ["zoo"],
    ]
    for args in commands:
        monkeypatch.setenv("RANK", "0")
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 1, result.output
        name = " ".join(str(a) for a in args[: 2 if args[0] == "data" else 1])
        assert result.output.count("error: ") == 1 and f"`stylex {name}` runs in one process" in result.output
        assert CliRunner().invoke(main, [*args[: 2 if args[0] == "data" else 1], "--help"]).exit_code == 0
        assert "WORLD_SIZE" in result.output and "`stylex attfind`" in result.output
        monkeypatch.setenv("RANK", "1")
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert (result.exit_code, result.output) == (1, ""), args
    assert not any(tmp_path.iterdir()), "nothing was written"
    with pytest.raises(StylexError, match="the demo runs in one process"):
        pipeline.demo(tmp_path / "demo")  # from Python too
    with pytest.raises(StylexError, match="the demo runs in one process"):
        pipeline.demo_train(tmp_path / "demo")
    # train and attfind share their work: not refused here (a missing option is their first complaint)
    monkeypatch.setenv("RANK", "0")
    for command in ("train", "attfind"):
        result = CliRunner().invoke(main, [command])
        assert result.exit_code == 2 and "runs in one process" not in result.output, result.output
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert CliRunner().invoke(main, ["zoo"]).exit_code == 0


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    _cli("data", "synth", "--out", root / "data", "--num-images", 64, "--resolution", 16, "--quiet")
    _cli("train-classifier", "--data", root / "data", "--out", root / "clf", "--resolution", 16, "--epochs", 1)
    return root


def _train_args(root, out, steps):
    # Every step has R1, a path-length step and a z-path step, so DDP sees every phase; samples and checkpoints
    # every step.
    return [
        "train", "--data", root / "data", "--classifier", root / "clf", "--out", out, "--preset", "tiny",
        "--max-steps", steps, "--set", "z_path_every=1", "--set", "r1_interval=1", "--set", "pl_weight=2",
        "--set", "pl_interval=1", "--set", "sample_every=1", "--set", "checkpoint_every=1", "--quiet",
    ]  # fmt: skip


def _assert_same_weights(run_a, run_b, atol=1e-5):
    a, b = load_file(str(run_a / "weights.safetensors")), load_file(str(run_b / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), f"{k} differs by {(a[k] - b[k]).abs().max():.3g}"


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
def test_two_processes_equal_one_and_resume_with_one(inputs, tmp_path):
    root = inputs
    _cli(*_train_args(root, tmp_path / "one-2", 2))
    _cli(*_train_args(root, tmp_path / "one-3", 3))

    # 2 processes, global batch 8 (4 each), gloo on CPU, launched like a user would.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "stylex"]
    proc = subprocess.run(
        cmd + [str(a) for a in _train_args(root, tmp_path / "two", 2)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("trained to step 2") == 1, "only rank 0 reports"
    assert "minibatch-std" not in proc.stderr and "unused parameters" not in proc.stderr, proc.stderr
    _assert_same_weights(tmp_path / "one-2", tmp_path / "two")

    # Rank 0 alone wrote the run folder: the same files as 1 process, one stats line per step.
    two = tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in (tmp_path / "one-2").iterdir())
    assert sorted(p.name for p in (two / "samples").iterdir()) == ["step-0000001.png", "step-0000002.png"]
    lines = [json.loads(s) for s in (two / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]

    # The 2-process checkpoint resumes with 1 process and continues exactly like the 1-process run.
    _cli(*_train_args(root, two, 3), "--resume")
    _assert_same_weights(tmp_path / "one-3", two)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
def test_an_output_folder_rank_0_cannot_write_stops_every_rank_in_one_line(inputs, tmp_path):
    """Rank 0 met the folder's OSError only when it wrote config.json, after the ranks had agreed to go on: rank 1
    trained into a closed connection and printed gloo's traceback."""
    (tmp_path / "afile").write_text("not a folder")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "stylex"]
    args = _train_args(inputs, tmp_path / "afile" / "run", 2)
    proc = subprocess.run(cmd + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "afile" in errors[0], proc.stderr
    # torchrun's own launcher prints a traceback for any failed child; no rank prints one of its own
    assert "[rank1]" not in proc.stderr and "Connection closed" not in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
def test_a_stopped_torchrun_training_checkpoints_and_an_error_is_said_once(inputs, tmp_path):
    """SIGTERM to torchrun (a cluster's preemption, Ctrl-C) lost every step since the last checkpoint: the ranks
    had no stop handler, since they could see the signal at different steps. They now agree before each step and
    rank 0 checkpoints the last one. And every error under torchrun was followed by rank 1's false "interrupted
    (SIGTERM)" line (torchrun's SIGTERM met it while it waited for rank 0 to report)."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "stylex"]
    out = tmp_path / "run"
    args = ["train", "--data", inputs / "data", "--classifier", inputs / "clf", "--out", out, "--preset", "tiny",
            "--max-steps", 100000, "--set", "log_every=1", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd + [str(a) for a in args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "stats.jsonl").is_file() or len((out / "stats.jsonl").read_text().splitlines()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "the training did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    stopped = [line for line in err.splitlines() if line.startswith("stopped by ")]
    assert len(stopped) == 1 and stopped[0].startswith("stopped by SIGTERM at step "), err
    step = int(stopped[0].split("at step ")[1].split(",")[0])
    assert torch.load(out / "state.pt", weights_only=True)["step"] == step
    assert json.loads((out / "stats.jsonl").read_text().splitlines()[-1])["step"] == step
    assert "interrupted (" not in err and "[rank1]" not in err, err

    bad = subprocess.run(cmd + [str(a) for a in _train_args(inputs, tmp_path / "odd", 2)] + ["--set", "batch_size=7"],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode != 0
    assert [line.startswith("error: ") for line in bad.stderr.splitlines() if line[:7] in ("error: ", "interru")] == [
        True
    ], bad.stderr


# ------------------------------------------------------------------------------------------------ attfind


def test_shares_give_every_row_to_one_process():
    rows = torch.arange(7)
    assert [Distributed(r, 3, r).share(rows).tolist() for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(Distributed(r, 4, r).share(torch.arange(2))) for r in range(4)] == [1, 1, 0, 0]
    one = Distributed()
    assert one.share(rows) is rows and one.sum(rows) is rows and one.main_value("v") == "v"


def _assert_close_json(a, b, atol=1e-5, where="$"):
    """Equal JSON values, with floats equal within atol."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=atol), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_close_json(a[k], b[k], atol, f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close_json(x, y, atol, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _without_timings(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in ("seconds", "seconds_per_image")}


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
def test_two_processes_attfind_equals_one(inputs, tmp_path):
    from stylex.attfind import Effects

    root = inputs
    run = tmp_path / "run"
    _cli("train", "--data", root / "data", "--classifier", root / "clf", "--out", run, "--preset", "tiny",
         "--max-steps", 2, "--quiet")  # fmt: skip
    # 7 images: the processes get 4 and 3 of them; strips and GIFs on, so rank 0 alone must draw them.
    args = ["attfind", "--model", run, "--num-images", 7, "--top-k", 3, "--quiet"]
    _cli(*args, "--out", tmp_path / "one")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "stylex"]
    proc = subprocess.run(
        cmd + [str(a) for a in args] + ["--out", str(tmp_path / "two"), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote ") == 1 and proc.stdout.count("sufficiency@3 overall") == 1, "only rank 0 reports"

    one, two = tmp_path / "one", tmp_path / "two"
    files = [sorted(p.relative_to(d) for p in d.rglob("*")) for d in (one, two)]
    assert files[0] == files[1], "the same files as 1 process (and no chunk folder left)"
    a, b = Effects.load(one / "effects.safetensors"), Effects.load(two / "effects.safetensors")
    for name in ("effects", "s_min", "s_max", "base_logits", "styles", "styles_rgb", "exact"):
        x, y = getattr(a, name).float(), getattr(b, name).float()
        assert torch.allclose(x, y, atol=1e-5, rtol=0), f"{name} differs by {(x - y).abs().max():.3g}"
    assert _without_timings(a.meta) == _without_timings(b.meta)
    got, want = (json.loads((d / "attributes.json").read_text()) for d in (two, one))
    got["stats"], want["stats"] = _without_timings(got["stats"]), _without_timings(want["stats"])
    _assert_close_json(got, want)
