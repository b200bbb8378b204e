"""The training loop every mode shares: the same classifier, optimiser, schedule, epochs,
callbacks and evaluation, whatever the augmentation.

`fit_and_evaluate` fits a compiled model with the run's callbacks (history, TensorBoard,
resumable backups) and evaluates it on the test split; `fit_classifier` does it for a plain
classifier behind any augmentation front end. A mode runner (`dabo_tf.train.modes`) returns
a `RunResult`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from dabo_tf import data, models, seeds
from dabo_tf.augment.base import as_augment_fn
from dabo_tf.config import Config, ConfigError, parse_grid
from dabo_tf.keras_compat import quiet_profiler_callback, release_traced_gradients
from dabo_tf.train import rundir
from dabo_tf.train.callbacks import AugmentedImageSummary, ThroughputMeter, parse_profile_batches
from dabo_tf.train.recipe import compile_model

QuietTensorBoard = quiet_profiler_callback(keras.callbacks.TensorBoard)
"""Keras' TensorBoard callback, its profiler's INFO lines kept off the console."""


@dataclasses.dataclass
class RunResult:
    """What a mode runner hands back to `dabo_tf.train.runner.train_and_evaluate`.

    Attributes:
        model: the trained Keras model saved whole (a `DaboModel`, or the classifier).
        classifier: the plain classifier (exported as the SavedModel, evaluated on test).
        history: epoch-wise logs of the whole run, `{"epoch": [...], "loss": [...], ...}`.
        metrics: at least `test_accuracy`; merged into `metrics.json`.
        policy: augmentation policy in human units (`{op: {"low", "high", "unit"}}`).
        augment_fn: `images -> augmented images` for the figures, or None.
    """

    model: keras.Model
    classifier: keras.Model
    history: dict
    metrics: dict
    policy: dict = dataclasses.field(default_factory=dict)
    augment_fn: Optional[Callable] = None


# ----------------------------------------------------------------------------------------
# Data and training helpers.

def load_data(config: Config) -> data.Splits:
    """`dabo_tf.data.load` with the config's settings (bad values raise `ConfigError`): a
    `DataSplits` in memory or a `dabo_tf.streaming.StreamedSplits` (`--data_loading`)."""
    try:
        return data.load(config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                         val_fraction=config.val_fraction, train_size=config.train_size,
                         seed=config.seed, eval_shift=config.eval_shift,
                         loading=config.data_loading,
                         patch_grid=parse_grid(config.patch_grid))
    except ValueError as e:
        raise ConfigError(str(e)) from e


def steps_per_epoch(config: Config, splits: data.DataSplits) -> int:
    steps = splits.sizes["train"] // config.batch_size
    if steps < 1:
        raise ConfigError(f"batch_size is larger than the {splits.sizes['train']} training "
                          f"images. Received: batch_size={config.batch_size}")
    return steps


def build_classifier(config: Config, splits: data.DataSplits) -> keras.Model:
    return models.build_classifier(config.model, splits.image_shape, splits.num_classes,
                                   mean=splits.mean, std=splits.std,
                                   seed=seeds.stream(config.seed, seeds.CLASSIFIER))


def train_pipeline(config: Config, splits: data.DataSplits,
                   augment_fn: Optional[Callable] = None) -> tf.data.Dataset:
    """Shuffled training batches, augmented by `augment_fn` in the pipeline if given.

    The map runs sequentially so that the layers' random draws are reproducible.
    """
    ds = splits.dataset("train", config.batch_size, training=True,
                        seed=seeds.stream(config.seed, seeds.TRAIN_ORDER))
    if augment_fn is not None:
        ds = ds.map(lambda x, y: (augment_fn(x), y)).prefetch(tf.data.AUTOTUNE)
    return ds


def _eval_pipeline(splits, split, config):
    return splits.dataset(split, config.batch_size, training=False)


def to_int(variable) -> int:
    """The value of a (possibly mirrored) scalar Keras variable."""
    return int(tf.convert_to_tensor(variable.value).numpy())


def profile_batches(config: Config, steps: int, initial_epoch: int, strategy):
    """Keras' `TensorBoard(profile_batch=...)` for this process (`config.profile_batches`).

    Only the chief of a multi-worker cluster profiles: TensorFlow's profiler, stopped in
    another worker, now and then corrupts the heap and kills it ("double free or
    corruption" and SIGABRT, or SIGSEGV; 5 of 25 two-worker `digits:smoke` runs on a loaded
    2-core machine, 0 of 10 with the profiler off, 2026-12-08), and that worker's logs are
    removed anyway.
    """
    if not rundir.is_chief(strategy):
        return 0
    return parse_profile_batches(config.profile_batches, config.epochs, steps, initial_epoch)


def fit_and_evaluate(model: keras.Model, config: Config, splits: data.DataSplits,
                     train_ds: tf.data.Dataset, workdir=None, callbacks=None,
                     augment_fn: Optional[Callable] = None):
    """Fits a compiled `model` with the run's callbacks, then evaluates it on the test split.

    With a `workdir`: `history.csv`, TensorBoard logs (scalars, profile, augmented images
    when `augment_fn` is given) and `BackupAndRestore` state, from which a run continues
    (`fit` starts at the last completed epoch found in `workdir/backup`).

    Returns:
        `(history, metrics)`: epoch-wise logs of the whole run and a dict with
        `test_accuracy`, `test_loss`, `best_val_accuracy`, `epochs`, `images_per_second`...
    """
    steps = steps_per_epoch(config, splits)
    meter = ThroughputMeter(config.batch_size)
    run_callbacks = [meter]
    initial_epoch = 0
    if workdir is not None:
        workdir = pathlib.Path(workdir)
        initial_epoch = rundir.completed_epochs(workdir)
        profile = profile_batches(config, steps, initial_epoch, tf.distribute.get_strategy())
        run_callbacks += [
            keras.callbacks.CSVLogger(str(workdir / "history.csv"), append=True),
            # Two copies: a run killed while writing one resumes from the other.
            keras.callbacks.BackupAndRestore(str(workdir / "backup"), delete_checkpoint=False,
                                             double_checkpoint=True),
            QuietTensorBoard(log_dir=str(workdir / "logs"), write_graph=False,
                             profile_batch=profile),
        ]
        if augment_fn is not None:
            images = splits.sample_images(8)
            run_callbacks.append(AugmentedImageSummary(str(workdir / "logs" / "augmentations"),
                                                       images, augment_fn))
    val_ds = _eval_pipeline(splits, "val", config) if splits.sizes["val"] else None
    with release_traced_gradients():  # no memory growth over many trainings in a process
        fit_history = model.fit(train_ds, epochs=config.epochs, validation_data=val_ds,
                                callbacks=run_callbacks + list(callbacks or []),
                                verbose=config.verbose, shuffle=False)
    history = rundir.read_history(workdir / "history.csv") if workdir is not None else {
        "epoch": list(fit_history.epoch), **fit_history.history}
    check_converging(history, steps, config)
    test_ds = _eval_pipeline(splits, "test", config)
    test = (evaluate_whole_images(model, test_ds) if splits.patches_per_image > 1 else
            model.evaluate(test_ds, return_dict=True, verbose=0))
    val_acc = history.get("val_accuracy") or []
    best = int(np.nanargmax(val_acc)) if val_acc and not np.all(np.isnan(val_acc)) else None
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "best_val_accuracy": None if best is None else float(val_acc[best]),
        "best_val_epoch": None if best is None else int(history["epoch"][best]) + 1,
        "final_val_accuracy": float(val_acc[-1]) if val_acc else None,
        "final_train_accuracy": float(history["accuracy"][-1]) if history.get("accuracy")
        else None,
        "epochs": len(history.get("epoch", [])),
        "initial_epoch": initial_epoch,
        "steps_per_epoch": steps,
        "train_seconds": meter.total_train_seconds,
        "images_per_second": meter.images_per_second,
        "optimizer_iterations": to_int(model.optimizer.iterations),
        # Honest selection: the reported model is the last epoch's, whatever the validation
        # accuracy did; runners say what else the validation split was used for.
        "reported_epoch": "last",
        **({"patches_per_image": splits.patches_per_image,
            "test_unit": "whole images: the mean of their patches' logits"}
           if splits.patches_per_image > 1 else {}),
        "validation_split_use": "monitoring only",
    }
    return history, metrics


def evaluate_whole_images(model: keras.Model, ds: tf.data.Dataset) -> dict:
    """Loss and accuracy of whole images from batches of patch stacks `[B, P, S, S, C]`.

    An image's logits are the mean of its P patches' logits (the BACH protocol of the DABO
    paper: train on patches, test on whole images).
    """
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in ds:
        shape = tf.shape(images)
        logits = model(tf.reshape(images, tf.concat([[-1], shape[2:]], 0)), training=False)
        logits = tf.reduce_mean(tf.reshape(tf.cast(logits, tf.float32),
                                           [shape[0], shape[1], -1]), axis=1)
        total_loss += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.int32), logits=logits)))
        correct += int(tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32),
                                                      tf.cast(labels, tf.int32)), tf.int32)))
        count += int(shape[0])
    return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1)}


class TrainingDiverged(ConfigError):
    """Training produced nothing usable: a non-finite loss, or every step skipped."""


def check_converging(history: dict, steps: int, config: Config) -> None:
    """Fails when the last epoch's loss is not finite or every one of its steps was skipped.

    `DaboModel` skips a step whose loss or gradients are not finite (`skipped_steps` counts
    them per epoch); a run whose last epoch skipped them all has not trained, whatever its
    exit status would say.
    """
    losses, skipped = history.get("loss") or [], history.get("skipped_steps") or []
    diverged = bool(losses) and not np.isfinite(losses[-1])
    all_skipped = bool(skipped) and np.isfinite(skipped[-1]) and skipped[-1] >= steps
    if diverged or all_skipped:
        what = (f"every step of epoch {len(skipped)} was skipped (non-finite loss or "
                "gradients)" if all_skipped else
                f"the training loss is {losses[-1]} after epoch {len(losses)}")
        raise TrainingDiverged(f"Training diverged: {what}, so the run is not finished. Start "
                               "it again with --overwrite and a smaller learning rate. "
                               f"Received: lr={config.lr}")


def fit_classifier(config: Config, splits: data.DataSplits, augmentation=None, workdir=None,
                   callbacks=None):
    """Trains `config.model` with `augmentation` in the input pipeline; evaluates on test.

    The shared recipe of every mode that trains a plain classifier: same classifier, SGD
    optimiser and schedule, epochs, callbacks and evaluation, so baselines differ only in
    their augmentation. Call it inside the run's strategy scope (runners are).

    Args:
        config: the run's `Config`.
        splits: the data.
        augmentation: None, a Keras layer, a list of layers (called with `training=True`) or
            a callable `images -> images`, applied to each float32 `[0, 1]` training batch
            in the `tf.data` pipeline (so layers without XLA kernels are fine).
        workdir: folder for history, logs and resumable state (None: nothing written).
        callbacks: extra Keras callbacks, run after the standard ones.

    Returns:
        `(classifier, history, metrics)` (see `fit_and_evaluate`).
    """
    augment_fn = as_augment_fn(augmentation)
    steps = steps_per_epoch(config, splits)
    classifier = compile_model(build_classifier(config, splits), config, steps)
    history, metrics = fit_and_evaluate(classifier, config, splits,
                                        train_pipeline(config, splits, augment_fn), workdir,
                                        callbacks, augment_fn)
    return classifier, history, metrics
