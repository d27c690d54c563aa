"""stylex.data: loaders, conversions, splits, synthetic shapes and label rules (tiny, CPU, deterministic)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylex.data import (
    FACTOR_NAMES,
    SHAPES,
    ImageDataset,
    class_dir_names,
    load_dataset,
    parse_correlate,
    parse_rule,
    read_image,
    render_scene,
    render_shapes,
    save_image_folder,
    to_tensor,
    to_uint8,
    write_synth,
)
from stylex.errors import StylexError

RES = 16


def _rgb(seed: int, size: int = RES, width: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, width or size, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


# ------------------------------------------------------------------------------------------------ convert


def test_to_tensor_to_uint8_round_trip():
    images = np.stack([_rgb(0), _rgb(1)])
    images[0, 0, 0] = (0, 128, 255)
    x = to_tensor(images)
    assert x.shape == (2, 3, RES, RES) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)
    np.testing.assert_array_equal(to_uint8(x), images)
    assert to_tensor(images[0]).shape == (1, 3, RES, RES)  # one HWC image gains a batch axis
    np.testing.assert_array_equal(to_uint8(torch.full((1, 3, 2, 2), 3.0)), 255)  # clipped


# ------------------------------------------------------------------------------------------------ loading


def test_load_class_folders_sorted_labels_and_skips_other_files(tmp_path):
    expected = {"dog/b.png": _rgb(0), "dog/a.PNG": _rgb(1), "cat/z.png": _rgb(2), "dog/sub/c.png": _rgb(3)}
    for rel, a in expected.items():
        _save(tmp_path / rel, a)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("hi")
    for junk in ("dog/.thumbs/t.png", "dog/sub/.cache/t.png", "__MACOSX/dog/._b.png", ".git/x.png", "@eaDir/x.png",
                 "dog/@eaDir/b.png", "$RECYCLE.BIN/x.png"):  # fmt: skip
        _save(tmp_path / junk, _rgb(9))  # hidden folders anywhere, and a Mac zip's __MACOSX, hold no data
    data = load_dataset(tmp_path)
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    assert data.filenames == ["cat/z.png", "dog/a.PNG", "dog/b.png", "dog/sub/c.png"]
    assert data.labels.tolist() == [0, 1, 1, 1] and data.labels.dtype == np.int64
    assert data.images.dtype == np.uint8 and data.images.shape == (4, RES, RES, 3)
    for i, rel in enumerate(data.filenames):
        np.testing.assert_array_equal(data.images[i], expected[rel])
    assert data.factors is None and len(data) == 4 and data.resolution == RES


def test_class_names_from_folders_are_in_nfc_form(tmp_path):
    import unicodedata

    _save(tmp_path / unicodedata.normalize("NFD", "dögs") / "a.png", _rgb(0))  # as macOS and some zip tools write it
    _save(tmp_path / "cats" / "a.png", _rgb(1))
    data = load_dataset(tmp_path)
    assert data.class_names == ["cats", "dögs"] and data.class_names[1] == unicodedata.normalize("NFC", "dögs")


def test_the_stored_size_is_kept_beside_the_resized_images(tmp_path):
    """`native_side`: the median shorter side of the files (folders, factor folders) or the array (.npz) before
    resizing, kept by subsets: training warns when it is far above the model's size."""
    for i, (w, h) in enumerate(((64, 64), (64, 48), (40, 40))):
        _save(tmp_path / "a" / "c" / f"{i}.png", _rgb(i, h, w))
    with pytest.warns(UserWarning, match="not square"):
        ds = load_dataset(tmp_path / "a", resolution=16)
    assert ds.resolution == 16 and ds.native_side == 48 and ds.subset([0]).native_side == 48
    np.savez(tmp_path / "b.npz", images=np.stack([_rgb(0, 24, 30), _rgb(1, 24, 30)]))
    assert load_dataset(tmp_path / "b.npz", resolution=16).native_side == 24
    write_synth(tmp_path / "s", 4, resolution=32, seed=0, progress=False)
    assert load_dataset(tmp_path / "s", resolution=16, progress=False).native_side == 32
    assert ImageDataset(images=np.zeros((1, 4, 4, 3), np.uint8)).native_side is None


def test_load_flat_folder_unlabelled(tmp_path):
    _save(tmp_path / "b.jpg", np.full((RES, RES, 3), 200, np.uint8))
    _save(tmp_path / "a.png", _rgb(5))
    data = load_dataset(tmp_path)
    assert data.labels is None and data.class_names == [] and data.num_classes == 0
    assert data.filenames == ["a.png", "b.jpg"]
    np.testing.assert_array_equal(data.images[0], _rgb(5))
    assert np.abs(data.images[1].astype(int) - 200).max() <= 2  # jpeg, flat colour


def test_load_npz_with_and_without_labels(tmp_path):
    images = np.stack([_rgb(i) for i in range(3)])
    np.savez(tmp_path / "plain.npz", images=images)
    plain = load_dataset(tmp_path / "plain.npz")
    np.testing.assert_array_equal(plain.images, images)
    assert plain.labels is None and len(plain.filenames) == 3

    names = np.array(["no", "yes"])
    np.savez(tmp_path / "lab.npz", images=images, labels=np.array([1, 0, 1]), class_names=names)
    lab = load_dataset(tmp_path / "lab.npz")
    assert lab.labels.tolist() == [1, 0, 1] and lab.class_names == ["no", "yes"]

    np.savez(tmp_path / "grey.npz", images=images[..., 0], labels=np.array([0, 2, 2]))
    grey = load_dataset(tmp_path / "grey.npz", resolution=8)
    assert grey.images.shape == (3, 8, 8, 3) and grey.class_names == ["0", "1", "2"]
    assert (grey.images[..., 0] == grey.images[..., 2]).all()


def test_conversions_to_rgb_at_resolution(tmp_path):
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (RES, 1))  # [16, 16] horizontal ramp
    _save(tmp_path / "grey.png", grey)
    rgba = np.zeros((RES, RES, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, : RES // 2, 3] = 255  # left half opaque, right half transparent
    _save(tmp_path / "rgba.png", rgba)
    _save(tmp_path / "deep.png", np.full((RES, RES), 65535, np.uint16))
    _save(tmp_path / "mid.png", np.full((RES, RES), 32896, np.uint16))  # 32896 = 128 * 257
    Image.fromarray(_rgb(7)).convert("P").save(tmp_path / "palette.gif")
    wide = np.zeros((RES, 3 * RES, 3), np.uint8)
    wide[:, RES : 2 * RES] = 255  # centre third white, sides black
    _save(tmp_path / "wide.png", wide)
    _save(tmp_path / "big.png", np.full((2 * RES, 2 * RES, 3), 77, np.uint8))
    Image.fromarray(np.full((RES, RES), 200, np.int32), "I").save(tmp_path / "int32.tif")  # 32-bit ints holding 0..255
    _save(tmp_path / "tiny.png", np.full((RES // 4, RES // 4, 3), 9, np.uint8))

    with pytest.warns(UserWarning) as caught:
        data = load_dataset(tmp_path, resolution=RES)
    said = " ".join(str(w.message) for w in caught)
    assert "1 image of 9 (e.g. " in said and "rgba.png) has transparent pixels; stylex composites them on black" in said
    assert f"1 image of 9 has less than half of {RES} px; it is enlarged" in said and "is 4 px" in said
    assert "1 image of 9 is not square (e.g. " in said
    assert f"wide.png, {3 * RES}x{RES}); stylex keeps the centre" in said
    assert "16-bit" not in said, "full-range 16-bit files are not called dim"
    with pytest.warns(UserWarning, match=f"wide.png is {3 * RES}x{RES}; stylex keeps its centre square"):
        read_image(tmp_path / "wide.png")  # one image (explain --image) says it too
    with pytest.warns(UserWarning, match="rgba.png has transparent pixels; stylex composites them on black"):
        read_image(tmp_path / "rgba.png")  # and so the others
    with pytest.warns(UserWarning, match=f"tiny.png is 4 px on its shorter side, less than half of {RES} px"):
        read_image(tmp_path / "tiny.png", RES)
    by = {f: data.images[i] for i, f in enumerate(data.filenames)}
    assert data.images.shape == (9, RES, RES, 3)
    assert (by["int32.tif"] == 200).all(), "0..255 in 32-bit integers stays 0..255 (it was divided by 257)"
    np.testing.assert_array_equal(by["grey.png"][..., 1], grey)  # grey copied into each channel
    assert by["rgba.png"][0, 0].tolist() == [200, 100, 50] and by["rgba.png"][0, -1].tolist() == [0, 0, 0]
    assert by["deep.png"].min() == 255 and by["mid.png"].max() == 128 and by["mid.png"].min() == 128
    assert by["wide.png"].min() == 255  # centre crop keeps the white middle square
    assert (by["big.png"] == 77).all()  # resized (LANCZOS keeps a flat colour)
    assert by["palette.gif"].shape == (RES, RES, 3)

    with pytest.warns(UserWarning, match="transparent"):
        small = load_dataset(tmp_path, resolution=8)
    assert small.images.shape == (9, 8, 8, 3)
    with pytest.raises(StylexError, match=r"big\.png.*resolution"):
        load_dataset(tmp_path)  # mixed sizes without a resolution


# ------------------------------------------------------------------------------------------------ dataset


def test_split_deterministic_disjoint_stratified():
    labels = np.array([0] * 12 + [1] * 8)
    data = ImageDataset(np.zeros((20, 4, 4, 3), np.uint8), labels, ["a", "b"], [f"{i}.png" for i in range(20)])
    train, val = data.split(0.25, seed=3)
    train2, val2 = data.split(0.25, seed=3)
    assert train.filenames == train2.filenames and val.filenames == val2.filenames
    assert set(train.filenames).isdisjoint(val.filenames)
    assert len(train) + len(val) == 20
    assert np.bincount(val.labels).tolist() == [3, 2]  # round(12/4), round(8/4)
    assert data.split(0.25, seed=4)[1].filenames != val.filenames
    assert len(data.split(0.0)[1]) == 0

    unlabelled = ImageDataset(np.zeros((10, 4, 4, 3), np.uint8))
    tr, va = unlabelled.split(0.3, seed=0)
    assert len(va) == 3 and set(tr.filenames).isdisjoint(va.filenames)


def test_subset_and_tensors():
    data = render_shapes(6, RES, seed=1, progress=False)
    sub = data.subset([4, 1])
    np.testing.assert_array_equal(sub.images, data.images[[4, 1]])
    assert sub.labels.tolist() == data.labels[[4, 1]].tolist()
    assert sub.factors["obj_hue"].tolist() == data.factors["obj_hue"][[4, 1]].tolist()
    assert len(data.subset([])) == 0 and len(data.subset(data.labels == 1)) == int(data.labels.sum())
    x = data.tensors([0, 2])
    assert x.shape == (2, 3, RES, RES)
    np.testing.assert_array_equal(to_uint8(x), data.images[[0, 2]])


def test_save_image_folder_round_trip_with_unsafe_unsorted_names(tmp_path):
    images = np.stack([_rgb(i) for i in range(3)])
    data = ImageDataset(images, np.array([0, 1, 0]), ["zeta", "x<1"], ["a.jpg", "sub/b.png", "a.png"])
    written = save_image_folder(data, tmp_path / "out")
    assert written == ["0_zeta/a.png", "1_x_lt_1/b.png", "0_zeta/a_1.png"]  # numbered: unsafe + unsorted
    back = load_dataset(tmp_path / "out")
    order = [back.filenames.index(w) for w in written]
    np.testing.assert_array_equal(back.images[order], images)
    assert back.labels[order].tolist() == [0, 1, 0]
    assert class_dir_names(["cat", "dog"]) == ["cat", "dog"]
    with pytest.raises(StylexError, match="out"):
        save_image_folder(data, tmp_path / "out")  # exists and not empty
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left


# ------------------------------------------------------------------------------------------------ synth


def test_render_deterministic_antialiased_and_uses_render_scene():
    a = render_shapes(8, RES, seed=5, progress=False)
    b = render_shapes(8, RES, seed=5, progress=False)
    c = render_shapes(8, RES, seed=6, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert set(a.factors) == set(FACTOR_NAMES) and a.factors["shape"].dtype == np.int64
    assert a.factor_categories == {"shape": SHAPES}
    assert ((a.factors["obj_size"] >= 0.25) & (a.factors["obj_size"] < 0.5)).all()
    row = {k: v[3] for k, v in a.factors.items()}
    np.testing.assert_array_equal(render_scene(row, RES), a.images[3])
    big = render_shapes(8, 2 * RES, seed=5, progress=False)  # resolution does not change the factors
    np.testing.assert_array_equal(big.factors["pos_x"], a.factors["pos_x"])
    # anti-aliasing: a circle's edge has colours strictly between background and object
    scene = {"shape": "circle", "obj_hue": 0.0, "obj_size": 0.5, "pos_x": 0.5, "pos_y": 0.5}
    img = render_scene({**scene, "bg_hue": 0.5, "bg_brightness": 0.2}, 32)
    red = img[..., 0].astype(int)
    assert red[16, 16] == 255 and red[0, 0] < 60 and ((red > 60) & (red < 240)).sum() >= 8
    # intervening on one factor changes the image only through that factor
    moved = render_scene({**scene, "bg_hue": 0.5, "bg_brightness": 0.2, "pos_x": 0.3}, 32)
    assert (moved[0, 0] == img[0, 0]).all() and not np.array_equal(moved, img)


def test_rule_forms_give_expected_labels():
    data = render_shapes(40, 8, seed=2, progress=False)
    f = data.factors
    circle = f["shape"] == SHAPES.index("circle")
    np.testing.assert_array_equal(data.labels, circle.astype(int))
    assert data.class_names == ["not(shape==circle)", "shape==circle"]

    def labels(rule: str) -> np.ndarray:
        return parse_rule(rule).apply(f)

    np.testing.assert_array_equal(labels("shape != triangle"), (f["shape"] != 2).astype(int))
    np.testing.assert_array_equal(labels("obj_size>=0.4"), (f["obj_size"] >= 0.4).astype(int))
    both = (f["obj_size"] < 0.4) & (f["bg_hue"] > 0.5) | circle  # and binds tighter than or
    np.testing.assert_array_equal(labels("obj_size<0.4 and bg_hue>0.5 or shape==circle"), both.astype(int))
    grouped = (f["obj_size"] < 0.4) & ((f["bg_hue"] > 0.5) | circle)
    np.testing.assert_array_equal(labels("obj_size<0.4 AND (bg_hue>0.5 or shape==circle)"), grouped.astype(int))
    assert parse_rule("obj_size<0.4 and (bg_hue>.5 or shape==0)").class_names[1] == (
        "obj_size<0.4 and (bg_hue>0.5 or shape==circle)"
    )
    multi = parse_rule("shape")
    assert multi.class_names == SHAPES
    np.testing.assert_array_equal(multi.apply(f), f["shape"])
    bins = parse_rule("obj_hue:4")
    assert bins.num_classes == 4 and bins.class_names[1] == "obj_hue in [0.25, 0.5)"
    np.testing.assert_array_equal(bins.apply(f), np.floor(f["obj_hue"] * 4).astype(int))
    assert np.unique(bins.apply(f)).size == 4
    assert bins.apply({"obj_hue": np.array([-1.0, 2.0])}).tolist() == [0, 3]  # out of range -> outer bins


@pytest.mark.parametrize(
    "rule, why",
    [
        ("colour==red", "unknown factor 'colour'"),
        ("shape==hexagon", "not a category"),
        ("shape<circle", "only with == or !="),
        ("obj_size>big", "compare it with a number"),
        ("obj_size>0.3 and", "ends too early"),
        ("(obj_size>0.3", "not closed"),
        ("obj_hue", "number of bins"),
        ("obj_hue:1", "bins >= 2"),
        ("obj_hue==0.3; import os", "Cannot read"),
        ("", "empty"),
    ],
)
def test_bad_rules_raise_with_valid_factors(rule, why):
    with pytest.raises(StylexError, match=why) as info:
        parse_rule(rule)
    if rule:
        assert "bg_brightness" in str(info.value) and "circle/square/triangle" in str(info.value)


def test_correlate_ties_factor_to_label():
    plain = render_shapes(200, 4, seed=0, progress=False)
    tied = render_shapes(200, 4, seed=0, correlate={"bg_hue": 1.0}, progress=False)
    np.testing.assert_array_equal(tied.labels, plain.labels)
    np.testing.assert_array_equal(tied.factors["obj_size"], plain.factors["obj_size"])  # others untouched
    np.testing.assert_array_equal((tied.factors["bg_hue"] >= 0.5).astype(int), tied.labels)
    anti = render_shapes(200, 4, seed=0, correlate={"bg_hue": 0.0}, progress=False)
    np.testing.assert_array_equal((anti.factors["bg_hue"] < 0.5).astype(int), anti.labels)
    shape_tied = render_shapes(60, 4, seed=0, label_rule="bg_hue<0.5", correlate="shape=1", progress=False)
    np.testing.assert_array_equal((shape_tied.factors["shape"] == 1).astype(int), shape_tied.labels)
    assert parse_correlate(["bg_hue=0.9, obj_size=0.8", "pos_x=1"]) == {"bg_hue": 0.9, "obj_size": 0.8, "pos_x": 1.0}
    with pytest.raises(StylexError, match="reads it"):
        render_shapes(4, 4, correlate={"shape": 0.9}, progress=False)
    with pytest.raises(StylexError, match="unknown factor 'hue'"):
        parse_correlate("hue=0.9")
    with pytest.raises(StylexError, match=r"\[0, 1\]"):
        parse_correlate("bg_hue=1.5")


def test_write_synth_loads_back_identically(tmp_path):
    out = tmp_path / "shapes"
    written = write_synth(out, 12, RES, seed=4, label_rule="obj_size>0.35", correlate={"bg_hue": 0.9}, progress=False)
    back = load_dataset(out)
    np.testing.assert_array_equal(back.images, written.images)
    np.testing.assert_array_equal(back.labels, written.labels)
    assert back.class_names == written.class_names == ["not(obj_size>0.35)", "obj_size>0.35"]
    assert back.filenames == written.filenames and back.filenames[0].endswith("000000.png")
    assert set(back.factors) == set(FACTOR_NAMES)
    for name in FACTOR_NAMES:
        np.testing.assert_array_equal(back.factors[name], written.factors[name])  # exact, floats included
    assert back.factor_categories == {"shape": SHAPES}
    np.testing.assert_array_equal(written.images, render_shapes(12, RES, 4, "obj_size>0.35", {"bg_hue": 0.9}).images)

    with open(out / "factors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["filename", "label", *FACTOR_NAMES]
    assert {r["shape"] for r in rows} <= set(SHAPES)
    assert all((out / r["filename"]).parent.name.startswith(r["label"] + "_") for r in rows)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 4 and meta["label_rule"] == "obj_size>0.35" and meta["correlate"] == {"bg_hue": 0.9}
    assert load_dataset(out, resolution=8).images.shape == (12, 8, 8, 3)

    with pytest.raises(StylexError, match="no images of class"):
        write_synth(tmp_path / "never", 8, 4, label_rule="obj_size>0.9", progress=False)
    assert not (tmp_path / "never").exists()

    assert len(write_synth(out, 6, RES, overwrite=True, progress=False)) == 6  # replaces what it wrote
    other = tmp_path / "my-photos"
    other.mkdir()
    (other / "x.png").write_bytes(b"mine")
    with pytest.raises(StylexError, match="replaces only a folder that `stylex data synth` wrote"):
        write_synth(other, 6, RES, overwrite=True, progress=False)
    assert (other / "x.png").read_bytes() == b"mine"
    (other / "synth.json").write_text("{}")  # a marker alone is not enough: its content, and nothing else there
    with pytest.raises(StylexError, match="has a synth.json that `data synth` did not write"):
        write_synth(other, 6, RES, overwrite=True, progress=False)
    (out / "notes.txt").write_text("mine")  # a real output with a file of one's own added
    with pytest.raises(StylexError, match=r"also holds notes.txt, which it would delete"):
        write_synth(out, 6, RES, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ errors


def _truncated(path: Path) -> None:
    _save(path, _rgb(0, 32))
    path.write_bytes(path.read_bytes()[:200])


def _unlink_first(folder: Path) -> None:
    with open(folder / "factors.csv", newline="") as f:
        (folder / next(csv.DictReader(f))["filename"]).unlink()


def _synth_listing(name: str):
    """A maker of a synthetic factor folder `s` whose factors.csv lists `name` first."""

    def make(d: Path) -> None:
        write_synth(d / "s", 6, 4, label_rule="pos_x:2", progress=False)
        _list_outside(d / "s", name)

    return make


def _list_outside(folder: Path, name: str) -> None:
    """factors.csv's first row names a file outside the folder (a hostile download reading one's own files)."""
    with open(folder / "factors.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][0] = name
    with open(folder / "factors.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize(
    "make, target, pattern",
    [
        (lambda d: None, "missing", "does not exist"),
        (_synth_listing("../x.png"), "s", r"lists '\.\./x\.png', which is not inside"),
        (_synth_listing("/etc/passwd"), "s", r"lists '/etc/passwd', which is not inside"),
        (lambda d: (d / "empty").mkdir(), "empty", "no images"),
        (lambda d: (d / "docs").mkdir() or (d / "docs" / "a.txt").write_text("x"), "docs", "no images"),
        (lambda d: (d / "cls" / "a").mkdir(parents=True) or (d / "cls" / "b").mkdir(), "cls", "no images"),
        (lambda d: _save(d / "mix" / "a" / "1.png", _rgb(0)) or (d / "mix" / "b").mkdir(), "mix", "mix/b has no"),
        (lambda d: _truncated(d / "trunc" / "bad.png"), "trunc", r"bad\.png"),
        (lambda d: (d / "junk").mkdir() or (d / "junk" / "x.jpg").write_bytes(b"not a jpeg"), "junk", r"x\.jpg"),
        (lambda d: np.savez(d / "f.npz", images=np.zeros((2, 4, 4, 3), np.float32)), "f.npz", "not uint8"),
        (lambda d: np.savez(d / "n.npz", pixels=np.zeros((2, 4, 4, 3), np.uint8)), "n.npz", "no 'images'"),
        (lambda d: np.savez(d / "c.npz", images=np.zeros((2, 3, 8, 8), np.uint8)), "c.npz", "NCHW"),
        (
            lambda d: np.savez(d / "l.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(3, int)),
            "l.npz",
            "labels",
        ),
        (lambda d: (d / "o.npz").write_bytes(b"garbage"), "o.npz", "not an .npz"),
        (
            lambda d: write_synth(d / "s", 6, 4, label_rule="pos_x:2", progress=False) and _unlink_first(d / "s"),
            "s",
            "000",
        ),
    ],
)
def test_user_errors_name_the_file(tmp_path, make, target, pattern):
    make(tmp_path)
    with pytest.raises(StylexError, match=pattern) as info:
        load_dataset(tmp_path / target)
    message = str(info.value)
    assert target in message and "Traceback" not in message
    assert message.replace("e.g. ", "").count(". ") == 0 and message.endswith(".")  # one sentence


def test_relabelled_puts_labels_in_another_class_order_and_leaves_other_names_alone():
    """ImageDataset.relabelled: labels follow the names (a classifier's order), when every class is named there."""
    images = np.zeros((4, 8, 8, 3), np.uint8)
    ds = ImageDataset(images, labels=np.array([0, 1, 1, 0]), class_names=["blue", "red"])
    swapped = ds.relabelled(["red", "blue"])
    assert swapped.class_names == ["red", "blue"] and swapped.labels.tolist() == [1, 0, 0, 1]
    wider = ds.relabelled(["green", "red", "blue"])
    assert wider.labels.tolist() == [2, 1, 1, 2] and wider.num_classes == 3
    for other in (["a_blue", "b_red"], ["blue"]):  # not every class named there: positions stay
        assert ds.relabelled(other) is ds
    assert ds.relabelled(["blue", "red"]) is ds
    assert ImageDataset(images).relabelled(["red", "blue"]).labels is None


def test_a_run_names_its_classes_after_the_classifier_and_says_when_the_data_disagrees():
    """pipeline._run_class_names: the classifier's names; the data's, numbered up to the classifier's outputs (a
    3-output classifier on 2 folders used to leave a run that AttFind refused); a warning when the data's classes
    are not the classifier's (its labels are then positions); an error when the data has more classes."""
    from types import SimpleNamespace

    from stylex.pipeline import _run_class_names

    ds = ImageDataset(np.zeros((4, 8, 8, 3), np.uint8), labels=np.array([0, 1, 1, 0]), class_names=["a", "b"])
    named = SimpleNamespace(num_classes=2, class_names=["b", "a"])
    assert _run_class_names(named, ds) == ["b", "a"]
    with pytest.warns(UserWarning, match=r"taken by position \(a as red, b as blue\)"):
        assert _run_class_names(SimpleNamespace(num_classes=2, class_names=["red", "blue"]), ds) == ["red", "blue"]
    with pytest.warns(UserWarning, match="output 2 is named by number"):
        assert _run_class_names(SimpleNamespace(num_classes=3, class_names=None), ds) == ["a", "b", "2"]
    with pytest.warns(UserWarning, match="outputs 2-3 are named by number"):
        assert _run_class_names(SimpleNamespace(num_classes=4, class_names=None), ds) == ["a", "b", "2", "3"]
    with pytest.raises(StylexError, match="has 2 classes .* but the classifier has 1 outputs"):
        _run_class_names(SimpleNamespace(num_classes=1, class_names=None), ds)
    assert _run_class_names(SimpleNamespace(num_classes=2, class_names=None), ImageDataset(ds.images)) == []


def test_12_bit_scans_in_16_bit_files_are_named(tmp_path):
    """12-bit data in 16-bit files (X-ray and CT exports) loads nearly black: say so, with the remedy."""
    for k in range(2):
        _save(tmp_path / f"scan{k}.png", np.full((RES, RES), 3200 + 800 * k, np.uint16))
    _save(tmp_path / "ok.png", np.full((RES, RES), 40000, np.uint16))
    _save(tmp_path / "black.png", np.zeros((RES, RES), np.uint16))  # all black: not a 12-bit scan
    with pytest.warns(UserWarning) as caught:
        data = load_dataset(tmp_path)
    said = " ".join(str(w.message) for w in caught)
    assert "2 images of 4 (e.g. " in said and "scan1.png) have 16-bit values no higher than 4000" in said
    assert "4000 becomes 16 of 255" in said and "(x 16 for 12 bits)" in said
    assert data.images.max() == 156  # the scaling itself is unchanged: 40000 * 255 / 65535
    with pytest.warns(UserWarning, match=r"scan0.png: stylex scales 16-bit grey .* 3200 becomes 12 of 255"):
        read_image(tmp_path / "scan0.png")


def test_names_that_are_not_utf8_are_read_as_text(tmp_path):
    """A folder or file named in Latin-1 (café as the byte e9) came through as a surrogate that no JSON or HTML
    writer takes: the report crashed. It is read as Windows-1252, the usual origin of such names."""
    import os

    for folder in (b"caf\xe9", b"the"):
        os.makedirs(os.fsencode(tmp_path) + b"/" + folder)
        for i in range(2):
            name = os.fsdecode(os.fsencode(tmp_path) + b"/" + folder + b"/im\xe9%d.png" % i)
            _save(Path(name), _rgb(i))
    data = load_dataset(tmp_path)
    assert data.class_names == ["café", "the"] and data.filenames[0] == "café/imé0.png"
    json.dumps(data.class_names + data.filenames, ensure_ascii=False).encode("utf-8")  # writable as UTF-8 text


def test_long_non_ascii_names_fit_the_file_system(tmp_path):
    """Names are cut in bytes, not characters: 84 CJK characters were 252 bytes, a stem of 250 bytes plus "_1.png"
    was over the 255-byte limit, and an export failed with "File name too long"."""
    import numpy as np

    from stylex.data import load_dataset, save_image_folder
    from stylex.data.dataset import ImageDataset, class_dir_names

    names = ["中" * 84, "🐱" * 70, "b" * 300]
    dirs = class_dir_names(names)
    assert all(len(d.encode()) <= 255 for d in dirs) and len(set(dirs)) == 3
    long = "é" * 125  # 250 bytes
    ds = ImageDataset(
        images=np.zeros((4, 8, 8, 3), np.uint8),
        labels=np.array([0, 0, 1, 2]),
        class_names=names,
        filenames=[f"{long}.png", f"{long}.jpg", "x.png", "y.png"],
    )
    written = save_image_folder(ds, tmp_path / "out")
    assert len(set(written)) == 4 and all(len(part.encode()) <= 255 for w in written for part in w.split("/"))
    assert load_dataset(tmp_path / "out", progress=False).class_names == names  # by class_names.json


def test_a_killed_writers_temporary_folder_is_swept_by_the_next_run(tmp_path):
    """SIGKILL cleans nothing up: a killed `data synth` left 11,778 PNGs in a hidden folder beside --out, for good.
    The next write of that folder removes what dead processes of this machine left, and nothing else."""
    import os
    import subprocess
    import sys

    import numpy as np

    from stylex.data import save_image_folder
    from stylex.data.dataset import ImageDataset, _owner

    host = _owner().split("~")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = {
        "dead": tmp_path / f".out.tmp-{host}~{pid}-abc",
        "old": tmp_path / f".out.old-{host}~{pid}-abc",
        "alive": tmp_path / f".out.tmp-{host}~{os.getpid()}-xyz",
        "other machine": tmp_path / f".out.tmp-elsewhere~{pid}-abc",
        "other folder": tmp_path / f".outer.tmp-{host}~{pid}-abc",
        "older stylex": tmp_path / ".out.tmp-k2j3h4",
    }
    for folder in left.values():
        (folder / "a").mkdir(parents=True)
        (folder / "a" / "x.png").write_bytes(b"png")
    ds = ImageDataset(images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 1]), class_names=["a", "b"],
                      filenames=["x.png", "y.png"])  # fmt: skip
    save_image_folder(ds, tmp_path / "out")
    assert {k for k, f in left.items() if f.exists()} == {"alive", "other machine", "other folder", "older stylex"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == sorted(
        f.name for k, f in left.items() if k in ("alive", "other machine", "older stylex")
    ), "and the write itself leaves nothing behind"


def test_class_names_that_cannot_be_folder_names_come_back(tmp_path):
    """An exported 9-class model shipped samples/8_70+, and loading that folder gave the class "8_70+": the folder
    names could not carry "70+" (not in sorted order with "0-2"), so a class_names.json beside them does."""
    import json

    import numpy as np

    from stylex.data import load_dataset, save_image_folder
    from stylex.data.dataset import ImageDataset, class_dir_names

    names = ["0-2", "3-9", "10-19", "70+"]  # not in sorted order: the folders get index prefixes
    ds = ImageDataset(images=np.zeros((3, 8, 8, 3), np.uint8), labels=np.array([0, 2, 3]), class_names=names,
                      filenames=["a.png", "b.png", "c.png"])  # fmt: skip
    save_image_folder(ds, tmp_path / "out")
    assert class_dir_names(names)[3] == "3_70+" and (tmp_path / "out" / "3_70+").is_dir()
    back = load_dataset(tmp_path / "out", progress=False)
    assert back.class_names == ["0-2", "10-19", "70+"] and list(back.labels) == [0, 1, 2]  # "3-9" has no images
    record = json.loads((tmp_path / "out" / "class_names.json").read_text())
    record["folders"] = ["x"]  # no longer these folders: the folder names, with a word
    (tmp_path / "out" / "class_names.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="does not name these class folders"):
        assert load_dataset(tmp_path / "out", progress=False).class_names[2] == "3_70+"
    plain = ImageDataset(images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 1]), class_names=["a", "b"],
                         filenames=["a.png", "b.png"])  # fmt: skip
    save_image_folder(plain, tmp_path / "plain")
    assert not (tmp_path / "plain" / "class_names.json").exists(), "only where the folders cannot carry the names"
