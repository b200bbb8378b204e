"""Experiment presets: `dabo_tf/presets/<name>.py`, each with `get_config(variant=None)`.

A preset is data: a dict of `dabo_tf.config.Config` overrides. `run.py --experiment=NAME`
applies one (flags given explicitly override it again); `--experiment=NAME:smoke` applies its
`smoke` variant, which keeps the preset's recipe (mode, augmenter, optimisers, schedule shape)
but shrinks everything (image size, model, epochs, data) so that it runs in seconds, for tests.
`--experiment=NAME:paper` keeps the preset's data, classifier and training recipe but learns
the augmentation as the DABO paper's released code does (`PAPER`): its noise-MLP augmenter
started random around the identity, trained by SGD 0.2 (momentum 0.9, weight decay 0.01)
through the un-normalised look-ahead step, with no warm-up and no mirrored pairs.
"""

from __future__ import annotations

import importlib

PRESETS = ("digits", "cifar10", "cifar100", "bach", "tiny_imagenet", "imagenet", "compare")
VARIANTS = (None, "smoke", "paper")

PAPER = dict(augmenter="network", augmenter_identity_init=False, augmenter_color=False,
             augmenter_optimizer="sgd", augmenter_lr=0.2, augmenter_weight_decay=0.01,
             normalize_lookahead=False, antithetic=False, clean_fraction=0.0,
             augmenter_warmup=0.0, augmenter_prior_pull=0.0, augmenter_fill=False,
             augmenter_flip=False, augmenter_vflip=False, augmenter_cutout=False)
"""The learned augmentation of the paper's released code (`NAME:paper`)."""

SMOKE = dict(image_size=16, model="tiny_cnn", epochs=2, batch_size=32, train_size=160)
"""What every `smoke` variant shrinks (step schedules get a milestone at epoch 1)."""


def shrink(config: dict) -> dict:
    """The `smoke` variant of a preset: same recipe, tiny sizes (see `SMOKE`)."""
    out = {**config, **SMOKE}
    if out.get("lr_milestones"):
        out["lr_milestones"] = (1,)
    return out


def parse_name(name: str):
    """`"cifar10"` -> `("cifar10", None)`; `"cifar10:smoke"` -> `("cifar10", "smoke")`."""
    preset, _, variant = str(name).strip().partition(":")
    return preset, (variant or None)


def get_config(name: str, variant=None) -> dict:
    """Config overrides of preset `name` (`"NAME"` or `"NAME:VARIANT"`).

    Raises:
        ValueError: unknown preset or variant.
    """
    preset, parsed_variant = parse_name(name)
    variant = variant or parsed_variant
    if preset not in PRESETS:
        raise ValueError(f"Unknown experiment preset. Expected one of {list(PRESETS)} "
                         f"(optionally NAME:smoke). Received: experiment={name!r}")
    if variant not in VARIANTS:
        raise ValueError(f"Unknown preset variant. Expected one of {list(VARIANTS[1:])}. "
                         f"Received: experiment={name!r}")
    module = importlib.import_module(f"dabo_tf.presets.{preset}")
    if variant == "paper":
        return dict(module.get_config(None), **PAPER)
    return dict(module.get_config(variant))
