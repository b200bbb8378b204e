"""The pieces of a training recipe built from a `Config`.

The classifier's SGD optimiser and learning-rate schedule, the augmenter's optimiser, the
learned augmenter, the baselines' augmentation front ends (`augmentation_front_end`, also
the tuner's trials'), the XLA default, and `compile_model`, the one compile every mode uses.
`dabo_tf.train.loop` and `dabo_tf.train.modes` assemble them into a run.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dabo_tf import augment, seeds
from dabo_tf.augment.policy import load_policy, policy_to_layers
from dabo_tf.augment.trivial_augment import TrivialAugment, randaugment_layer
from dabo_tf.config import Config


def resolve_jit_compile(config: Config) -> bool:
    """`config.jit_compile`, or when None: True iff a GPU is visible."""
    if config.jit_compile is None:
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(config.jit_compile)


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


def compile_model(model: keras.Model, config: Config, steps_per_epoch: int, *,
                  build_optimizer: bool = True, **extra) -> keras.Model:
    """Compiles `model` as every mode does: the run's SGD, cross-entropy on logits, accuracy.

    The optimizer is built at once, eagerly (`build_optimizer`): built lazily inside the
    traced step, its
    variables (and a metric's) would leave conditional-initialiser functions in TensorFlow's
    global function library after the model is gone (a leak per Keras Tuner trial).

    Args:
        model: a classifier, a classifier behind a front end, or a `DaboModel`.
        config: the run's `Config` (optimiser, `jit_compile`, `steps_per_execution`).
        steps_per_epoch: for the learning-rate schedule.
        build_optimizer: build the optimizer for all of `model.trainable_variables` now
            (not for a `DaboModel`, whose classifier optimizer sees the classifier only).
        **extra: more `compile` arguments (`augmenter_optimizer` of a `DaboModel`).
    """
    model.compile(optimizer=make_optimizer(config, steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=resolve_jit_compile(config),
                  steps_per_execution=config.steps_per_execution, **extra)
    if build_optimizer:
        model.optimizer.build(model.trainable_variables)
    return model


def learned_color(config: Config, image_shape) -> bool:
    """`config.augmenter_color`, or when None: True for 3-channel (colour) images."""
    if config.augmenter_color is None:
        return int(image_shape[-1]) == 3
    return bool(config.augmenter_color)


def build_learned_augmenter(config: Config, image_shape) -> augment.Augmenter:
    """The DABO augmenter of `config` (`augmenter`, `augmenter_color`, ...) for these images."""
    return augment.build_augmenter(config.augmenter, color=learned_color(config, image_shape),
                                   shear=config.augmenter_shear,
                                   scale=config.augmenter_scale,
                                   scale_draw=config.augmenter_scale_draw,
                                   projective=config.augmenter_projective,
                                   flip=config.augmenter_flip, vflip=config.augmenter_vflip,
                                   cutout=config.augmenter_cutout,
                                   fill_mode=config.fill_mode,
                                   learn_fill=config.augmenter_fill,
                                   identity_init=config.augmenter_identity_init,
                                   learn_mean=config.augmenter_learn_mean,
                                   init_magnitude=config.augmenter_init_magnitude,
                                   magnitude_scale=config.augmenter_magnitude_scale,
                                   init_relative=config.augmenter_init_relative,
                                   seed=seeds.stream(config.seed, seeds.LEARNED_AUGMENTER))


FRONT_ENDS = ("none", "trivialaugment", "randaugment", "policy")


def augmentation_front_end(kind, config, image_shape, *, policy=None) -> keras.layers.Layer:
    """The augmentation layer of a zero-search baseline or a frozen policy, built.

    Args:
        kind: `"none"`, `"trivialaugment"`, `"randaugment"` (`config.randaugment_num_ops`,
            `config.randaugment_factor`) or `"policy"` (a frozen DABO or tuner policy). A
            policy dict or a path to a policy JSON may be passed as `kind` directly.
        config: a `dabo_tf.config.Config` (uses `seed`, `fill_mode` and the RandAugment
            fields).
        image_shape: `(H, W, C)` of the images.
        policy: for `kind="policy"`: a policy dict or a path to a JSON written by
            `dabo_tf.augment.save_policy`.

    Returns:
        A built Keras layer to call on `[N, H, W, C]` images in [0, 1]; it augments only
        when called with `training=True` (as in `fit`).
    """
    if not isinstance(kind, str) or kind.endswith(".json"):
        kind, policy = "policy", kind
    if kind == "none":
        layer = keras.layers.Identity(name="no_augmentation")
    elif kind == "trivialaugment":
        layer = TrivialAugment(seed=seeds.stream(config.seed, seeds.FRONT_END),
                               name="trivial_augment")
    elif kind == "randaugment":
        layer = randaugment_layer(config.randaugment_num_ops, config.randaugment_factor,
                                  seed=seeds.stream(config.seed, seeds.FRONT_END),
                                  name="rand_augment")
    elif kind == "policy":
        if policy is None:
            raise ValueError("kind='policy' needs a policy dict or JSON path. Received: "
                             "policy=None")
        if not isinstance(policy, dict):
            policy = load_policy(policy)
        layer = policy_to_layers(policy, seed=seeds.stream(config.seed, seeds.FROZEN_POLICY),
                                 fill_mode=config.fill_mode)
    else:
        raise ValueError(f"Unknown front end. Expected one of {FRONT_ENDS}. "
                         f"Received: kind={kind!r}")
    layer.build((None, *tuple(image_shape)))
    return layer
