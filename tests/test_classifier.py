"""Tests for stylex.classifier: SmallCNN, InputSpec, ClassifierAdapter, loading and training (tiny, CPU)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from stylex.classifier import (
    ClassifierAdapter,
    ClassifierTrainConfig,
    InputSpec,
    SmallCNN,
    load_classifier,
    load_classifier_from_dict,
    train_classifier,
)
from stylex.errors import StylexError

# --- helpers ------------------------------------------------------------------------------------------


@dataclass
class ToyDataset:
    """Stand-in for stylex.data.ImageDataset: uint8 images [N, H, W, 3], int64 labels [N]."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def bright_vs_dark(n: int, size: int, seed: int) -> ToyDataset:
    """Class 0: dark noisy images; class 1: bright noisy images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels == 1, 170, 60)[:, None, None, None]
    images = np.clip(base + rng.normal(0, 30, (n, size, size, 3)), 0, 255).astype(np.uint8)
    return ToyDataset(images, labels.astype(np.int64), ["dark", "bright"])


class Spy(nn.Module):
    """Records its input; returns 2 logits that depend on it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x.mean(dim=(1, 2, 3))[:, None] * self.scale  # [N, 2]


class Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor):
        return self.fn(x * self.w)


TINY = ClassifierTrainConfig(width=8, epochs=4, batch_size=16, lr=5e-3, translate=0.0, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train once on 64 + 32 images at 16 px; shared by the loading tests."""
    out = tmp_path_factory.mktemp("clf") / "classifier"
    train_set, val_set = bright_vs_dark(64, 16, seed=0), bright_vs_dark(32, 16, seed=1)
    metrics = train_classifier(train_set, val_set, out, TINY, quiet=True)
    return out, metrics, val_set


# --- SmallCNN -----------------------------------------------------------------------------------------


def test_small_cnn_shapes_and_backward():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, resolution=16, width=8)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 3)
    feats = model.features(x)
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    assert model.feature_dims == [8, 16, 32]
    logits.logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.head.weight.grad.abs().sum() > 0
    # From 64 px the stem halves the resolution; the config rebuilds the same architecture.
    big = SmallCNN(num_classes=2, resolution=64)
    assert big.features(torch.zeros(1, 3, 64, 64))[0].shape == (1, 32, 32, 32)
    assert 100_000 < sum(p.numel() for p in big.parameters()) < 1_000_000
    assert SmallCNN(**big.config()).config() == big.config()
    assert big.input_spec == InputSpec(size=64, value_range=(-1, 1))


# --- InputSpec ----------------------------------------------------------------------------------------


def test_input_spec_round_trip_and_parsing():
    spec = InputSpec(size=224, value_range=(0, 1), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert InputSpec.from_options(224, "0,1", "imagenet", "imagenet") == spec
    assert InputSpec.from_options(value_range="0:255").value_range == (0.0, 255.0)
    # "imagenet" is torchvision's statistics of [0, 1] values, in the range's units (it fed 0-255 values through the
    # [0, 1] statistics: inputs up to about 1,100)
    wide = InputSpec.from_options(None, "0,255", "imagenet", "imagenet")
    assert wide.mean == pytest.approx((123.675, 116.28, 103.53)) and wide.std == pytest.approx((58.395, 57.12, 57.375))
    with pytest.raises(StylexError, match="e.g. '0.485,0.456,0.406' or 'imagenet'"):
        InputSpec.from_options(None, "0,1", "foo", "imagenet")
    assert InputSpec().is_identity and not spec.is_identity
    with pytest.raises(StylexError, match="low < high"):
        InputSpec(value_range=(1, 0))
    with pytest.raises(StylexError, match="together"):
        InputSpec(mean=(0.5,))
    with pytest.raises(StylexError, match="positive"):
        InputSpec(mean=(0.5,), std=(0.0,))
    with pytest.raises(StylexError, match="give 2"):
        InputSpec.from_options(value_range="0,1,2")
    with pytest.raises(StylexError, match="numbers"):
        InputSpec.from_options(mean="a,b,c", std="1")


# --- ClassifierAdapter --------------------------------------------------------------------------------


def test_adapter_maps_range_normalises_and_resizes():
    spy = Spy()
    spec = InputSpec(size=8, value_range=(0, 255), mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    adapter = ClassifierAdapter(spy, spec)
    # Constant channels -1, 0, 1 stay constant under resizing: check the arithmetic exactly.
    x = torch.stack([torch.full((16, 16), v) for v in (-1.0, 0.0, 1.0)])[None].repeat(2, 1, 1, 1)
    logits = adapter(x)
    assert logits.shape == (2, 2) and logits.dtype == torch.float32
    assert spy.seen.shape == (2, 3, 8, 8)
    expected = torch.tensor([(0 - 10) / 2, (127.5 - 20) / 4, (255 - 30) / 5])
    torch.testing.assert_close(spy.seen[0, :, 3, 5], expected)
    # A random image: bilinear with antialias when shrinking, then the same affine map.
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    adapter(x)
    shrunk = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    want = ((shrunk + 1) * 127.5 - torch.tensor([10.0, 20, 30]).view(1, 3, 1, 1)) / torch.tensor([2.0, 4, 5]).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(spy.seen, want)
    # Upsampling to a larger size; identity spec passes images through untouched.
    ClassifierAdapter(spy, InputSpec(size=32))(x)
    assert spy.seen.shape == (1, 3, 32, 32)
    ClassifierAdapter(spy, InputSpec())(x)
    torch.testing.assert_close(spy.seen, x)
    ClassifierAdapter(spy, InputSpec(value_range=(0, 1)))(x)
    torch.testing.assert_close(spy.seen, (x + 1) / 2)


def test_adapter_is_frozen_but_differentiable():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3, resolution=16, width=8)
    adapter = ClassifierAdapter(model, model.input_spec)
    assert adapter.num_classes == 3
    assert all(not p.requires_grad for p in model.parameters())
    adapter.train()
    assert adapter.training and not model.training and not any(m.training for m in model.modules())
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    adapter(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert adapter.has_features and len(adapter.features(x)) == 3
    assert not ClassifierAdapter(Spy()).has_features and ClassifierAdapter(Spy()).features(x) is None
    assert adapter.check(16) == 3
    assert adapter.to_dict()["kind"] == "module"


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda x: x.mean(dim=(1, 2, 3)), r"shape \[2\] .*expected logits \[2, K\] with K >= 2"),
        (lambda x: x.mean(dim=(1, 2, 3))[:, None], r"shape \[2, 1\] \(one logit\)"),
        (lambda x: x.mean(dim=(2, 3)) * float("nan"), r"non-finite"),
        (lambda x: (x.mean(dim=(1, 2, 3))[:, None], 0), r"returned tuple instead of a logits tensor"),
        (lambda x: x.mean(dim=(2, 3)).detach(), r"not differentiable"),
        (lambda x: x.mean(dim=(2, 3)).argmax(1, keepdim=True).repeat(1, 2), r"int64"),
        (
            lambda x: nn.functional.linear(x.flatten(1), torch.zeros(2, 3 * 8 * 8)),
            r"failed on a batch of 2 images \[2, 3, 16, 16\]",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
            r"1 channels.*RGB images.*grayscale",
        ),
        # probabilities were taken for logits: softmax applied twice, a 0.96 shown as 0.56
        (lambda x: (x.mean(dim=(2, 3)) * 5).softmax(1), r"returns probabilities .* the values before the softmax"),
    ],
)
def test_check_rejects_bad_outputs(fn, match):
    adapter = ClassifierAdapter(fn if isinstance(fn, nn.Module) else Lambda(fn), InputSpec())
    with pytest.raises(StylexError, match=match):
        adapter.check(16)


def test_log_probabilities_and_huge_logits_are_named():
    """Log-probabilities pass with a note; logits x1000 passed and training died at step 1 with advice (lower the
    learning rates) that could not help."""
    with pytest.warns(UserWarning, match="returns log-probabilities"):
        ClassifierAdapter(Lambda(lambda x: (x.mean(dim=(2, 3)) * 5).log_softmax(1)), InputSpec()).check(16)
    with pytest.warns(UserWarning, match=r"logits as large as .*divide them by a temperature"):
        ClassifierAdapter(Lambda(lambda x: x.mean(dim=(2, 3)) * 1e5), InputSpec()).check(16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ordinary logits: nothing said
        ClassifierAdapter(Lambda(lambda x: x.mean(dim=(2, 3)) * 5), InputSpec()).check(16)


def test_a_forward_that_wants_more_than_images_is_told_to_be_wrapped():
    class NeedsTemperature(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x, *, temperature):
            return x.mean(dim=(2, 3)) * self.w / temperature

    with pytest.raises(StylexError, match=r"temperature.*calls forward\(images\) alone; wrap the model"):
        ClassifierAdapter(NeedsTemperature(), InputSpec()).check(16)


def test_a_torchscript_failure_names_its_type_once():
    """TorchScript's cause line starts with the exception type the message already names."""
    grey = torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)))
    with pytest.raises(StylexError, match=r"with RuntimeError: Given groups=1.*grayscale") as caught:
        ClassifierAdapter(grey, InputSpec()).check(16)
    assert "RuntimeError: RuntimeError" not in str(caught.value)


def test_check_accepts_good_output_and_sets_num_classes():
    adapter = ClassifierAdapter(Lambda(lambda x: x.mean(dim=(2, 3))), InputSpec())
    with pytest.raises(StylexError, match="not known yet"):
        _ = adapter.num_classes
    assert adapter.check(16) == 3 and adapter.num_classes == 3


# --- training and the classifier directory ------------------------------------------------------------


def test_train_classifier_learns_and_writes_files(trained):
    out, metrics, _ = trained
    assert metrics["val_accuracy"] >= 0.9 and metrics["train_accuracy"] >= 0.9
    assert set(metrics["per_class_accuracy"]) == {"dark", "bright"}
    assert metrics["num_train"] == 64 and metrics["num_val"] == 32
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "weights.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "SmallCNN" and config["num_classes"] == 2 and config["resolution"] == 16
    assert config["class_names"] == ["dark", "bright"] and config["width"] == 8
    assert InputSpec.from_dict(config["input_spec"]) == InputSpec(size=16)
    assert ClassifierTrainConfig.from_dict(config["train"]) == TINY
    assert json.loads((out / "metrics.json").read_text())["val_accuracy"] == metrics["val_accuracy"]


def test_train_classifier_is_deterministic_and_validates(tmp_path, trained):
    _, metrics, _ = trained
    torch.manual_seed(12345)  # the global RNG must not matter, only config.seed
    again = train_classifier(bright_vs_dark(64, 16, 0), bright_vs_dark(32, 16, 1), tmp_path / "a", TINY, quiet=True)
    assert again["fingerprint"] == metrics["fingerprint"]
    unlabelled = ToyDataset(bright_vs_dark(8, 16, 0).images, None, [])
    with pytest.raises(StylexError, match="no labels"):
        train_classifier(unlabelled, None, tmp_path / "b", TINY, quiet=True)
    assert not (tmp_path / "b").exists()
    # every number of steps trains: 5 (0.2 x 5 = 1 warm-up step) ended in torch's ZeroDivisionError
    for steps in (4, 5, 6):
        metrics = train_classifier(bright_vs_dark(steps * 4, 16, 0), None, tmp_path / f"s{steps}",
                                   dataclasses.replace(TINY, batch_size=4, epochs=1), quiet=True)  # fmt: skip
        assert len(metrics["history"]) == 1
    data = bright_vs_dark(8, 16, 0)
    three = ToyDataset(data.images, data.labels, ["dark", "bright", "grey"])  # a class named but without images
    dark = ToyDataset(data.images[::2], data.labels[::2], data.class_names)
    with pytest.warns(UserWarning) as caught:
        train_classifier(three, dark, tmp_path / "c", TINY, quiet=True)
    said = [str(w.message) for w in caught]
    assert "1 class of 3 (grey) has no training images; it cannot learn them." in said
    assert (
        "2 classes of 3 (bright, grey) have no validation images; its validation accuracy says nothing about them."
        in said
    )


def test_load_directory_round_trip(trained, tmp_path):
    out, metrics, val_set = trained
    adapter = load_classifier(str(out))
    assert adapter.num_classes == 2 and adapter.class_names == ["dark", "bright"]
    assert adapter.fingerprint() == metrics["fingerprint"]  # the very weights that were trained
    x = torch.from_numpy(val_set.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        logits = adapter(x)
    assert (logits.argmax(1).numpy() == val_set.labels).mean() == metrics["val_accuracy"]
    record = json.loads(json.dumps(adapter.to_dict()))
    again = load_classifier_from_dict(record)
    with torch.no_grad():
        torch.testing.assert_close(again(x), logits, rtol=0, atol=0)
    # Stored relative to a parent folder, reloaded from there.
    rel = adapter.to_dict(relative_to=out.parent)
    assert rel["location"] == "classifier"
    assert load_classifier_from_dict(rel, base_dir=out.parent).fingerprint() == metrics["fingerprint"]
    with pytest.raises(StylexError, match="fingerprint"):
        load_classifier_from_dict({**record, "fingerprint": "0" * 16})
    # a damaged entry is one error naming it (a null location was a TypeError traceback from os.path.exists)
    for damage, why in (({"location": None}, "location must be a path"), ({"weights": 3}, "weights must be a path"),
                        ({"kind": "pickle"}, "kind 'pickle' is not one of")):  # fmt: skip
        with pytest.raises(StylexError, match=f"incomplete or malformed .*{why}"):
            load_classifier_from_dict({**record, **damage})


def test_load_errors(tmp_path):
    with pytest.raises(StylexError, match="neither an existing directory"):
        load_classifier(str(tmp_path / "missing.pt"))
    # a factory named by its file, as a shell user types it: the dotted name it needs is given
    for given, dotted in (("mypkg/models.py:make_classifier", "mypkg.models:make_classifier"),
                          ("./models.py:make", "models:make")):  # fmt: skip
        with pytest.raises(StylexError, match=f"named by its module, not its file: {re.escape(dotted)} "):
            load_classifier(given)
    with pytest.raises(StylexError, match="give a classifier directory"):
        load_classifier(str(tmp_path / "models.py") + ":make")  # an absolute path: no dotted name to offer
    with pytest.raises(StylexError, match="no config.json"):
        load_classifier(str(tmp_path))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(StylexError, match="not a TorchScript file"):
        load_classifier(str(tmp_path / "junk.pt"))
    with pytest.raises(StylexError, match="weights file .* does not exist"):
        load_classifier("os:getcwd", weights=str(tmp_path / "nope.safetensors"))


def test_torchscript_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(num_classes=2, resolution=16, width=8).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(tmp_path / "c.pt"))
    spec = InputSpec(size=16)
    adapter = load_classifier(str(tmp_path / "c.pt"), input_spec=spec)
    assert adapter.num_classes == 2 and adapter.has_features and adapter.source.kind == "torchscript"
    assert adapter.fingerprint() == ClassifierAdapter(model).fingerprint()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(adapter(x), model(x))
    reloaded = load_classifier_from_dict(json.loads(json.dumps(adapter.to_dict())))
    torch.testing.assert_close(reloaded(x), model(x))
    with pytest.warns(UserWarning, match=r"assuming images in \[-1, 1\]"):
        load_classifier(str(tmp_path / "c.pt"))
    named = load_classifier(str(tmp_path / "c.pt"), input_spec=spec, class_names=[" cat", "dog"])
    assert named.class_names == ["cat", "dog"] and adapter.class_names is None
    assert load_classifier_from_dict(json.loads(json.dumps(named.to_dict()))).class_names == ["cat", "dog"]
    for names, why in ((["cat"], "1 class names"), (["cat", "cat"], "distinct"), (["cat", ""], "non-empty")):
        with pytest.raises(StylexError, match=why):
            load_classifier(str(tmp_path / "c.pt"), input_spec=spec, class_names=names)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = f"toy_factory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from stylex.classifier import SmallCNN\n"
        "input_spec = {'size': 16, 'value_range': [-1, 1]}\n"
        "class_names = ['a', 'b']\n"
        "def build():\n    return SmallCNN(2, 16, width=8)\n"
        "def wide():\n    return SmallCNN(2, 16, width=16)\n"
        "def not_a_module():\n    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_factory_from_the_working_directory_loads_from_anywhere_later(tmp_path, monkeypatch):
    """A run records the folder its factory's module was found in (the working directory then), so commands on the
    run work from another directory; before, they failed to import it."""
    name = f"here_factory_{uuid.uuid4().hex[:8]}"
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    (project / f"{name}.py").write_text(
        "from stylex.classifier import SmallCNN\ndef build():\n    return SmallCNN(2, 16, 8)\n"
    )
    monkeypatch.chdir(project)
    try:
        with pytest.warns(UserWarning, match="no input spec"):
            recorded = load_classifier(f"{name}:build", resolution=16).to_dict()
        assert recorded["search_path"] == str(project)
        sys.modules.pop(name)
        monkeypatch.chdir(elsewhere)
        # given directly above, the factory is on this machine's trust list: the run's record loads it
        assert load_classifier_from_dict(recorded, resolution=16).fingerprint() == recorded["fingerprint"]
        sys.modules.pop(name)
        # on another machine (an empty list), a run's recorded factory is code a downloaded run could name: refused
        monkeypatch.setenv("STYLEX_TRUST_STORE", str(tmp_path / "other-machine.json"))
        with pytest.raises(StylexError, match=f"Python code, '{name}:build', which this machine has not trusted"):
            load_classifier_from_dict(recorded, resolution=16)
        assert name not in sys.modules, "refused before the import"
        trusted = load_classifier_from_dict(recorded, resolution=16, trust_code=True)  # and remembered
        assert trusted.fingerprint() == recorded["fingerprint"]
        sys.modules.pop(name)
        assert load_classifier_from_dict(recorded, resolution=16).fingerprint() == recorded["fingerprint"]
        sys.modules.pop(name)
        monkeypatch.setenv("STYLEX_TRUST_STORE", str(tmp_path / "third-machine.json"))
        monkeypatch.setenv("STYLEX_TRUST_CODE", "1")  # `stylex --trust-code COMMAND`: once, then remembered
        assert load_classifier_from_dict(recorded, resolution=16).fingerprint() == recorded["fingerprint"]
        sys.modules.pop(name)
        monkeypatch.delenv("STYLEX_TRUST_CODE")
        assert load_classifier_from_dict(recorded, resolution=16).fingerprint() == recorded["fingerprint"]
        sys.modules.pop(name)
        with pytest.raises(StylexError, match="not among the installed packages, and the run records no folder"):
            load_classifier_from_dict({k: v for k, v in recorded.items() if k != "search_path"}, trust_code=True)
    finally:
        sys.modules.pop(name, None)


def test_factory_loading(tmp_path, factory_module):
    torch.manual_seed(1)
    model = SmallCNN(2, 16, width=8).eval()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    adapter = load_classifier(f"{factory_module}:build", weights=str(weights))
    assert adapter.input_spec == InputSpec(size=16) and adapter.class_names == ["a", "b"]
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(adapter(x), model(x))
    assert load_classifier_from_dict(adapter.to_dict(), trust_code=True).fingerprint() == adapter.fingerprint()
    with pytest.raises(StylexError, match="do not match .*wrong shape"):
        load_classifier(f"{factory_module}:wide", weights=str(weights))
    with pytest.raises(StylexError, match="returned int, expected a torch.nn.Module"):
        load_classifier(f"{factory_module}:not_a_module")
    with pytest.raises(StylexError, match="has no 'missing'"):
        load_classifier(f"{factory_module}:missing")
    with pytest.raises(StylexError, match="Cannot import module 'no_such_module_xyz'"):
        load_classifier("no_such_module_xyz:build")


def test_batchnorm_statistics_are_those_of_the_final_weights():
    """train-classifier recomputes BatchNorm's running mean and variance over the training images under the final
    weights (the lagging running averages made eval-mode accuracy 0.67 where training-mode was 1.0), without
    touching the weights or the mode."""
    from stylex.classifier.small_cnn import SmallCNN
    from stylex.classifier.train import _recompute_batchnorm, _Split
    from stylex.data import ImageDataset

    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(10, 8, 8, 3, generator=gen) * 255).to(torch.uint8).numpy()
    split = _Split(ImageDataset(images, labels=np.array([0, 1] * 5)), "training set")
    model = SmallCNN(2, resolution=8, width=4).eval()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(5.0)
    inputs = []
    hook = bn.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k}
    _recompute_batchnorm(model, split, torch.device("cpu"), batch_size=5)  # two batches of 5 images
    hook.remove()
    seen = torch.cat(inputs)  # [10, C, H, W]
    assert torch.allclose(bn.running_mean, seen.mean(dim=(0, 2, 3)), atol=1e-5), "the mean over all 10 images"
    assert not model.training and bn.momentum == 0.1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


class _Trunk(nn.Module):
    """A torchvision-style classifier: `features` is its convolutional trunk (a tensor out), not a list of maps."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.drop(self.features(x).mean((2, 3))))


def test_a_classifier_in_training_mode_is_refused(tmp_path):
    """A model traced in training mode keeps dropout and batch statistics whatever eval() says: it answered the
    same images differently and moved its BatchNorm buffers, so StylEx trained against a drifting classifier (and
    the run's fingerprint no longer matched the file). The load check now refuses it with what to do."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    for mode, path in (("train", tmp_path / "train.pt"), ("eval", tmp_path / "eval.pt")):
        model = _Trunk(dropout=0.5).train(mode == "train")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notes
            torch.jit.trace(model, x, check_trace=False).save(str(path))
    with pytest.warns(UserWarning):
        adapter = load_classifier(str(tmp_path / "train.pt"))
    with pytest.raises(StylexError, match="other logits for the same images .* call model.eval\\(\\) before"):
        adapter.check(16)
    with pytest.warns(UserWarning):
        assert load_classifier(str(tmp_path / "eval.pt")).check(16) == 2


def test_a_features_trunk_that_returns_a_tensor_turns_the_perceptual_loss_off():
    """torchvision models call their trunk `features`; stylex read it as its feature-map hook and computed the
    perceptual loss over single images' channels. Now `check` keeps it only when it returns maps [N, C, H, W]."""
    from stylex.classifier import ClassifierAdapter

    adapter = ClassifierAdapter(_Trunk())
    assert adapter.has_features
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not said at every load (attfind, explain and report have no such loss) ...
        adapter.check(16)
    assert not adapter.has_features and adapter.features(torch.zeros(1, 3, 16, 16)) is None
    assert "the perceptual loss is off" in adapter.features_note  # ... but by the trainer, which has it


def test_torchscript_class_names_and_its_error_line(tmp_path):
    """A scripted `class_names: List[str]` names the classes (the run used to name them after the data's folders,
    by position); a TorchScript failure reports its cause (the last line), not the interpreter's header."""

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.class_names = torch.jit.Attribute(["zebra", "mango", "apple"], list[str])
            self.fc = nn.Linear(3 * 32 * 32, 3)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation note
        torch.jit.script(Named()).save(str(tmp_path / "named.pt"))
    with pytest.warns(UserWarning):
        adapter = load_classifier(str(tmp_path / "named.pt"))
    assert adapter.class_names == ["zebra", "mango", "apple"]
    with pytest.raises(StylexError) as caught:
        adapter.check(16)  # 16 px into a 32 px model, no --classifier-input-size
    message = str(caught.value)
    assert "mat1 and mat2 shapes cannot be multiplied" in message and "--classifier-input-size" in message


def test_a_recorded_torchscript_classifier_is_code_to_trust(tmp_path, monkeypatch):
    """A TorchScript forward can read and write files: one a run's config.json names is loaded only when this
    machine trusted those very bytes before (given directly, or once with trust_code), or with STYLEX_TRUST_CODE."""
    torch.manual_seed(0)
    path = tmp_path / "clf.pt"
    torch.jit.script(SmallCNN(2, 16, width=4).eval()).save(str(path))
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(tmp_path / "mine.json"))
    recorded = load_classifier(str(path), input_spec=InputSpec(size=16)).to_dict()  # given directly: trusted
    assert load_classifier_from_dict(recorded).fingerprint() == recorded["fingerprint"]
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(tmp_path / "theirs.json"))  # a downloaded run, elsewhere
    with pytest.raises(StylexError, match="is a TorchScript program, .*not trusted yet.*--trust-code"):
        load_classifier_from_dict(recorded)
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(tmp_path / "mine.json"))
    torch.manual_seed(1)
    torch.jit.script(SmallCNN(2, 16, width=4).eval()).save(str(path))  # other bytes at the trusted path
    with pytest.raises(StylexError, match="not trusted yet"):
        load_classifier_from_dict(recorded, check_fingerprint=False)


def test_a_factory_that_draws_new_weights_each_call_is_named(tmp_path, monkeypatch):
    """Its run trained, then every later command failed on the fingerprint without saying why."""
    name = f"fresh_factory_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(  # new weights at every call, as an unseeded model without a load has
        "import torch\nfrom stylex.classifier import SmallCNN\ncalls = [0]\ndef build():\n    calls[0] += 1\n"
        "    torch.manual_seed(calls[0])\n    return SmallCNN(2, 16, width=4)\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        with pytest.warns(UserWarning, match="no input spec"):
            adapter = load_classifier(f"{name}:build", resolution=16)
        recorded = {**adapter.to_dict(), "fingerprint": adapter.fingerprint()}  # as a run records it
        with pytest.raises(StylexError, match="builds its model without loading saved weights"):
            load_classifier_from_dict(recorded, resolution=16)
    finally:
        sys.modules.pop(name, None)


def test_a_recorded_factory_loads_from_its_folder_not_the_working_directory(tmp_path, monkeypatch):
    """The trust given to project/mod.py let a same-named mod.py in today's working directory run."""
    name = f"shadowed_{uuid.uuid4().hex[:8]}"
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    (project / f"{name}.py").write_text("import torch\nfrom stylex.classifier import SmallCNN\ndef build():\n"
                                        "    torch.manual_seed(0)\n    return SmallCNN(2, 16, width=4)\n")  # fmt: skip
    marker = tmp_path / "marker"
    (elsewhere / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build():\n    pass\n")
    monkeypatch.chdir(project)
    try:
        with pytest.warns(UserWarning, match="no input spec"):
            adapter = load_classifier(f"{name}:build", resolution=16)
        recorded = {**adapter.to_dict(), "fingerprint": adapter.fingerprint()}
        sys.modules.pop(name)
        monkeypatch.chdir(elsewhere)
        assert load_classifier_from_dict(recorded, resolution=16).fingerprint() == recorded["fingerprint"]
        assert not marker.exists(), "the module in the working directory was not imported"
    finally:
        sys.modules.pop(name, None)


def test_the_trust_list_is_never_lost_or_misplaced(tmp_path, monkeypatch):
    """A list stylex cannot read is said and left alone (it was overwritten, dropping its entries); a path that is not
    a regular file (/dev/null as root) is never replaced; an empty STYLEX_TRUST_STORE means no list."""
    from stylex.classifier import trust
    from stylex.classifier.adapter import ClassifierSource

    src = ClassifierSource(kind="factory", location="m:build", search_path=str(tmp_path))
    store = tmp_path / "trust.json"
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(store))
    trust.remember(src)
    assert trust.is_trusted(src)
    store.write_text("{not json")
    with pytest.warns(UserWarning, match="trust list .* cannot be read"):
        assert not trust.is_trusted(src)
    trust.remember(ClassifierSource(kind="factory", location="other:build"))
    assert store.read_text() == "{not json"
    folder = tmp_path / "a-folder"
    folder.mkdir()
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(folder))
    trust.remember(src)
    assert folder.is_dir() and not trust.is_trusted(src)
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(tmp_path / "missing-folder" / "t.json"))
    with pytest.warns(UserWarning, match="could not add the classifier to the trust list .* ask for --trust-code"):
        trust.remember(src)  # said: later commands would ask for --trust-code every time, without a word
    assert not (tmp_path / "missing-folder").exists(), "a given list's folder is not created"
    monkeypatch.setenv("STYLEX_TRUST_STORE", "")
    trust.remember(src)
    assert not trust.is_trusted(src)


def test_a_recorded_factory_runs_nothing_from_elsewhere(tmp_path, monkeypatch):
    """Under `python -m`, `python -c` or a notebook the working directory is on sys.path: a same-named module there
    ran before the folder check refused it, and one shadowed a trusted installed factory."""
    name = f"elsewhere_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "marker"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build():\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")  # as `python -c` has it
    from stylex.classifier import trust
    from stylex.classifier.adapter import ClassifierSource

    for record, why in (
        ({"kind": "factory", "location": f"{name}:build", "search_path": str(tmp_path / "gone")}, "where the run "
         "recorded it"),
        ({"kind": "factory", "location": f"{name}:build"}, "not among the installed packages, and the run records "
         "no folder for it .* PYTHONPATH=/its/folder"),  # an installed package by its record, or an older run
    ):  # fmt: skip
        with pytest.raises(StylexError, match=why):
            load_classifier_from_dict(record, trust_code=True)
        assert not marker.exists() and name not in sys.modules
        assert not trust.is_trusted(ClassifierSource.from_dict(record)), "a failed --trust-code trusts nothing"


def test_the_trust_list_write_makes_a_new_file_and_a_fifo_is_no_list(tmp_path, monkeypatch):
    import os

    from stylex.classifier import trust
    from stylex.classifier.adapter import ClassifierSource

    src = ClassifierSource(kind="factory", location="m:build", search_path=str(tmp_path))
    store, victim = tmp_path / "s.json", tmp_path / "victim.txt"
    victim.write_text("mine")
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(store))
    os.symlink(victim, tmp_path / f".s.json.{os.getpid()}.tmp")  # the old temporary name, planted as a link
    trust.remember(src)
    assert victim.read_text() == "mine" and trust.is_trusted(src) and not store.is_symlink()
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    monkeypatch.setenv("STYLEX_TRUST_STORE", str(fifo))
    with pytest.warns(UserWarning, match="not a regular file"):
        assert not trust.is_trusted(src)  # returns instead of hanging on the read


def test_the_trust_list_never_creates_a_home_folder(tmp_path, monkeypatch):
    """As root in a container, HOME=/nonexistent made stylex create /nonexistent/.config/stylex; and with a list
    it cannot write, the refusal still said "add --trust-code once"."""
    from stylex.classifier import trust
    from stylex.classifier.adapter import ClassifierSource

    monkeypatch.delenv("STYLEX_TRUST_STORE")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nonexistent"))
    src = ClassifierSource(kind="factory", location="m:build", search_path=str(tmp_path))
    with pytest.warns(UserWarning, match="could not add the classifier .* home folder .*nonexistent does not exist"):
        trust.remember(src)
    assert not (tmp_path / "nonexistent").exists()
    assert not trust.can_write()
    record = {"kind": "factory", "location": "m:build", "search_path": str(tmp_path)}
    with pytest.raises(StylexError, match=r"--trust-code \(every time: the trust list .* cannot be written here\)"):
        load_classifier_from_dict(record)
    monkeypatch.setenv("HOME", str(tmp_path))  # an existing home: its .config/stylex is made
    trust.remember(src)
    assert trust.is_trusted(src) and (tmp_path / ".config" / "stylex" / "trusted-classifiers.json").is_file()


def test_a_factory_found_through_pythonpath_is_recorded_with_its_folder(tmp_path, monkeypatch):
    """`PYTHONPATH=models stylex train --classifier mymodels:make` (the route train's own error suggests) recorded no
    folder: every later command failed unless PYTHONPATH was set again. A refused factory was trusted too."""
    from stylex.classifier import trust
    from stylex.classifier.adapter import ClassifierSource

    name = f"onpath_{uuid.uuid4().hex[:8]}"
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir(), elsewhere.mkdir()
    (models / f"{name}.py").write_text(
        "import torch\nfrom stylex.classifier import SmallCNN\ndef build():\n    torch.manual_seed(0)\n"
        "    return SmallCNN(2, 16, width=4)\ndef pair():\n    m = SmallCNN(2, 16, width=4)\n"
        "    class Two(torch.nn.Module):\n        def __init__(self):\n            super().__init__()\n"
        "            self.m = m\n        def forward(self, x):\n            return self.m(x), self.m(x)\n"
        "    return Two()\n"
    )
    monkeypatch.chdir(elsewhere)
    monkeypatch.syspath_prepend(str(models))
    try:
        with pytest.warns(UserWarning, match="no input spec"):
            recorded = load_classifier(f"{name}:build", resolution=16).to_dict()
        assert recorded["search_path"] == str(models)
        with pytest.warns(UserWarning, match="no input spec"), pytest.raises(StylexError):
            load_classifier(f"{name}:pair", resolution=16)
        pair = ClassifierSource(kind="factory", location=f"{name}:pair", search_path=str(models))
        assert not trust.is_trusted(pair), "a refused classifier is not trusted"
        sys.modules.pop(name)
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(models)])
        assert load_classifier_from_dict(recorded, resolution=16).fingerprint() == recorded["fingerprint"]
    finally:
        sys.modules.pop(name, None)


def test_a_classifier_near_chance_is_named():
    """A 9-class classifier at 0.167 (chance 0.111) went through training, AttFind and the report without a word."""
    from stylex.classifier.train import weak_classifier_note

    assert "0.167, is nearer chance (0.111 for 9 classes)" in weak_classifier_note(0.167, 9)
    assert weak_classifier_note(0.7, 2) is not None and weak_classifier_note(0.75, 2) is None
    assert weak_classifier_note(0.6, 9) is None and weak_classifier_note(0.5, 1) is None
    # unbalanced classes: always naming the commonest of 60 / 15 / 5 images scores 0.750; its balanced accuracy says so
    import numpy as np

    from stylex.classifier.train import balanced_accuracy

    labels = np.array([0] * 60 + [1] * 15 + [2] * 5)
    assert balanced_accuracy(labels, np.zeros(80, np.int64), 3) == pytest.approx(1 / 3)
    assert balanced_accuracy(labels, labels, 3) == 1.0 and balanced_accuracy(labels[:60], labels[:60], 3) == 1.0
    said = weak_classifier_note(0.75, 3, balanced=1 / 3)
    assert "0.750, hides unbalanced classes: its balanced accuracy" in said and "0.333, is nearer chance" in said
    assert weak_classifier_note(0.75, 3, balanced=0.9) is None and weak_classifier_note(0.3, 3, balanced=0.3)
    assert "balanced accuracy (the mean of the per-class accuracies; 0.333 over all images), 0.500, is nearer" in (
        weak_classifier_note(1 / 3, 2, balanced=0.5)
    ), "the figure judged is named"
    # a class without held-out images: the balanced figure averages over the others, and naming the commonest of those
    # every time scores 1 / present there (0.500 for 2 of 3 classes read as better than chance 0.333)
    always = weak_classifier_note(0.9, 3, balanced=0.5, present=2)
    assert always and "0.500, is nearer chance (0.500 for 2 classes with held-out images)" in always
    assert weak_classifier_note(1.0, 3, balanced=1.0, present=1) is None, "one class held out: nothing to judge"


def test_a_learning_rate_that_breaks_the_weights_writes_nothing(tmp_path):
    """`train-classifier --lr inf` (or any lr large enough to break the weights in the last step, which the loss
    check never sees) wrote a classifier whose weights were all NaN, reported as "validation accuracy 0.667"."""
    import dataclasses

    for lr in (math.inf, math.nan, 0.0):
        with pytest.raises(StylexError, match="lr must be a finite number > 0"):
            dataclasses.replace(TINY, lr=lr)
    with pytest.raises(StylexError, match="weight_decay a finite number"):
        dataclasses.replace(TINY, weight_decay=math.inf)
    train_set = bright_vs_dark(16, 16, seed=0)
    one_step = dataclasses.replace(TINY, epochs=1, lr=1e30)  # one step: its loss is finite, the weights after it not
    with pytest.raises(StylexError, match="non-finite.*nothing was written. Lower the learning rate"):
        train_classifier(train_set, None, tmp_path / "clf", one_step, quiet=True)
    assert not (tmp_path / "clf" / "weights.safetensors").exists()
