"""Crash safety: `stylex train` and `stylex attfind` killed with SIGKILL resume to the same result.

Training is killed at each point of a checkpoint write (by the `STYLEX_FAILPOINT` hook, see `stylex.failpoints`)
and at random moments mid-step; every time the run folder still loads, the resumed run continues from the last
complete checkpoint (losing at most one checkpoint interval), and the finished run equals an uninterrupted one
weight for weight. AttFind is killed after a saved chunk and re-run: same effects, same attributes.json.
Divergence: an exploding loss and non-finite gradients stop the run with the step and keep the last good
checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from stylex.cli import main
from stylex.errors import StylexError
from stylex.failpoints import FAILPOINT_ENV
from stylex.models.stylex import StylEx
from stylex.training.checkpoint import STATE, WEIGHTS, load_state, read_weights

STEPS, EVERY = 8, 2  # steps of each training run, steps between checkpoints
TMP = ".tmp"


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def command(*args) -> list[str]:
    return [sys.executable, "-m", "stylex", *[str(a) for a in args]]


def env(failpoint: str | None = None) -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    e.pop(FAILPOINT_ENV, None)
    return {**e, FAILPOINT_ENV: failpoint} if failpoint else e


def stylex(*args, failpoint: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env(failpoint), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Data, a classifier and the uninterrupted reference run (in a subprocess like the runs it is compared to)."""
    root = tmp_path_factory.mktemp("crash")
    cli("data", "synth", "--out", root / "data", "--num-images", 32, "--resolution", 16, "--quiet")
    cli("train-classifier", "--data", root / "data", "--out", root / "clf", "--resolution", 16, "--epochs", 1,
        "--width", 8, "--quiet")  # fmt: skip
    done = stylex(*train_args(root, root / "reference"))
    assert done.returncode == 0, done.stderr
    return root


def train_args(root: Path, out: Path, resume: bool = False) -> list:
    return ["train", "--data", root / "data", "--classifier", root / "clf", "--out", out, "--preset", "tiny",
            "--max-steps", STEPS, "--set", f"checkpoint_every={EVERY}", "--set", "log_every=1", "--quiet",
            *(["--resume"] if resume else [])]  # fmt: skip


def checkpoint_steps(run: Path) -> tuple[int, int]:
    """(step of weights.safetensors, step of state.pt); both must load."""
    _, meta = read_weights(run / WEIGHTS)
    return int(meta["step"]), int(load_state(run / STATE)["step"])


def logged_steps(run: Path) -> list[int]:
    steps = []
    for line in (run / "stats.jsonl").read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:  # a line half-written when the process died
            pass
    return steps


def assert_same_weights(run: Path, reference: Path) -> None:
    a, b = load_file(str(run / WEIGHTS)), load_file(str(reference / WEIGHTS))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), f"{k} differs from the uninterrupted run"


def assert_finished_like_reference(run: Path, root: Path) -> None:
    assert checkpoint_steps(run) == (STEPS, STEPS)
    assert logged_steps(run) == list(range(1, STEPS + 1)), "each step logged once, lost steps logged again"
    assert not list(run.glob("*" + TMP)), "no temporary files left"
    assert_same_weights(run, root / "reference")


@pytest.mark.slow
def test_killed_at_each_point_of_a_checkpoint_write(inputs, tmp_path):
    """weights written -> state written -> state renamed (commit) -> weights renamed: a kill at each point."""
    root, run = inputs, tmp_path / "run"

    # 1. Killed at the first checkpoint, its weights written under the temporary name, cut short (as if the
    #    process died mid-write): no complete checkpoint exists yet; readers see no run, resume starts over.
    killed = stylex(*train_args(root, run), failpoint=f"checkpoint-weights@{EVERY}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    tmp = run / (WEIGHTS + TMP)
    tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
    assert not (run / WEIGHTS).exists() and not (run / STATE).exists()
    nothing = CliRunner().invoke(main, [str(a) for a in train_args(root, run, resume=True)])
    assert nothing.exit_code == 1 and "no checkpoint to resume" in nothing.stderr
    assert not tmp.exists(), "the incomplete weights were discarded"

    # 2. Started again, killed at the second checkpoint after writing its state, before the commit: the first
    #    checkpoint (step 2) is the complete one.
    killed = stylex(*train_args(root, run), failpoint=f"checkpoint-state@{2 * EVERY}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint_steps(run) == (EVERY, EVERY)
    assert (run / (STATE + TMP)).exists() and (run / (WEIGHTS + TMP)).exists()
    StylEx.load(run)  # a reader needs no recovery

    # 3. Resumed from step 2, killed between the commit and the last rename of the checkpoint of step 6: state.pt
    #    is at step 6 and its complete weights wait under the temporary name; weights.safetensors (step 4) still
    #    loads for readers.
    killed = stylex(*train_args(root, run, resume=True), failpoint=f"checkpoint-commit@{3 * EVERY}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint_steps(run) == (2 * EVERY, 3 * EVERY)
    StylEx.load(run)

    # 4. Resumed: the interrupted commit is finished (step 6, nothing lost), and the run ends like the reference.
    done = stylex(*train_args(root, run, resume=True))
    assert done.returncode == 0, done.stderr
    assert_finished_like_reference(run, root)


@pytest.mark.slow
def test_killed_at_random_moments(inputs, tmp_path):
    """SIGKILL mid-step at random moments, twice; each time the files load and at most one interval is lost."""
    root, run = inputs, tmp_path / "run"
    rng = random.Random(0)
    resume, last, kills = False, 0, 0
    for _ in range(2):
        target = min(last + rng.randint(2, 3), STEPS - 1)  # past the last kill, so this process made progress
        proc = subprocess.Popen(command(*train_args(root, run, resume)), env=env(), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "stats.jsonl").is_file() and max(logged_steps(run), default=0) >= target:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))  # somewhere inside a step
        proc.send_signal(signal.SIGKILL)
        if proc.wait(timeout=60) == 0:  # finished before the kill landed: nothing more to test
            break
        kills += 1
        last = max(logged_steps(run))
        resume = (run / STATE).exists()  # a checkpoint was committed (else the next run starts over)
        resumes_from = load_state(run / STATE)["step"] if resume else 0
        if (run / WEIGHTS).exists():  # complete at every moment: readers load it without recovery
            StylEx.load(run)
        assert last - resumes_from <= EVERY + 1, "more than one checkpoint interval lost"
        print(f"killed after step {last}; resumes from step {resumes_from}")
    assert kills >= 1
    done = stylex(*train_args(root, run, resume=True))
    assert done.returncode == 0, done.stderr
    assert_finished_like_reference(run, root)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_checkpoints_after_the_step_under_way(inputs, tmp_path, sig, code):
    """Ctrl-C (or a cluster's SIGTERM) used to leave the last periodic checkpoint and lose the steps since; it now
    ends the step under way, checkpoints it, and the run resumes to the uninterrupted result."""
    root, run = inputs, tmp_path / "run"
    args = [a if a != f"checkpoint_every={EVERY}" else "checkpoint_every=100" for a in train_args(root, run)]
    proc = subprocess.Popen(command(*args), env=env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "stats.jsonl").is_file() and max(logged_steps(run), default=0) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal landed")
    step = checkpoint_steps(run)[0]
    assert proc.returncode == code and f"stopped by {sig.name} at step {step}, checkpointed" in err, err
    assert 3 <= step < STEPS and logged_steps(run)[-1] == step
    done = stylex(*train_args(root, run, resume=True))
    assert done.returncode == 0, done.stderr
    assert_finished_like_reference(run, root)


@pytest.mark.slow
def test_attfind_killed_after_a_chunk_resumes_to_the_same_result(inputs, tmp_path):
    root = inputs
    # Fast mode and a tiny memory budget: one image per chunk, a few edits each, so 6 chunks of quick work.
    args = ["attfind", "--model", root / "reference", "--num-images", 6, "--top-k", 3, "--fast", 4,
            "--memory-mb", 0.1, "--no-render", "--quiet"]  # fmt: skip
    reference = stylex(*args, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    killed = stylex(*args, "--out", out, failpoint="attfind-chunk@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = out / ".effects_partial"
    assert len(list(partial.glob("chunk_*.safetensors"))) == 3 and not (out / "attributes.json").exists()
    (partial / "chunk_000099_0001.safetensors.tmp").write_bytes(b"half a chunk")  # as a kill mid-write leaves

    again = stylex(*args, "--out", out)
    assert again.returncode == 0, again.stderr
    assert not partial.exists()
    a, b = load_file(str(out / "effects.safetensors")), load_file(str(tmp_path / "reference" / "effects.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    got, want = (json.loads((d / "attributes.json").read_text()) for d in (out, tmp_path / "reference"))
    assert got["classes"] == want["classes"] and got["sufficiency"] == want["sufficiency"]
    assert got["stats"]["estimate_top10_overlap"] == want["stats"]["estimate_top10_overlap"]


# ------------------------------------------------------------------------------------------------ divergence


def _trainer(tmp_path, classifier, images, **overrides):
    from stylex.config import preset
    from stylex.training.trainer import Trainer

    cfg = preset("tiny", checkpoint_every=1, **overrides)
    return Trainer(cfg, classifier, images[:32], images[32:], tmp_path / "run", quiet=True)


def test_exploding_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, stand_in_classifier, tiny_images):
    from stylex.training.trainer import DivergenceError

    tr = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=4)
    step = tr.train_step

    def exploding():
        stats = step()
        return {**stats, "l1": 3e5} if tr.step == 2 else stats  # the third step's loss explodes

    tr.train_step = exploding
    with pytest.raises(DivergenceError, match=r"at step 3: l1 = 3e\+05, above max_loss 10000;.*step 2"):
        tr.run()
    assert checkpoint_steps(tmp_path / "run") == (2, 2)
    StylEx.load(tmp_path / "run")


def test_non_finite_gradients_stop_before_a_checkpoint_is_written(tmp_path, stand_in_classifier, tiny_images):
    """Finite losses, an inf gradient: Adam turns the weights into NaN; that checkpoint is never written."""
    from stylex.training.trainer import DivergenceError

    tr = _trainer(tmp_path, stand_in_classifier, tiny_images, max_steps=4)
    tr.G.const.register_hook(lambda g: g * float("inf") if tr.step == 2 else g)
    with pytest.raises(DivergenceError, match=r"by step 3: the weights of G, G_ema became non-finite.*step 2"):
        tr.run()
    assert checkpoint_steps(tmp_path / "run") == (2, 2)
    tensors, _ = read_weights(tmp_path / "run" / WEIGHTS)
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


@pytest.mark.parametrize("which", ["weights", "state"])
def test_a_full_disk_ends_in_an_oserror_naming_the_file(tmp_path, monkeypatch, which):
    """safetensors and torch.save report a full disk with their own types ("unexpected pos 185152 vs 185044"), which
    reached the user as a traceback; the write now ends as an OSError naming the file, without a partial file."""
    from stylex.training import checkpoint

    written = [0]  # bytes the cut write leaves before it fails

    def full(*args, **kwargs):
        if which == "weights":  # the bytes are written by stylex.files.save_safetensors: a plain write's error
            raise OSError(28, "No space left on device")
        Path(args[1]).write_bytes(b"x" * written[0])
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 185152 vs 185044")

    monkeypatch.setattr(checkpoint, "save_safetensors" if which == "weights" else "torch", type("T", (), {"save": full})
                        if which == "state" else full)  # fmt: skip
    with pytest.raises(OSError) as caught:
        checkpoint.save_checkpoint(tmp_path, {"G": torch.nn.Linear(2, 2)}, {"step": 3})
    name = WEIGHTS if which == "weights" else STATE
    assert caught.value.filename == str(tmp_path / (name + TMP)) and "could not be written (" in caught.value.strerror
    assert not list(tmp_path.glob("*" + TMP)) and not (tmp_path / STATE).exists()
    if which == "state":  # torch's message says no cause: what is seen is added
        import resource
        import shutil
        from collections import namedtuple

        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
        with pytest.raises(OSError, match="unexpected pos 185152 vs 185044; the disk is full"):
            checkpoint.save_checkpoint(tmp_path, {"G": torch.nn.Linear(2, 2)}, {"step": 3})
        monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, 10**12))
        monkeypatch.setattr(resource, "getrlimit", lambda which: (4 * 2**20, resource.RLIM_INFINITY))
        written[0] = 4 * 2**20  # the partial file reached the limit
        with pytest.raises(OSError, match=rf"a file-size limit of {4 * 2**20} bytes is set \(ulimit -f\)"):
            checkpoint.save_checkpoint(tmp_path, {"G": torch.nn.Linear(2, 2)}, {"step": 3})
        written[0] = 1000  # far below it: not blamed
        with pytest.raises(OSError) as caught:
            checkpoint.save_checkpoint(tmp_path, {"G": torch.nn.Linear(2, 2)}, {"step": 3})
        assert "ulimit" not in caught.value.strerror and not list(tmp_path.glob("*" + TMP))


def test_a_cut_write_names_its_file(tmp_path):
    """A write that a size limit cut short ("File too large") named no file: `explain` and `data pack` said only "a
    write failed". `atomic_write` (which they write through) names the file, and leaves no temporary one."""
    import errno

    import numpy as np

    from stylex.data import ImageDataset, save_npz
    from stylex.files import atomic_write

    def cut(tmp):
        raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "subset.png", cut)
    assert caught.value.filename == str(tmp_path / "subset.png") and caught.value.errno == errno.EFBIG
    assert list(tmp_path.iterdir()) == []
    save_npz(ImageDataset(np.zeros((2, 4, 4, 3), np.uint8)), tmp_path / "d.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]


def test_safetensors_files_are_byte_identical_across_processes(tmp_path):
    """safetensors orders the metadata keys by a per-process hash: identical runs wrote files with different
    checksums. `save_safetensors` sorts them (four keys: plain `save_file` gives several orders in 3 processes)."""
    import hashlib

    code = (
        "import sys, torch\n"
        "from stylex.files import save_safetensors\n"
        "from safetensors import safe_open\n"
        "t = {'a': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(4, dtype=torch.float16)}\n"
        "meta = {'step': '3', 'format_version': '1', 'meta': 'd\\u00f6gs', 'zz': 'q'}\n"
        "save_safetensors(t, sys.argv[1], meta)\n"
        "with safe_open(sys.argv[1], 'pt') as f:\n"
        "    assert f.metadata() == meta and torch.equal(f.get_tensor('a'), t['a'])\n"
    )
    digests = set()
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{i}.safetensors")], check=True)
        digests.add(hashlib.sha256((tmp_path / f"{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_a_file_size_limit_ends_attfind_and_report_in_one_line(tmp_path):
    """Under `ulimit -f` (or a full disk) attfind and report ended in a traceback: a write cut short names no file.
    Now one `error:` line, and attfind leaves no truncated chunk behind."""
    import resource

    from conftest import make_tiny_run

    make_tiny_run(tmp_path, num_images=32, steps=2)

    def limited(*args):
        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        command = [sys.executable, "-m", "stylex", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=limit)

    attfind = limited("attfind", "--model", tmp_path / "run", "--num-images", 8, "--fast", 4, "--top-k", 2,
                      "--no-render", "--out", tmp_path / "af")  # fmt: skip
    report = limited("report", tmp_path / "run", "--out", tmp_path / "rep", "--no-generate", "--quiet")
    for result in (attfind, report):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[-1].startswith("error: ") and ("File too large" in lines[-1]), result.stderr
    export = limited("export", tmp_path / "run", "--out", tmp_path / "exp", "--num-samples", 2)
    assert export.returncode == 1 and "Traceback" not in export.stderr, export.stderr
    said = export.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "clf") not in said and "exp" in said, "the file written is named, not the one copied"
    assert not [p for p in (tmp_path / "af").rglob("*") if p.is_file() and p.stat().st_size >= 4096]
    assert not list((tmp_path / "af").rglob("*.tmp")), "no truncated chunk left"


def test_one_writer_per_output_folder(tmp_path):
    """Two trainings into one --out, started together, interleaved their logs and overwrote each other's checkpoints
    (both said they had finished). A writer now holds its folder (`folder_lock`): a second process is refused at once,
    naming the holder; the hold ends with its process, kill -9 included; the same process may hold it again; the lock
    file goes at the end, and so does the folder when the lock made it and it stayed empty."""
    from stylex.errors import StylexError
    from stylex.files import LOCK_NAME, folder_lock

    out = tmp_path / "run"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, pathlib; from stylex.files import folder_lock\n"
         "with folder_lock(sys.argv[1], 'stylex train'):\n"
         "    pathlib.Path(sys.argv[2]).write_text('held'); time.sleep(60)", str(out), str(ready)],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(StylexError, match=rf"run is being written by `stylex train` \(process {holder.pid} on "):
            with folder_lock(out, "stylex attfind"):
                pass
        import numpy as np

        import stylex
        from conftest import StandInClassifier

        np.savez(tmp_path / "data.npz", images=np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8))
        with pytest.raises(StylexError, match="is being written by `stylex train`"):  # a training refused up front
            stylex.train_stylex(tmp_path / "data.npz", StandInClassifier(), out, stylex.preset("tiny", max_steps=1))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME], "it wrote nothing"
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
    # the killed holder left its lock file: the commands that write a new folder see past it (they said "not empty")
    from stylex.data.dataset import atomic_dir
    from stylex.files import clear_stale_lock

    clear_stale_lock(out)
    assert not out.exists() or list(out.iterdir()) == [], "a lock no process holds is removed"
    out.mkdir(exist_ok=True)
    (out / LOCK_NAME).write_text("`stylex train` (process 1 on elsewhere)")
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["x"]
    shutil.rmtree(out)
    with folder_lock(out, "stylex train"):  # the kernel let go of the killed process's lock
        with folder_lock(out, "stylex train"):  # and this process may take it again (train_stylex, then its Trainer)
            assert (out / LOCK_NAME).is_file()
            clear_stale_lock(out)  # a held lock stays
            assert (out / LOCK_NAME).is_file()
        assert (out / LOCK_NAME).is_file(), "the outer hold goes on"
    assert not out.exists(), "made for the lock and left empty: removed"
    with folder_lock(tmp_path / "new" / "deeper", "stylex attfind"):
        pass
    assert not (tmp_path / "new").exists(), "made for the lock and left empty: removed"
    # clearing a stale lock never removes a live holder's file made since (it flocked the old, removed file, then
    # unlinked the new one: a third writer then got in beside the second)
    import stylex.files

    lock = out / LOCK_NAME
    out.mkdir()
    lock.write_text("old")
    old = os.open(lock, os.O_RDONLY)
    lock.unlink()
    lock.write_text("`stylex train` (process 2 on here)")  # another writer's, made meanwhile
    real = stylex.files._open_lock
    stylex.files._open_lock = lambda path, create: old
    try:
        clear_stale_lock(out)
    finally:
        stylex.files._open_lock = real
    assert lock.read_text() == "`stylex train` (process 2 on here)"
    lock.unlink()
    # a link planted at the lock's name: never written through; the block runs unlocked
    (tmp_path / "victim").write_text("keep")
    lock.symlink_to(tmp_path / "victim")
    with folder_lock(out, "stylex train"):
        pass
    assert (tmp_path / "victim").read_text() == "keep" and lock.is_symlink()


def test_recover_checkpoint_keeps_a_consistent_pair(tmp_path):
    """The leftovers a crash mid-save can leave, each settled without loading anything else (files made by hand)."""
    from safetensors.torch import save_file

    from stylex.training.checkpoint import TMP_SUFFIX, recover_checkpoint

    def weights(path: Path, step: int) -> Path:
        save_file({"w": torch.full((2,), float(step))}, str(path), metadata={"step": str(step)})
        return path

    def state(step: int) -> None:
        torch.save({"step": step}, tmp_path / STATE)

    tmp_w, tmp_s = tmp_path / (WEIGHTS + TMP_SUFFIX), tmp_path / (STATE + TMP_SUFFIX)
    # a save that never committed: both temporary files go, the old pair stays
    weights(tmp_path / WEIGHTS, 2), state(2), weights(tmp_w, 4), tmp_s.write_bytes(b"half a state")
    recover_checkpoint(tmp_path)
    assert not tmp_w.exists() and not tmp_s.exists() and load_file(str(tmp_path / WEIGHTS))["w"][0] == 2
    # committed (the state is at step 4) but killed before the weights' rename: the new weights are put in place
    weights(tmp_w, 4), state(4)
    recover_checkpoint(tmp_path)
    assert not tmp_w.exists() and load_file(str(tmp_path / WEIGHTS))["w"][0] == 4
    # a damaged state beside temporary weights: the temporary weights go, and resuming names the damaged state
    weights(tmp_w, 6), (tmp_path / STATE).write_bytes(b"garbage")
    recover_checkpoint(tmp_path)
    assert not tmp_w.exists() and load_file(str(tmp_path / WEIGHTS))["w"][0] == 4
    with pytest.raises(StylexError, match="could not be loaded safely"):
        load_state(tmp_path / STATE)
    torch.save({"format_version": 1}, tmp_path / STATE)  # no step
    with pytest.raises(StylexError, match="not a stylex training state"):
        load_state(tmp_path / STATE)
