"""Streamed data: splits kept as file lists or TFDS split strings, images decoded per step.

`dabo_tf.data.load(..., loading="stream")` (or `"auto"` for data too large for memory) returns
a `StreamedSplits`: the same interface as the in-memory `DataSplits` (`sizes`, `dataset`,
`sample_images`, `mean`, `std`...) without ever holding the images. `tf.data` reads, decodes,
resizes and batches them in parallel while the model trains, so the memory a run needs does
not grow with the data set, and the validation stream DABO learns from is read the same way.

- Folders: the files are listed (no decoding) and split exactly as in memory: the same
  stratified test hold-out (seed 0), `train_size` subset and validation split (from `seed`),
  on the file list. Each step reads the files with `tf.io.read_file` and decodes them with
  `tf.io.decode_image` (PNG, JPEG, BMP, GIF); TIFF, which TensorFlow cannot decode, goes
  through PIL in `tf.numpy_function`. Files whose header no decoder recognises are left out
  when the folder is listed, with the in-memory path's warning; a file damaged after its
  header is skipped when read (`ignore_errors`, with TensorFlow's warning) and its place in
  the epoch taken by another image of the split.
- TFDS: splits are TFDS split strings over the prepared records, e.g. `train[12000:60000]`:
  the validation split is the first `val_fraction` of the training split (after a test
  hold-out when there is no test split), as the DABO paper's code takes a fixed 20%; TFDS
  shuffles examples when it prepares a data set, so a slice is a random sample. Unlike in
  memory these splits do not depend on `seed` and are not stratified; the order of the
  training stream does depend on `seed` (file order and a shuffle buffer of at most
  `SHUFFLE_BUFFER_BYTES`).

Images are resized to `image_size` squared with antialiasing (`tf.image.resize`), as the
in-memory TFDS path does (in-memory folders resize with PIL: values differ by rounding).
Normalisation statistics come from `STATS_IMAGES` training images spread over the split.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from dabo_tf import data

STATS_IMAGES = 1024
"""Training images whose per-channel mean and std normalise the classifier's input."""

SHUFFLE_BUFFER_BYTES = 256 * 2**20
"""Largest shuffle buffer of a streamed TFDS training split, in decoded bytes (whole split
when it fits: 32x32 data sets up to 87k images, about 1,700 images at 224x224)."""

MEMORY_SHARE = 0.25
"""`loading="auto"` streams when the uint8 images would take more than this share of the
available memory (in-memory loading also needs a float32 copy while resizing)."""

_NATIVE = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
"""Extensions `tf.io.decode_image` decodes; others (TIFF) are decoded by PIL."""


@dataclasses.dataclass
class FileSource:
    """One split of an image folder: file paths and labels, decoded per step.

    With a patch `grid` of `(rows, cols)` each image is resized to `rows * image_size` x
    `cols * image_size` and cut into `rows * cols` patches: every patch is an example with
    its image's label, or (`whole_images=True`, for testing) each image is one example of
    `[rows * cols, image_size, image_size, C]` patches.
    """

    paths: np.ndarray
    labels: np.ndarray
    image_size: int
    channels: int
    grid: tuple = (1, 1)
    whole_images: bool = False

    @property
    def patches_per_image(self) -> int:
        return int(self.grid[0] * self.grid[1])

    @property
    def size(self) -> int:
        """Examples per pass: images, or patches when they are examples."""
        return len(self.labels) * (1 if self.whole_images else self.patches_per_image)

    def subset(self, index) -> "FileSource":
        return dataclasses.replace(self, paths=self.paths[index], labels=self.labels[index])

    def spread(self, n) -> "FileSource":
        """Up to `n` images evenly spaced over the list (which is sorted by class)."""
        count = len(self.labels)
        return self.subset(np.linspace(0, count - 1, min(n, count)).astype(int))

    def examples(self, training: bool, seed: int) -> tf.data.Dataset:
        """`(uint8 [S, S, C] image, int32 label)` examples, shuffled every pass if training."""
        native = np.array([str(p).lower().endswith(_NATIVE) for p in self.paths])
        ds = tf.data.Dataset.from_tensor_slices(
            (self.paths.astype(str), native, self.labels.astype(np.int32)))
        if training:  # the file list is small: shuffle all of it
            ds = ds.shuffle(len(self.labels), seed=seed, reshuffle_each_iteration=True)
        size, channels, (rows, cols) = self.image_size, self.channels, self.grid
        shape = (rows * size, cols * size)

        def load(path, is_native, label):
            image = tf.cond(is_native, lambda: _decode_native(path, shape, channels),
                            lambda: _decode_pil(path, shape, channels))
            return image, label

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        clean = ds.ignore_errors(log_warning=True)
        # Exactly one example per file, whatever fails to decode (its place is taken by an
        # image of the next pass), so that Keras knows every epoch's length.
        ds = clean.concatenate(clean.repeat()).take(len(self.labels))
        if self.grid == (1, 1):
            return ds.apply(tf.data.experimental.assert_cardinality(self.size))

        def patches(image, label):
            # [rows*S, cols*S, C] -> [rows*cols, S, S, C], row by row.
            x = tf.reshape(image, [rows, size, cols, size, channels])
            x = tf.reshape(tf.transpose(x, [0, 2, 1, 3, 4]), [rows * cols, size, size, channels])
            return x, label

        ds = ds.map(patches, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.whole_images:
            return ds.apply(tf.data.experimental.assert_cardinality(self.size))
        ds = ds.map(lambda x, y: (x, tf.fill([rows * cols], y))).unbatch()
        if training:  # mix the patches of several images
            ds = ds.shuffle(_buffer(self.size, size * size * channels), seed=seed,
                            reshuffle_each_iteration=True)
        return ds.apply(tf.data.experimental.assert_cardinality(self.size))


def _buffer(examples, nbytes):
    return max(1, min(examples, SHUFFLE_BUFFER_BYTES // nbytes))


def _resize(image, size):
    shape = [size, size] if isinstance(size, int) else list(size)
    image = tf.image.resize(image, shape, antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def _decode_native(path, shape, channels):
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, dtype=tf.uint8,
                               expand_animations=False)
    return tf.ensure_shape(_resize(image, shape), [*shape, channels])


def _decode_pil(path, shape, channels):
    # TensorFlow has no TIFF decoder; PIL releases the GIL while decoding. Decoded at full
    # size, then resized like the other formats.
    def decode(p):
        from PIL import Image

        with Image.open(p.decode()) as img:
            array = data._pil_to_array(img, None)
        return array[..., :1] if channels == 1 else array

    image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
    image.set_shape([None, None, channels])
    return tf.ensure_shape(_resize(image, shape), [*shape, channels])


@dataclasses.dataclass
class TfdsSource:
    """One split of a prepared TFDS data set, as a TFDS split string."""

    builder: object
    split: str
    image_size: int
    channels: int
    size: int

    def examples(self, training: bool, seed: int) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        ds = self.builder.as_dataset(
            split=self.split, as_supervised=True, shuffle_files=training,
            read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False))
        size, channels = self.image_size, self.channels

        def load(image, label):
            image = image if image.shape[-1] == channels else (
                tf.image.grayscale_to_rgb(image) if channels == 3 else image[..., :1])
            return (tf.ensure_shape(_resize(image, size), [size, size, channels]),
                    tf.cast(label, tf.int32))

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if training:
            ds = ds.shuffle(_buffer(self.size, size * size * channels), seed=seed,
                            reshuffle_each_iteration=True)
        return ds


@dataclasses.dataclass
class StreamedSplits(data.Splits):
    """Train/validation/test splits read per step (see the module docstring).

    Attributes:
        sources: `{"train", "val", "test"}` -> `FileSource` or `TfdsSource`.
        name, num_classes, class_names, image_shape, mean, std: as in `DataSplits`.
    """

    name: str
    sources: dict = dataclasses.field(repr=False)
    num_classes: int
    class_names: list
    image_shape: tuple
    mean: tuple
    std: tuple

    streaming = True

    @property
    def sizes(self):
        """Examples per split: with a patch grid, training and validation patches and test
        images."""
        return {split: int(source.size) for split, source in self.sources.items()}

    @property
    def patches_per_image(self) -> int:
        """Patches a test example holds (1: no patch grid)."""
        return int(getattr(self.sources["test"], "patches_per_image", 1))

    def dataset(self, split, batch_size, *, training, seed=0, drop_remainder=None):
        """Batched float32 `[0, 1]` images and int32 labels of `split`, decoded per step.

        Args:
            split: `"train"`, `"val"` or `"test"`.
            batch_size: examples per batch.
            training: shuffle every pass (deterministically from `seed`).
            seed: shuffle seed.
            drop_remainder: drop the last partial batch; defaults to `training`.
        """
        if split not in self.sources:
            raise ValueError(f"split must be one of {sorted(self.sources)}. "
                             f"Received: split={split!r}")
        drop_remainder = training if drop_remainder is None else drop_remainder
        ds = self.sources[split].examples(training, seed)
        return data.batch_to_float(ds, batch_size, drop_remainder)

    def _head(self, n=512):
        source = self.sources["train"]
        if isinstance(source, FileSource):  # every class, not the first one's files
            source = source.spread(n)
        images, labels = [], []
        for x, y in source.examples(False, 0).take(n).batch(n):
            images, labels = x.numpy(), y.numpy()
        return images, labels


def too_large_for_memory(name, data_dir, image_size) -> bool:
    """Whether `loading="auto"` streams `name`: its uint8 images at `image_size` would take
    more than `MEMORY_SHARE` of the available memory (False when the size is unknown)."""
    available = data.available_memory()
    if available is None:
        return False
    if name.lower() == "folder":
        root, _, _ = data.folder_layout(data_dir)
        count, channels = data.count_image_files(root), 3
    else:
        builder, _, _ = data.tfds_builder(name, data_dir)
        count = sum(int(s.num_examples) for s in builder.info.splits.values())
        channels = _tfds_channels(builder)
    return count * image_size * image_size * channels > MEMORY_SHARE * available


def load(name, *, data_dir=None, image_size=32, val_fraction=0.2, train_size=None, seed=0,
         test_fraction=0.3, patch_grid=None) -> StreamedSplits:
    """The streamed counterpart of `dabo_tf.data.load` (same arguments, no `eval_shift`).

    `patch_grid=(rows, cols)` (folders only): training and validation examples are the
    patches of each image, test examples whole images as `[rows * cols, S, S, C]` patches
    (`StreamedSplits.patches_per_image`); the splits are made per image first, so the
    patches of one image are never in two splits.
    """
    if name.lower() == "folder":
        return _stream_folder(data_dir, image_size, val_fraction, train_size, seed,
                              test_fraction, tuple(patch_grid or (1, 1)))
    if patch_grid is not None:
        raise ValueError(f"patch_grid is for image folders. Received: patch_grid={patch_grid}")
    return _stream_tfds(name, data_dir, image_size, val_fraction, train_size, test_fraction)


def _listed(directory, class_names=None):
    """`list_class_files` keeping the files whose header an image decoder recognises."""
    paths, labels, names, bad = data.list_class_files(directory, class_names, stacklevel=5)
    ok = _headers_readable(paths)
    bad += [f"{p.relative_to(directory)} (not an image)" for p, good in zip(paths, ok)
            if not good]
    data.warn_skipped(bad, directory, stacklevel=5)
    labels = np.asarray(labels, np.int32)[ok] if paths else np.zeros([0], np.int32)
    paths = np.array([str(p) for p in paths], object)[ok] if paths else np.array([], object)
    if class_names is None:  # a class whose every file is unreadable is dropped
        labels, names = data.drop_unread_classes(directory, labels, names)
    return paths, labels, names


def _headers_readable(paths, threads=16):
    """Per file: whether PIL recognises its header (reads a few bytes, decodes nothing).

    Catches the usual bad file (not an image, empty, another format renamed) when the
    folder is listed, so that streaming never meets it; a file damaged after its header
    fails when read and is skipped then (`ignore_errors`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def readable(path):
        try:
            with Image.open(path):
                return True
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
            return False

    with ThreadPoolExecutor(threads) as pool:  # file opens wait on the disk, not the GIL
        return np.array(list(pool.map(readable, paths)), bool)


def _stream_folder(data_dir, image_size, val_fraction, train_size, seed, test_fraction,
                   grid=(1, 1)):
    root, train_dir, others = data.folder_layout(data_dir)
    paths, labels, class_names = _listed(train_dir)
    data.check_classes(class_names, train_dir, data_dir)
    lists = {"train": (paths, labels)}
    for split, directory in others.items():
        p, y, _ = _listed(directory, class_names)
        if not len(p):
            raise data.DataUnavailableError(
                f"Folder {str(directory)!r} holds no image files of the training classes "
                f"{class_names}. Received: data_dir={str(data_dir)!r}")
        lists[split] = (p, y)
    channels = _folder_channels([p for p, _ in lists.values()])
    source = {k: FileSource(p, y, image_size, channels, grid) for k, (p, y) in lists.items()}
    if "test" not in source:
        keep, test = data.test_hold_out(source["train"].labels, test_fraction)
        source["test"] = source["train"].subset(test)
        source["train"] = source["train"].subset(keep)
    train, val = data.choose_subsets("folder", source["train"].labels, "val" in source,
                                     val_fraction, train_size, seed)
    if val is not None:
        source["val"] = source["train"].subset(val)
    source["train"] = source["train"].subset(train)
    source["test"] = dataclasses.replace(source["test"], whole_images=True)
    data.warn_missing_classes("folder", source["test"].labels, class_names)
    return _splits("folder", source, class_names, image_size, channels)


def _folder_channels(path_lists, sample=32):
    """1 when `sample` files spread over the splits are all grayscale, else 3 (RGB)."""
    from PIL import Image

    paths = np.concatenate(path_lists)
    for path in paths[np.linspace(0, len(paths) - 1, min(sample, len(paths))).astype(int)]:
        try:
            with Image.open(path) as img:
                a = data._pil_to_array(img, 8)
        except (OSError, ValueError, SyntaxError, EOFError):
            continue
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            return 3
    return 1


def _tfds_channels(builder) -> int:
    shape = builder.info.features[builder.info.supervised_keys[0]].shape
    return int(shape[-1]) if shape and shape[-1] in (1, 3) else 3


def _stream_tfds(name, data_dir, image_size, val_fraction, train_size, test_fraction):
    builder, class_names, test_split = data.tfds_builder(name, data_dir)
    channels = _tfds_channels(builder)
    total = _split_size(builder, "train")
    start = 0
    if test_split is None:
        start = data._count(test_fraction, total)
        test_split = f"train[:{start}]"
    available = total - start
    if train_size is not None and train_size > available:
        raise ValueError(f"train_size is larger than the {available} training images of "
                         f"{name}. Received: train_size={train_size}")
    end = start + (available if train_size is None else int(train_size))
    n_val = data._count(val_fraction, end - start)
    splits = {"train": f"train[{start + n_val}:{end}]", "val": f"train[{start}:{start + n_val}]",
              "test": test_split}
    source = {k: TfdsSource(builder, s, image_size, channels, _split_size(builder, s))
              for k, s in splits.items()}
    return _splits(name, source, class_names, image_size, channels)


def _split_size(builder, split) -> int:
    """Examples in a TFDS split string, from the metadata (counted when it has none)."""
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError, TypeError):
        import tensorflow_datasets as tfds

        image_key = builder.info.supervised_keys[0]
        ds = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
        return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())


def _splits(name, source, class_names, image_size, channels) -> StreamedSplits:
    train = source["train"]
    if train.size == 0:
        raise data.DataUnavailableError(f"The training split of {name} is empty.")
    sample: Optional[np.ndarray] = None
    if isinstance(train, FileSource):  # every class, not the first one's files
        train = train.spread(STATS_IMAGES)
    for x, _ in train.examples(False, 0).take(STATS_IMAGES).batch(STATS_IMAGES):
        sample = x.numpy()
    if sample is None:
        raise data.DataUnavailableError(f"No training image of {name} could be read.")
    mean, std = data._channel_stats(sample)
    return StreamedSplits(name=name, sources=source, num_classes=len(class_names),
                          class_names=[str(c) for c in class_names],
                          image_shape=(image_size, image_size, channels), mean=mean, std=std)
