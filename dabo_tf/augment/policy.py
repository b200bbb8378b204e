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
  (x += s y), `scale_x`/`scale_y` (scale factors, drawn log-uniformly, as `LearnedAffine`
  draws them), `translate_x`/`translate_y` (fractions of the size), `perspective_x/_y`, and
  `flip` / `vflip` (horizontal / vertical flip with probability `(low + high) / 2`);
* colour (`FixedColor`): `brightness` (additive delta; a multiplicative factor when its unit
  says "factor", as in `NoiseAugmenter.policy()`), `intensity_shift` (additive delta),
  `contrast` and `saturation` (factors; saturation is skipped on 1-channel images);
* erasing (`FixedCutout`): `cutout`, a square of side `low`..`high` (fraction of the size,
  uniform) erased with the key `probability` (default 1).

Extra keys of an op's entry (`mean`, `std`) are ignored.
"""

from __future__ import annotations

import json
import math
import os

from dabo_tf.augment.fixed import FixedAffine, FixedColor, FixedCutout, FrozenPolicy  # noqa: F401
from dabo_tf.augment.ops import FLIP_UNIT, OPS, POLICY_OPS

KNOWN_OPS = POLICY_OPS["geometric"] + POLICY_OPS["color"] + POLICY_OPS["erasing"]


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
    An erasing op's range is `(low, high, probability)`.

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
                     name: str = "frozen_policy") -> FrozenPolicy:
    """Freezes a policy into one Keras augmentation layer (`FrozenPolicy`).

    Args:
        policy: `{op: {"low": ..., "high": ..., "unit": ...}}`, e.g. `augmenter.policy()`,
            `load_policy(path)` or `policy_from_factors(...)`.
        seed: base seed of the frozen layers (see `FrozenPolicy`).
        fill_mode: how the warp fills outside the image. Defaults to `"reflect"`.
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        clip: clip colour-jittered images to [0, 1]. Defaults to False.
        name: name of the layer.

    Returns:
        A `FrozenPolicy` layer that augments when called with `training=True` (as in `fit`)
        and is the identity otherwise; parts with only identity ranges are skipped.
    """
    return FrozenPolicy(policy, fill_mode=fill_mode, interpolation=interpolation, clip=clip,
                        seed=seed, name=name)
