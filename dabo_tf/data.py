"""Data sets and `tf.data` input pipelines.

Conventions: images are stored as uint8 `[N, H, W, C]` numpy arrays and fed to models as
float32 in `[0, 1]` (NHWC); labels are int32 class indices. Per-channel mean/std of the
training split (in `[0, 1]` units) travel with the data and are used by the classifier's
first (`Normalization`) layer, so augmentation always acts on `[0, 1]` pixels.

Names understood by `load` (see `DATASETS`):

* `"digits"`: scikit-learn's bundled 8x8 digits (1,797 images), always available offline.
* `"folder"`: your own images in class subfolders, `data_dir=PATH` (see `load_folder`).
* any TensorFlow Datasets image-classification name (`"cifar10"`, `"cifar100"`,
  `"svhn_cropped"`, `"fashion_mnist"`, `"mnist"`, ...), read from `data_dir` if prepared
  there, downloaded otherwise (only when online).

Splits: the official test split is kept untouched (digits, flat folders and TFDS data sets
without one get a fixed stratified `test_fraction` hold-out that does not depend on `seed`,
so runs with different seeds are evaluated on the same images). The validation split is held
out of the training data (`val_fraction`, stratified, from `seed`). With `train_size=N`, a
stratified random subset of N training images is taken first and then split into train and
validation (as in the DABO paper's code: subset of N, then 80/20).

Loading (`loading`): `"memory"` decodes every image once into uint8 arrays (`DataSplits`), the
fast path for data that fits; `"stream"` keeps only file lists or TFDS split strings and
reads, decodes and resizes images per step in `tf.data` (`dabo_tf.streaming.StreamedSplits`),
for data of any size; `"auto"` (the default) streams when the decoded images would take more
than a quarter of the available memory. Both give the same interface: `sizes`,
`dataset(split, batch_size, training=...)`, `sample_images(n)`.

Known shifts (`eval_shift`): the validation and test splits, not the training split, can be
transformed by a random rotation, translation or scale of known range (`apply_shift`). The
right augmentation of such a task is known, so what a method learns can be scored against it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import stat
import threading
import warnings

import numpy as np
import tensorflow as tf

from dabo_tf.augment import warp
from dabo_tf.config import DATA_LOADINGS

DATASETS = {
    "digits": "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), "
              "resized to image_size; works offline.",
    "folder": "images in class subfolders under data_dir=PATH: PATH/<class>/* or "
              "PATH/train/<class>/* with optional PATH/val/<class>/* and PATH/test/<class>/*.",
}
"""Special data set names; any other name is looked up in TensorFlow Datasets."""

TFDS_EXAMPLES = ("cifar10", "cifar100", "svhn_cropped", "fashion_mnist", "mnist")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
_TEST_SPLIT_SEED = 0  # the held-out test split never depends on `seed`
_HOW_TO_PROVIDE = (
    "Provide it with --data_dir pointing to a folder holding the prepared TFDS data, "
    "use your own images with --dataset=folder --data_dir=PATH, or use the embedded "
    "--dataset=digits.")


class DataUnavailableError(Exception):
    """A data set could not be loaded; the message says which one and how to provide it."""


class Splits:
    """What every split holder offers (`DataSplits` in memory, `StreamedSplits` streamed).

    Subclasses have `name`, `num_classes`, `class_names`, `image_shape`, `mean`, `std`, and
    implement `sizes`, `dataset` and `_head` (the first training images, for figures).
    """

    streaming = False
    patches_per_image = 1
    """Patches of one test example (> 1 with a patch grid: test images are patch stacks)."""

    def summary(self):
        """One-line description, e.g. `digits: 1006 train / 252 val / 539 test, ...`."""
        s = self.sizes
        shape = "x".join(str(d) for d in self.image_shape)
        how = ", streamed" if self.streaming else ""
        return (f"{self.name}: {s['train']} train / {s['val']} val / {s['test']} test, "
                f"images {shape}, {self.num_classes} classes{how}")

    def sample_images(self, n: int = 6) -> np.ndarray:
        """Up to `n` training images of different classes (the first of each) for figures,
        float32 `[n, H, W, C]` in `[0, 1]`."""
        x, y = self._head()
        return np.asarray(x)[first_of_each_class(y, n)].astype(np.float32) / 255.0


def first_of_each_class(y, n):
    """Indices of up to `n` examples: the first of each class, then the next ones in order."""
    y = np.asarray(y)
    first = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)]
    taken = set(first)
    return (first + [i for i in range(len(y)) if i not in taken])[:n]


@dataclasses.dataclass
class DataSplits(Splits):
    """Train/validation/test splits of one data set in memory (images uint8 `[N, H, W, C]`)."""

    name: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_val: np.ndarray = dataclasses.field(repr=False)
    y_val: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    num_classes: int
    class_names: list
    image_shape: tuple
    mean: tuple
    std: tuple

    @property
    def sizes(self):
        """Dict with the number of `train`, `val` and `test` examples."""
        return dict(train=len(self.y_train), val=len(self.y_val), test=len(self.y_test))

    def arrays(self, split):
        """`(images, labels)` of `split` (`"train"`, `"val"` or `"test"`)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test'. Received: split={split!r}")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def dataset(self, split, batch_size, *, training, seed=0, drop_remainder=None):
        """Batched float32 `[0, 1]` images and int32 labels of `split` (see `make_pipeline`)."""
        return make_pipeline(*self.arrays(split), batch_size, training=training, seed=seed,
                             drop_remainder=drop_remainder)

    def _head(self):
        return self.x_train, self.y_train


def load(name, *, data_dir=None, image_size=32, val_fraction=0.2, train_size=None, seed=0,
         test_fraction=0.3, eval_shift=None, loading="auto", patch_grid=None):
    """Loads a data set and splits it into train, validation and test.

    Args:
        name: `"digits"`, `"folder"` or a TensorFlow Datasets image-classification name
            (optionally with a config, e.g. `"imagenette/160px-v2"`).
        data_dir: TFDS data directory (prepared data is read from there, downloads go there),
            or for `name="folder"` the image folder.
        image_size: side of the square images returned (resized bilinearly if different).
        val_fraction: fraction of the (subsetted) training data held out for validation,
            stratified by class, chosen from `seed`. Ignored when a folder has a `val/`.
        train_size: optional number of training images: a stratified random subset (from
            `seed`) of the training data taken *before* the validation split.
        seed: seed of the subset and validation split (the test split never depends on it).
        test_fraction: fraction held out as a fixed test split (always seed 0) when the data
            set has none: digits, flat folders, TFDS data sets with neither a `test` nor a
            `validation` split (the latter, if present, is used as the test split).
        eval_shift: optional known shift of the validation and test splits (see
            `parse_shift`), e.g. `"rotate:40"`: training images stay as they are (in-memory
            data only).
        loading: `"memory"`, `"stream"` or `"auto"` (see the module docstring). Digits are
            always in memory.
        patch_grid: optional `(rows, cols)` for folders: train on that grid of `image_size`
            patches of each image, test on whole images (`dabo_tf.streaming`); streams.

    Returns:
        A `DataSplits` (in memory) or a `dabo_tf.streaming.StreamedSplits`.

    Raises:
        DataUnavailableError: the data set cannot be found, read or downloaded.
        ValueError: an argument is out of range.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int. Received: image_size={image_size!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1). Received: val_fraction={val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1). "
                         f"Received: test_fraction={test_fraction}")
    if train_size is not None and (int(train_size) != train_size or train_size < 1):
        raise ValueError(f"train_size must be a positive int or None. "
                         f"Received: train_size={train_size!r}")
    if loading not in DATA_LOADINGS:
        raise ValueError(f"loading must be one of {list(DATA_LOADINGS)}. "
                         f"Received: loading={loading!r}")
    shift = parse_shift(eval_shift)
    key = str(name).strip()
    if key.lower() == "digits" and loading == "stream":
        raise ValueError("digits is embedded and always in memory: streaming needs a folder or "
                         "a TFDS data set. Received: loading='stream'")
    if key.lower() != "digits" and loading != "memory":
        from dabo_tf import streaming

        if (loading == "stream" or patch_grid is not None
                or streaming.too_large_for_memory(key, data_dir, image_size)):
            if shift is not None:
                raise ValueError("eval_shift transforms in-memory splits; these are streamed "
                                 "(pass loading='memory' if they fit). "
                                 f"Received: eval_shift={eval_shift!r}")
            return streaming.load(key, data_dir=data_dir, image_size=image_size,
                                  val_fraction=val_fraction, train_size=train_size, seed=seed,
                                  test_fraction=test_fraction, patch_grid=patch_grid)
    x_val = y_val = None
    if key.lower() == "digits":
        x, y, class_names = _load_digits(image_size)
        keep, test = test_hold_out(y, test_fraction)
        x_train, y_train, x_test, y_test = x[keep], y[keep], x[test], y[test]
    elif key.lower() == "folder":
        (x_train, y_train, x_val, y_val, x_test, y_test,
         class_names) = _load_folder(data_dir, image_size, test_fraction)
    else:
        x_train, y_train, x_test, y_test, class_names = _load_tfds(
            key, data_dir, image_size, test_fraction)
    splits = _make_splits(key.lower() if key.lower() in DATASETS else key, x_train, y_train,
                          x_val, y_val, x_test, y_test, class_names, val_fraction, train_size,
                          seed)
    if shift is not None:
        # The test split's shift never depends on `seed` (like the split itself).
        splits = dataclasses.replace(
            splits, x_val=apply_shift(splits.x_val, shift, seed=(seed, 1)),
            x_test=apply_shift(splits.x_test, shift, seed=(_TEST_SPLIT_SEED, 2)))
    return splits


SHIFT_OPS = {
    "rotate": "rotate:DEGREES, a rotation uniform in [-DEGREES, DEGREES]",
    "translate": "translate:FRACTION, horizontal and vertical shifts each uniform in "
                 "[-FRACTION, FRACTION] of the size",
    "scale": "scale:LOW:HIGH, one zoom factor (both axes) uniform in [LOW, HIGH]",
}
"""Known shifts understood by `parse_shift` (`--eval_shift`)."""


@dataclasses.dataclass(frozen=True)
class Shift:
    """A known random transformation: `op` drawn uniformly in `[low, high]` (human units).

    Attributes:
        op: `"rotate"` (degrees), `"translate"` (fraction of the size, x and y drawn
            independently) or `"scale"` (zoom factor, the same for both axes).
        low, high: the range.
    """

    op: str
    low: float
    high: float

    def policy_ops(self) -> dict:
        """The learned-policy ops that express this shift, with their true `(low, high)`; a
        zoom is expressed by `zoom`, or by `scale_x` and `scale_y` drawn alike."""
        names = {"rotate": ("rotate",), "translate": ("translate_x", "translate_y"),
                 "scale": ("zoom", "scale_x", "scale_y")}[self.op]
        return {name: (self.low, self.high) for name in names}


def parse_shift(spec):
    """`"rotate:40"`, `"translate:0.2"` or `"scale:0.7:1.3"` -> `Shift`; None or `""` -> None.

    Raises:
        ValueError: the spec is not one of these forms.
    """
    if spec is None or isinstance(spec, Shift):
        return spec
    text = str(spec).strip()
    if not text:
        return None
    op, *values = text.split(":")
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        numbers = None
    forms = "; ".join(SHIFT_OPS.values())
    if op not in SHIFT_OPS or numbers is None or len(numbers) != (2 if op == "scale" else 1):
        raise ValueError(f"eval_shift must be one of: {forms}. Received: eval_shift={text!r}")
    if op == "scale":
        low, high = numbers
        if not 0 < low <= high:
            raise ValueError("eval_shift scale needs 0 < LOW <= HIGH. "
                             f"Received: eval_shift={text!r}")
    else:
        if not numbers[0] > 0 or (op == "translate" and numbers[0] >= 1):
            raise ValueError(f"eval_shift {op} needs a positive range (translate: below 1). "
                             f"Received: eval_shift={text!r}")
        low, high = -numbers[0], numbers[0]
    return Shift(op, low, high)


def apply_shift(x, shift, seed, chunk=1024):
    """Transforms uint8 images `[N, H, W, C]` by random draws of `shift` (zero fill).

    Each image gets its own draw from `numpy.random.default_rng(seed)`; the warp is bilinear
    with constant zero fill outside the image (the digits' black background).
    """
    shift = parse_shift(shift)
    if shift is None or len(x) == 0:
        return x
    rng = np.random.default_rng(seed)
    n, height, width = x.shape[0], x.shape[1], x.shape[2]
    if shift.op == "rotate":
        kwargs = dict(rotation=np.radians(rng.uniform(shift.low, shift.high, n)))
    elif shift.op == "translate":
        kwargs = dict(translate_x=rng.uniform(shift.low, shift.high, n),
                      translate_y=rng.uniform(shift.low, shift.high, n))
    else:
        log_scale = np.log(rng.uniform(shift.low, shift.high, n))
        kwargs = dict(log_scale_x=log_scale, log_scale_y=log_scale)
    transforms = warp.matrices_to_transforms(
        warp.affine_matrix(height, width, **{k: v.astype(np.float32) for k, v in kwargs.items()}))
    out = []
    for start in range(0, n, chunk):
        images = tf.cast(x[start:start + chunk], tf.float32) / 255.0
        out.append(_to_uint8(warp.projective_warp(images, transforms[start:start + chunk],
                                                  fill_mode="constant").numpy()))
    return np.concatenate(out)


def choose_subsets(name, y_train, has_val, val_fraction, train_size, seed):
    """Indices `(train, val)` into the training examples: the stratified `train_size` subset
    (from `seed`), then the stratified `val_fraction` hold-out (`val` is None when the data
    set has its own validation split, `has_val`)."""
    rng = np.random.default_rng(seed)
    train = np.arange(len(y_train))
    if train_size is not None:
        if train_size > len(y_train):
            raise ValueError(f"train_size is larger than the {len(y_train)} training images of "
                             f"{name}. Received: train_size={train_size}")
        _, train = _stratified_split(y_train, int(train_size), rng)
    if has_val:
        return train, None
    keep, val = _stratified_split(np.asarray(y_train)[train],
                                  _count(val_fraction, len(train)), rng)
    return train[keep], train[val]


def warn_missing_classes(name, y_test, class_names):
    """Warns when the test split lacks a class (its accuracy says nothing about it)."""
    missing = sorted(set(range(len(class_names))) - set(np.unique(y_test).tolist()))
    if missing:
        warnings.warn(f"The test split of {name} has no image of class(es) "
                      f"{[class_names[i] for i in missing]}: its accuracy says nothing about "
                      "them.", stacklevel=4)


def _make_splits(name, x_train, y_train, x_val, y_val, x_test, y_test, class_names,
                 val_fraction, train_size, seed):
    train, val = choose_subsets(name, y_train, x_val is not None, val_fraction, train_size,
                                seed)
    if val is not None:
        x_val, y_val = x_train[val], y_train[val]
    x_train, y_train = x_train[train], y_train[train]
    warn_missing_classes(name, y_test, class_names)
    mean, std = _channel_stats(x_train)
    return DataSplits(
        name=name, x_train=x_train, y_train=y_train.astype(np.int32), x_val=x_val,
        y_val=y_val.astype(np.int32), x_test=x_test, y_test=y_test.astype(np.int32),
        num_classes=len(class_names), class_names=[str(c) for c in class_names],
        image_shape=tuple(int(d) for d in x_train.shape[1:]), mean=mean, std=std)


def test_hold_out(y, test_fraction):
    """`(keep, test)` indices of the fixed stratified test hold-out (seed 0, whatever the
    run's seed) of a data set without a test split."""
    return _stratified_split(y, _count(test_fraction, len(y)), _TEST_SPLIT_SEED)


def _count(fraction, n):
    return int(round(fraction * n))


def _stratified_split(y, n_take, rng):
    """Splits indices `range(len(y))` into `(keep, take)`, `len(take) == n_take`, by class.

    Each class gives `n_take * count / len(y)` examples rounded (largest remainders, ties
    broken at random); the examples within a class are drawn at random from `rng` (a
    `numpy.random.Generator` or a seed). Both index arrays are sorted.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    y = np.asarray(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    exact = counts * (n_take / max(len(y), 1))
    alloc = np.floor(exact).astype(np.int64)
    short = int(n_take - alloc.sum())
    if short > 0:
        order = np.lexsort((rng.random(len(classes)), -(exact - alloc)))
        alloc[order[:short]] += 1
    take = [rng.permutation(np.flatnonzero(inverse == k))[:alloc[k]] for k in range(len(classes))]
    take = np.sort(np.concatenate(take + [np.zeros([0], np.int64)])).astype(np.int64)
    mask = np.ones(len(y), bool)
    mask[take] = False
    return np.flatnonzero(mask), take


def _channel_stats(x, chunk=4096):
    """Per-channel mean and std of uint8 images in `[0, 1]` units, as tuples of floats."""
    channels = x.shape[-1]
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += part.sum(0)
        total_sq += np.square(part).sum(0)
        count += len(part)
    mean = total / max(count, 1)
    var = np.maximum(total_sq / max(count, 1) - np.square(mean), 0.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in np.sqrt(var))


def _to_uint8(x):
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def available_memory():
    """Bytes of physical memory available now, or None where the system does not say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def check_memory(n_images, image_size, channels, what):
    """Fails before decoding when `n_images` resized images would not fit in memory.

    Counts the float32 copy the resize makes (4 bytes per value): more than half of the
    machine's available memory is refused with what to change.
    """
    need = int(n_images) * int(image_size) ** 2 * int(channels) * 4
    available = available_memory()
    if available is not None and need > available / 2:
        raise ValueError(f"{what}: {n_images} images at {image_size}x{image_size}x{channels} "
                         f"need about {need / 2**30:.1f} GiB, more than half of the "
                         f"{available / 2**30:.1f} GiB of memory available. Stream them "
                         "instead (--data_loading=stream) or choose a smaller --image_size. "
                         f"Received: image_size={image_size}")


def _load_digits(image_size):
    from sklearn.datasets import load_digits

    digits = load_digits()
    check_memory(len(digits.images), image_size, 1, "digits")
    x = digits.images.astype(np.float32)[..., None] / 16.0  # [N, 8, 8, 1] in [0, 1]
    if image_size != x.shape[1]:
        x = tf.image.resize(x, [image_size, image_size], method="bilinear").numpy()
    return _to_uint8(x), digits.target.astype(np.int32), [str(c) for c in digits.target_names]


def is_online(host="storage.googleapis.com", port=443, timeout=3.0):
    """Whether a TCP connection to `host:port` opens within about `timeout` seconds.

    Runs in a daemon thread so a hanging DNS lookup cannot block longer than `timeout + 2` s.
    """
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    return bool(result and result[0])


def tfds_builder(name, data_dir):
    """The TFDS builder of an (image, class label) data set, prepared (downloaded if online).

    Returns:
        `(builder, class_names, test_split)`: `test_split` is `"test"`, `"validation"` (used as
        the test split when there is no `test`) or None (hold one out of `train`).

    Raises:
        DataUnavailableError: unknown, damaged, not a classification data set, or not prepared
            and not downloadable.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataUnavailableError(
            f"Unknown data set {name!r}: it is neither one of {sorted(DATASETS)} nor a "
            f"TensorFlow Datasets name (e.g. {', '.join(TFDS_EXAMPLES)}). "
            f"{_HOW_TO_PROVIDE} Received: name={name!r}") from e
    except Exception as e:  # unreadable metadata (a corrupt dataset_info.json...)
        raise DataUnavailableError(
            f"Cannot read data set {name!r} from {data_dir or 'the default TFDS data_dir'} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}): its "
            "prepared files look damaged. Prepare it again (delete its folder under "
            f"--data_dir). Received: data_dir={data_dir!r}") from e
    features = builder.info.features
    keys = builder.info.supervised_keys
    if (not keys or len(keys) != 2 or not isinstance(keys[0], str) or not isinstance(keys[1], str)
            or not isinstance(features[keys[0]], tfds.features.Image)
            or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
        raise DataUnavailableError(
            f"TFDS data set {name!r} is not an (image, class label) classification data set. "
            f"Try one of {', '.join(TFDS_EXAMPLES)}. Received: name={name!r}")
    if not builder.is_prepared():
        where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
        manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        if manual:  # e.g. imagenet2012: prepared from files the user downloads, offline too
            folder = pathlib.Path(data_dir or "~/tensorflow_datasets").expanduser() / \
                "downloads" / "manual"
            if not folder.is_dir() or not any(folder.iterdir()):
                first = " ".join(str(manual).split())[:300]
                raise DataUnavailableError(
                    f"Data set {name!r} is not prepared in {where} and TFDS cannot download "
                    f"it: put its files in {str(folder)!r} (TFDS: {first}) and run again to "
                    f"prepare it. Received: data_dir={data_dir!r}")
        elif not is_online():
            raise DataUnavailableError(
                f"Data set {name!r} is not prepared in {where} and there is no internet "
                f"connection to download it. {_HOW_TO_PROVIDE}")
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=str(folder))) if manual else builder.download_and_prepare()
        except Exception as e:  # any failure here is user-facing
            raise DataUnavailableError(
                f"Could not download and prepare data set {name!r} into {where} ({e}). "
                f"{_HOW_TO_PROVIDE}") from e
    splits = set(builder.info.splits.keys())
    # Unknown split metadata (mocked TFDS) means: assume the usual train/test splits.
    test_split = "test" if ("test" in splits or not splits) else (
        "validation" if "validation" in splits else None)
    return builder, list(features[keys[1]].names), test_split


def _load_tfds(name, data_dir, image_size, test_fraction):
    builder, class_names, test_split = tfds_builder(name, data_dir)
    x_train, y_train = _read_tfds_split(builder, "train", image_size)
    if test_split is None:
        keep, test = test_hold_out(y_train, test_fraction)
        x_train, y_train, x_test, y_test = x_train[keep], y_train[keep], x_train[test], \
            y_train[test]
    else:
        x_test, y_test = _read_tfds_split(builder, test_split, image_size)
    return x_train, y_train, x_test, y_test, class_names


def _read_tfds_split(builder, split, image_size, chunk=8192):
    """Reads a whole TFDS split as uint8 `[N, S, S, C]` images and int32 labels.

    Reads in chunks rather than with `batch_size=-1`, which needs the split size in the
    metadata (it aborts the process when the size is unknown, e.g. under TFDS mocking).
    """
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    shape = ds.element_spec[0].shape
    if shape[0] != image_size or shape[1] != image_size:
        def resize(image, label):
            image = tf.image.resize(image, [image_size, image_size], antialias=True)
            return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8), label

        ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
    xs, ys = [], []
    for x, y in ds.batch(chunk).prefetch(1).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataUnavailableError(f"Split {split!r} of data set {builder.name!r} is empty.")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int32)


def folder_layout(data_dir):
    """`(root, train_dir, {"val": dir, "test": dir})` of an image folder (see `_load_folder`).

    Raises:
        DataUnavailableError: no `data_dir`, or it is not a folder.
    """
    if data_dir is None:
        raise DataUnavailableError(
            "--dataset=folder needs --data_dir=PATH pointing to a folder of images in class "
            "subfolders (PATH/<class>/*.png or PATH/train/<class>/*). Received: data_dir=None")
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataUnavailableError(
            f"Image folder {str(root)!r} does not exist. Point --data_dir to a folder of images "
            f"in class subfolders, or use --dataset=digits. Received: data_dir={str(data_dir)!r}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    others = {}
    if train_dir != root:
        val_dir = next((root / v for v in ("val", "validation") if (root / v).is_dir()), None)
        for split, directory in (("val", val_dir), ("test", root / "test")):
            if directory is not None and directory.is_dir():
                others[split] = directory
    return root, train_dir, others


def count_image_files(root) -> int:
    """Files with an image extension anywhere under `root` (no decoding)."""
    return sum(1 for path in pathlib.Path(root).rglob("*")
               if path.suffix.lower() in IMAGE_EXTENSIONS)


def check_classes(class_names, train_dir, data_dir, what="readable images"):
    """Fails unless the training folder gave at least two classes."""
    if not class_names:
        raise DataUnavailableError(
            f"No {what} found in class subfolders of {str(train_dir)!r} (expected "
            f"PATH/<class>/*.png|jpg|bmp|gif|tiff). Received: data_dir={str(data_dir)!r}")
    if len(class_names) < 2:
        raise DataUnavailableError(
            f"{str(train_dir)!r} holds one class ({class_names[0]!r}): a classifier needs at "
            "least two class subfolders with images. Received: "
            f"data_dir={str(data_dir)!r}")


def _load_folder(data_dir, image_size, test_fraction):
    """Reads a folder of images in class subfolders (PNG, JPEG, BMP, GIF, TIFF).

    Layouts: `PATH/<class>/*` (the test split is a fixed stratified `test_fraction`
    hold-out), or `PATH/train/<class>/*` with optional `PATH/val/<class>/*` (also
    `validation/`; if present it is the validation split) and optional `PATH/test/<class>/*`
    (if present it is the test split; otherwise one is held out of `train/`). Class names are
    the sorted subfolder names of the training folder. Images are converted to RGB, or kept
    1-channel if every image is grayscale, and resized bilinearly to `image_size` squared.
    Unreadable or corrupt image files are skipped with one warning per folder that counts and
    names them; class folders without readable images are dropped with a warning; files with
    other extensions and hidden entries are ignored.

    Returns:
        `(x_train, y_train, x_val, y_val, x_test, y_test, class_names)`; `x_val` and `y_val`
        are None when there is no `val/` folder.
    """
    root, train_dir, others = folder_layout(data_dir)
    check_memory(count_image_files(root), image_size, 3, f"Image folder {str(root)!r}")
    images, labels, class_names = _read_class_folders(train_dir, None, image_size)
    check_classes(class_names, train_dir, data_dir)
    parts = {"train": (images, labels)}
    for split, directory in others.items():
        x, y, _ = _read_class_folders(directory, class_names, image_size)
        if not x:
            raise DataUnavailableError(
                f"Folder {str(directory)!r} holds no readable images of the training "
                f"classes {class_names}. Received: data_dir={str(data_dir)!r}")
        parts[split] = (x, y)
    gray = all(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
               for xs, _ in parts.values() for a in xs)
    arrays = {k: (np.stack(xs)[..., :1] if gray else np.stack(xs), np.asarray(ys, np.int32))
              for k, (xs, ys) in parts.items()}
    x_train, y_train = arrays["train"]
    if "test" in arrays:
        x_test, y_test = arrays["test"]
    else:
        keep, test = test_hold_out(y_train, test_fraction)
        x_train, y_train, x_test, y_test = x_train[keep], y_train[keep], x_train[test], \
            y_train[test]
    x_val, y_val = arrays.get("val", (None, None))
    return x_train, y_train, x_val, y_val, x_test, y_test, class_names


def list_class_files(directory, class_names=None, stacklevel=4):
    """Image files of `directory/<class>/*`, without decoding them.

    `class_names=None` discovers the classes: the sorted subfolders holding at least one
    image file (the others are dropped with a warning); otherwise subfolders that are not
    in `class_names` are skipped with a warning. Hidden entries and other extensions are
    ignored; entries that are not regular files (a FIFO would block) are reported in `bad`.

    Returns:
        `(paths, labels, class_names, bad)`: sorted paths per class, their class indices,
        the classes, and `"relative path (reason)"` strings of skipped entries.
    """
    paths, labels, kept, bad = [], [], [], []
    subdirs = sorted(d for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))
    for sub in subdirs:
        if class_names is not None and sub.name not in class_names:
            warnings.warn(f"Skipping folder {str(sub)!r}: {sub.name!r} is not one of the "
                          f"training classes {class_names}.", stacklevel=stacklevel)
            continue
        label = len(kept) if class_names is None else class_names.index(sub.name)
        files = []
        for path in sorted(sub.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if not _regular_file(path):
                bad.append(f"{path.relative_to(directory)} (not a regular file)")
                continue
            files.append(path)
        if class_names is None and not files:
            warnings.warn(f"Class folder {str(sub)!r} contains no readable images; class "
                          f"{sub.name!r} is dropped.", stacklevel=stacklevel)
            continue
        if class_names is None:
            kept.append(sub.name)
        paths += files
        labels += [label] * len(files)
    return paths, labels, (kept if class_names is None else list(class_names)), bad


def warn_skipped(bad, directory, stacklevel=4):
    """One warning that counts and names (the first ten) skipped image files."""
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        warnings.warn(f"Skipped {len(bad)} unreadable image file(s) in {str(directory)!r}: "
                      f"{shown}.", stacklevel=stacklevel)


def _read_class_folders(directory, class_names, image_size):
    """Decodes `directory/<class>/*` images; `class_names=None` means: discover the classes.

    A discovered class whose files are all unreadable is dropped (with a warning), and the
    labels of the classes after it move down by one.
    """
    from PIL import Image

    paths, labels, names, bad = list_class_files(directory, class_names, stacklevel=5)
    images, kept_labels = [], []
    for path, label in zip(paths, labels):
        try:
            with Image.open(path) as img:
                images.append(_pil_to_array(img, image_size))
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
            bad.append(f"{path.relative_to(directory)} ({type(e).__name__})")
            continue
        kept_labels.append(label)
    if class_names is None:
        kept_labels, names = drop_unread_classes(directory, kept_labels, names)
    warn_skipped(bad, directory)
    return images, list(kept_labels), names


def drop_unread_classes(directory, labels, names, stacklevel=5):
    """Drops (with a warning) discovered classes none of whose files could be read.

    Returns `(labels, names)`: the labels renumbered over the classes that remain.
    """
    labels = np.asarray(labels, np.int32)
    present = np.unique(labels)
    for k, name in enumerate(names):
        if k not in present:
            warnings.warn(f"Class folder {str(directory / name)!r} contains no readable "
                          f"images; class {name!r} is dropped.", stacklevel=stacklevel)
    return np.searchsorted(present, labels).astype(np.int32), [names[k] for k in present]


def _regular_file(path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _pil_to_array(img, image_size):
    """PIL image -> uint8 `[S, S, 3]` array (grayscale images get three equal channels);
    `image_size=None` keeps the image's size."""
    from PIL import Image

    img.load()
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16/32-bit grayscale
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            a = a * 255.0 if a.max() <= 1.0 else a
        elif img.mode.startswith("I;16") or a.max() > 255:
            a = a / 257.0
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")  # avoids PIL's warning on palette transparency
    img = img.convert("RGB")
    if image_size is not None and img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def make_pipeline(x, y, batch_size, *, training, seed=0, drop_remainder=None):
    """Builds a batched `tf.data.Dataset` of float32 `[0, 1]` images and int32 labels.

    Args:
        x: uint8 images `[N, H, W, C]` (divided by 255) or float images in `[0, 1]`.
        y: class indices `[N]`.
        batch_size: examples per batch.
        training: if True, reshuffles the whole data set (buffer `N`) every iteration.
        seed: shuffle seed; the sequence of epoch orders is deterministic given it.
        drop_remainder: drop the last partial batch; defaults to `training`.

    Returns:
        A prefetched `tf.data.Dataset` of `(images [B, H, W, C] float32, labels [B] int32)`.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length. Received: len(x)={len(x)}, "
                         f"len(y)={len(y)}")
    drop_remainder = training if drop_remainder is None else drop_remainder
    x = np.asarray(x)
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    # The arrays are in memory already, so no `cache()`: it would only duplicate them.
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int32)))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return batch_to_float(ds, batch_size, drop_remainder, scale)


def batch_to_float(ds, batch_size, drop_remainder, scale=1.0 / 255.0):
    """Batches `(image, label)` examples and scales the images to float32 (per batch: cheaper
    than per example), prefetched."""
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def to_float(images, labels):
        return tf.cast(images, tf.float32) * scale, labels

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)


def with_validation_stream(train_ds, val_ds):
    """Pairs every training batch with a validation batch, for bilevel training.

    Args:
        train_ds: batched training dataset of `(x, y)`.
        val_ds: batched validation dataset of `(x_val, y_val)`, best made with
            `make_pipeline(..., training=True)` so it reshuffles every pass and drops the
            remainder; it is repeated indefinitely. Its batch may be smaller than the
            training batch: the look-ahead validation pass is about 3 of the 10 units of
            work of a DABO step, so half the batch saves about 15% of the step.

    Returns:
        `tf.data.Dataset` of `((x, y), (x_val, y_val))` with `train_ds`'s cardinality.
    """
    if int(val_ds.cardinality()) == 0:
        raise ValueError("val_ds yields no batch (fewer validation examples than batch_size "
                         "with drop_remainder?). Received: val_ds.cardinality()=0")
    return tf.data.Dataset.zip((train_ds, val_ds.repeat()))
