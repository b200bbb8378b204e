"""Augmentation: every layer that samples and applies a transformation, learned or fixed.

- `base`: `AugmentationLayer` (sample, then apply) and `Augmenter` (composition);
- `ops`: the op table (names, units, identities, limits) and the colour and erasing maths;
- `warp`: the XLA-compilable projective warp, differentiable in the transform;
- `noise`: counter-based random numbers identical with and without XLA;
- `learned`: DABO's learned distributions (`LearnedAffine`, `LearnedColor`, `LearnedFlip`,
  `LearnedCutout`, `build_augmenter`); `network`: the paper's noise MLP (`NoiseAugmenter`);
- `fixed`: fixed-range layers and `FrozenPolicy`; `policy`: the policy format (JSON) and
  `policy_to_layers` (dabo-tf's layers, or Keras' own with `keras_native=True`);
- `hand`: hand-written ops as Keras preprocessing layers; `trivial_augment`: TrivialAugment
  and Keras' RandAugment.

Everything public is importable from here (`dabo_tf.augment.LearnedAffine`, ...).
"""

from dabo_tf.augment import ops, warp
from dabo_tf.augment.base import AugmentationLayer, Augmenter, as_augment_fn
from dabo_tf.augment.fixed import FixedAffine, FixedColor, FixedCutout, FrozenPolicy
from dabo_tf.augment.learned import (
    DEFAULT_AUGMENTER_SCALE,
    DEFAULT_INIT_MAGNITUDE,
    DEFAULT_INIT_RELATIVE,
    MIN_LOG_MAGNITUDE,
    LearnedAffine,
    LearnedColor,
    LearnedCutout,
    LearnedFlip,
    MagnitudeRange,
    build_augmenter,
)
from dabo_tf.augment.network import NoiseAugmenter
from dabo_tf.augment.noise import hash_uniform
from dabo_tf.augment.ops import (
    AFFINE_OPS,
    COLOR_OPS,
    CUTOUT_UNIT,
    DEFAULT_AFFINE_OPS,
    DEFAULT_COLOR_OPS,
    FLIP_UNIT,
    LINEAR_SCALE_LIMIT,
    LINEAR_SCALE_OPS,
    LOG_SCALE_OPS,
    MAX_MAGNITUDE,
    OPS,
    SCALE_PARAMETERISATIONS,
    UNIFORM_DRAW,
    VFLIP_UNIT,
    adjust_color,
    cutout,
    cutout_mask,
)
from dabo_tf.augment.policy import (
    KERAS_NATIVE_OPS,
    load_policy,
    policy_from_factors,
    policy_to_keras_layers,
    policy_to_layers,
    save_policy,
    split_policy,
)
from dabo_tf.augment.trivial_augment import TrivialAugment, randaugment_layer
from dabo_tf.config import DEFAULT_SCALE_DRAW, MAGNITUDE_SCALES, SCALE_DRAWS

__all__ = [
    "AFFINE_OPS", "COLOR_OPS", "CUTOUT_UNIT", "DEFAULT_AFFINE_OPS", "DEFAULT_COLOR_OPS",
    "DEFAULT_AUGMENTER_SCALE", "DEFAULT_SCALE_DRAW", "LINEAR_SCALE_LIMIT", "LINEAR_SCALE_OPS",
    "LOG_SCALE_OPS", "SCALE_DRAWS", "SCALE_PARAMETERISATIONS", "UNIFORM_DRAW",
    "DEFAULT_INIT_MAGNITUDE", "DEFAULT_INIT_RELATIVE", "FLIP_UNIT", "KERAS_NATIVE_OPS",
    "MAGNITUDE_SCALES", "MAX_MAGNITUDE",
    "MIN_LOG_MAGNITUDE", "OPS", "VFLIP_UNIT", "AugmentationLayer", "Augmenter", "FixedAffine",
    "FixedColor", "FixedCutout", "FrozenPolicy", "LearnedAffine", "LearnedColor",
    "LearnedCutout", "LearnedFlip", "MagnitudeRange", "NoiseAugmenter", "TrivialAugment",
    "adjust_color", "as_augment_fn", "build_augmenter", "cutout", "cutout_mask",
    "hash_uniform", "load_policy", "ops", "policy_from_factors",
    "policy_to_keras_layers", "policy_to_layers",
    "randaugment_layer", "save_policy", "split_policy", "warp",
]
