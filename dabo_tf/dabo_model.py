"""`DaboModel`: a Keras model that trains a classifier and learns its augmentation jointly."""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from dabo_tf import bilevel, data, distribute, keras_compat
from dabo_tf.augment.base import Augmenter
from dabo_tf.augment.ops import AUGMENT_UNIT
from dabo_tf.batchnorm import exact_batchnorm_moments, use_exact_batchnorm_moments
from dabo_tf.config import (
    DEFAULT_PRIOR_POWER,
    DEFAULT_PRIOR_PULL,
    DEFAULT_PRIOR_WIDTH,
    clean_share_limit,
    default_clean_fraction,
)
from dabo_tf.precision import cast_floats, compute_dtype

_register = keras.saving.register_keras_serializable(package="dabo_tf")


def _is_paired(structure) -> bool:
    """Whether `structure` (a batch or an element spec) is `((x, y), (x_val, y_val))`."""
    return (isinstance(structure, (tuple, list)) and len(structure) == 2
            and all(isinstance(part, (tuple, list)) and len(part) >= 2 for part in structure))


def _describe(x) -> str:
    if isinstance(x, tf.data.Dataset):
        return f"a dataset of {x.element_spec}"
    return type(x).__name__


_SINGLE_VALUED = {"flip": "probability", "vflip": "probability", "fill": "probability",
                  "cutout": "size", "augment": "probability"}
"""Ops whose policy is one value (`low == high`), and the name of that value."""


def policy_logs(augmenter) -> dict:
    """The policy of `augmenter` (or of a `DaboModel`) as flat epoch logs, in human units.

    An op sampled from a range gives `aug_<op>_low` and `aug_<op>_high` (so a learned shift
    of the mean shows); a single value gives `aug_flip_probability`, `aug_cutout_size`...;
    other numbers (a cutout's probability) give `aug_<op>_<key>`.
    """
    out = {}
    for op, entry in augmenter.policy().items():
        low, high = float(entry["low"]), float(entry["high"])
        if op in _SINGLE_VALUED:
            out[f"aug_{op}_{_SINGLE_VALUED[op]}"] = low
        else:
            out[f"aug_{op}_low"], out[f"aug_{op}_high"] = low, high
        for key, value in entry.items():
            if (key not in ("low", "high", "mean", "std", "unit") and np.isscalar(value)
                    and not isinstance(value, str)):  # not a scale's "draw"
                out[f"aug_{op}_{key}"] = float(value)
    return out


class PolicyLogger(keras.callbacks.Callback):
    """Adds the augmenter's policy (`policy_logs`) to the logs at the end of every epoch.

    Computed once per epoch, outside the training step (not a metric updated every step),
    and kept off the progress bar; `History`, `CSVLogger` and `TensorBoard` callbacks that
    come after it in the list record it. `DaboModel.fit` puts one first.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(policy_logs(self.model))


class QuietProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar without `skipped_steps` while no step has been skipped."""

    @staticmethod
    def _shown(logs):
        if not logs or logs.get("skipped_steps", 1.0) != 0.0:
            return logs
        return {k: v for k, v in logs.items() if k != "skipped_steps"}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._shown(logs))


class RunningAverage:
    """A bias-corrected exponential moving average of a list of tensors, over steps.

    `DaboModel(val_gradient_average=beta)` passes the look-ahead's validation gradient `v`
    through one (`dabo_tf.bilevel.unrolled_hypergradient(val_gradient_fn=...)`). Calling it
    with this step's values updates the average and returns it, divided by `1 - beta**n` after
    `n` updates as Adam's moments are, so the first step returns its own values. A call whose
    values are not all finite leaves the average as it was and returns those values (the step
    is then skipped by the caller's finiteness check). The variables live in this plain object,
    not in Keras' tracked state: they are not saved with the model, and a resumed run starts
    the average afresh. With several replicas the values must be equal on every replica (a
    sum over replicas); the first replica's update is kept.
    """

    def __init__(self, beta, shapes):
        self.beta = float(beta)
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.mean = [tf.Variable(tf.zeros(shape, tf.float32), trainable=False, aggregation=first)
                     for shape in shapes]
        self.count = tf.Variable(0.0, trainable=False, aggregation=first)

    def __call__(self, values):
        finite = distribute.all_finite(values)
        count = tf.where(finite, self.count + 1.0, self.count)
        mean = [tf.where(finite, self.beta * m + (1.0 - self.beta) * tf.cast(v, tf.float32), m)
                for m, v in zip(self.mean, values)]
        self.count.assign(count)
        for variable, m in zip(self.mean, mean):
            variable.assign(m)
        correction = 1.0 - tf.pow(self.beta, tf.maximum(count, 1.0))
        return [tf.where(finite, tf.cast(m / correction, v.dtype), v)
                for m, v in zip(mean, values)]


@_register
class DaboModel(keras.Model):
    """Trains `classifier` on data augmented by `augmenter`, learning the augmenter by DABO.

    Each training step receives a training batch and a validation batch, `((x, y), (x_val,
    y_val))` (see `dabo_tf.data.with_validation_stream`), and:

    1. augments `x` and computes the training loss and its gradient `g` (inner tape);
    2. takes a virtual SGD step `w' = w - inner_lr * g` (`classifier.stateless_call`,
       nothing assigned; BatchNorm statistics of virtual passes are discarded);
    3. computes the validation loss at `w'` and its gradient with respect to the augmenter
       through `g` (`dabo_tf.bilevel.unrolled_hypergradient`), and updates the augmenter;
    4. applies `g` to the classifier with its own optimizer (no second pass).

    `test_step` and `predict_step` use the classifier alone, without augmentation.

    Args:
        classifier: any Keras model mapping images to logits.
        augmenter: a learned augmenter layer; defaults to `dabo_tf.Augmenter()`.
        inner_lr: learning rate of the virtual step. Defaults to None: the classifier
            optimizer's current (scheduled) learning rate.
        inner_steps: unrolled inner steps. Defaults to 1, as in the paper.
        augmenter_update_every: update the augmenter every k-th step only; the steps in
            between are plain training on augmented data (cheaper). 0 freezes the augmenter
            (plain training on data it augments). Defaults to 1. With k > 1 the step is a
            `tf.cond` between the two kinds of step. Under `jit_compile=True` each kind is
            compiled by XLA on its own and the `tf.cond` stays outside XLA: XLA's own
            conditional around both made steps about 25x slower on CPU (every 2nd step: 55x
            a plain step, against 2.3x now).
        augmenter_warmup_steps: the augmenter does not learn during the first this many
            steps (plain steps on data it augments at its initial, small width): the
            classifier first learns the data, so the hypergradient's first signal is about
            generalising rather than about fitting (MADAO and LILA warm up likewise).
            Defaults to 0. With several replicas warm-up steps still compute the
            hypergradient and discard it.
        normalize_lookahead: hold the virtual step's length fixed so the hypergradient
            credits only the direction of the training gradient, not its size (harder
            augmentation makes it longer); see `dabo_tf.bilevel`. Defaults to True; False
            is the paper's step.
        calibrate_validation: scale the look-ahead's validation logits by the inverse
            temperature that fits them best (held constant; `dabo_tf.bilevel.
            calibrated_logits`), so the augmenter is credited for the classifier's ranking
            of the classes, not for making an overconfident classifier less confident,
            which lowers the validation cross-entropy whether or not it classifies better.
            Defaults to False.
        antithetic: in bilevel steps, train on the first half of each batch twice, each
            image once with a sampled transformation and once with its mirror (every op at
            the opposite end of its range). At a small width the hypergradient of a
            symmetric range is mostly the first-order effect of the noise, which averages out
            only over many steps; a mirrored pair cancels it exactly, leaving the
            second-order effect that says whether a wider range helps (measured on rotated
            digits: about twice the signal-to-noise ratio). With several replicas each pairs
            the first half of its own shard (so the images trained differ from a single
            device's). Defaults to True.
        train_unpaired: with `antithetic`, the half of the batch that is not paired gets an
            ordinary forward and backward pass (the augmenter frozen), and the classifier
            steps on the whole batch, every image with the same weight (a pair counts once),
            so every image is trained on in every epoch. Without it the unpaired half is
            dropped from bilevel steps and the classifier sees half the training set per
            epoch, which costs accuracy when the budget is short (CIFAR-10 with 1,000
            images and 30 epochs in the development suite: -2.5 points against no
            augmentation with it dropped, -0.7 trained). Costs a plain pass on half the
            batch, 1.5F (11.5F per bilevel step instead of 10F). With
            `hypergradient_fraction < 1` the rest of the batch is always trained. Defaults
            to True.
        clean_fraction: share of each training batch the classifier trains on
            un-augmented, taken from the end of the images outside the bilevel pass (at
            most `1 - hypergradient_fraction / 2` with `antithetic` and the rest trained,
            `1 - hypergradient_fraction` without pairs), in bilevel and plain steps alike.
            Where augmentation does not help, the classifier still fits the clean images
            (RangeAugment and OnlineAugment also augment only part of each batch); the
            hypergradient is unchanged. `policy()` reports it as the gate `augment`
            (probability `1 - clean_fraction`), so a frozen policy trains alike. Measured
            on the development suite (3 seeds): on 1,000 CIFAR-10 images at 30 epochs,
            where every augmentation costs accuracy, 48.9 +- 0.8% with a quarter clean,
            49.5 +- 0.9 with half and 47.6 +- 1.1 with none (no augmentation 48.3 +- 1.2);
            on rotated digits 93.6, 89.9 and 93.1 (no augmentation 75.1). Defaults to None:
            a quarter of the batch, or as many images as are outside the bilevel pass when
            fewer (0 without pairs on the whole batch).
        prior_pull: after each augmenter update, every learned range (`LearnedAffine`,
            `LearnedColor`) of half-width `w` is multiplied by
            `exp(lr * prior_pull * decay * (1 - (w / w0)**2))`, `lr` the augmenter
            optimizer's learning rate, `decay` the classifier's scheduled learning rate over
            its first value (the look-ahead step's size, to which the hypergradient is
            proportional, so the pull fades with the signal it competes with; 1 with a fixed
            `inner_lr`) and `w0` the prior's width (`prior_width`): the gradient of a KL
            divergence from each op's uniform distribution to the prior, as SLACK
            regularises toward its prior, applied decoupled
            from the hypergradient (as AdamW decouples weight decay), so that its strength
            is in units of the optimizer's normalised step whatever the hypergradient's
            scale. Why: the one-step hypergradient of a range is local, the second-order
            effect of widening it a little, and near the identity it is flat (on CIFAR-10
            images with rotated validation images it sees no benefit in widening a rotation
            of +-6 degrees, and a clear one at +-17: `benchmarks/hypergradient_snr.py`);
            with Adam a range there only random-walks, and which op leaves the flat region
            first is chance. The pull walks every range out; where a wider range hurts, the
            hypergradient holds it back (its normalised step must exceed the pull). Layers
            without learned ranges (flips, cutout, the fill, the noise network) are left
            alone. Defaults to 0.1 (0 turns it off).
        prior_width: the prior `prior_pull` pulls toward: a zero-centred Gaussian whose
            uniform-equivalent half-width is `prior_width` times each op's limit
            (`MAX_MAGNITUDE`). The pull widens a range narrower than that and narrows a wider
            one (`_LearnedDistribution.widen`), so where the hypergradient is flat a range
            settles at the prior's width instead of running to its limit: with a flat prior
            (`float("inf")`, the pull only widens) translations and scales on digits ran to
            1.6-2.2x their true width. Defaults to 0.5: TrivialAugment's mean strength (it
            samples magnitudes uniformly up to the limit), +-90 degrees, shifts of +-25%,
            zoom x0.75-1.25 (x0.71-1.41 drawn log-uniformly).
        prior_power: the shape of that prior: a generalised Gaussian whose density is
            proportional to `exp(-|x / s|**prior_power)`, with the same resting width. The
            pull's step is `lr * prior_pull * decay * (1 - (w / w0)**prior_power)`: 2 (the
            Gaussian) by default; a larger power leaves ranges below `w0` nearly as a flat
            prior would and holds them back harder above it, where a small validation split
            can lean a range wider than the test data wants (`_LearnedDistribution.widen`).
        hypergradient_dtype: compute dtype of the classifier's passes inside a bilevel step
            (the training pass that is differentiated twice and the look-ahead validation
            pass) when the classifier uses a mixed-precision policy. Defaults to
            `"float32"`: the hypergradient path stays in float32, as second derivatives
            in bfloat16 lose precision (measured against float32: 1-3% relative error for
            `small_cnn` with mixed_bfloat16 and up to 18% for a tiny model; 0.1-1% with
            mixed_float16). With `augmenter_update_every=1` every step is a bilevel step,
            so the classifier then trains in float32. `None` keeps the classifier's own
            policy there: faster on accelerators, less exact. Plain steps
            (`augmenter_update_every > 1`) always use the classifier's own policy.
        hypergradient_fraction: share of each training batch the bilevel pass (the training
            pass differentiated twice, and the look-ahead from its gradient) runs on; the
            rest of the batch gets an ordinary forward and backward pass, and the classifier
            steps on the whole batch (the two gradients weighted by their distinct images;
            a mirrored pair counts once). In units of a forward pass F a step costs
            `3F + 4F * fraction` plus the validation pass (`3F * val_batch / batch`), 10F
            for the whole batch. With `antithetic` the pairs are made
            within the sub-batch (its first half twice), so the rest is `1 - fraction / 2` of
            the batch and the step `3F * (1 + fraction / 2) + 4F * fraction` plus the
            validation pass: 11.5F for the whole batch (`train_unpaired`); with 1/4 of the
            batch and a validation batch of 1/4, 5.1F (1.71x a plain step, counted by
            `benchmarks/bench_step.py --flops`). Shrink the validation batch less than the
            share: the hypergradient's signal falls with both, on rotated digits faster
            with the validation batch (`benchmarks/hypergradient_snr.py --shares`); with
            1/4 of the batch and a validation batch of 1/2 (5.9F, 1.96x) it keeps the most
            under 2x, still 1-3 points short of the exact step on the development suite's
            known tasks. Defaults to 1.0 (the exact step on the whole batch).
        lookahead_whole_batch: where images lie outside the bilevel pass (a
            `hypergradient_fraction` below 1, or the unpaired half with `antithetic` and
            `train_unpaired`), take the look-ahead along the classifier's whole step (the
            pass's gradient mixed with the rest's, as the classifier steps) instead of the
            pass's gradient alone, and normalise along it. Why: normalising along the
            gradient of a small batch penalises the noise augmentation adds to it, more the
            smaller the batch (see `dabo_tf.bilevel`). Costs nothing. Measured on the
            development suite: the known ranges then overshoot (1.3-1.8x the truth), no
            gain on CIFAR-10, no cure for a sub-batch's noise. Defaults to False.
        lookahead_layers: the look-ahead steps only the classifier's last this many layers
            that have trainable weights (its head), the rest held fixed; 0 steps every
            weight (the exact step). Cheaper: nothing is differentiated twice outside the
            head, so the pull-back into the augmenter is one pass down the network's
            forward chain (about 1F) and the look-ahead's validation pass a forward pass
            (1F), against 4F and 3F; with 1 a bilevel step is about 6.5F, 2.2x a plain
            step, with 3 (`small_cnn`'s last convolution, its BatchNorm and the Dense)
            2.3x, against 3.8x (counted by `benchmarks/bench_step.py --flops`). The
            hypergradient then sees how augmentation turns the head's gradient toward the
            validation gradient, through the features, but not how it changes what the
            earlier layers learn (see `dabo_tf.bilevel`). Measured on the development
            suite: 1 misses shifts (after global pooling the Dense layer's gradient barely
            sees where a digit is), 3 comes close to the exact step (within the seeds'
            noise over five seeds; on shifted digits two seeds of ten learn too small a
            shift, against one with the exact step).
            Needs `inner_steps=1`. Defaults to 0.
        val_gradient_average: `beta` of a running average of the look-ahead's validation
            gradient `v` over bilevel steps (bias-corrected, `RunningAverage`); 0 uses each
            step's own `v` (the paper). The hypergradient `-lr v . dg/dtheta` is a product
            of two noisy factors, `v` the noisier the smaller the validation batch.
            Averaging the hypergradient over steps (as Adam's first moment does) leaves the
            noise of the augmenter's path over many steps as it is; averaging `v` first
            shrinks the part that is the product of the two noises, by `(1 - beta) / (1 +
            beta)` in variance, for the price of a `v` about `1 / (1 - beta)` steps stale.
            Costs one gradient-sized buffer (the head's with `lookahead_layers`) and no
            computation; it lets a validation batch of an eighth of the training batch keep
            the accuracy of a whole one (README, DABO step cost). Defaults to 0.
        skip_non_finite: guard against non-finite losses or gradients. When a step's
            training loss, validation loss, gradients or hypergradients are not all finite,
            neither the classifier nor the augmenter is updated and the `skipped_steps`
            metric counts it. Under a `LossScaleOptimizer` (mixed_float16) the classifier
            gradients are always handed to it, since it skips and lowers its scale itself.

    Logged metrics: `loss`, compiled metrics (on augmented training data), `lookahead_val_loss`
    (validation loss at w'), `hypergrad_norm` and `skipped_steps` (on the progress bar only
    when a step was skipped); at each epoch's end `fit` adds the policy (`aug_<op>_low`,
    `aug_<op>_high`... see `policy_logs`) to the logs, so `History`, `CSVLogger` and
    `TensorBoard` record it.

    Example:
        ```python
        model = dabo_tf.DaboModel(classifier, dabo_tf.Augmenter())
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      augmenter_optimizer=keras.optimizers.Adam(0.03),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=True)
        model.fit(dabo_tf.data.with_validation_stream(train_ds, val_ds), epochs=10,
                  validation_data=test_ds)
        model.classifier.export("saved_model")
        ```
    """

    def __init__(self, classifier, augmenter=None, *, inner_lr=None, inner_steps=1,
                 augmenter_update_every=1, augmenter_warmup_steps=0,
                 normalize_lookahead=True, antithetic=True, hypergradient_dtype="float32",
                 skip_non_finite=True, hypergradient_fraction=1.0, train_unpaired=True,
                 clean_fraction=None, prior_pull=DEFAULT_PRIOR_PULL,
                 prior_width=DEFAULT_PRIOR_WIDTH, prior_power=DEFAULT_PRIOR_POWER,
                 lookahead_whole_batch=False, calibrate_validation=False,
                 lookahead_layers=0, val_gradient_average=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(classifier, dict):
            classifier = keras.saving.deserialize_keras_object(classifier)
        if isinstance(augmenter, dict):
            augmenter = keras.saving.deserialize_keras_object(augmenter)
        self.classifier = use_exact_batchnorm_moments(classifier)
        self.augmenter = augmenter if augmenter is not None else Augmenter()
        self.inner_lr = inner_lr
        self.inner_steps = int(inner_steps)
        self.augmenter_update_every = int(augmenter_update_every)
        self.augmenter_warmup_steps = int(augmenter_warmup_steps)
        self.normalize_lookahead = bool(normalize_lookahead)
        self.antithetic = bool(antithetic)
        self.train_unpaired = bool(train_unpaired)
        self.skip_non_finite = bool(skip_non_finite)
        self.hypergradient_fraction = float(hypergradient_fraction)
        self.lookahead_whole_batch = bool(lookahead_whole_batch)
        self.calibrate_validation = bool(calibrate_validation)
        self.lookahead_layers = int(lookahead_layers)
        self.val_gradient_average = float(val_gradient_average)
        if not 0.0 <= self.val_gradient_average < 1.0:
            raise ValueError("val_gradient_average must be in [0, 1) (0: off). Received: "
                             f"val_gradient_average={val_gradient_average}")
        self._val_gradient_average = None  # a RunningAverage, made by _val_gradient_fn
        if self.lookahead_layers < 0 or (self.lookahead_layers and self.inner_steps > 1):
            raise ValueError(
                "lookahead_layers must be >= 0, and 0 with inner_steps > 1. Received: "
                f"lookahead_layers={lookahead_layers}, inner_steps={inner_steps}")
        if not 0.0 < self.hypergradient_fraction <= 1.0:
            raise ValueError("hypergradient_fraction must be in (0, 1]. "
                             f"Received: hypergradient_fraction={hypergradient_fraction}")
        if clean_fraction is None:
            clean_fraction = default_clean_fraction(self.hypergradient_fraction,
                                                    self.antithetic, self.train_unpaired)
        self.clean_fraction = float(clean_fraction)
        self.prior_pull = float(prior_pull)
        if not 0.0 <= self.prior_pull < float("inf"):
            raise ValueError("prior_pull must be >= 0 and finite. "
                             f"Received: prior_pull={prior_pull}")
        self.prior_width = float(prior_width)
        self.prior_power = float(prior_power)
        if not 0.0 < self.prior_power < float("inf"):
            raise ValueError("prior_power must be > 0 and finite (2: a Gaussian prior). "
                             f"Received: prior_power={prior_power}")
        if not self.prior_width > 0.0:
            raise ValueError("prior_width must be > 0 (a fraction of each op's limit; "
                             f"float('inf') for a flat prior). Received: prior_width={prior_width}")
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ValueError("clean_fraction must be in [0, 1). "
                             f"Received: clean_fraction={clean_fraction}")
        outside = clean_share_limit(self.hypergradient_fraction, self.antithetic,
                                    self.train_unpaired)
        if self.clean_fraction > outside + 1e-9:
            raise ValueError(
                "The clean images come from the images outside the bilevel pass, "
                f"{outside:g} of the batch here (1 - hypergradient_fraction, or "
                "1 - hypergradient_fraction / 2 with antithetic pairs and the rest trained): "
                "lower clean_fraction or hypergradient_fraction. "
                f"Received: clean_fraction={clean_fraction}")
        if hypergradient_dtype not in (None, "float32"):
            raise ValueError("hypergradient_dtype must be 'float32' or None (the "
                             "classifier's own policy). Received: "
                             f"hypergradient_dtype={hypergradient_dtype!r}")
        self.hypergradient_dtype = hypergradient_dtype
        self._xla_steps = None  # (bilevel, plain) XLA functions; see make_train_function
        if self.augmenter_update_every < 0:
            raise ValueError("augmenter_update_every must be >= 0. "
                             f"Received: augmenter_update_every={augmenter_update_every}")
        if self.augmenter_warmup_steps < 0:
            raise ValueError("augmenter_warmup_steps must be >= 0. "
                             f"Received: augmenter_warmup_steps={augmenter_warmup_steps}")
        if self.antithetic and not hasattr(self.augmenter, "mirror_transformation"):
            raise ValueError("antithetic=True needs an augmenter with `mirror_transformation` "
                             "(every dabo_tf.augment layer has one); pass antithetic=False for "
                             f"this one. Received: augmenter={type(self.augmenter).__name__}")
        if not self.augmenter.built and classifier.built:
            self.augmenter.build(tuple(classifier.inputs[0].shape))
        self.val_loss_tracker = keras.metrics.Mean(name="lookahead_val_loss")
        self.hypergrad_norm_tracker = keras.metrics.Mean(name="hypergrad_norm")
        self.skipped_tracker = keras.metrics.Sum(name="skipped_steps")
        self.built = True

    def compile(self, optimizer="rmsprop", augmenter_optimizer=None, **kwargs):
        """Configures training. Same as `keras.Model.compile`, plus `augmenter_optimizer`.

        Args:
            augmenter_optimizer: optimizer of the augmenter. Defaults to
                `keras.optimizers.Adam(0.03)` (steps of about 3% of a log half-width).
        """
        super().compile(optimizer=optimizer, **kwargs)
        # Build the classifier's optimizer on the classifier's weights only (Keras would build
        # it on every trainable variable, augmenter included, which also breaks restoring
        # its state with BackupAndRestore).
        if self.classifier.trainable_variables and not self.optimizer.built:
            self.optimizer.build(self.classifier.trainable_variables)
        self.augmenter_optimizer = keras.optimizers.get(augmenter_optimizer or
                                                        keras.optimizers.Adam(0.03))
        if self.augmenter.trainable_variables and not self.augmenter_optimizer.built:
            self.augmenter_optimizer.build(self.augmenter.trainable_variables)
        if self.classifier.built:
            self._val_gradient_fn()  # its variables, under the strategy's scope

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        self._xla_steps = None
        if not (self.jit_compile and self._alternates() and not self.run_eagerly):
            return super().make_train_function(force=force)
        # Alternating kinds of step: compile each with XLA on its own and choose between
        # them in the (not compiled) training function, rather than compiling one XLA
        # program around a conditional.
        self._xla_steps = (tf.function(self._bilevel_update, jit_compile=True),
                           tf.function(self._plain_update, jit_compile=True))
        with keras_compat.jit_compile_off(self):
            super().make_train_function(force=True)
        return self.train_function

    def fit(self, x=None, y=None, *, hypergradient_data=None, hypergradient_split=None,
            **kwargs):
        """Keras' `fit`, given the second stream DABO learns the augmenter from.

        DABO trains on pairs of batches `((x, y), (x_val, y_val))`: the augmenter learns from
        the validation batches (the look-ahead loss), never from `validation_data`, which
        stays Keras' per-epoch evaluation. Give the validation images one of three ways:

        - `fit(train_ds, hypergradient_data=val_ds)`: `tf.data` datasets of `(images,
          labels)` batches (`hypergradient_data` is repeated as needed);
        - `fit(x, y, hypergradient_split=0.2, batch_size=32)`: numpy arrays, a stratified
          fraction held out for the augmenter (`hypergradient_data=(x_val, y_val)` passes
          arrays of your own);
        - `fit(dabo_tf.data.with_validation_stream(train_ds, val_ds))`: already paired.

        Anything else raises a `ValueError` that names these calls.
        """
        arrays = x is not None and not isinstance(x, tf.data.Dataset)
        if hypergradient_split is not None:
            if not arrays or y is None or hypergradient_data is not None:
                raise ValueError("hypergradient_split holds out part of numpy arrays x, y: "
                                 "call fit(x, y, hypergradient_split=0.2). "
                                 f"Received: x={type(x).__name__}, "
                                 f"hypergradient_data={type(hypergradient_data).__name__}")
            from sklearn.model_selection import train_test_split

            x, x_val, y, y_val = train_test_split(
                np.asarray(x), np.asarray(y), test_size=hypergradient_split,
                stratify=np.asarray(y), random_state=0)
            hypergradient_data = (x_val, y_val)
        if hypergradient_data is not None:
            batch_size = kwargs.pop("batch_size", None) or 32
            if arrays:
                if kwargs.get("validation_split"):
                    raise ValueError("validation_split cannot be combined with "
                                     "hypergradient data: pass validation_data=(x, y). "
                                     f"Received: validation_split={kwargs['validation_split']}")
                x = data.make_pipeline(x, y, batch_size, training=kwargs.pop("shuffle", True),
                                       drop_remainder=True)
                y = None
            if not isinstance(hypergradient_data, tf.data.Dataset):
                hypergradient_data = data.make_pipeline(*hypergradient_data, batch_size,
                                                        training=True)
            x = data.with_validation_stream(x, hypergradient_data)
        elif not (isinstance(x, tf.data.Dataset) and _is_paired(x.element_spec)):
            raise ValueError(
                "DaboModel learns its augmenter from a validation stream besides the training "
                "data. Call fit(train_ds, hypergradient_data=val_ds), fit(x, y, "
                "hypergradient_split=0.2), or fit(dabo_tf.data.with_validation_stream("
                "train_ds, val_ds)); validation_data stays Keras' evaluation. "
                f"Received: x={_describe(x)}")
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, PolicyLogger) for c in callbacks):
            callbacks.insert(0, PolicyLogger())
        if not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
            callbacks.insert(0, QuietProgbar())
        return super().fit(x, y, callbacks=callbacks, **kwargs)

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    # ----------------------------------------------------------------------------------
    # Training.

    def _loss(self, y, logits):
        return self.compute_loss(y=y, y_pred=logits, training=True)

    def inner_learning_rate(self):
        """The virtual step's learning rate: `inner_lr`, or the optimizer's current one."""
        if self.inner_lr is not None:
            return self.inner_lr
        return self.optimizer.learning_rate

    def _guards_classifier(self):
        """The loss-scale rule, stated once: whether this model skips non-finite classifier steps.

        A `LossScaleOptimizer` (mixed_float16) checks the classifier's gradients itself,
        skips non-finite steps and must see every step to adapt its scale, so under it the
        gradients are neither checked here nor withheld from it.
        """
        return not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    def _update_classifier(self, finite, grads):
        """Applies `grads` to the classifier, unless this model guards it and `finite` fails."""
        if self._guards_classifier():
            distribute.run_if(finite, self._apply_classifier, grads)
        else:
            self._apply_classifier(grads)

    def _finite_on_all_replicas(self, *structures):
        """True when all tensors are finite on every replica (or when the guard is off)."""
        if not self.skip_non_finite:
            return tf.constant(True)
        finite = distribute.all_finite(*structures)
        all_reduce = distribute.replica_all_reduce_sum()
        if all_reduce is not None:
            finite = all_reduce([tf.cast(tf.logical_not(finite), tf.float32)])[0] < 0.5
        return finite

    def _apply_classifier(self, grads):
        self.optimizer.apply(grads, self.classifier.trainable_variables)

    def hypergradient(self, x, y, x_val, y_val, transformation=None, rest=None):
        """Runs the bilevel maths of one step without updating anything.

        Args:
            x, y: training batch (augmented here).
            x_val, y_val: validation batch (not augmented).
            transformation: optional fixed augmenter sample (replays it); by default a
                fresh one is drawn from the augmenter's seed generator.
            rest: optional `(share, gradients)` of images outside this pass, which make the
                look-ahead the classifier's whole step (`lookahead_whole_batch`; see
                `dabo_tf.bilevel.unrolled_hypergradient`).

        Returns:
            A `dabo_tf.bilevel.HypergradientResult` whose `aux` is `(logits, updated
            non-trainable values of the real training pass)`.
        """
        classifier = self.classifier
        weights = [tf.convert_to_tensor(v) for v in classifier.trainable_variables]
        non_trainable = [tf.convert_to_tensor(v) for v in classifier.non_trainable_variables]

        def augment():
            return self.augmenter(x, training=True, transformation=transformation)

        dtype = self.hypergradient_dtype

        def train_loss(w, images):
            # This pass is differentiated twice.
            with exact_batchnorm_moments(), compute_dtype(classifier, dtype):
                logits, new_non_trainable = classifier.stateless_call(
                    w, non_trainable, images, training=True)
            return self._loss(y, logits), (logits, new_non_trainable)

        def val_loss(w):
            # Batch statistics of the validation batch; the updated BN state is discarded.
            with compute_dtype(classifier, dtype):
                logits, _ = classifier.stateless_call(w, non_trainable, x_val, training=True)
            if self.calibrate_validation:
                logits = bilevel.calibrated_logits(logits, y_val)
            return self._loss(y_val, logits)

        return bilevel.unrolled_hypergradient(
            augment, train_loss, val_loss, weights, self.augmenter.trainable_variables,
            inner_lr=self.inner_learning_rate(), inner_steps=self.inner_steps,
            all_reduce=distribute.replica_all_reduce_sum(),
            loss_scale=self.optimizer.scale_loss(tf.constant(1.0)),
            normalize_lookahead=self.normalize_lookahead, rest=rest,
            lookahead_mask=self._lookahead_mask(),
            val_gradient_fn=self._val_gradient_fn())

    def _val_gradient_fn(self):
        """The running average of `v` (`val_gradient_average`), created on first use; None
        when off."""
        if not self.val_gradient_average:
            return None
        if self._val_gradient_average is None:
            mask = self._lookahead_mask()
            self._val_gradient_average = RunningAverage(
                self.val_gradient_average,
                [v.shape for i, v in enumerate(self.classifier.trainable_variables)
                 if mask is None or mask[i]])
        return self._val_gradient_average

    @tf.autograph.experimental.do_not_convert  # Python at trace time (AutoGraph warned)
    def _lookahead_mask(self):
        """Which classifier weights the look-ahead moves (`lookahead_layers`); None: all."""
        if not self.lookahead_layers:
            return None

        # The layers in the order they run, nested models opened: `Model.layers` is that
        # order, `keras_compat.flatten_layers` is not (in ResNet-50's nested model its last
        # layers are the stem's).
        def leaves(model):
            for layer in model.layers:
                yield from leaves(layer) if getattr(layer, "layers", None) else (layer,)

        layers = [layer for layer in leaves(self.classifier) if layer.trainable_weights]
        moved = {id(v) for layer in layers[-self.lookahead_layers:]
                 for v in layer.trainable_weights}
        return [id(v) in moved for v in self.classifier.trainable_variables]

    def _prior_pull_step(self):
        """This step's widening of the learned ranges, `log(factor)` (see `prior_pull`):
        the augmenter's learning rate times `prior_pull`, times the look-ahead step's size
        relative to the first step's (the classifier's scheduled learning rate now over
        its value at step 0; 1 with a fixed `inner_lr` or learning rate)."""
        pull = tf.cast(self.augmenter_optimizer.learning_rate, tf.float32) * self.prior_pull
        schedule = keras_compat.learning_rate_schedule(self.optimizer)
        if self.prior_pull == 0.0 or self.inner_lr is not None or schedule is None:
            return pull
        first = tf.cast(schedule(0), tf.float32)
        now = tf.cast(self.optimizer.learning_rate, tf.float32)
        return pull * tf.clip_by_value(tf.math.divide_no_nan(now, first), 0.0, 1.0)

    def _ranged_layers(self):
        """The augmenter's layers with learned ranges (`widen`), which `prior_pull` widens."""
        if self.prior_pull == 0.0:
            return []
        parts = self.augmenter.parts() if hasattr(self.augmenter, "parts") else [self.augmenter]
        return [layer for layer in parts if hasattr(layer, "widen")]

    def _warmed_up(self):
        """True once the augmenter may learn (after `augmenter_warmup_steps` steps)."""
        return self.optimizer.iterations >= self.augmenter_warmup_steps

    def _alternates(self):
        """Whether steps alternate between bilevel and plain ones (a `tf.cond` per step)."""
        every = self.augmenter_update_every
        return ((every > 1 or (every == 1 and self.augmenter_warmup_steps > 0))
                and self.distribute_strategy.num_replicas_in_sync == 1)

    def antithetic_batch(self, x, y):
        """The first half of the batch twice, with a sample and its mirror image.

        Returns `(x, y, transformation)`: image i and image i + n/2 are the same, their
        transformations at opposite ends of each op's range (`mirror_transformation`).
        """
        if x.shape[0] is not None and x.shape[0] < 2:
            raise ValueError("antithetic=True pairs the images of a batch, so each replica's "
                             "batch needs at least 2 images; use a larger batch or "
                             f"antithetic=False. Received: batch_size={x.shape[0]} (per replica)")
        half = tf.shape(x)[0] // 2
        x, y = x[:half], y[:half]
        sample = self.augmenter.get_random_transformation(x)
        mirrored = self.augmenter.mirror_transformation(sample)
        transformation = tf.nest.map_structure(lambda a, b: tf.concat([a, b], 0), sample,
                                               mirrored)
        return tf.concat([x, x], 0), tf.concat([y, y], 0), transformation

    def split_for_hypergradient(self, x, y):
        """`(x_sub, y_sub, x_rest, y_rest)`: the bilevel pass's share of the batch and the
        rest (with `antithetic`, the sub-batch's first half is paired: the rest starts after
        it, so every image is trained on)."""
        n = x.shape[0]
        if n is not None:  # static shapes (XLA, the FLOP counter) when the batch is known
            k = min(max(2, round(self.hypergradient_fraction * n)), n)
        else:
            n = tf.shape(x)[0]
            k = tf.minimum(n, tf.maximum(2, tf.cast(tf.round(
                self.hypergradient_fraction * tf.cast(n, tf.float32)), tf.int32)))
        start = k // 2 if self.antithetic else k
        return x[:k], y[:k], x[start:], y[start:]

    def policy(self) -> dict:
        """The augmentation the classifier trains with, in human units: the augmenter's
        `policy()` and, with `clean_fraction`, the gate `augment` (the probability that an
        image is augmented, `1 - clean_fraction`), so a frozen policy trains alike."""
        policy = self.augmenter.policy()
        if self.clean_fraction > 0:
            p = 1.0 - self.clean_fraction
            policy["augment"] = {"low": p, "high": p, "unit": AUGMENT_UNIT}
        return policy

    def _n_clean(self, x):
        """How many images of the training batch `x` stay un-augmented (`clean_fraction`)."""
        if x.shape[0] is not None:  # static shapes (XLA, the FLOP counter)
            return round(self.clean_fraction * x.shape[0])
        return tf.cast(tf.round(self.clean_fraction * tf.cast(tf.shape(x)[0], tf.float32)),
                       tf.int32)

    def _frozen_augment(self, x, n_clean=0):
        """`x` augmented by the frozen augmenter, its last `n_clean` images left clean."""
        images = self.augmenter(x, training=True)
        if not (isinstance(n_clean, int) and n_clean == 0):
            n = tf.shape(x)[0]
            clean = tf.range(n) >= n - tf.minimum(tf.cast(n_clean, tf.int32), n)
            images = tf.where(clean[:, None, None, None], tf.cast(x, images.dtype), images)
        return tf.stop_gradient(images)

    def _plain_gradients(self, x, y, n_clean=0):
        """Loss, logits, scaled gradients and new BN statistics of an ordinary pass on `x`
        augmented (the augmenter frozen; the last `n_clean` images clean), without
        updating anything."""
        classifier = self.classifier
        images = self._frozen_augment(x, n_clean)
        weights = [tf.convert_to_tensor(v) for v in classifier.trainable_variables]
        non_trainable = [tf.convert_to_tensor(v) for v in classifier.non_trainable_variables]
        with tf.GradientTape() as tape:
            tape.watch(weights)
            logits, new_non_trainable = classifier.stateless_call(weights, non_trainable, images,
                                                                  training=True)
            loss = self._loss(y, logits)
            scaled = self.optimizer.scale_loss(loss)
        return loss, logits, tape.gradient(scaled, weights), new_non_trainable

    def _bilevel_update(self, x, y, x_val, y_val):
        classifier = self.classifier
        all_reduce = distribute.replica_all_reduce_sum()
        transformation = None
        rest = None
        if self.hypergradient_fraction < 1.0 or (self.antithetic and self.train_unpaired):
            n_clean = self._n_clean(x)
            x, y, x_rest, y_rest = self.split_for_hypergradient(x, y)
            rest = (y_rest, *self._plain_gradients(x_rest, y_rest, n_clean))
        if self.antithetic:
            x, y, transformation = self.antithetic_batch(x, y)
        if rest is not None:
            # The classifier steps on the whole batch: both passes, weighted by their
            # distinct images (a mirrored pair is one image under two transformations), so
            # with the identity transformation the step is SGD on the whole batch.
            y_rest, loss_rest, logits_rest, grads_rest, non_trainable_rest = rest
            n_sub, n_rest = (tf.cast(tf.shape(t)[0], tf.float32) for t in (y, y_rest))
            if self.antithetic:
                n_sub = n_sub / 2.0
            share = n_sub / (n_sub + n_rest)
        # Inner step and hypergradient.
        result = self.hypergradient(
            x, y, x_val, y_val, transformation,
            rest=(share, grads_rest) if rest is not None and self.lookahead_whole_batch
            else None)
        logits, new_non_trainable = result.aux
        loss, gradients = result.train_loss, result.gradients
        if rest is not None:
            mix = functools.partial(bilevel.mix, share)
            loss = mix(tf.cast(loss, tf.float32), loss_rest)
            gradients = [mix(g, r) for g, r in zip(gradients, grads_rest)]
            new_non_trainable = [mix(tf.cast(a, v.dtype), b) for a, b, v in zip(
                new_non_trainable, non_trainable_rest, classifier.non_trainable_variables)]
            logits = tf.concat([tf.cast(logits, tf.float32), tf.cast(logits_rest, tf.float32)],
                               0)
            y = tf.concat([y, tf.cast(y_rest, y.dtype)], 0)

        checked = [loss, result.val_loss, result.hypergradients]
        if self._guards_classifier():
            checked.append(gradients)
        finite = self._finite_on_all_replicas(*checked)

        def update_augmenter(hypergradients, pull):
            self.augmenter_optimizer.apply(hypergradients, self.augmenter.trainable_variables)
            for layer in self._ranged_layers():
                layer.widen(pull, self.prior_width, self.prior_power)

        def update_statistics(statistics_change):
            # BatchNorm statistics come from the real training pass only.
            for var, change in zip(classifier.non_trainable_variables, statistics_change):
                var.assign_add(change)

        # Update augmenter. On several replicas warm-up steps are bilevel steps too (no
        # tf.cond around cross-replica updates), whose hypergradients are discarded here.
        learn = finite
        if all_reduce is not None and self.augmenter_warmup_steps > 0:
            learn = tf.logical_and(finite, self._warmed_up())
        pull = self._prior_pull_step()
        distribute.run_if(learn, update_augmenter, result.hypergradients, pull)
        # Update classifier.
        statistics_change = [tf.cast(new, v.dtype) - v for new, v in
                             zip(new_non_trainable, classifier.non_trainable_variables)]
        self._update_classifier(finite, gradients)
        distribute.run_if(finite, update_statistics, statistics_change)
        skipped = 1.0 - tf.cast(finite, tf.float32)

        hyper = result.hypergradients
        hyper_norm = tf.linalg.global_norm(hyper if all_reduce is None else all_reduce(hyper))
        self.val_loss_tracker.update_state(
            keras_compat.unscale_loss_for_distribution(result.val_loss))
        self.hypergrad_norm_tracker.update_state(hyper_norm)
        self.skipped_tracker.update_state(skipped)
        return loss, logits, y

    def _plain_update(self, x, y):
        """An ordinary step on augmented data, the augmenter frozen (between bilevel steps)."""
        images = self._frozen_augment(x, self._n_clean(x))
        with tf.GradientTape() as tape:
            logits = self.classifier(images, training=True)
            loss = self._loss(y, logits)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.classifier.trainable_variables)
        finite = tf.constant(True)
        if self._guards_classifier():
            finite = self._finite_on_all_replicas(loss, grads)
            self.skipped_tracker.update_state(1.0 - tf.cast(finite, tf.float32))
        self._update_classifier(finite, grads)
        return loss, logits, y

    def train_step(self, data):
        if len(data) == 3 and data[1] is None and data[2] is None:  # from train_on_batch
            data = data[0]
        if not _is_paired(data):
            raise ValueError("DaboModel.train_step takes ((x, y), (x_val, y_val)): see "
                             f"DaboModel.fit. Received: {_describe(data)}")
        (x, y), (x_val, y_val) = data
        every = self.augmenter_update_every
        if every > 1 and distribute.replica_all_reduce_sum() is not None:
            raise NotImplementedError(
                "augmenter_update_every > 1 is not supported with several replicas: "
                "TensorFlow cannot run cross-replica optimizer updates inside the tf.cond "
                "that alternates the two kinds of step. Use augmenter_update_every=1. "
                f"Received: augmenter_update_every={every}")
        # Each kind of step returns its loss, logits and the labels they belong to (an
        # antithetic bilevel step trains on half the batch, twice).
        if every == 0:
            loss, logits, y = self._plain_update(x, y)
        elif not self._alternates():  # (never with several replicas)
            loss, logits, y = self._bilevel_update(x, y, x_val, y_val)
        else:
            bilevel_update, plain_update = (self._xla_steps
                                            or (self._bilevel_update, self._plain_update))
            # The bilevel pass may compute in float32 (`hypergradient_dtype`) and the plain
            # one in a mixed policy: both branches hand float32 to the metrics.
            loss, logits, y = tf.cond(
                tf.logical_and(self._warmed_up(),
                               tf.equal(self.optimizer.iterations % every, 0)),
                lambda: cast_floats(bilevel_update(x, y, x_val, y_val)),
                lambda: cast_floats(plain_update(x, y)))

        keras_compat.loss_tracker(self).update_state(
            keras_compat.unscale_loss_for_distribution(loss), sample_weight=tf.shape(y)[0])
        return self.compute_metrics(x, y, logits)

    def _training_only_metrics(self):
        return {m.name for m in (self.val_loss_tracker, self.hypergrad_norm_tracker,
                                 self.skipped_tracker)}

    def test_step(self, data):
        logs = super().test_step(data)
        hidden = self._training_only_metrics()
        return {k: v for k, v in logs.items() if k not in hidden}

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds compiled metrics from the first batch, which here is
        # ((x, y), (x_val, y_val)): hand it the training pair only.
        if data_batch is None and iterator is not None:
            for _, _, data_or_iterator in iterator:
                if isinstance(data_or_iterator, (list, tuple)):
                    data_batch = data_or_iterator[0]
                else:
                    data_batch = next(data_or_iterator)
                break
        if (isinstance(data_batch, (list, tuple)) and len(data_batch) == 2
                and isinstance(data_batch[0], (list, tuple))):
            data_batch = data_batch[0]
        return super()._symbolic_build(data_batch=data_batch)

    # ----------------------------------------------------------------------------------
    # Serialisation.

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and getattr(self, "augmenter_optimizer", None) is not None:
            config["augmenter_optimizer"] = keras.saving.serialize_keras_object(
                self.augmenter_optimizer)
        return config

    def compile_from_config(self, config):
        """Compiles a loaded model as it was saved (both optimizers, loss, metrics)."""
        self.compile(**keras_compat.deserialize_compile_config(config))

    def get_config(self):
        return {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "augmenter": keras.saving.serialize_keras_object(self.augmenter),
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "augmenter_update_every": self.augmenter_update_every,
            "augmenter_warmup_steps": self.augmenter_warmup_steps,
            "normalize_lookahead": self.normalize_lookahead,
            "calibrate_validation": self.calibrate_validation,
            "antithetic": self.antithetic,
            "hypergradient_dtype": self.hypergradient_dtype,
            "skip_non_finite": self.skip_non_finite,
            "hypergradient_fraction": self.hypergradient_fraction,
            "train_unpaired": self.train_unpaired,
            "clean_fraction": self.clean_fraction,
            "prior_pull": self.prior_pull,
            "prior_width": self.prior_width,
            "prior_power": self.prior_power,
            "lookahead_whole_batch": self.lookahead_whole_batch,
            "lookahead_layers": self.lookahead_layers,
            "val_gradient_average": self.val_gradient_average,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        # Models saved before `prior_pull` existed trained without it, and those saved before
        # `prior_power` existed pulled toward a Gaussian prior.
        return cls(**{"prior_pull": 0.0, "prior_power": 2.0, **config})
