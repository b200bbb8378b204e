"""Keras callbacks of a training run: augmented-image summaries, throughput, profiling range.

`dabo_tf.train` adds these beside Keras' own `TensorBoard`, `CSVLogger` and
`BackupAndRestore`; they are independent of DABO and work with any model.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf


class AugmentedImageSummary(keras.callbacks.Callback):
    """Writes a TensorBoard image summary of augmented training samples every epoch.

    Each summary image shows an original (left) beside its augmentation (right), so the
    learned policy can be watched as it changes. The images are written with
    `tf.summary.image` to their own writer under `log_dir`.

    Args:
        log_dir: folder of the summary writer (e.g. `workdir/logs/augmentations`).
        images: float32 `[N, H, W, C]` images in `[0, 1]` (a fixed batch of training data).
        augment_fn: callable `images -> augmented images`, e.g.
            `lambda x: model.augmenter(x, training=True)`.
        max_outputs: number of images written per epoch. Defaults to 8.
    """

    def __init__(self, log_dir: str, images, augment_fn: Callable, max_outputs: int = 8):
        super().__init__()
        self.log_dir = str(log_dir)
        self.images = tf.convert_to_tensor(np.asarray(images[:max_outputs], np.float32))
        self.augment_fn = augment_fn
        self.max_outputs = int(max_outputs)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        augmented = tf.cast(self.augment_fn(self.images), tf.float32)
        pairs = tf.clip_by_value(tf.concat([self.images, augmented], axis=2), 0.0, 1.0)
        with self._writer.as_default():
            tf.summary.image("original_vs_augmented", pairs, step=epoch,
                             max_outputs=self.max_outputs)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ThroughputMeter(keras.callbacks.Callback):
    """Measures training throughput (images per second), leaving out validation passes.

    When several epochs run, the first one (which includes tracing and compilation) is left
    out of `images_per_second`; `total_train_seconds` counts every epoch.

    Args:
        images_per_step: global batch size.
    """

    def __init__(self, images_per_step: int):
        super().__init__()
        self.images_per_step = int(images_per_step)
        self.epoch_seconds = []
        self.epoch_steps = []
        self._start = self._test_start = None
        self._test_seconds = self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._test_seconds, self._steps = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._test_start is not None and self._start is not None:
            self._test_seconds += time.perf_counter() - self._test_start
        self._test_start = None

    def on_epoch_end(self, epoch, logs=None):
        if self._start is None:
            return
        self.epoch_seconds.append(time.perf_counter() - self._start - self._test_seconds)
        self.epoch_steps.append(self._steps)
        self._start = None

    @property
    def total_train_seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    @property
    def images_per_second(self) -> Optional[float]:
        """Training images per second (None before an epoch has finished)."""
        seconds, steps = self.epoch_seconds, self.epoch_steps
        if len(seconds) > 1:
            seconds, steps = seconds[1:], steps[1:]
        total = sum(seconds)
        if not seconds or total <= 0:
            return None
        return float(sum(steps) * self.images_per_step / total)


def parse_profile_batches(profile_batches: str, epochs: int, steps_per_epoch: int,
                          initial_epoch: int = 0):
    """Turns the `profile_batches` setting into Keras' `TensorBoard(profile_batch=...)`.

    Args:
        profile_batches: `""` (default: up to three batches early in the second epoch, after
            its first batch; none when there is a single epoch), `"0"` (off), `"N"` or
            `"START,STOP"` (batches counted from 1 across the epochs of this `fit` call).
        epochs: total number of epochs of the run.
        steps_per_epoch: training steps per epoch.
        initial_epoch: epoch the `fit` call starts from (a resumed run); the default range
            is then put in this call's second epoch, or left out if it has a single epoch.

    Returns:
        0 (off) or a `(start, stop)` pair of positive ints.

    Raises:
        ValueError: if `profile_batches` is not of these forms.
    """
    text = str(profile_batches or "").strip()
    if not text:
        if epochs - initial_epoch < 2 or steps_per_epoch < 1:
            return 0
        count = min(3, steps_per_epoch)
        start = steps_per_epoch + 1 + (1 if steps_per_epoch > count else 0)
        return (start, start + count - 1)
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 0 or (len(values) == 2 and (
            values[0] < 1 or values[1] < values[0])):
        raise ValueError("profile_batches must be '' (default), '0' (off), a batch number or "
                         "'START,STOP' with 1 <= START <= STOP. "
                         f"Received: profile_batches={profile_batches!r}")
    if values == [0]:
        return 0
    return (values[0], values[-1])
