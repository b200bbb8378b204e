"""Frozen augmentation policies: learn once with DABO, reuse anywhere as plain Keras layers.

A *policy* is the plain dict that `dabo_tf.augment` augmenters report with `policy()`:
`{op: {"low": ..., "high": ..., "unit": ...}}` in human units. `policy_to_layers` turns it into
one ordinary (non-trainable) augmentation layer, `FrozenPolicy`, that draws, per image, each
op's value uniformly in `[low, high]`, for use in front of any classifier or in a `tf.data` map:

```python
policy = augmenter.policy()                   # after DABO training
dabo_tf.augment.save_policy(policy, "policy.json")
front_end = dabo_tf.augment.policy_to_layers(dabo_tf.augment.load_policy("policy.json"), seed=0)
inputs = keras.Input(image_shape)
model = keras.Model(inputs, classifier(front_end(inputs)))  # augments only in training
```

Ops (`dabo_tf.augment.ops.OPS` gives their units):

* geometric, combined into one warp per image (`FixedAffine`): `rotate` (degrees), `shear`
  (x += s y), `scale_x`/`scale_y`, `zoom` (both axes) and `aspect` (width / height) (scale
  factors, drawn log-uniformly unless the entry says `"draw": "uniform"`, as
  `LearnedAffine(scale_draw="linear")`, the default, reports `zoom`, `scale_x` and
  `scale_y`), `translate_x`/`translate_y` (fractions of the size), `perspective_x/_y`, and
  `flip` / `vflip` (horizontal / vertical flip with probability `(low + high) / 2`);
* colour (`FixedColor`): `brightness` (additive delta; a multiplicative factor when its unit
  says "factor", as in `NoiseAugmenter.policy()`), `intensity_shift` (additive delta),
  `contrast` and `saturation` (factors; saturation is skipped on 1-channel images);
* erasing (`FixedCutout`): `cutout`, a square of side `low`..`high` (fraction of the size,
  uniform) erased with the key `probability` (default 1);
* the gate `augment`: the probability `(low + high) / 2` that an image is augmented at all
  (else it passes clean), e.g. `1 - clean_fraction` of a DABO run (`augment_probability`).

An entry's `draw` is `"uniform"` or `"log-uniform"` (a scale op's default); other extra keys
of an entry (`mean`, `std`) are ignored.
"""

from __future__ import annotations

import itertools
import json
import math
import os

from dabo_tf.augment.fixed import FixedAffine, FixedColor, FixedCutout, FrozenPolicy  # noqa: F401
from dabo_tf.augment.ops import (
    FLIP_UNIT,
    LOG_SCALE_OPS,
    LOG_UNIFORM_DRAW,
    OPS,
    POLICY_OPS,
    UNIFORM_DRAW,
)

KNOWN_OPS = (POLICY_OPS["geometric"] + POLICY_OPS["color"] + POLICY_OPS["erasing"]
             + POLICY_OPS["gate"])


def policy_from_factors(*, rotate=0.0, shear=0.0, scale=0.0, translate=0.0, brightness=0.0,
                        contrast=0.0, saturation=None, flip=False) -> dict:
    """Symmetric policy from one magnitude per op (the Keras Tuner search space).

    Args:
        rotate: maximum rotation in degrees: `[-rotate, rotate]`.
        shear: maximum shear factor: `[-shear, shear]`.
        scale: relative zoom: `scale_x` and `scale_y` each in `[1 / (1 + scale), 1 + scale]`
            (symmetric in log-scale, like `LearnedAffine`'s distribution).
        translate: `translate_x` and `translate_y` each in `[-translate, translate]`
            (fractions of the size).
        brightness: additive delta in `[-brightness, brightness]`.
        contrast: contrast factor in `[1 - contrast, 1 + contrast]`.
        saturation: saturation factor in `[1 - saturation, 1 + saturation]`; None leaves the
            op out (1-channel data).
        flip: random horizontal flip with probability 0.5.

    Returns:
        A policy dict, same format as `dabo_tf.augment.Augmenter.policy()`.
    """
    units = {op: spec.unit for op, spec in OPS.items()}
    sym = lambda f, centre=0.0: (centre - float(f) + 0.0, centre + float(f))  # noqa: E731
    scale = float(scale)
    out = {
        "rotate": sym(rotate),
        "shear": sym(shear),
        "scale_x": (1.0 / (1.0 + scale), 1.0 + scale),
        "scale_y": (1.0 / (1.0 + scale), 1.0 + scale),
        "translate_x": sym(translate),
        "translate_y": sym(translate),
        "brightness": sym(brightness),
        "contrast": sym(contrast, 1.0),
    }
    if saturation is not None:
        out["saturation"] = sym(saturation, 1.0)
    policy = {op: {"low": lo, "high": hi, "unit": units[op]} for op, (lo, hi) in out.items()}
    p = 0.5 if flip else 0.0
    policy["flip"] = {"low": p, "high": p, "unit": FLIP_UNIT}
    return policy


def split_policy(policy: dict):
    """Splits a policy into `(geometric, color, erasing)` dicts of `op: (low, high)`.

    Identity ranges (rotate `[0, 0]`, scale `[1, 1]`, flip probability 0, ...) are dropped.
    An erasing op's range is `(low, high, probability)`. The gate `augment` is checked and
    left out (`augment_probability` reads it).

    Raises:
        ValueError: an op is unknown, its entry has no `low`/`high`, or a value is not a
            finite number within the op's `OPS[op].limit`.
    """
    geometric, color, erasing = {}, {}, {}
    for op, entry in policy.items():
        if not isinstance(entry, dict) or "low" not in entry or "high" not in entry:
            raise ValueError(f"Each policy entry must be a dict with 'low' and 'high'. "
                             f"Received: policy[{op!r}]={entry!r}")
        try:
            lo, hi = float(entry["low"]), float(entry["high"])
        except (TypeError, ValueError):
            raise ValueError(f"Policy values must be numbers. Received: policy[{op!r}]="
                             f"{entry!r}") from None
        name = op
        if op == "brightness" and "factor" in str(entry.get("unit", "")):
            op = "brightness_factor"
        if op not in KNOWN_OPS:
            raise ValueError(f"Unknown policy op. Expected one of {KNOWN_OPS}. "
                             f"Received: op={op!r}")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi
                and max(abs(lo), abs(hi)) <= OPS[op].limit):
            raise ValueError(f"Policy op {name!r} needs finite low <= high within "
                             f"+-{OPS[op].limit}. Received: policy[{name!r}]={entry!r}")
        draw = entry.get("draw")
        if draw is not None and (draw not in (UNIFORM_DRAW, LOG_UNIFORM_DRAW) or (
                draw == LOG_UNIFORM_DRAW and op not in LOG_SCALE_OPS)):
            raise ValueError(f"A policy entry's 'draw' is {UNIFORM_DRAW!r}, or "
                             f"{LOG_UNIFORM_DRAW!r} for a scale op {LOG_SCALE_OPS}. "
                             f"Received: policy[{name!r}]={entry!r}")
        if OPS[op].kind == "gate":
            continue
        if OPS[op].kind == "erasing":
            p = float(entry.get("probability", 1.0))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"A probability must be in [0, 1]. "
                                 f"Received: policy[{name!r}]={entry!r}")
            if hi > 0 and p > 0:
                erasing[op] = (lo, hi, p)
            continue
        identity = OPS[op].identity
        if lo == identity and hi == identity:
            continue
        (geometric if OPS[op].kind == "geometric" else color)[op] = (lo, hi)
    return geometric, color, erasing


def uniform_scales(policy: dict) -> tuple:
    """The scale ops (`LOG_SCALE_OPS`) of a policy drawn uniformly (`"draw": "uniform"`); the
    others are drawn log-uniformly."""
    return tuple(op for op in LOG_SCALE_OPS
                 if op in policy and policy[op].get("draw") == UNIFORM_DRAW)


def augment_probability(policy: dict) -> float:
    """The probability that the policy augments an image (its gate `augment`; 1 without)."""
    entry = policy.get("augment")
    if entry is None:
        return 1.0
    split_policy({"augment": entry})  # checks the entry
    return (float(entry["low"]) + float(entry["high"])) / 2.0


def save_policy(policy: dict, path) -> None:
    """Writes a policy as JSON (creating the parent folder)."""
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    plain = {op: {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "dtype") else v)
                  for k, v in entry.items()} for op, entry in policy.items()}
    with open(path, "w") as f:
        json.dump(plain, f, indent=2, sort_keys=True)


def load_policy(path) -> dict:
    """Reads a policy written by `save_policy` and checks its format and values.

    Raises:
        ValueError: the file is not JSON, not a policy, or holds an unusable value.
    """
    try:
        with open(os.fspath(path)) as f:
            policy = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{os.fspath(path)!r} is not a policy file (not JSON: {e}). Pass "
                         "the policy.json a DABO run wrote. "
                         f"Received: path={os.fspath(path)!r}") from None
    if not isinstance(policy, dict):
        raise ValueError(f"{os.fspath(path)!r} is not a policy file (expected an object of "
                         f"ops). Received: {type(policy).__name__}")
    split_policy(policy)
    return policy



def policy_to_layers(policy: dict, *, seed=None, fill_mode: str = "reflect",
                     interpolation: str = "bilinear", clip: bool = False,
                     name: str = "frozen_policy", keras_native: bool = False):
    """Freezes a policy into one Keras augmentation layer (`FrozenPolicy`).

    With `keras_native=True` the layer is made of Keras' own preprocessing layers instead
    (`policy_to_keras_layers`), so a model that ships it loads with Keras alone.

    Args:
        policy: `{op: {"low": ..., "high": ..., "unit": ...}}`, e.g. `augmenter.policy()`,
            `load_policy(path)` or `policy_from_factors(...)`.
        seed: base seed of the frozen layers (see `FrozenPolicy`).
        fill_mode: how the warp fills outside the image. Defaults to `"reflect"`.
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        clip: clip colour-jittered images to [0, 1]. Defaults to False.
        name: name of the layer.
        keras_native: build it from Keras' layers (`policy_to_keras_layers`; `clip` is
            then implied for brightness and contrast, which Keras clips to [0, 1]).

    Returns:
        A `FrozenPolicy` layer (or, with `keras_native`, a `keras.Sequential` of Keras
        layers) that augments when called with `training=True` (as in `fit`) and is the
        identity otherwise; parts with only identity ranges are skipped.

    Raises:
        ValueError: a policy value is unusable, or (with `keras_native`) an op has no Keras
            equivalent.
    """
    if keras_native:
        return policy_to_keras_layers(policy, seed=seed, fill_mode=fill_mode,
                                      interpolation=interpolation, name=name)
    return FrozenPolicy(policy, fill_mode=fill_mode, interpolation=interpolation, clip=clip,
                        seed=seed, name=name)


KERAS_NATIVE_OPS = ("rotate", "scale_x", "scale_y", "zoom", "translate_x", "translate_y", "flip",
                    "vflip", "brightness", "contrast")
"""Ops `policy_to_keras_layers` can express with Keras' own layers. Not the others:
`keras.layers.RandomShear` shears about the image's corner (which also shifts it) and draws a
random sign; Keras' saturation, perspective and erasing layers are parameterised otherwise;
its flip has probability 0.5 only."""


def policy_to_keras_layers(policy: dict, *, seed=None, fill_mode: str = "reflect",
                           interpolation: str = "bilinear", fill_value: float = 0.0,
                           name: str = "frozen_policy"):
    """The policy as Keras' own preprocessing layers: a model shipping it needs only Keras.

    The same ranges as `FrozenPolicy`, with three differences in the details:

    - geometric ops are applied one after another (`RandomZoom`, then `RandomRotation`, then
      `RandomTranslation`, the order of `FrozenPolicy`'s single warp), each interpolating;
    - a scale range `[lo, hi]` (`zoom`: `width_factor=None`, one factor for both axes)
      becomes Keras' zoom `z` in `[1 / hi - 1, 1 / lo - 1]` drawn
      uniformly (the content is scaled by `1 / (1 + z)`), where `FrozenPolicy` draws the
      scale log-uniformly or, with `"draw": "uniform"`, uniformly;
    - `RandomBrightness` and `RandomContrast` clip to `[0, 1]` after each op, and Keras'
      contrast is about each channel's mean (`FrozenPolicy`: the image's mean; the same for
      one channel).

    Args:
        policy: as for `policy_to_layers`; its ops must be in `KERAS_NATIVE_OPS` (a flip's
            probability 0 or 0.5; a constant fill's probability 0 or 1; a contrast range
            `[lo, hi]` with `hi >= 1` and `lo + hi >= 2`, e.g. symmetric about 1).
        seed: base seed; the i-th Keras layer gets `seed + i`.
        fill_mode, interpolation, fill_value: of the geometric layers.
        name: name of the `keras.Sequential`.

    Returns:
        A `keras.Sequential` of Keras layers (a single `keras.layers.Identity` for an
        identity policy), active only when called with `training=True`.

    Raises:
        ValueError: an op has no Keras equivalent (the message names each); use
            `policy_to_layers(policy)` (dabo-tf's layers, registered by `import dabo_tf`)
            or leave those ops out of the policy.
    """
    import keras

    geometric, color, erasing = split_policy(policy)
    unsupported = [op for op in [*geometric, *color, *erasing]
                   if op not in KERAS_NATIVE_OPS + ("fill",)]
    if augment_probability(policy) < 1.0:
        unsupported.append(f"the gate augment (probability {augment_probability(policy):g}: "
                           "Keras has no layer that augments a share of the images)")
    for op in ("flip", "vflip"):
        if op in geometric and geometric[op] != (0.5, 0.5):
            unsupported.append(f"{op} with probability {sum(geometric[op]) / 2:g} (Keras "
                               "flips with probability 0.5)")
    if "fill" in geometric:
        p = sum(geometric["fill"]) / 2.0
        if p == 1.0:
            fill_mode = "constant"  # every image filled with fill_value: Keras' own mode
        else:
            unsupported.append(f"fill with probability {p:g} (Keras fills every image "
                               "alike: the probability must be 0 or 1)")
    if "contrast" in color:
        lo, hi = color["contrast"]
        if hi < 1.0 or lo + hi < 2.0 - 1e-9:
            unsupported.append(f"contrast [{lo:g}, {hi:g}] (Keras' RandomContrast draws "
                               "factors 1 - a .. 1 + b, and sorts a <= b: a range must reach "
                               "1 and be centred at 1 or above)")
    if unsupported:
        raise ValueError(f"No Keras equivalent for {', '.join(map(str, unsupported))}. Use "
                         "policy_to_layers(policy) without keras_native (dabo-tf's layers; "
                         "loading the model then needs `import dabo_tf`), or leave those ops "
                         f"out of the policy. Keras-native ops: {list(KERAS_NATIVE_OPS)}. "
                         f"Received: policy ops {list(policy)}")
    count = itertools.count()

    def seed_of():
        return None if seed is None else int(seed) + next(count)

    geo = dict(fill_mode=fill_mode, interpolation=interpolation, fill_value=fill_value)
    layers = []
    def zoom(op):
        lo, hi = geometric.get(op, (1.0, 1.0))
        return (1.0 / hi - 1.0, 1.0 / lo - 1.0)

    if "scale_x" in geometric or "scale_y" in geometric:
        layers.append(keras.layers.RandomZoom(zoom("scale_y"), zoom("scale_x"), seed=seed_of(),
                                              **geo))
    if "zoom" in geometric:  # width_factor=None: one factor for both axes
        layers.append(keras.layers.RandomZoom(zoom("zoom"), None, seed=seed_of(), **geo))
    if "rotate" in geometric:
        lo, hi = geometric["rotate"]
        layers.append(keras.layers.RandomRotation((lo / 360.0, hi / 360.0), seed=seed_of(),
                                                  **geo))
    if "translate_x" in geometric or "translate_y" in geometric:
        layers.append(keras.layers.RandomTranslation(
            geometric.get("translate_y", (0.0, 0.0)), geometric.get("translate_x", (0.0, 0.0)),
            seed=seed_of(), **geo))
    for op, mode in (("flip", "horizontal"), ("vflip", "vertical")):
        if op in geometric:
            layers.append(keras.layers.RandomFlip(mode, seed=seed_of()))
    if "brightness" in color:
        layers.append(keras.layers.RandomBrightness(color["brightness"], value_range=(0, 1),
                                                    seed=seed_of()))
    if "contrast" in color:
        lo, hi = color["contrast"]
        layers.append(keras.layers.RandomContrast((min(1.0 - lo, hi - 1.0), hi - 1.0),
                                                  value_range=(0, 1), seed=seed_of()))
    return keras.Sequential(layers or [keras.layers.Identity()], name=name)
