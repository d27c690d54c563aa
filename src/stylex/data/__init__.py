"""Datasets: image folders, .npz files and synthetic shapes with ground-truth factors.

The one place that knows the pixel range of files: loaders return uint8 RGB [N, H, W, 3];
``ImageDataset.tensors`` and :mod:`stylex.data.convert` give the models float [N, 3, H, W] in [-1, 1].
"""

from stylex.data.convert import to_tensor, to_uint8
from stylex.data.dataset import (
    IMAGE_EXTENSIONS,
    ImageDataset,
    class_dir_names,
    load_dataset,
    read_image,
    save_image_folder,
    save_npz,
)
from stylex.data.rules import FactorSpec, LabelRule, parse_label_rule
from stylex.data.synth import (
    FACTOR_NAMES,
    FACTORS,
    SHAPES,
    parse_correlate,
    parse_rule,
    render_scene,
    render_shapes,
    sample_factors,
    write_synth,
)

__all__ = [
    "FACTORS",
    "FACTOR_NAMES",
    "IMAGE_EXTENSIONS",
    "SHAPES",
    "FactorSpec",
    "ImageDataset",
    "LabelRule",
    "class_dir_names",
    "load_dataset",
    "parse_correlate",
    "parse_label_rule",
    "parse_rule",
    "read_image",
    "render_scene",
    "render_shapes",
    "sample_factors",
    "save_npz",
    "save_image_folder",
    "to_tensor",
    "to_uint8",
    "write_synth",
]
