"""The pieces of a training recipe built from a `Config`.

Validation (`check_config`, raising `ConfigError` with a message for users), the classifier's
SGD optimiser and learning-rate schedule, the augmenter's optimiser, hand-written
augmentation as Keras preprocessing layers (`HAND_OPS`), the learned augmenter, the
distribution strategy and the XLA default. `dabo_tf.train` assembles them into a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import typing
from typing import Callable, NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

from dabo_tf import augment, data, models
from dabo_tf.callbacks import parse_profile_batches
from dabo_tf.config import MODES, Config
from dabo_tf.warp import FILL_MODES

LR_SCHEDULES = ("cosine", "step", "constant")
AUGMENTERS = ("distribution", "network")
AUGMENTER_OPTIMIZERS = ("adam", "sgd")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which one and what to do."""


# ----------------------------------------------------------------------------------------
# Configuration.

def config_from_dict(values: dict) -> Config:
    """A `Config` from a dict such as `config.json` (lists back to tuples; unknown keys fail)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown configuration keys {unknown}; known: {sorted(fields)}. "
                          f"Received: keys={sorted(values)}")
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
    for name in ("train_size", "val_batch_size"):
        value = getattr(config, name)
        fail(value is not None and (int(value) != value or value < 1),
             f"{name} must be a positive integer or None", name)
    fail(not 0.0 <= config.val_fraction < 1.0, "val_fraction must be in [0, 1)", "val_fraction")
    fail(not 0.0 <= config.augmenter_warmup < 1.0,
         "augmenter_warmup must be a fraction of the training steps in [0, 1)",
         "augmenter_warmup")
    fail(not 0.0 <= config.augmenter_init_magnitude <= 0.5,
         "augmenter_init_magnitude must be in [0, 0.5]", "augmenter_init_magnitude")
    fail(config.mode == "dabo" and config.val_fraction <= 0 and config.dataset != "folder",
         "mode dabo needs a validation split: set val_fraction > 0", "val_fraction")
    for name in ("lr", "augmenter_lr"):
        fail(not getattr(config, name) > 0, f"{name} must be positive", name)
    fail(config.inner_lr is not None and not config.inner_lr > 0,
         "inner_lr must be positive or None (the classifier's current learning rate)",
         "inner_lr")
    fail(not 0.0 <= config.momentum < 1.0, "momentum must be in [0, 1)", "momentum")
    for name in ("weight_decay", "augmenter_weight_decay", "randaugment_factor"):
        fail(not getattr(config, name) >= 0, f"{name} must be >= 0", name)
    fail(not 0.0 < config.lr_decay <= 1.0, "lr_decay must be in (0, 1]", "lr_decay")
    one_of("lr_schedule", LR_SCHEDULES)
    milestones = config.lr_milestones
    fail(any(not isinstance(m, (int, np.integer)) or m < 1 for m in milestones)
         or list(milestones) != sorted(set(milestones)),
         "lr_milestones must be increasing positive epoch numbers", "lr_milestones")
    one_of("augmenter", AUGMENTERS)
    one_of("augmenter_optimizer", AUGMENTER_OPTIMIZERS)
    one_of("augmenter_magnitude_scale", augment.MAGNITUDE_SCALES)
    one_of("fill_mode", FILL_MODES)
    one_of("distribute", DISTRIBUTE)
    one_of("mixed_precision", MIXED_PRECISION)
    one_of("hypergradient_dtype", ("float32", "policy"))
    fail(config.randaugment_num_ops < 0, "randaugment_num_ops must be >= 0",
         "randaugment_num_ops")
    for name in ("hand_policy", "pre_augmentation"):
        unknown = [op for op in getattr(config, name) if op not in HAND_OPS]
        fail(bool(unknown), f"{name} has unknown ops {unknown}; known: {list(HAND_OPS)}", name)
    try:
        parse_profile_batches(config.profile_batches, config.epochs, 1)
        data.parse_shift(config.eval_shift)
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
    raise ConfigError(f"distribute must be one of {list(DISTRIBUTE)}. "
                      f"Received: distribute={name!r}")


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

class HandOp(NamedTuple):
    """A hand-written op: its Keras preprocessing layer and its fixed strength."""

    layer: Callable  # (image_size, seed) -> keras layer
    policy: Callable  # image_size -> {"low", "high", "unit"} (or "probability") in human units


def _crop_pixels(size):
    return max(1, round(size / 8))  # 4 pixels at 32x32, as CIFAR's pad-4-and-crop


def _crop(size, seed):
    # Integer shifts with zero fill: the same images as zero-padding and a random crop.
    factor = _crop_pixels(size) / size
    return keras.layers.RandomTranslation(factor, factor, fill_mode="constant",
                                          interpolation="nearest", seed=seed)


def _range(low, high, unit):
    return lambda size: {"low": low, "high": high, "unit": unit}


HAND_OPS = {
    "crop": HandOp(_crop, lambda size: {"low": -_crop_pixels(size), "high": _crop_pixels(size),
                                        "unit": "pixels of shift (zero-pad and random crop)"}),
    "flip": HandOp(lambda size, seed: keras.layers.RandomFlip("horizontal", seed=seed),
                   lambda size: {"probability": 0.5, "unit": "horizontal flip"}),
    "vflip": HandOp(lambda size, seed: keras.layers.RandomFlip("vertical", seed=seed),
                    lambda size: {"probability": 0.5, "unit": "vertical flip"}),
    "rotate": HandOp(lambda size, seed: keras.layers.RandomRotation(15 / 360, seed=seed),
                     _range(-15.0, 15.0, "degrees")),
    "translate": HandOp(lambda size, seed: keras.layers.RandomTranslation(0.1, 0.1, seed=seed),
                        _range(-0.1, 0.1, "fraction of width/height")),
    "zoom": HandOp(lambda size, seed: keras.layers.RandomZoom(0.1, seed=seed),
                   _range(0.9, 1.1, "scale factor")),
    "contrast": HandOp(
        lambda size, seed: keras.layers.RandomContrast(0.2, value_range=(0, 1), seed=seed),
        _range(0.8, 1.2, "contrast factor")),
    "brightness": HandOp(
        lambda size, seed: keras.layers.RandomBrightness(0.2, value_range=(0, 1), seed=seed),
        _range(-0.2, 0.2, "additive delta in [0, 1] pixel units")),
}
"""Hand-written ops by name (`hand_policy`, `pre_augmentation`)."""


def build_hand_augmentation(ops, image_size: int, seed: Optional[int] = None) -> list:
    """Keras preprocessing layers for hand ops (see `HAND_OPS`), in the given order."""
    return [HAND_OPS[op].layer(image_size, None if seed is None else seed + i)
            for i, op in enumerate(ops)]


def hand_policy(ops, image_size: int) -> dict:
    """The hand ops' fixed strengths in human units, in the `policy.json` format."""
    return {op: HAND_OPS[op].policy(image_size) for op in ops}


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


def learned_color(config: Config, image_shape) -> bool:
    """`config.augmenter_color`, or when None: True for 3-channel (colour) images."""
    if config.augmenter_color is None:
        return int(image_shape[-1]) == 3
    return bool(config.augmenter_color)


def build_learned_augmenter(config: Config, image_shape) -> augment.Augmenter:
    """The DABO augmenter of `config` (`augmenter`, `augmenter_color`, ...) for these images."""
    return augment.build_augmenter(config.augmenter, color=learned_color(config, image_shape),
                                   projective=config.augmenter_projective,
                                   flip=config.augmenter_flip, vflip=config.augmenter_vflip,
                                   cutout=config.augmenter_cutout,
                                   fill_mode=config.fill_mode,
                                   identity_init=config.augmenter_identity_init,
                                   learn_mean=config.augmenter_learn_mean,
                                   init_magnitude=config.augmenter_init_magnitude,
                                   magnitude_scale=config.augmenter_magnitude_scale,
                                   seed=config.seed + 1000)


@contextlib.contextmanager
def release_traced_gradients():
    """Unregisters, on exit, the gradient functions registered by graphs traced inside.

    Each time a `tf.custom_gradient` function is traced into a graph, TensorFlow registers its
    gradient under a fresh name in a process-global registry and never removes it. Keras'
    optimizer all-reduces gradients through one (`ReplicaContext.all_reduce`) in every train
    step it traces, so the registry would keep every trial's traced train graph alive. The
    entries are only read while tracing, so dropping those of a finished training is safe.
    Together with the eager metric and optimizer build in `build_model`, this removes a
    growth of about 15 MB per trial (`tiny_cnn`; more for bigger graphs). Uses a private
    TensorFlow registry; does nothing where it is missing.
    """
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [k for k in registry if k not in before]:
                if name.startswith("CustomGradient-"):
                    registry.pop(name, None)
