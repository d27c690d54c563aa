"""Property tests (hypothesis): any input to a loader or parser gives a result or a StylexError.

Never another exception type, and never a hang: each call runs under a 10-second alarm. Covered: image files
(random bytes, and valid images with bytes flipped or cut), .npz contents, TrainConfig.from_dict, --set
overrides, label rules, AttFind results (JSON), effects files, checkpoint weights and state files, and
classifier files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from safetensors.torch import save_file

from stylex.attfind.effects import Effects
from stylex.attfind.result import AttFindResult
from stylex.config import TrainConfig, apply_overrides, parse_override, preset
from stylex.data import FACTOR_NAMES, load_dataset, parse_rule, sample_factors
from stylex.errors import StylexError
from stylex.training.checkpoint import load_state, read_weights

# STYLEX_FUZZ_EXAMPLES=2000 hunts longer, with fresh random inputs each run; the default is fixed and quick.
EXAMPLES = int(os.environ.get("STYLEX_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=not EXAMPLES,
    database=None,  # nothing written into the repository
)
SECONDS = 60
"""A hang guard, not a timing: the ~800 inputs take about 2 s in all here, but with a training beside the suite on
the two cores one took over 10 s (the guard was 10 s then) and failed a run that had found nothing wrong."""


@contextlib.contextmanager
def no_hang(seconds: int = SECONDS) -> Iterator[None]:
    """Fail (TimeoutError) when the block runs longer than `seconds` (Unix; elsewhere no limit)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise TimeoutError(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def result_or_stylex_error(fn, *args, **kwargs):
    """fn(*args) under `no_hang`; a StylexError becomes None, any other exception fails the test."""
    with no_hang():
        try:
            return fn(*args, **kwargs)
        except StylexError as e:
            assert str(e).strip(), "an empty error message"
            return None


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# ------------------------------------------------------------------------------------------------ images

MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\xff\xd8\xff",
    b"RIFF\x00\x00\x00\x00WEBP",
]
EXTENSIONS = [".png", ".gif", ".bmp", ".tif", ".jpg", ".webp"]
FORMATS = {"PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "JPEG": ".jpg", "WEBP": ".webp"}
MODES = ["L", "RGB", "RGBA", "P", "I;16", "LA", "1", "F", "CMYK"]


def _valid_image(mode: str, fmt: str, size: tuple[int, int]) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode if mode not in ("I;16", "F") else "L")
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    elif mode == "F":
        im = Image.fromarray(np.asarray(im).astype(np.float32) / 255)
    buf = io.BytesIO()
    try:
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):  # this format cannot hold this mode
        Image.fromarray(rgb).save(buf := io.BytesIO(), fmt)
    return buf.getvalue()


@st.composite
def damaged_images(draw) -> tuple[bytes, str]:
    """Valid images in many modes and formats with bytes flipped and / or the tail cut off."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    data = bytearray(_valid_image(draw(st.sampled_from(MODES)), fmt, size))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data), FORMATS[fmt]


def _check_loaded(folder: Path, resolution: int | None) -> None:
    ds = result_or_stylex_error(load_dataset, folder, resolution=resolution, progress=False)
    if ds is not None:
        assert ds.images.dtype == np.uint8 and ds.images.ndim == 4 and ds.images.shape[-1] == 3
        assert ds.images.shape[1] == ds.images.shape[2] and len(ds) == 1
        if resolution is not None:
            assert ds.images.shape[1] == resolution


@FUZZ
@given(magic=st.sampled_from(MAGIC), tail=st.binary(max_size=512), ext=st.sampled_from(EXTENSIONS))
def test_random_bytes_as_image_file(magic, tail, ext):
    with scratch() as d:
        (d / "imgs").mkdir()
        (d / "imgs" / f"x{ext}").write_bytes(magic + tail)
        _check_loaded(d / "imgs", 8)


# A TIFF whose strip offsets tag holds text: Pillow raised TypeError (found by this test).
TIFF_STRING_TAG = bytes.fromhex(
    "49492a000800000008000001040001000000010000000101040001000000010000000301030001000000010000000601030001000000"
    "0100000011010200010000006e0000001601040001000000010000001701040001000000010000001c01030001000000010000000000"
    "000000"
)


@FUZZ
@given(image=damaged_images(), resolution=st.sampled_from([None, 8]))
@example(image=(TIFF_STRING_TAG, ".tif"), resolution=None)
def test_damaged_image_file(image, resolution):
    data, ext = image
    with scratch() as d:
        (d / "imgs" / "a").mkdir(parents=True)
        (d / "imgs" / "a" / f"x{ext}").write_bytes(data)
        _check_loaded(d / "imgs", resolution)


# ------------------------------------------------------------------------------------------------ npz

_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int64, np.float32, np.bool_, np.dtype("<U3"), np.dtype("S2")])


@st.composite
def npz_contents(draw) -> dict[str, np.ndarray]:
    keys = draw(st.lists(st.sampled_from(["images", "labels", "class_names", "filenames", "other"]), unique=True))
    out = {}
    for key in keys:
        if key == "images" and draw(st.booleans()):  # often near-valid pixels, to get past the first checks
            shape = draw(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 5), st.sampled_from([1, 3, 4])))
            out[key] = draw(hnp.arrays(np.uint8, draw(st.sampled_from([shape, shape[:3]]))))
            continue
        dtype = draw(_DTYPES)
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
        out[key] = draw(hnp.arrays(dtype, shape))
    return out


@FUZZ
@given(arrays=npz_contents(), resolution=st.sampled_from([None, 4]))
def test_random_npz_contents(arrays, resolution):
    with scratch() as d:
        np.savez(d / "x.npz", **arrays)
        ds = result_or_stylex_error(load_dataset, d / "x.npz", resolution=resolution, progress=False)
    if ds is not None:
        assert ds.images.dtype == np.uint8 and ds.images.shape[-1] == 3 and len(ds) == len(arrays["images"])
        if ds.labels is not None:
            assert ds.labels.min() >= 0 and ds.labels.max() < ds.num_classes


CSV_CELLS = st.sampled_from(["a.png", "b.png", "0", "1", "-1", "99999999999999999999", "x", "", "0.5", "circle"])


@st.composite
def factor_folders(draw) -> tuple[str, str | None]:
    """factors.csv text (a header with 'filename' and rows of random cells) and synth.json text (or None)."""
    header = ["filename", *draw(st.lists(st.sampled_from(["label", "shape", "obj_hue"]), unique=True))]
    rows = [
        [draw(st.sampled_from(["a.png", "a.png", "missing.png", "", "/"]))]
        + draw(st.lists(CSV_CELLS, min_size=max(len(header) - 2, 0), max_size=len(header)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    if draw(st.booleans()):
        text = draw(st.text(max_size=60))
    synth = draw(
        st.none()
        | JSON.map(json.dumps)
        | st.just('{"class_names": ["a", "b"], "factors": {"shape": {"categories": ["circle", "square"]}}}')
        | st.just('{"factors": {"shape": {"categories": 3}}}')
    )
    return text, synth


@FUZZ
@given(folder=factor_folders())
def test_random_factor_folder(folder):
    text, synth = folder
    with scratch() as d:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "a.png")
        (d / "factors.csv").write_text(text)
        if synth is not None:
            (d / "synth.json").write_text(synth)
        ds = result_or_stylex_error(load_dataset, d, resolution=4, progress=False)
    if ds is not None and ds.labels is not None:
        assert ds.labels.min() >= 0 and ds.labels.max() < ds.num_classes


@FUZZ
@given(data=st.binary(max_size=600), zip_header=st.booleans())
def test_random_bytes_as_npz(data, zip_header):
    with scratch() as d:
        (d / "x.npz").write_bytes((b"PK\x03\x04" if zip_header else b"") + data)
        result_or_stylex_error(load_dataset, d / "x.npz", progress=False)


# ------------------------------------------------------------------------------------------------ config

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TRAIN_KEYS = sorted(TrainConfig().to_dict())
MODEL_KEYS = sorted(TrainConfig().to_dict()["model"])


@st.composite
def config_dicts(draw) -> dict:
    """Mostly real keys with random values (sometimes the right type), sometimes unknown keys."""
    base = preset("tiny").to_dict()
    d = {}
    for key in draw(st.lists(st.sampled_from([*TRAIN_KEYS, "bogus"]), unique=True, max_size=6)):
        if key == "model" and draw(st.booleans()):
            model = dict(base["model"])
            for m in draw(st.lists(st.sampled_from(MODEL_KEYS), unique=True, max_size=3)):
                model[m] = draw(JSON | st.integers(-4, 4096))
            d[key] = model
        else:
            d[key] = draw(JSON | st.just(base.get(key)) | st.integers(-3, 3) | st.floats(-2, 2))
    return d


@FUZZ
@given(data=config_dicts() | st.dictionaries(st.text(max_size=10), JSON, max_size=4) | JSON)
def test_config_from_dict(data):
    cfg = result_or_stylex_error(TrainConfig.from_dict, data, "fuzz.json")
    if cfg is None:
        return
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # JSON round trip
    assert again.to_dict() == cfg.to_dict() or "nan" in json.dumps(cfg.to_dict()).lower()
    try:
        with no_hang():
            cfg.validate()
    except StylexError:
        return
    assert cfg.batch_size >= 1 and cfg.log_every >= 1 and cfg.r1_interval >= 1 and cfg.seed >= 0
    assert min(cfg.lr_g, cfg.lr_e, cfg.lr_d) > 0 and 0 <= cfg.val_fraction < 1 and cfg.model.resolution <= 1024


@FUZZ
@given(
    text=st.text(max_size=30)
    | st.builds(lambda k, v: f"{k}={v}", st.sampled_from([*TRAIN_KEYS, "model.w_dim", "model.x", "a.b"]), st.text())
    | st.builds(lambda k, v: f"{k}={json.dumps(v)}", st.sampled_from(TRAIN_KEYS), JSON)
)
def test_override_parsing(text):
    parsed = result_or_stylex_error(parse_override, text)
    if parsed is not None:
        key, value = parsed
        result_or_stylex_error(apply_overrides, preset("tiny"), {key: value})


def test_override_parsing_of_extreme_values():
    assert parse_override("seed=" + "9" * 5000)[1] == "9" * 5000  # beyond int() limits: kept as text
    assert parse_override("betas=" + "[" * 100_000)[1] == "[" * 100_000  # too deep for json: kept as text
    with pytest.raises(StylexError, match="lr_g"):
        preset("tiny", lr_g=-1.0)
    with pytest.raises(StylexError, match="log_every"):
        preset("tiny", log_every=0)


# ------------------------------------------------------------------------------------------------ label rules

RULE_TOKENS = [*FACTOR_NAMES, "circle", "square", "hexagon", "==", "!=", "<", ">", "<=", ">=", "and", "or", "AND"]
RULE_TOKENS += ["(", ")", ":", "0", "1", "2", "0.5", "-1e3", "1e999", "99999999999", "3", "x"]


@FUZZ
@given(
    text=st.text(max_size=40)
    | st.lists(st.sampled_from(RULE_TOKENS), max_size=12).map(" ".join)
    | st.integers(1, 400).map(lambda n: "(" * n + "obj_hue<0.5" + ")" * n)
    | st.integers(1, 3000).map(lambda n: " and ".join(["pos_x<0.5"] * n))
)
def test_label_rules(text):
    rule = result_or_stylex_error(parse_rule, text)
    if rule is not None:
        labels = rule.apply(sample_factors(32, seed=0))
        assert labels.shape == (32,) and labels.min() >= 0 and labels.max() < rule.num_classes


# ------------------------------------------------------------------------------------------------ results


def _valid_result() -> dict:
    attribute = {
        "rank": 1,
        "flat_index": 3,
        "layer": 0,
        "layer_name": "b4.conv",
        "channel": 3,
        "direction": "max",
        "mean_effect": 0.5,
        "flip_rate": 0.25,
    }
    classes = [
        {"class_index": k, "class_name": str(k), "num_images": 4, "attributes": [attribute], "sufficiency": 0.5}
        for k in range(2)
    ]
    return {
        "format": "stylex.attfind.attributes",
        "version": 1,
        "settings": {},
        "sufficiency": 0.5,
        "stats": {},
        "classes": classes,
    }


@st.composite
def mutated_results(draw) -> dict:
    """A valid attributes.json with one leaf or branch replaced by random JSON."""
    d = _valid_result()
    path = draw(
        st.sampled_from(
            [
                ("version",),
                ("settings",),
                ("sufficiency",),
                ("classes",),
                ("classes", 0),
                ("classes", 0, "class_index"),
                ("classes", 0, "num_images"),
                ("classes", 1, "attributes"),
                ("classes", 1, "attributes", 0),
                ("classes", 1, "attributes", 0, "direction"),
                ("classes", 1, "attributes", 0, "rank"),
                ("classes", 1, "attributes", 0, "mean_effect"),
                ("classes", 1, "attributes", 0, "layer_name"),
            ]
        )
    )
    target = d
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = draw(JSON)
    if draw(st.booleans()) and isinstance(target, dict):
        target.pop(path[-1])
    return d


@FUZZ
@given(d=mutated_results() | JSON)
def test_attfind_result_from_json(d):
    text = json.dumps(d)
    result = result_or_stylex_error(AttFindResult.from_json, text, "fuzz.json")
    if result is not None:
        again = AttFindResult.from_json(result.to_json())
        assert again.classes == result.classes and again.sufficiency == result.sufficiency


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_attfind_result_from_random_text(text):
    result_or_stylex_error(AttFindResult.from_json, text, "fuzz.json")


# ------------------------------------------------------------------------------------------------ binary files

EFFECT_NAMES = ["effects", "s_min", "s_max", "base_logits", "styles", "styles_rgb", "exact"]


@st.composite
def safetensors_files(draw, names: list[str], metadata_keys: list[str]) -> bytes:
    """A real safetensors file with some of `names` as random small tensors and random string metadata."""
    tensors = {}
    for name in draw(st.lists(st.sampled_from([*names, "other"]), unique=True, max_size=len(names) + 1)):
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
        dtype = draw(st.sampled_from([torch.float32, torch.uint8, torch.int64, torch.bfloat16, torch.bool]))
        tensors[name] = torch.zeros(shape, dtype=dtype)
    metadata = {
        k: draw(st.sampled_from(["1", "0", "2", "x", "{}", "[]", "nan", "1.0", "stylex.attfind.effects", "-1"]))
        for k in draw(st.lists(st.sampled_from(metadata_keys), unique=True))
    }
    with scratch() as d:
        save_file(tensors, str(d / "f.safetensors"), metadata=metadata or None)
        return (d / "f.safetensors").read_bytes()


def _valid_effects_file() -> bytes:
    n, s, k = 2, 3, 2
    tensors = {
        "effects": torch.zeros(n, 2, s, k),
        "s_min": torch.zeros(s),
        "s_max": torch.ones(s),
        "base_logits": torch.zeros(n, k),
        "styles": torch.zeros(n, s),
        "styles_rgb": torch.zeros(n, 4),
        "exact": torch.ones(n, s, dtype=torch.uint8),
    }
    with scratch() as d:
        metadata = {"format": "stylex.attfind.effects", "version": "1", "shift_size": "1.0", "meta": "{}"}
        save_file(tensors, str(d / "e.safetensors"), metadata=metadata)
        return (d / "e.safetensors").read_bytes()


VALID_EFFECTS = _valid_effects_file()


@st.composite
def flipped(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(out) - 1))
        out[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out)


@FUZZ
@given(
    data=st.binary(max_size=300)
    | safetensors_files(EFFECT_NAMES, ["format", "version", "shift_size", "meta"])
    | flipped(VALID_EFFECTS)
)
def test_effects_load(data):
    with scratch() as d:
        (d / "effects.safetensors").write_bytes(data)
        effects = result_or_stylex_error(Effects.load, d / "effects.safetensors")
    if effects is not None:
        assert effects.effects.shape[1] == 2 and effects.exact.dtype == torch.bool


@FUZZ
@given(
    data=st.binary(max_size=300)
    | safetensors_files(["G.const", "E.fc.weight"], ["format_version", "step"])
    | flipped(VALID_EFFECTS)
)
def test_read_weights(data):
    with scratch() as d:
        (d / "weights.safetensors").write_bytes(data)
        got = result_or_stylex_error(read_weights, d / "weights.safetensors")
    if got is not None:
        tensors, metadata = got
        assert metadata["format_version"] == "1" and all(isinstance(t, torch.Tensor) for t in tensors.values())


def _valid_state() -> bytes:
    buf = io.BytesIO()
    torch.save({"format_version": 1, "step": 3, "perm": torch.arange(4), "opt": {"lr": 0.1}}, buf)
    return buf.getvalue()


@FUZZ
@given(data=st.binary(max_size=300) | flipped(_valid_state()))
def test_load_state(data):
    with scratch() as d:
        (d / "state.pt").write_bytes(data)
        state = result_or_stylex_error(load_state, d / "state.pt")
    if state is not None:
        assert state["format_version"] == 1 and "step" in state


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=300) | flipped(_valid_state()))
def test_classifier_file(data):
    from stylex.classifier import load_classifier

    with scratch() as d:
        (d / "clf.pt").write_bytes(data)
        result_or_stylex_error(load_classifier, str(d / "clf.pt"), resolution=8)
