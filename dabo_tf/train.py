"""One training run: `train_and_evaluate(config, workdir)`, dispatching on `config.mode`.

Modes are functions in the registry `MODE_RUNNERS` (`"dabo"`, `"none"`, `"hand"` here; other
modules add theirs with `@register_mode(name)`). A runner builds its models (inside the
distribution strategy's scope, which `train_and_evaluate` has entered), trains them on the
splits it is given and returns a `RunResult`; `train_and_evaluate` does everything around it:
validation, the output folder, seeding, precision policy, strategy, saving and reporting.
`fit_classifier` is the reusable piece for baselines: the same classifier, optimiser,
schedule, epochs, callbacks and evaluation, with any augmentation front-end.

What a run leaves in `workdir`:

* `config.json`: the resolved `Config` (written first; `run.py --resume` reads it back).
* `saved_model/`: `classifier.export(...)`, a TF SavedModel (endpoint `serve`, signature
  `serving_default`): float32 `[N, H, W, C]` images in `[0, 1]` -> logits.
* `classifier.keras`: the trained classifier; mode dabo also saves `dabo.keras`, the whole
  `DaboModel` (load with `keras.saving.load_model` after `import dabo_tf`).
* `policy.json`: the augmentation in human units (`augmenter.policy()`, the hand policy, or
  `{}`); `augmentations.png` and `curves.png` (see `dabo_tf.report`); `history.csv`.
* `logs/`: TensorBoard: `train/` and `validation/` scalars (losses, accuracy, `aug_*` policy
  scalars, learning rate) and a profiler trace, `augmentations/` images per epoch.
* `metrics.json`, written last: its presence marks a finished run.
* `backup/`, only while a run is unfinished: `keras.callbacks.BackupAndRestore`'s state
  (model, both optimisers, epoch) from which `resume=True` continues.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import os
import pathlib
import re
import shutil
import time
import typing
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from dabo_tf import augment, data, models, report
from dabo_tf.callbacks import AugmentedImageSummary, ThroughputMeter, parse_profile_batches
from dabo_tf.config import MODES, Config
from dabo_tf.dabo_model import DaboModel

LR_SCHEDULES = ("cosine", "step", "constant")
AUGMENTERS = ("distribution", "network")
AUGMENTER_OPTIMIZERS = ("adam", "sgd")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
MODE_MODULES = ("dabo_tf.policy_search", "dabo_tf.trivial_augment")
"""Modules imported on demand when `config.mode` has no runner yet (they register theirs)."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which one and what to do."""


@dataclasses.dataclass
class RunResult:
    """What a mode runner hands back to `train_and_evaluate`.

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


MODE_RUNNERS: dict = {}
"""`mode -> runner(config, splits, workdir, callbacks) -> RunResult`."""


def register_mode(name: str):
    """Decorator registering a runner `fn(config, splits, workdir, callbacks) -> RunResult`."""

    def decorator(fn):
        MODE_RUNNERS[name] = fn
        return fn

    return decorator


def get_runner(mode: str) -> Callable:
    """The runner of `mode`, importing `MODE_MODULES` first if none is registered yet."""
    if mode not in MODE_RUNNERS:
        for module in MODE_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name != module:
                    raise
    if mode not in MODE_RUNNERS:
        raise ConfigError(f"Mode {mode!r} is not available yet: no runner is registered for it "
                          f"in dabo_tf.train.MODE_RUNNERS (available: "
                          f"{', '.join(sorted(MODE_RUNNERS))}). Received: mode={mode!r}")
    return MODE_RUNNERS[mode]


# ----------------------------------------------------------------------------------------
# Configuration.

def config_from_dict(values: dict) -> Config:
    """A `Config` from a dict such as `config.json` (lists back to tuples; unknown keys fail)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown configuration keys {unknown}. Received: {values!r}")
    hints = typing.get_type_hints(Config)
    out = {k: tuple(v) if hints[k] is tuple and isinstance(v, list) else v
           for k, v in values.items()}
    return Config(**out)


def check_config(config: Config) -> Config:
    """Validates a `Config`, raising `ConfigError` for the first bad value.

    Returns:
        The config with `lr_milestones`, `hand_policy`, `pre_augmentation` and
        `compare_seeds` as tuples.
    """

    def fail(condition, what, name):
        if condition:
            raise ConfigError(f"{what}. Received: {name}={getattr(config, name)!r}")

    def one_of(name, choices):
        fail(getattr(config, name) not in choices, f"{name} must be one of {list(choices)}",
             name)

    config = config.replace(
        lr_milestones=tuple(config.lr_milestones), hand_policy=tuple(config.hand_policy),
        pre_augmentation=tuple(config.pre_augmentation),
        compare_seeds=tuple(config.compare_seeds))
    one_of("mode", MODES)
    fail(not str(config.dataset).strip(), "dataset must be a data set name", "dataset")
    model_ok = config.model in models.MODELS or re.fullmatch(r"wrn\d+_\d+", str(config.model))
    fail(not model_ok, f"model must be one of {list(models.MODELS)} or wrn<depth>_<width>",
         "model")
    for name in ("image_size", "epochs", "batch_size", "inner_steps", "augmenter_update_every",
                 "trials", "steps_per_execution"):
        value = getattr(config, name)
        fail(not isinstance(value, (int, np.integer)) or value < 1,
             f"{name} must be a positive integer", name)
    fail(config.train_size is not None and (int(config.train_size) != config.train_size
                                            or config.train_size < 1),
         "train_size must be a positive integer or None", "train_size")
    fail(not 0.0 <= config.val_fraction < 1.0, "val_fraction must be in [0, 1)", "val_fraction")
    fail(config.mode == "dabo" and config.val_fraction <= 0 and config.dataset != "folder",
         "mode dabo needs a validation split: set val_fraction > 0", "val_fraction")
    for name in ("lr", "augmenter_lr"):
        fail(not config.__dict__[name] > 0, f"{name} must be positive", name)
    fail(config.inner_lr is not None and not config.inner_lr > 0,
         "inner_lr must be positive or None (the classifier's current learning rate)",
         "inner_lr")
    fail(not 0.0 <= config.momentum < 1.0, "momentum must be in [0, 1)", "momentum")
    for name in ("weight_decay", "augmenter_weight_decay", "randaugment_factor"):
        fail(not config.__dict__[name] >= 0, f"{name} must be >= 0", name)
    fail(not 0.0 < config.lr_decay <= 1.0, "lr_decay must be in (0, 1]", "lr_decay")
    one_of("lr_schedule", LR_SCHEDULES)
    milestones = config.lr_milestones
    fail(any(not isinstance(m, (int, np.integer)) or m < 1 for m in milestones)
         or list(milestones) != sorted(set(milestones)),
         "lr_milestones must be increasing positive epoch numbers", "lr_milestones")
    one_of("augmenter", AUGMENTERS)
    one_of("augmenter_optimizer", AUGMENTER_OPTIMIZERS)
    one_of("fill_mode", FILL_MODES)
    one_of("distribute", DISTRIBUTE)
    one_of("mixed_precision", MIXED_PRECISION)
    fail(config.randaugment_num_ops < 0, "randaugment_num_ops must be >= 0",
         "randaugment_num_ops")
    for name in ("hand_policy", "pre_augmentation"):
        unknown = [op for op in getattr(config, name) if op not in HAND_OPS]
        fail(bool(unknown), f"{name} has unknown ops {unknown}; known: {list(HAND_OPS)}", name)
    try:
        parse_profile_batches(config.profile_batches, config.epochs, 1)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return config


def resolve_jit_compile(config: Config) -> bool:
    """`config.jit_compile`, or when None: True iff a GPU is visible."""
    if config.jit_compile is None:
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(config.jit_compile)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`"none"`: the default strategy; `"mirrored"`: all local GPUs; `"multi_worker"`:
    `MultiWorkerMirroredStrategy` configured by the `TF_CONFIG` environment variable."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("distribute=multi_worker needs the TF_CONFIG environment variable "
                              "describing the cluster (see tf.distribute.MultiWorkerMirrored"
                              "Strategy). Received: distribute='multi_worker'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"distribute must be one of {list(DISTRIBUTE)}. Received: distribute={name!r}")


# ----------------------------------------------------------------------------------------
# Optimisers.

def learning_rate_schedule(config: Config, steps_per_epoch: int):
    """The classifier's learning rate: a float or a `keras.optimizers.schedules` schedule.

    `cosine`: `CosineDecay` from `lr` to 0 over all steps; `step`: multiplied by `lr_decay` at
    each of `lr_milestones` (epochs; as PyTorch's `MultiStepLR`, the new rate applies from
    that epoch's first step); `constant`.
    """
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.lr, decay_steps=max(1, config.epochs * steps_per_epoch))
    if config.lr_schedule == "step" and config.lr_milestones:
        boundaries = [int(m) * steps_per_epoch - 1 for m in config.lr_milestones]
        values = [config.lr * config.lr_decay ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return config.lr


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """SGD with momentum, (decoupled) weight decay and the configured schedule."""
    return keras.optimizers.SGD(learning_rate_schedule(config, steps_per_epoch),
                                momentum=config.momentum, weight_decay=config.weight_decay or None)


def make_augmenter_optimizer(config: Config) -> keras.optimizers.Optimizer:
    """`adam`: Adam(augmenter_lr); `sgd`: SGD(augmenter_lr, momentum 0.9) as in the paper."""
    decay = config.augmenter_weight_decay or None
    if config.augmenter_optimizer == "sgd":
        return keras.optimizers.SGD(config.augmenter_lr, momentum=0.9, weight_decay=decay)
    return keras.optimizers.Adam(config.augmenter_lr, weight_decay=decay)


# ----------------------------------------------------------------------------------------
# Augmentation front-ends.

def _crop_factor(size):
    return max(1, round(size / 8)) / size  # 4 pixels at 32x32


HAND_OPS = {
    "crop": (lambda size, seed: keras.layers.RandomTranslation(
        _crop_factor(size), _crop_factor(size), fill_mode="constant", interpolation="nearest",
        seed=seed),
        lambda size: {"low": -round(_crop_factor(size) * size),
                      "high": round(_crop_factor(size) * size),
                      "unit": "pixels of shift (zero-pad and random crop)"}),
    "flip": (lambda size, seed: keras.layers.RandomFlip("horizontal", seed=seed),
             lambda size: {"probability": 0.5, "unit": "horizontal flip"}),
    "vflip": (lambda size, seed: keras.layers.RandomFlip("vertical", seed=seed),
              lambda size: {"probability": 0.5, "unit": "vertical flip"}),
    "rotate": (lambda size, seed: keras.layers.RandomRotation(15 / 360, seed=seed),
               lambda size: {"low": -15.0, "high": 15.0, "unit": "degrees"}),
    "translate": (lambda size, seed: keras.layers.RandomTranslation(0.1, 0.1, seed=seed),
                  lambda size: {"low": -0.1, "high": 0.1, "unit": "fraction of width/height"}),
    "zoom": (lambda size, seed: keras.layers.RandomZoom(0.1, seed=seed),
             lambda size: {"low": 0.9, "high": 1.1, "unit": "scale factor"}),
    "contrast": (lambda size, seed: keras.layers.RandomContrast(0.2, value_range=(0, 1),
                                                                seed=seed),
                 lambda size: {"low": 0.8, "high": 1.2, "unit": "contrast factor"}),
    "brightness": (lambda size, seed: keras.layers.RandomBrightness(0.2, value_range=(0, 1),
                                                                    seed=seed),
                   lambda size: {"low": -0.2, "high": 0.2,
                                 "unit": "additive delta in [0, 1] pixel units"}),
}
"""Hand-written ops: `name -> (layer builder(image_size, seed), human-unit policy(size))`."""


def build_hand_augmentation(ops, image_size: int, seed: Optional[int] = None) -> list:
    """Keras preprocessing layers for hand ops (see `HAND_OPS`), in the given order."""
    return [HAND_OPS[op][0](image_size, None if seed is None else seed + i)
            for i, op in enumerate(ops)]


def hand_policy(ops, image_size: int) -> dict:
    """The hand ops' fixed strengths in human units, in the `policy.json` format."""
    return {op: HAND_OPS[op][1](image_size) for op in ops}


def as_augment_fn(augmentation) -> Optional[Callable]:
    """`None`, a layer, a list of layers or a callable -> callable `images -> images` or None.

    Layers are called with `training=True`.
    """
    if augmentation is None:
        return None
    if isinstance(augmentation, keras.layers.Layer):
        augmentation = [augmentation]
    if isinstance(augmentation, (list, tuple)):
        if not augmentation:
            return None
        layers = list(augmentation)

        def apply(images):
            images = tf.convert_to_tensor(images, tf.float32)
            for layer in layers:
                images = layer(images, training=True)
            return images

        return apply
    if callable(augmentation):
        return augmentation
    raise TypeError(f"augmentation must be None, a layer, a list of layers or a callable. "
                    f"Received: augmentation={augmentation!r}")


def build_learned_augmenter(config: Config) -> augment.Augmenter:
    """The DABO augmenter of `config` (`augmenter`, `augmenter_color`, ...)."""
    seed = config.seed + 1000
    if config.augmenter == "network" and not config.augmenter_identity_init:
        # `augment.build_augmenter` has no identity_init argument: build the paper's network.
        return augment.Augmenter([augment.NoiseAugmenter(
            color=config.augmenter_color, identity_init=False, fill_mode=config.fill_mode,
            seed=seed)], name="augmenter")
    return augment.build_augmenter(config.augmenter, color=config.augmenter_color,
                                   projective=config.augmenter_projective,
                                   fill_mode=config.fill_mode, seed=seed)


# ----------------------------------------------------------------------------------------
# Data and training helpers.

def load_data(config: Config) -> data.DataSplits:
    """`dabo_tf.data.load` with the config's settings (bad values raise `ConfigError`)."""
    try:
        return data.load(config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                         val_fraction=config.val_fraction, train_size=config.train_size,
                         seed=config.seed)
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
                                   mean=splits.mean, std=splits.std, seed=config.seed)


def train_pipeline(config: Config, splits: data.DataSplits,
                   augment_fn: Optional[Callable] = None) -> tf.data.Dataset:
    """Shuffled training batches, augmented by `augment_fn` in the pipeline if given.

    The map runs sequentially so that the layers' random draws are reproducible.
    """
    ds = data.make_pipeline(splits.x_train, splits.y_train, config.batch_size, training=True,
                            seed=config.seed)
    if augment_fn is not None:
        ds = ds.map(lambda x, y: (augment_fn(x), y)).prefetch(tf.data.AUTOTUNE)
    return ds


def _eval_pipeline(x, y, config):
    return data.make_pipeline(x, y, config.batch_size, training=False)


def read_history(path) -> dict:
    """Epoch-wise logs from a `CSVLogger` file; the last row wins for a repeated epoch."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    keys = sorted({k for row in rows.values() for k in row if k != "epoch"})
    history = {"epoch": sorted(rows)}
    for key in keys:
        history[key] = [float(rows[e][key]) if rows[e].get(key) not in (None, "") else
                        float("nan") for e in history["epoch"]]
    return history


def _completed_epochs(workdir) -> int:
    path = pathlib.Path(workdir) / "backup" / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def sample_images(splits: data.DataSplits, n: int = 6) -> np.ndarray:
    """Up to `n` training images of different classes, float32 in `[0, 1]`."""
    first = [int(np.flatnonzero(splits.y_train == c)[0]) for c in np.unique(splits.y_train)]
    idx = (first + [i for i in range(len(splits.y_train)) if i not in first])[:n]
    return splits.x_train[idx].astype(np.float32) / 255.0


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
        initial_epoch = _completed_epochs(workdir)
        profile = parse_profile_batches(config.profile_batches, config.epochs, steps,
                                        initial_epoch)
        run_callbacks += [
            keras.callbacks.CSVLogger(str(workdir / "history.csv"), append=True),
            keras.callbacks.BackupAndRestore(str(workdir / "backup"), delete_checkpoint=False),
            keras.callbacks.TensorBoard(log_dir=str(workdir / "logs"), write_graph=False,
                                        profile_batch=profile),
        ]
        if augment_fn is not None:
            run_callbacks.append(AugmentedImageSummary(
                str(workdir / "logs" / "augmentations"), sample_images(splits, 8), augment_fn))
    val_ds = _eval_pipeline(splits.x_val, splits.y_val, config) if len(splits.y_val) else None
    fit_history = model.fit(train_ds, epochs=config.epochs, validation_data=val_ds,
                            callbacks=run_callbacks + list(callbacks or []),
                            verbose=config.verbose, shuffle=False)
    history = read_history(workdir / "history.csv") if workdir is not None else {
        "epoch": list(fit_history.epoch), **fit_history.history}
    test = model.evaluate(_eval_pipeline(splits.x_test, splits.y_test, config),
                          return_dict=True, verbose=0)
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
        "optimizer_iterations": int(model.optimizer.iterations),
    }
    return history, metrics


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
    classifier = build_classifier(config, splits)
    classifier.compile(optimizer=make_optimizer(config, steps),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"], jit_compile=bool(resolve_jit_compile(config)),
                       steps_per_execution=config.steps_per_execution)
    history, metrics = fit_and_evaluate(classifier, config, splits,
                                        train_pipeline(config, splits, augment_fn), workdir,
                                        callbacks, augment_fn)
    return classifier, history, metrics


# ----------------------------------------------------------------------------------------
# Mode runners.

@register_mode("none")
def run_none(config, splits, workdir, callbacks) -> RunResult:
    """The classifier trained on un-augmented data."""
    classifier, history, metrics = fit_classifier(config, splits, None, workdir, callbacks)
    return RunResult(classifier, classifier, history, metrics, policy={})


@register_mode("hand")
def run_hand(config, splits, workdir, callbacks) -> RunResult:
    """The classifier trained with the hand policy `config.hand_policy` (fixed strengths)."""
    layers = build_hand_augmentation(config.hand_policy, config.image_size, config.seed)
    classifier, history, metrics = fit_classifier(config, splits, layers, workdir, callbacks)
    return RunResult(classifier, classifier, history, metrics,
                     policy=hand_policy(config.hand_policy, config.image_size),
                     augment_fn=as_augment_fn(layers))


@register_mode("dabo")
def run_dabo(config, splits, workdir, callbacks) -> RunResult:
    """`DaboModel`: the classifier and its augmenter learned jointly (online bilevel).

    `config.pre_augmentation` hand ops (the paper: flip on CIFAR) run in the input pipeline
    before the learned augmenter.
    """
    steps = steps_per_epoch(config, splits)
    pre = as_augment_fn(build_hand_augmentation(config.pre_augmentation, config.image_size,
                                                config.seed + 100))
    classifier = build_classifier(config, splits)
    augmenter = build_learned_augmenter(config)
    model = DaboModel(classifier, augmenter, inner_lr=config.inner_lr,
                      inner_steps=config.inner_steps,
                      augmenter_update_every=config.augmenter_update_every)
    model.compile(optimizer=make_optimizer(config, steps),
                  augmenter_optimizer=make_augmenter_optimizer(config),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=bool(resolve_jit_compile(config)),
                  steps_per_execution=config.steps_per_execution)
    # Build the classifier optimizer on the classifier's weights now: BackupAndRestore would
    # otherwise build it on all trainable weights (augmenter's included) and fail to restore.
    model.optimizer.build(classifier.trainable_variables)
    val_batch = min(config.batch_size, splits.sizes["val"])
    if val_batch < 1:
        raise ConfigError("mode dabo needs validation images: set val_fraction > 0 or give "
                          "the folder a val/ split. Received: val_fraction="
                          f"{config.val_fraction}")
    val_stream = data.make_pipeline(splits.x_val, splits.y_val, val_batch, training=True,
                                    seed=config.seed + 1)
    train_ds = data.with_validation_stream(train_pipeline(config, splits, pre), val_stream)

    def augment_fn(images):
        images = tf.convert_to_tensor(images, tf.float32)
        return augmenter(pre(images) if pre else images, training=True)

    history, metrics = fit_and_evaluate(model, config, splits, train_ds, workdir, callbacks,
                                        augment_fn)
    metrics["augmenter_optimizer_iterations"] = int(model.augmenter_optimizer.iterations)
    metrics["augmenter_params"] = int(augmenter.count_params())
    return RunResult(model, classifier, history, metrics, policy=augmenter.policy(),
                     augment_fn=augment_fn)


# ----------------------------------------------------------------------------------------
# The run.

def _write_json(path, obj):
    """Writes JSON atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, pathlib.Path):
        return str(obj)
    raise TypeError(f"Not JSON serialisable: {obj!r}")


def prepare_workdir(workdir, *, resume=False, overwrite=False) -> bool:
    """Checks `workdir` may be used and clears it for `overwrite`.

    Returns:
        Whether `workdir` has to be created (it does not exist yet).

    Raises:
        ConfigError: `workdir` holds a finished run (`metrics.json`) and `overwrite` is
            False, holds an unfinished run and neither `resume` nor `overwrite` is set,
            or is a file.
    """
    workdir = pathlib.Path(workdir)
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume continues the run "
                          f"in {str(workdir)!r}, overwrite deletes it. Received: resume=True, "
                          "overwrite=True")
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"Output path {str(workdir)!r} is a file, not a folder. Choose "
                          f"another output folder. Received: workdir={str(workdir)!r}")
    if (workdir / "metrics.json").exists() and not overwrite:
        raise ConfigError(f"{str(workdir)!r} holds a finished run (metrics.json). Choose "
                          "another output folder, or pass overwrite (--overwrite) to replace "
                          f"it. Received: workdir={str(workdir)!r}")
    if workdir.is_dir() and any(workdir.iterdir()):
        if overwrite:
            shutil.rmtree(workdir)
        elif not resume:
            raise ConfigError(f"{str(workdir)!r} holds an unfinished run. Pass resume "
                              "(--resume) to continue it, overwrite (--overwrite) to start "
                              f"over, or choose another output folder. "
                              f"Received: workdir={str(workdir)!r}")
    return not workdir.exists()


def save_outputs(result: RunResult, config: Config, splits: data.DataSplits, workdir) -> dict:
    """Writes the models, `policy.json` and the figures; returns their relative paths."""
    workdir = pathlib.Path(workdir)
    outputs = {"saved_model": "saved_model", "classifier": "classifier.keras"}
    result.classifier.export(str(workdir / "saved_model"), verbose=False)
    result.classifier.save(workdir / "classifier.keras")
    if result.model is not result.classifier:
        outputs["model"] = f"{config.mode}.keras"
        result.model.save(workdir / outputs["model"])
    _write_json(workdir / "policy.json", result.policy or {})
    title = f"{splits.name}, mode {config.mode}"
    report.plot_augmentations(sample_images(splits, 6), result.augment_fn,
                              workdir / "augmentations.png", title=title)
    report.plot_curves(result.history, workdir / "curves.png", title=title)
    outputs.update(policy="policy.json", augmentations="augmentations.png",
                   curves="curves.png", history="history.csv", logs="logs",
                   metrics="metrics.json")
    return outputs


def train_and_evaluate(config: Config, workdir, *, resume: bool = False,
                       overwrite: bool = False, callbacks=None) -> dict:
    """Runs `config.mode`, evaluates on the test split and writes the run's outputs.

    Args:
        config: the run's `Config` (validated here).
        workdir: output folder (see the module docstring for what it holds).
        resume: continue the unfinished run in `workdir` from its last completed epoch.
        overwrite: replace a run already in `workdir`.
        callbacks: extra Keras callbacks, run after the standard ones.

    Returns:
        The metrics dict written to `workdir/metrics.json`.

    Raises:
        ConfigError: an invalid setting, or `workdir` is in use (see `prepare_workdir`).
        dabo_tf.data.DataUnavailableError: the data set cannot be loaded.

    A run that fails before an epoch has completed removes the folder it created; one that
    fails later keeps it (without `metrics.json`) for `resume`.
    """
    start = time.perf_counter()
    config = check_config(config)
    runner = get_runner(config.mode)
    workdir = pathlib.Path(workdir)
    create = prepare_workdir(workdir, resume=resume, overwrite=overwrite)
    config = config.replace(jit_compile=resolve_jit_compile(config))
    splits = load_data(config)
    strategy = make_strategy(config.distribute)
    workdir.mkdir(parents=True, exist_ok=True)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        _write_json(workdir / "config.json", config.to_dict())
        keras.utils.set_random_seed(config.seed)
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(config.mixed_precision)
        with strategy.scope():
            result = runner(config, splits, workdir, list(callbacks or []))
        outputs = save_outputs(result, config, splits, workdir)
    except BaseException:
        if create and not (workdir / "backup").exists():
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    metrics = {
        "dataset": splits.name,
        "mode": config.mode,
        "model": config.model,
        **result.metrics,
        "epochs_requested": config.epochs,
        "wall_time_s": time.perf_counter() - start,
        "data_sizes": splits.sizes,
        "image_shape": list(splits.image_shape),
        "num_classes": splits.num_classes,
        "classifier_params": int(result.classifier.count_params()),
        "num_replicas": int(strategy.num_replicas_in_sync),
        "devices": [d.name for d in tf.config.list_logical_devices()
                    if d.device_type in ("GPU", "TPU")] or ["CPU"],
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "outputs": outputs,
        "config": config.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_json(workdir / "metrics.json", metrics)
    shutil.rmtree(workdir / "backup", ignore_errors=True)
    return metrics
