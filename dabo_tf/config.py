"""The configuration of one run: the `Config` dataclass, its allowed values and its check.

Library code takes a `Config` (or explicit arguments); the command line (`dabo_tf.cli`)
generates one flag per field from the field's help text, type, choices and lower bound, so a
new field cannot be forgotten. Presets (`dabo_tf.presets`) are data: `get_config()` returns
a dict of overrides of these fields. This module imports no TensorFlow: the command line
parses and checks its flags before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Optional

MODES = ("dabo", "none", "hand", "tuner", "compare", "randaugment", "trivialaugment", "frozen")
"""`compare` runs the others side by side (`dabo_tf.train.compare`); the rest train once."""
MODELS = ("small_cnn", "tiny_cnn", "resnet18", "resnet18_imagenet", "wrn28_10", "wrn40_2",
          "resnet50")
"""Classifier names (`dabo_tf.models`); any `wrn<depth>_<width>` is accepted too."""
LR_SCHEDULES = ("cosine", "step", "constant")
AUGMENTERS = ("distribution", "network")
AUGMENTER_OPTIMIZERS = ("adam", "sgd")
MAGNITUDE_SCALES = ("log", "linear")
"""Parameterisations of a learned half-width: its logarithm (the default) or itself."""
AUGMENTER_SCALES = ("zoom", "zoom_aspect", "axes")
"""How a learned augmenter scales images (`dabo_tf.augment.ops.SCALE_PARAMETERISATIONS`)."""
DEFAULT_AUGMENTER_SCALE = "zoom_aspect"
"""`--augmenter_scale` by default: a zoom of both axes and an aspect ratio, the same
transformations as a scale per axis in coordinates where the common one, a change of distance
(what `keras.layers.RandomZoom` and torchvision draw by default), is one op and gets the
hypergradient of both axes (chosen on principle, checked on the development suite, see the
README). Until 2026-12-07 it was `"axes"`."""
SCALE_DRAWS = ("linear", "log")
"""How a learned augmenter draws a scale factor (`zoom`, `scale_x`, `scale_y`; the aspect ratio
is always log-uniform): uniformly in `[1 - w, 1 + w]` or log-uniformly in `[e**-w, e**w]`."""
DEFAULT_SCALE_DRAW = "linear"
"""`--augmenter_scale_draw` by default: uniform scale factors, what torchvision's and kornia's
`RandomAffine(scale=(low, high))` draw, so a policy's zoom range reads as theirs would (see
the README for the suite's ablation). Until 2026-12-07 it was `"log"`."""
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
HAND_OPS = ("crop", "flip", "vflip", "rotate", "translate", "zoom", "contrast", "brightness")
"""Hand-written ops (`dabo_tf.augment.hand.HAND_OPS` builds them)."""
TUNERS = ("random", "bayesian", "hyperband")
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")
HYPERGRADIENT_DTYPES = ("float32", "policy")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
DATA_LOADINGS = ("auto", "memory", "stream")
"""How images reach the model: decoded once into memory, or read and decoded per step."""


def parse_grid(text):
    """`"3x4"` -> `(3, 4)`; `""` or None -> None; anything else -> None as well (invalid)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text or ""))
    if not match or min(int(match[1]), int(match[2])) < 1:
        return None
    return int(match[1]), int(match[2])


DEFAULT_INIT_MAGNITUDE = 0.05
"""`--augmenter_init_magnitude` and the learned layers' `init_magnitude` by default: with
`DEFAULT_INIT_RELATIVE`, every learned range starts at a twentieth of its op's limit (+-9
degrees, shifts of +-2.5%, zoom x0.975-1.025, aspect x0.97-1.04, shear +-0.05, brightness
+-0.0125, contrast +-0.045, saturation +-0.05). A symmetric distribution of zero width gets
no first-order hypergradient (the noise averages out), so learning starts from a small width
rather than exactly the identity; chosen on the development suite (README)."""

DEFAULT_INIT_RELATIVE = True
"""`--augmenter_init_relative` by default: the initial width is a fraction of each op's
limit, the unit the prior's width is given in, so every op starts at the same relative
strength. The earlier default, 0.05 in internal units for every op, started the rotation at
2.9 degrees (1.6% of its limit), inside the region where its hypergradient is flat on
natural images, and the brightness at a fifth of its limit."""


DEFAULT_PRIOR_PULL = 0.1
"""`DaboModel(prior_pull=...)` and `--augmenter_prior_pull` by default: each learned
half-width below its prior width grows by a factor of up to `exp(0.1 * augmenter_lr)` per
augmenter step unless the hypergradient holds it back (chosen on the development suite, see
the README)."""


DEFAULT_PRIOR_WIDTH = 0.5
"""`DaboModel(prior_width=...)` and `--augmenter_prior_width` by default: the pull's prior
settles each range at half its op's limit where the hypergradient is flat (TrivialAugment's
mean strength; chosen on principle, checked on the development suite, see the README)."""


DEFAULT_PRIOR_POWER = 2.0
"""`DaboModel(prior_power=...)` and `--augmenter_prior_power` by default: the pull's prior a
Gaussian (a power of 4 was measured and not kept, see the README)."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which one and what to do."""


def field(default, help, *, choices=None, lower_bound=None, items=None, resumable=False):
    """A `Config` field with the metadata its flag is generated from.

    Args:
        default: the default value.
        help: the flag's help text.
        choices: allowed values (an enum flag; `check_config` enforces them).
        lower_bound: smallest allowed number (the flag's bound).
        items: the element type of a tuple field (`str` by default).
        resumable: a resumed run may change it (how long or how verbosely it runs, not what
            it trains: the model, the data and the method stay as the run began).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "lower_bound": lower_bound, "items": items or str,
        "resumable": resumable})


@dataclasses.dataclass
class Config:
    # Data.
    dataset: str = field(
        "digits",
        "digits (embedded, offline), folder (your images in class subfolders under "
        "--data_dir), or a TensorFlow Datasets name such as cifar10, cifar100, "
        "svhn_cropped, fashion_mnist, mnist; also a preset name (bach, tiny_imagenet) "
        "whose data is a folder.")
    data_dir: Optional[str] = field(
        None,
        "TFDS data folder (prepared data is read from it, downloads go to it), or the "
        "image folder for --dataset=folder.")
    image_size: int = field(
        32,
        "Images are resized to this square size.",
        lower_bound=1)
    val_fraction: float = field(
        0.2,
        "Fraction of the training data held out for validation (DABO's outer problem and "
        "per-epoch validation accuracy).")
    train_size: Optional[int] = field(
        None,
        "Use a class-balanced random subset of this many training images (before the "
        "validation split). Default: all.",
        lower_bound=1)
    data_loading: str = field(
        "auto",
        "memory: decode every image once into one uint8 array (fast, for data that fits); "
        "stream: read, decode and resize images per step with tf.data (folders and TFDS "
        "data sets of any size); auto: stream when the decoded images would take more "
        "than a quarter of the available memory.",
        choices=DATA_LOADINGS)
    patch_grid: str = field(
        "",
        "ROWSxCOLS (e.g. 3x4, BACH's protocol): each image is resized to ROWS*image_size x "
        "COLS*image_size and cut into that grid of image_size squared patches; training and "
        "validation use every patch with its image's label, a test image is predicted by "
        "the mean of its patches' logits. Splits are made per image. Streamed folders only.")
    # A known shift of the validation and test splits (e.g. "rotate:40"; "" none).
    eval_shift: str = field(
        "",
        "Transform the validation and test splits (not training) by a known random shift, "
        "a task whose right augmentation is known: rotate:DEGREES, translate:FRACTION or "
        "scale:LOW:HIGH (e.g. rotate:40).")
    # Classifier and its optimiser (SGD with momentum, decoupled weight decay).
    model: str = field(
        "small_cnn",
        "Classifier: small_cnn, tiny_cnn, resnet18 (CIFAR stem), resnet18_imagenet, "
        "resnet50, wrn28_10, wrn40_2 or any wrn<depth>_<width>.")
    epochs: int = field(
        15,
        "Training epochs.",
        lower_bound=1,
        resumable=True)
    batch_size: int = field(
        64,
        "Global batch size (split across replicas under --distribute).",
        lower_bound=1)
    lr: float = field(
        0.05,
        "Classifier learning rate (SGD).")
    momentum: float = field(
        0.9,
        "SGD momentum of the classifier.")
    weight_decay: float = field(
        5e-4,
        "Decoupled weight decay of the classifier's SGD (Keras semantics).")
    lr_schedule: str = field(
        "cosine",
        "cosine: cosine decay to 0 over all steps; step: x "
        "--lr_decay at each of --lr_milestones; constant.",
        choices=LR_SCHEDULES)
    lr_milestones: tuple = field(
        (),
        "Epochs at which --lr_schedule=step multiplies the rate by --lr_decay, e.g. "
        "60,120,160.",
        items=int)
    lr_decay: float = field(
        0.2,
        "Factor of each step of --lr_schedule=step.")
    # What to do.
    mode: str = field(
        "dabo",
        "dabo: learn "
        "the augmentation (DABO); none: no augmentation; hand: the fixed --hand_policy; "
        "tuner: Keras Tuner search over hand policies (--tuner, --trials) + retraining; "
        "randaugment, trivialaugment: zero-search baselines; frozen: retrain with a DABO "
        "policy frozen (--policy_path); compare: all of them side by side over "
        "--compare_seeds (comparison.md/.csv/.png).",
        choices=MODES)
    seed: int = field(
        0,
        "Random seed (initialisation, data order, splits, augmentation).")
    # Learned augmentation (mode="dabo").
    augmenter: str = field(
        "distribution",
        "distribution: learned uniform ranges per op; network: "
        "the paper's noise MLP.",
        choices=AUGMENTERS)
    augmenter_color: Optional[bool] = field(
        None,
        "Also learn colour jitter (brightness, contrast, saturation). Default: on for "
        "colour (3-channel) images, off for grayscale.")
    augmenter_shear: bool = field(
        True,
        "Distribution augmenter: learn a shear range besides rotation, scales and shifts.")
    augmenter_scale: str = field(
        DEFAULT_AUGMENTER_SCALE,
        "Distribution augmenter: how it scales images. zoom_aspect: a learned zoom range for "
        "both axes (what keras.layers.RandomZoom draws by default) and an aspect-ratio range; "
        "zoom: the zoom only; axes: a range per axis (scale_x, scale_y; the default until "
        "2026-12-07).",
        choices=AUGMENTER_SCALES)
    augmenter_scale_draw: str = field(
        DEFAULT_SCALE_DRAW,
        "Distribution augmenter: how a scale factor (zoom, scale_x, scale_y) is drawn. "
        "linear: uniformly in [1 - w, 1 + w] (w learned, at most 0.5), as torchvision's "
        "RandomAffine(scale=) draws; log: log-uniformly in [1/e^w, e^w] (w at most log 2; "
        "the default until 2026-12-07). The aspect ratio is log-uniform either way.",
        choices=SCALE_DRAWS)
    augmenter_projective: bool = field(
        False,
        "Also learn projective (perspective) terms (distribution augmenter).")
    augmenter_flip: bool = field(
        False,
        "Also learn a horizontal flip's probability (straight-through gradient).")
    augmenter_vflip: bool = field(
        False,
        "Also learn a vertical flip's probability (straight-through gradient).")
    augmenter_fill: bool = field(
        True,
        "Distribution augmenter, with a --fill_mode other than constant: also learn the "
        "probability that an image's warp fills outside the image with black (constant 0) "
        "instead of --fill_mode (straight-through gradient; the policy's op fill).")
    augmenter_cutout: bool = field(
        False,
        "Also learn cutout's square size and probability.")
    augmenter_init_magnitude: float = field(
        DEFAULT_INIT_MAGNITUDE,
        "Distribution augmenter: initial half-width of every op, a fraction of its limit "
        "(0.05: +-9 degrees, shifts of +-2.5%, zoom x0.975-1.025, brightness +-0.0125; with "
        "--noaugmenter_init_relative one value in internal units, radians, fractions of the "
        "size, log-scales..., for every op). A zero width gets no hypergradient, so learning "
        "starts from a small one.")
    augmenter_init_relative: bool = field(
        DEFAULT_INIT_RELATIVE,
        "Distribution augmenter: --augmenter_init_magnitude is a fraction of each op's limit "
        "(as --augmenter_prior_width is), not one internal value for every op (the earlier "
        "default, --noaugmenter_init_relative: 2.9 degrees, 5% shifts, x0.95-1.05 scales, "
        "brightness +-0.05).")
    augmenter_magnitude_scale: str = field(
        "log",
        "Distribution augmenter: learn log half-widths (a step changes a "
        "width by a factor; a shrunk width can grow again) or linear ones.",
        choices=MAGNITUDE_SCALES)
    augmenter_optimizer: str = field(
        "adam",
        "Optimiser of the augmenter (sgd: momentum 0.9, as the paper).",
        choices=AUGMENTER_OPTIMIZERS)
    augmenter_lr: float = field(
        0.03,
        "Learning rate of the augmenter.")
    augmenter_weight_decay: float = field(
        0.0,
        "Weight decay of the augmenter's optimiser (the paper: 0.01).")
    augmenter_prior_pull: float = field(
        DEFAULT_PRIOR_PULL,
        "Distribution augmenter: pull of each learned range toward a prior (the KL gradient "
        "toward it, as SLACK regularises toward its prior; --augmenter_prior_width), "
        "decoupled from the hypergradient as AdamW decouples weight decay: every augmenter "
        "step multiplies a half-width w by exp(augmenter_lr * pull * (1 - (w / w0)**2)), w0 "
        "the prior's width, and the hypergradient must push back for a range to stay "
        "narrow. It lets a range leave the flat region near the identity, where the "
        "one-step hypergradient sees no benefit yet. 0 turns it off.",
        lower_bound=0.0)
    augmenter_prior_width: float = field(
        DEFAULT_PRIOR_WIDTH,
        "Distribution augmenter: the width of --augmenter_prior_pull's prior, a zero-centred "
        "Gaussian whose uniform-equivalent half-width is this fraction of each op's limit "
        "(0.5: TrivialAugment's mean strength). The pull widens a range narrower than that "
        "and narrows a wider one, so where the hypergradient is flat a range settles there. "
        "inf: a flat prior, the pull only widens (up to the op's limit).")
    augmenter_prior_power: float = field(
        DEFAULT_PRIOR_POWER,
        "Distribution augmenter: the shape of --augmenter_prior_width's prior, a generalised "
        "Gaussian (density exp(-|x/s|**p)) resting at the same width: the pull's step is "
        "proportional to 1 - (w / w0)**p. 2: a Gaussian; larger: nearly flat below the "
        "prior's width and steeper above it.")
    augmenter_learn_mean: bool = field(
        False,
        "Distribution augmenter: learn a mean (bias) per op besides its magnitude "
        "(default off: each op's range is centred on the identity).")
    augmenter_identity_init: bool = field(
        True,
        "Network augmenter: start near the identity (the paper starts random around it: "
        "--noaugmenter_identity_init).")
    inner_lr: Optional[float] = field(
        None,
        "Learning rate of DABO's virtual (look-ahead) step. Default: the classifier's "
        "current learning rate.")
    inner_steps: int = field(
        1,
        "Unrolled inner steps (the paper: 1).",
        lower_bound=1)
    augmenter_update_every: int = field(
        1,
        "Update the augmenter every k-th step only (cheaper); 0 never updates it (the "
        "augmenter stays as initialised: a plain step behind a fixed augmenter).",
        lower_bound=0)
    augmenter_warmup: float = field(
        0.0,
        "Fraction of the training steps before the augmenter starts learning.")
    normalize_lookahead: bool = field(
        True,
        "Hold DABO's virtual step length fixed, so the augmenter is credited for the "
        "direction of the training gradient only, not its size (--nonormalize_lookahead: "
        "the paper's step).")
    calibrate_validation: bool = field(
        False,
        "DABO's look-ahead validation loss on logits scaled by the batch's best-fitting "
        "inverse temperature (held constant), so the augmenter is credited for better "
        "classification, not for a less confident classifier (temperature scaling removes "
        "that after training).")
    antithetic: bool = field(
        True,
        "DABO's bilevel pass runs on half of each batch twice, each image with a "
        "sampled transformation and with its mirror image (every op at the other end of "
        "its range): the noise's first-order effect cancels, a cleaner hypergradient for "
        "the same bilevel work.")
    train_unpaired: bool = field(
        True,
        "With --antithetic, the unpaired half of each batch gets an ordinary pass, so the "
        "classifier trains on every image every epoch (1.5 more units of work on a "
        "bilevel step's 10); --notrain_unpaired drops it from bilevel steps.")
    clean_fraction: Optional[float] = field(
        None,
        "Share of each training batch the classifier trains on un-augmented, taken from the "
        "images outside the bilevel pass. Default: a quarter of the batch where that many "
        "are outside it (half the unpaired half with --antithetic; 0 with --noantithetic "
        "at --hypergradient_fraction=1); 0 trains every image augmented.")
    val_batch_size: Optional[int] = field(
        None,
        "Validation batch of DABO's look-ahead loss. Default: --batch_size (the paper). "
        "Smaller is cheaper (the look-ahead pass is about 3 of a step's 10 units of work), "
        "but the hypergradient's signal shrinks with it, on rotated digits faster than with "
        "--hypergradient_fraction (benchmarks/hypergradient_snr.py --shares).",
        lower_bound=1)
    hypergradient_fraction: float = field(
        1.0,
        "Share of each training batch DABO's bilevel pass (differentiated twice) and its "
        "look-ahead run on; the rest gets an ordinary pass and the classifier steps on the "
        "whole batch. 1 is the exact step (10 forward-pass units, 3.3x a plain step); 0.25 "
        "with --val_batch_size a quarter of the batch is 1.7x a plain step, and with half "
        "the batch 1.96x, the share under 2x whose hypergradient is the surest (counted, "
        "with mirrored pairs; 1-3 points short of the exact step on the development "
        "suite's known tasks, README).")
    lookahead_whole_batch: bool = field(
        False,
        "DABO's look-ahead takes the classifier's whole step (the bilevel pass's gradient "
        "mixed with that of the images outside it: the rest of a sub-batch, the unpaired "
        "half) and its normalisation removes the validation gradient's component along "
        "that step, not along the bilevel pass's noisier gradient alone. Off: measured, "
        "the learned ranges then overshoot (README, DABO step cost).")
    lookahead_layers: int = field(
        0,
        "DABO's look-ahead steps only the classifier's last this many layers with weights "
        "(its head, counted from the output); 0 steps every weight, the exact step "
        "(3.8x a plain step). Nothing is differentiated twice below the head: 1 is 2.2x "
        "but misses shifts (the pooled features barely see them), 3 (small_cnn's last "
        "convolution, its BatchNorm and the Dense) 2.3x, close to the exact step on the "
        "development suite but short on shifted digits in two seeds of ten (README, DABO "
        "step cost).",
        lower_bound=0)
    val_gradient_average: float = field(
        0.0,
        "DABO pulls back a running average of the look-ahead's validation gradient over "
        "steps, with this beta (bias-corrected), instead of each step's own; 0: off (the "
        "paper). It removes the noise of a small --val_batch_size for no computation (the "
        "gradient some 1 / (1 - beta) steps stale), e.g. --lookahead_layers=3 "
        "--val_batch_size=<an eighth of the batch> --val_gradient_average=0.97, 2.0x a "
        "plain step (README, DABO step cost). In [0, 1).")
    fill_mode: str = field(
        "reflect",
        "How the learned warp fills pixels from outside "
        "the image.",
        choices=FILL_MODES)
    # Hand-written policy (mode="hand"): ops applied with fixed strengths.
    hand_policy: tuple = field(
        ("crop", "flip"),
        "Ops of --mode=hand, in order: crop (pad 1/8 and random crop), flip, vflip, "
        "rotate (+-15 deg), translate (+-10%), zoom (+-10%), contrast, brightness.",
        choices=HAND_OPS)
    # Hand ops applied before the learned augmenter in mode "dabo" (the paper: flip on CIFAR).
    pre_augmentation: tuple = field(
        (),
        "Hand ops applied before the learned augmenter in mode dabo (the paper: flip on "
        "CIFAR). Same names as --hand_policy.",
        choices=HAND_OPS)
    # A learned policy frozen into fixed augmentation layers (mode="frozen").
    policy_path: Optional[str] = field(
        None,
        "policy.json of a DABO run (or its folder), for --mode=frozen.")
    # Zero-search baselines.
    randaugment_num_ops: int = field(
        2,
        "Ops per image of --mode=randaugment.",
        lower_bound=0)
    randaugment_factor: float = field(
        0.5,
        "Magnitude of --mode=randaugment.")
    # Keras Tuner search (mode="tuner") and comparison (mode="compare").
    tuner: str = field(
        "random",
        "Keras Tuner algorithm of --mode=tuner. Distributed "
        "tuning: start one chief and several workers with Keras Tuner's "
        "KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set; see "
        "dabo_tf/policy_search.py.",
        choices=TUNERS)
    trials: int = field(
        20,
        "Trials of --mode=tuner.",
        lower_bound=1)
    compare_seeds: tuple = field(
        (0, 1, 2),
        "Seeds of --mode=compare.",
        items=int)
    # Execution.
    jit_compile: Optional[bool] = field(
        None,
        "Compile training with XLA. Default: on when a GPU is present (--jit_compile / "
        "--nojit_compile to force). On CPU it also makes a seeded DABO run bit-"
        "reproducible (see the README).",
        resumable=True)
    mixed_precision: Optional[str] = field(
        None,
        "Keras mixed-precision policy.",
        choices=MIXED_PRECISION)
    # Under mixed precision, DABO's bilevel passes compute in "float32" or in the "policy".
    hypergradient_dtype: str = field(
        "float32",
        "Under --mixed_precision: compute DABO's bilevel passes (the "
        "training pass differentiated twice and the look-ahead) in float32, or in the "
        "mixed policy (faster on accelerators, less exact).",
        choices=HYPERGRADIENT_DTYPES)
    distribute: str = field(
        "none",
        "none; mirrored: all local GPUs "
        "(tf.distribute.MirroredStrategy); multi_worker: MultiWorkerMirroredStrategy "
        "configured by TF_CONFIG.",
        choices=DISTRIBUTE)
    profile_batches: str = field(
        "",
        "TensorBoard profiler range, 'START,STOP' (batches counted from 1 across epochs) "
        "or 'N'; '0' turns it off. Default: three batches early in the 2nd epoch (none "
        "with a single epoch). In a multi-worker run only the chief profiles.",
        resumable=True)
    steps_per_execution: int = field(
        1,
        "Training steps per compiled call (Keras).",
        lower_bound=1,
        resumable=True)
    verbose: int = field(
        1,
        "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch. Defaults "
        "to 1 on a terminal, else 2.",
        resumable=True)


    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fields() -> tuple:
    """The `Config` fields (`dataclasses.Field`), in order."""
    return dataclasses.fields(Config)


def config_from_dict(values: dict) -> Config:
    """A `Config` from a dict such as `config.json` (lists back to tuples; unknown keys fail)."""
    known = {f.name for f in fields()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown configuration keys {unknown}; known: {sorted(known)}. "
                          f"Received: keys={sorted(values)}")
    hints = typing.get_type_hints(Config)
    out = {k: tuple(v) if hints[k] is tuple and isinstance(v, list) else v
           for k, v in values.items()}
    return Config(**out)


DEFAULT_CLEAN_FRACTION = 0.25
"""The clean share of a batch by default, where that many images are outside the bilevel
pass (RangeAugment and OnlineAugment also train on clean images beside augmented ones;
chosen between 0.25 and 0.5 on the development suite, see the README)."""


def default_clean_fraction(hypergradient_fraction=1.0, antithetic=True, train_unpaired=True):
    """`clean_fraction=None`: a quarter of the batch, or as many images as are outside the
    bilevel pass when fewer."""
    return min(DEFAULT_CLEAN_FRACTION,
               clean_share_limit(hypergradient_fraction, antithetic, train_unpaired))


def clean_share_limit(hypergradient_fraction=1.0, antithetic=True, train_unpaired=True):
    """The largest `clean_fraction`: the share of a batch outside the bilevel pass (with
    `antithetic` the pairs are the sub-batch's first half, and the rest is trained when
    `train_unpaired` or when the sub-batch is not the whole batch)."""
    if not antithetic:
        return 1.0 - hypergradient_fraction
    if train_unpaired or hypergradient_fraction < 1.0:
        return 1.0 - hypergradient_fraction / 2.0
    return 0.0


def check_config(config: Config) -> Config:
    """Validates a `Config`, raising `ConfigError` for the first bad value.

    Every field's `choices` and `lower_bound` (its metadata, which its flag shares) are
    enforced here, then the rules between fields.

    Returns:
        The config with its tuple fields as tuples.
    """

    def fail(condition, what, name):
        if condition:
            raise ConfigError(f"{what}. Received: {name}={getattr(config, name)!r}")

    hints = typing.get_type_hints(Config)
    config = config.replace(**{f.name: tuple(getattr(config, f.name)) for f in fields()
                               if hints[f.name] is tuple})
    for f in fields():
        value, choices, bound = getattr(config, f.name), f.metadata["choices"], \
            f.metadata["lower_bound"]
        if choices is not None:
            values = value if hints[f.name] is tuple else (value,)
            unknown = [v for v in values if v not in choices]
            fail(bool(unknown), f"{f.name} must be one of {list(choices)}"
                 + (f" (unknown: {unknown})" if hints[f.name] is tuple else ""), f.name)
        if hints[f.name] in (int, Optional[int]) and value is not None:
            fail(isinstance(value, bool) or int(value) != value,
                 f"{f.name} must be an integer", f.name)
        if bound is not None and value is not None:
            fail(value < bound, f"{f.name} must be >= {bound}", f.name)
        if f.metadata["items"] is int:
            fail(any(not isinstance(v, int) or isinstance(v, bool) for v in value),
                 f"{f.name} must hold integers", f.name)
    fail(not str(config.dataset).strip(), "dataset must be a data set name", "dataset")
    fail(config.model not in MODELS and not re.fullmatch(r"wrn\d+_\d+", str(config.model)),
         f"model must be one of {list(MODELS)} or wrn<depth>_<width>", "model")
    fail(not 0.0 <= config.val_fraction < 1.0, "val_fraction must be in [0, 1)", "val_fraction")
    fail(not 0.0 < config.hypergradient_fraction <= 1.0,
         "hypergradient_fraction must be in (0, 1]", "hypergradient_fraction")
    fail(not 0.0 <= config.val_gradient_average < 1.0,
         "val_gradient_average must be in [0, 1) (0: off)", "val_gradient_average")
    fail(config.lookahead_layers > 0 and config.inner_steps > 1,
         "lookahead_layers needs inner_steps=1 (set one of them back)", "lookahead_layers")
    fail(not config.augmenter_prior_width > 0.0,
         "augmenter_prior_width must be > 0 (inf for a flat prior)", "augmenter_prior_width")
    fail(not 0.0 < config.augmenter_prior_power < float("inf"),
         "augmenter_prior_power must be > 0 and finite (2: a Gaussian prior)",
         "augmenter_prior_power")
    clean = config.clean_fraction
    fail(clean is not None and not 0.0 <= clean < 1.0, "clean_fraction must be in [0, 1)",
         "clean_fraction")
    limit = clean_share_limit(config.hypergradient_fraction, config.antithetic,
                              config.train_unpaired)
    fail(clean is not None and clean > limit + 1e-9,
         f"clean_fraction takes its images from outside the bilevel pass, {limit:g} of the "
         "batch with these settings: lower it or --hypergradient_fraction", "clean_fraction")
    fail(not 0.0 <= config.augmenter_warmup < 1.0,
         "augmenter_warmup must be a fraction of the training steps in [0, 1)",
         "augmenter_warmup")
    fail(not 0.0 <= config.augmenter_init_magnitude <= 0.5,
         "augmenter_init_magnitude must be in [0, 0.5] (with --augmenter_init_relative: a "
         "fraction of each op's limit)", "augmenter_init_magnitude")
    fail(config.data_loading == "stream" and bool(str(config.eval_shift).strip()),
         "eval_shift transforms in-memory splits: it needs data_loading memory or auto",
         "data_loading")
    fail(bool(str(config.patch_grid).strip()) and parse_grid(config.patch_grid) is None,
         "patch_grid must be ROWSxCOLS with positive integers, e.g. 3x4", "patch_grid")
    fail(bool(str(config.patch_grid).strip()) and (config.dataset != "folder"
                                                   or config.data_loading == "memory"),
         "patch_grid needs dataset folder, streamed (data_loading auto or stream)",
         "patch_grid")
    fail(config.mode == "dabo" and config.val_fraction <= 0 and config.dataset != "folder",
         "mode dabo needs a validation split: set val_fraction > 0", "val_fraction")
    for name in ("lr", "augmenter_lr"):
        fail(not 0 < getattr(config, name) < float("inf"), f"{name} must be a positive number",
             name)
    fail(config.inner_lr is not None and not 0 < config.inner_lr < float("inf"),
         "inner_lr must be positive or None (the classifier's current learning rate)",
         "inner_lr")
    fail(not 0.0 <= config.momentum < 1.0, "momentum must be in [0, 1)", "momentum")
    for name in ("weight_decay", "augmenter_weight_decay", "randaugment_factor",
                 "augmenter_prior_pull"):
        fail(not 0 <= getattr(config, name) < float("inf"), f"{name} must be >= 0 and finite",
             name)
    fail(not 0.0 < config.lr_decay <= 1.0, "lr_decay must be in (0, 1]", "lr_decay")
    milestones = config.lr_milestones
    fail(any(m < 1 for m in milestones) or list(milestones) != sorted(set(milestones)),
         "lr_milestones must be increasing positive epoch numbers", "lr_milestones")
    # The two parsers live with the data and the callbacks (they need TensorFlow).
    from dabo_tf.data import parse_shift
    from dabo_tf.train.callbacks import parse_profile_batches

    try:
        parse_profile_batches(config.profile_batches, config.epochs, 1)
        parse_shift(config.eval_shift)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return config
