"""One training run: `train_and_evaluate(config, workdir)`, dispatching on `config.mode`.

Modes are functions in the registry `MODE_RUNNERS` (`"dabo"`, `"none"`, `"hand"` here; other
modules add theirs with `@register_mode(name)`). A runner builds its models (inside the
distribution strategy's scope, which `train_and_evaluate` has entered), trains them on the
splits it is given and returns a `RunResult`; `train_and_evaluate` does everything around it:
validation, the output folder, seeding, precision policy, strategy, saving and reporting.
`fit_classifier` is the reusable piece for baselines: the same classifier, optimiser,
schedule, epochs, callbacks and evaluation, with any augmentation front-end.

What a run leaves in `workdir` is described in `dabo_tf.rundir`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import shutil
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from dabo_tf import data, models, report, rundir
from dabo_tf.callbacks import AugmentedImageSummary, ThroughputMeter, parse_profile_batches
from dabo_tf.config import Config
from dabo_tf.dabo_model import DaboModel
from dabo_tf.recipe import (
    ConfigError,
    as_augment_fn,
    build_hand_augmentation,
    build_learned_augmenter,
    check_config,
    hand_policy,
    make_augmenter_optimizer,
    make_optimizer,
    make_strategy,
    release_traced_gradients,
    resolve_jit_compile,
)

MODE_MODULES = ("dabo_tf.baselines",)
"""Modules imported on demand when `config.mode` has no runner yet (they register theirs)."""


@dataclasses.dataclass
class RunResult:
    """What a mode runner hands back to `train_and_evaluate`.

    Attributes:
        model: the trained Keras model saved whole (a `DaboModel`, or the classifier).
        classifier: the plain classifier (exported as the SavedModel, evaluated on test).
        history: epoch-wise logs of the whole run, `{"epoch": [...], "loss": [...], ...}`.
        metrics: at least `test_accuracy`; merged into `metrics.json`.
        policy: augmentation policy in human units (`{op: {"low", "high", "unit"}}`).
        augment_fn: `images -> augmented images` for the figures, or None.
    """

    model: keras.Model
    classifier: keras.Model
    history: dict
    metrics: dict
    policy: dict = dataclasses.field(default_factory=dict)
    augment_fn: Optional[Callable] = None


MODE_RUNNERS: dict = {}
"""`mode -> runner(config, splits, workdir, callbacks) -> RunResult`."""


def register_mode(name: str):
    """Decorator registering a runner `fn(config, splits, workdir, callbacks) -> RunResult`."""

    def decorator(fn):
        MODE_RUNNERS[name] = fn
        return fn

    return decorator


def get_runner(mode: str) -> Callable:
    """The runner of `mode`, importing `MODE_MODULES` first if none is registered yet."""
    if mode not in MODE_RUNNERS:
        for module in MODE_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name != module:
                    raise
    if mode not in MODE_RUNNERS:
        raise ConfigError(f"Mode {mode!r} is not available yet: no runner is registered for it "
                          f"in dabo_tf.train.MODE_RUNNERS (available: "
                          f"{', '.join(sorted(MODE_RUNNERS))}). Received: mode={mode!r}")
    return MODE_RUNNERS[mode]


# ----------------------------------------------------------------------------------------
# Data and training helpers.

def load_data(config: Config) -> data.DataSplits:
    """`dabo_tf.data.load` with the config's settings (bad values raise `ConfigError`)."""
    try:
        return data.load(config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                         val_fraction=config.val_fraction, train_size=config.train_size,
                         seed=config.seed, eval_shift=config.eval_shift)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def steps_per_epoch(config: Config, splits: data.DataSplits) -> int:
    steps = splits.sizes["train"] // config.batch_size
    if steps < 1:
        raise ConfigError(f"batch_size is larger than the {splits.sizes['train']} training "
                          f"images. Received: batch_size={config.batch_size}")
    return steps


def build_classifier(config: Config, splits: data.DataSplits) -> keras.Model:
    return models.build_classifier(config.model, splits.image_shape, splits.num_classes,
                                   mean=splits.mean, std=splits.std, seed=config.seed)


def train_pipeline(config: Config, splits: data.DataSplits,
                   augment_fn: Optional[Callable] = None) -> tf.data.Dataset:
    """Shuffled training batches, augmented by `augment_fn` in the pipeline if given.

    The map runs sequentially so that the layers' random draws are reproducible.
    """
    ds = data.make_pipeline(splits.x_train, splits.y_train, config.batch_size, training=True,
                            seed=config.seed)
    if augment_fn is not None:
        ds = ds.map(lambda x, y: (augment_fn(x), y)).prefetch(tf.data.AUTOTUNE)
    return ds


def _eval_pipeline(x, y, config):
    return data.make_pipeline(x, y, config.batch_size, training=False)


def _to_int(variable) -> int:
    """The value of a (possibly mirrored) scalar Keras variable."""
    return int(tf.convert_to_tensor(variable.value).numpy())


def fit_and_evaluate(model: keras.Model, config: Config, splits: data.DataSplits,
                     train_ds: tf.data.Dataset, workdir=None, callbacks=None,
                     augment_fn: Optional[Callable] = None):
    """Fits a compiled `model` with the run's callbacks, then evaluates it on the test split.

    With a `workdir`: `history.csv`, TensorBoard logs (scalars, profile, augmented images
    when `augment_fn` is given) and `BackupAndRestore` state, from which a run continues
    (`fit` starts at the last completed epoch found in `workdir/backup`).

    Returns:
        `(history, metrics)`: epoch-wise logs of the whole run and a dict with
        `test_accuracy`, `test_loss`, `best_val_accuracy`, `epochs`, `images_per_second`...
    """
    steps = steps_per_epoch(config, splits)
    meter = ThroughputMeter(config.batch_size)
    run_callbacks = [meter]
    initial_epoch = 0
    if workdir is not None:
        workdir = pathlib.Path(workdir)
        initial_epoch = rundir.completed_epochs(workdir)
        profile = parse_profile_batches(config.profile_batches, config.epochs, steps,
                                        initial_epoch)
        run_callbacks += [
            keras.callbacks.CSVLogger(str(workdir / "history.csv"), append=True),
            # Two copies: a run killed while writing one resumes from the other.
            keras.callbacks.BackupAndRestore(str(workdir / "backup"), delete_checkpoint=False,
                                             double_checkpoint=True),
            keras.callbacks.TensorBoard(log_dir=str(workdir / "logs"), write_graph=False,
                                        profile_batch=profile),
        ]
        if augment_fn is not None:
            images = report.sample_images(splits.x_train, splits.y_train, 8)
            run_callbacks.append(AugmentedImageSummary(str(workdir / "logs" / "augmentations"),
                                                       images, augment_fn))
    val_ds = _eval_pipeline(splits.x_val, splits.y_val, config) if len(splits.y_val) else None
    with release_traced_gradients():  # no memory growth over many trainings in a process
        fit_history = model.fit(train_ds, epochs=config.epochs, validation_data=val_ds,
                                callbacks=run_callbacks + list(callbacks or []),
                                verbose=config.verbose, shuffle=False)
    history = rundir.read_history(workdir / "history.csv") if workdir is not None else {
        "epoch": list(fit_history.epoch), **fit_history.history}
    test = model.evaluate(_eval_pipeline(splits.x_test, splits.y_test, config),
                          return_dict=True, verbose=0)
    val_acc = history.get("val_accuracy") or []
    best = int(np.nanargmax(val_acc)) if val_acc and not np.all(np.isnan(val_acc)) else None
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "best_val_accuracy": None if best is None else float(val_acc[best]),
        "best_val_epoch": None if best is None else int(history["epoch"][best]) + 1,
        "final_val_accuracy": float(val_acc[-1]) if val_acc else None,
        "final_train_accuracy": float(history["accuracy"][-1]) if history.get("accuracy")
        else None,
        "epochs": len(history.get("epoch", [])),
        "initial_epoch": initial_epoch,
        "steps_per_epoch": steps,
        "train_seconds": meter.total_train_seconds,
        "images_per_second": meter.images_per_second,
        "optimizer_iterations": _to_int(model.optimizer.iterations),
        # Honest selection: the reported model is the last epoch's, whatever the validation
        # accuracy did; runners say what else the validation split was used for.
        "reported_epoch": "last",
        "validation_split_use": "monitoring only",
    }
    return history, metrics


def fit_classifier(config: Config, splits: data.DataSplits, augmentation=None, workdir=None,
                   callbacks=None):
    """Trains `config.model` with `augmentation` in the input pipeline; evaluates on test.

    The shared recipe of every mode that trains a plain classifier: same classifier, SGD
    optimiser and schedule, epochs, callbacks and evaluation, so baselines differ only in
    their augmentation. Call it inside the run's strategy scope (runners are).

    Args:
        config: the run's `Config`.
        splits: the data.
        augmentation: None, a Keras layer, a list of layers (called with `training=True`) or
            a callable `images -> images`, applied to each float32 `[0, 1]` training batch
            in the `tf.data` pipeline (so layers without XLA kernels are fine).
        workdir: folder for history, logs and resumable state (None: nothing written).
        callbacks: extra Keras callbacks, run after the standard ones.

    Returns:
        `(classifier, history, metrics)` (see `fit_and_evaluate`).
    """
    augment_fn = as_augment_fn(augmentation)
    steps = steps_per_epoch(config, splits)
    classifier = build_classifier(config, splits)
    classifier.compile(optimizer=make_optimizer(config, steps),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                       jit_compile=bool(resolve_jit_compile(config)),
                       steps_per_execution=config.steps_per_execution)
    # Built now, eagerly, not inside the traced step (which would keep the graph alive).
    classifier.optimizer.build(classifier.trainable_variables)
    history, metrics = fit_and_evaluate(classifier, config, splits,
                                        train_pipeline(config, splits, augment_fn), workdir,
                                        callbacks, augment_fn)
    return classifier, history, metrics


# ----------------------------------------------------------------------------------------
# Mode runners.

@register_mode("none")
def run_none(config, splits, workdir, callbacks) -> RunResult:
    """The classifier trained on un-augmented data."""
    classifier, history, metrics = fit_classifier(config, splits, None, workdir, callbacks)
    return RunResult(classifier, classifier, history, metrics, policy={})


@register_mode("hand")
def run_hand(config, splits, workdir, callbacks) -> RunResult:
    """The classifier trained with the hand policy `config.hand_policy` (fixed strengths)."""
    layers = build_hand_augmentation(config.hand_policy, config.image_size, config.seed)
    classifier, history, metrics = fit_classifier(config, splits, layers, workdir, callbacks)
    return RunResult(classifier, classifier, history, metrics,
                     policy=hand_policy(config.hand_policy, config.image_size),
                     augment_fn=as_augment_fn(layers))


@register_mode("dabo")
def run_dabo(config, splits, workdir, callbacks) -> RunResult:
    """`DaboModel`: the classifier and its augmenter learned jointly (online bilevel).

    `config.pre_augmentation` hand ops (the paper: flip on CIFAR) run in the input pipeline
    before the learned augmenter.
    """
    steps = steps_per_epoch(config, splits)
    pre = as_augment_fn(build_hand_augmentation(config.pre_augmentation, config.image_size,
                                                config.seed + 100))
    classifier = build_classifier(config, splits)
    augmenter = build_learned_augmenter(config, splits.image_shape)
    model = DaboModel(classifier, augmenter, inner_lr=config.inner_lr,
                      inner_steps=config.inner_steps,
                      augmenter_update_every=config.augmenter_update_every,
                      augmenter_warmup_steps=round(config.augmenter_warmup * config.epochs
                                                   * steps),
                      normalize_lookahead=config.normalize_lookahead,
                      antithetic=config.antithetic,
                      hypergradient_dtype=(None if config.hypergradient_dtype == "policy"
                                           else config.hypergradient_dtype))
    model.compile(optimizer=make_optimizer(config, steps),
                  augmenter_optimizer=make_augmenter_optimizer(config),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=bool(resolve_jit_compile(config)),
                  steps_per_execution=config.steps_per_execution)
    val_batch = min(config.val_batch_size or config.batch_size, splits.sizes["val"])
    if val_batch < 1:
        raise ConfigError("mode dabo needs validation images: set val_fraction > 0 or give "
                          "the folder a val/ split. Received: val_fraction="
                          f"{config.val_fraction}")
    val_stream = data.make_pipeline(splits.x_val, splits.y_val, val_batch, training=True,
                                    seed=config.seed + 1)
    train_ds = data.with_validation_stream(train_pipeline(config, splits, pre), val_stream)

    def augment_fn(images):
        images = tf.convert_to_tensor(images, tf.float32)
        return augmenter(pre(images) if pre else images, training=True)

    history, metrics = fit_and_evaluate(model, config, splits, train_ds, workdir, callbacks,
                                        augment_fn)
    metrics["augmenter_optimizer_iterations"] = _to_int(model.augmenter_optimizer.iterations)
    metrics["validation_split_use"] = ("trains the augmenter (the hypergradient's look-ahead "
                                       "loss); chooses no epoch and no policy")
    metrics["augmenter_params"] = int(augmenter.count_params())
    return RunResult(model, classifier, history, metrics, policy=augmenter.policy(),
                     augment_fn=augment_fn)


# ----------------------------------------------------------------------------------------
# The run.

def train_and_evaluate(config: Config, workdir, *, resume: bool = False,
                       overwrite: bool = False, callbacks=None) -> dict:
    """Runs `config.mode`, evaluates on the test split and writes the run's outputs.

    Args:
        config: the run's `Config` (validated here).
        workdir: output folder (see the module docstring for what it holds).
        resume: continue the unfinished run in `workdir` from its last completed epoch.
        overwrite: replace a run already in `workdir`.
        callbacks: extra Keras callbacks, run after the standard ones.

    Returns:
        The metrics dict written to `workdir/metrics.json`.

    Raises:
        ConfigError: an invalid setting, or `workdir` is in use (see
            `dabo_tf.rundir.check_workdir`).
        dabo_tf.data.DataUnavailableError: the data set cannot be loaded.

    A run that fails before an epoch has completed removes the folder it created; one that
    fails later keeps it (without `metrics.json`) for `resume`.
    """
    start = time.perf_counter()
    config = check_config(config)
    runner = get_runner(config.mode)
    strategy = make_strategy(config.distribute)
    workdir = rundir.worker_workdir(strategy, workdir)
    rundir.check_workdir(workdir, resume=resume, overwrite=overwrite)  # before loading data
    config = config.replace(jit_compile=resolve_jit_compile(config))
    splits = load_data(config)
    create = rundir.prepare_workdir(workdir, resume=resume, overwrite=overwrite)
    workdir.mkdir(parents=True, exist_ok=True)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        rundir.write_json(workdir / "config.json", config.to_dict())
        keras.utils.set_random_seed(config.seed)
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(config.mixed_precision)
        with strategy.scope():
            result = runner(config, splits, workdir, list(callbacks or []))
        outputs = rundir.save_outputs(result, config, splits, workdir)
    except BaseException:
        if create and not (workdir / "backup").exists():
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    metrics = {
        "dataset": splits.name,
        "mode": config.mode,
        "model": config.model,
        **result.metrics,
        "epochs_requested": config.epochs,
        "wall_time_s": time.perf_counter() - start,
        "data_sizes": splits.sizes,
        "image_shape": list(splits.image_shape),
        "num_classes": splits.num_classes,
        "classifier_params": int(result.classifier.count_params()),
        "num_replicas": int(strategy.num_replicas_in_sync),
        "devices": [d.name for d in tf.config.list_logical_devices()
                    if d.device_type in ("GPU", "TPU")] or ["CPU"],
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "outputs": outputs,
        "config": config.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    rundir.write_json(workdir / "metrics.json", metrics)
    shutil.rmtree(workdir / "backup", ignore_errors=True)
    return metrics
