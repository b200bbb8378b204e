"""Named seed streams: every random draw of a run derives from `Config.seed` here, and only here.

A run's randomness comes in independent streams (the classifier's initialisation, the data
order, the validation stream DABO learns from, each augmentation layer's noise...). Each
stream is `seed + OFFSET`, with offsets far enough apart that streams never collide for the
seeds people use (0..99). Changing an offset changes every seeded result, so they are
written once, with their names.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Optional

CLASSIFIER = 0
"""The classifier's initialisers (`models.build_classifier`, one stream per layer from it)."""
TRAIN_ORDER = 0
"""Shuffling of the training batches (`data.make_pipeline`)."""
VALIDATION_STREAM = 1
"""Order of DABO's validation stream (the look-ahead loss)."""
PRE_AUGMENTATION = 100
"""Hand ops in front of DABO's learned augmenter (`Config.pre_augmentation`)."""
HAND_POLICY = 0
"""Hand ops of `mode=hand` (one stream per op, from here)."""
LEARNED_AUGMENTER = 1000
"""DABO's learned augmenter (one stream per layer, from here)."""
FROZEN_POLICY = 0
"""A frozen policy's layers (`mode=frozen`, `tuner`): geometric, colour, erasing, from here."""
FRONT_END = 0
"""TrivialAugment and RandAugment front ends."""
NETWORK_LAYER_STRIDE = 7919
"""The noise network's initialisers: `layer seed * 7919 + index` (a prime stride, so the
streams of two nearby layer seeds do not overlap)."""
NETWORK_OUTPUT = 99
"""Index of the noise network's output layer in that stream."""


def stream(seed: Optional[int], offset: int) -> Optional[int]:
    """`seed + offset`, or None (unseeded) when `seed` is None."""
    return None if seed is None else int(seed) + offset


def streams(seed: Optional[int], offset: int = 0) -> Iterator[Optional[int]]:
    """Consecutive seeds `seed + offset, seed + offset + 1, ...` (all None when unseeded)."""
    return itertools.repeat(None) if seed is None else itertools.count(int(seed) + offset)
