"""The configuration of one run: a plain dataclass, filled from flags by `run.py` or presets.

Library code takes a `Config` (or explicit arguments); only `run.py` reads flags. Presets in
`experiments/<name>.py` are data: `get_config()` returns a dict of overrides of these fields.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

MODES = ("dabo", "none", "hand", "tuner", "compare", "randaugment", "trivialaugment", "frozen")


@dataclasses.dataclass
class Config:
    # Data.
    dataset: str = "digits"
    data_dir: Optional[str] = None
    image_size: int = 32
    val_fraction: float = 0.2
    train_size: Optional[int] = None
    # A known shift of the validation and test splits (e.g. "rotate:40"; "" none).
    eval_shift: str = ""
    # Classifier and its optimiser (SGD with momentum, decoupled weight decay).
    model: str = "small_cnn"
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"  # "cosine", "step" (x lr_decay at lr_milestones), "constant"
    lr_milestones: tuple = ()
    lr_decay: float = 0.2
    # What to do.
    mode: str = "dabo"
    seed: int = 0
    # Learned augmentation (mode="dabo").
    augmenter: str = "distribution"  # or "network" (the paper's noise MLP)
    augmenter_color: Optional[bool] = None  # None: on for 3-channel (colour) images
    augmenter_projective: bool = False
    augmenter_flip: bool = False  # horizontal flip with a learned probability
    augmenter_vflip: bool = False  # vertical flip with a learned probability
    augmenter_cutout: bool = False  # cutout with a learned size and probability
    augmenter_init_magnitude: float = 0.05  # distribution augmenter: initial half-widths
    augmenter_magnitude_scale: str = "log"  # learn "log" half-widths or "linear" ones
    augmenter_optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9, as the paper)
    augmenter_lr: float = 0.03
    augmenter_weight_decay: float = 0.0
    augmenter_learn_mean: bool = False  # distribution augmenter: learn a mean per op
    augmenter_identity_init: bool = True  # network augmenter: start near identity (paper: False)
    inner_lr: Optional[float] = None  # None: the classifier's current learning rate
    inner_steps: int = 1
    augmenter_update_every: int = 1
    augmenter_warmup: float = 0.0  # fraction of the training steps before the augmenter learns
    normalize_lookahead: bool = True  # credit the direction of the training gradient only
    antithetic: bool = True  # bilevel steps on mirrored pairs of transformations
    val_batch_size: Optional[int] = None  # look-ahead validation batch; None: batch_size
    fill_mode: str = "reflect"
    # Hand-written policy (mode="hand"): ops applied with fixed strengths.
    hand_policy: tuple = ("crop", "flip")
    # Hand ops applied before the learned augmenter in mode "dabo" (the paper: flip on CIFAR).
    pre_augmentation: tuple = ()
    # A learned policy frozen into fixed augmentation layers (mode="frozen").
    policy_path: Optional[str] = None
    # Zero-search baselines.
    randaugment_num_ops: int = 2
    randaugment_factor: float = 0.5
    # Keras Tuner search (mode="tuner") and comparison (mode="compare").
    tuner: str = "random"
    trials: int = 20
    compare_seeds: tuple = (0, 1, 2)
    # Execution.
    jit_compile: Optional[bool] = None  # None: on when a GPU is present
    mixed_precision: Optional[str] = None  # None, "mixed_float16", "mixed_bfloat16"
    # Under mixed precision, DABO's bilevel passes compute in "float32" or in the "policy".
    hypergradient_dtype: str = "float32"
    distribute: str = "none"  # "none", "mirrored", "multi_worker"
    profile_batches: str = ""  # e.g. "10,15"; "" = a few batches of the 2nd epoch
    steps_per_execution: int = 1
    verbose: int = 1

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
