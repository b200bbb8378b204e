"""Every run mode, in one registry: what each trains, with the shared loop of `train.loop`.

Every mode trains the same classifier with the same optimiser, schedule, epochs and data
(`loop.fit_classifier`, or `DaboModel` through `loop.fit_and_evaluate`); only the
augmentation differs:

- `dabo`: the classifier and its augmenter learned jointly (`DaboModel`);
- `none`, `hand`: no augmentation; the fixed hand ops of `config.hand_policy`;
- `tuner`: a Keras Tuner search over hand-written policies (`dabo_tf.train.search`), then the
  best policy retrained from scratch; its metrics carry the cost of the whole search;
- `randaugment`: Keras' `RandAugment` (`--randaugment_num_ops`, `--randaugment_factor`);
- `trivialaugment`: TrivialAugment, wide op set (`dabo_tf.augment.trivial_augment`);
- `frozen`: a learned DABO policy (`policy.json` of an earlier run, `--policy_path`) frozen
  into fixed-range augmentation layers and used with ordinary `fit`: learn once, reuse
  anywhere.

`compare` (all of them side by side) is a job of several runs, not a mode of one training:
see `dabo_tf.train.runner.run`.
"""

from __future__ import annotations

import pathlib

import tensorflow as tf

from dabo_tf import data, seeds
from dabo_tf.augment.base import as_augment_fn
from dabo_tf.augment.hand import build_hand_augmentation, hand_policy
from dabo_tf.augment.policy import load_policy
from dabo_tf.config import ConfigError
from dabo_tf.dabo_model import DaboModel
from dabo_tf.train.loop import (
    RunResult,
    build_classifier,
    fit_and_evaluate,
    fit_classifier,
    steps_per_epoch,
    to_int,
    train_pipeline,
)
from dabo_tf.train.recipe import (
    augmentation_front_end,
    build_learned_augmenter,
    compile_model,
    make_augmenter_optimizer,
)
from dabo_tf.train.search import run_search

RUNNERS: dict = {}
"""`mode -> runner(config, splits, workdir, callbacks) -> RunResult`, every mode of
`config.MODES` but `compare`."""


def _mode(name: str):
    def register(fn):
        RUNNERS[name] = fn
        return fn

    return register


def _train_with(layer, config, splits, workdir, callbacks, policy):
    classifier, history, metrics = fit_classifier(config, splits, layer, workdir, callbacks)
    return RunResult(classifier, classifier, history, metrics, policy=policy,
                     augment_fn=as_augment_fn(layer))


@_mode("none")
def run_none(config, splits, workdir, callbacks) -> RunResult:
    """The classifier trained on un-augmented data."""
    return _train_with(None, config, splits, workdir, callbacks, {})


@_mode("hand")
def run_hand(config, splits, workdir, callbacks) -> RunResult:
    """The classifier trained with the hand policy `config.hand_policy` (fixed strengths)."""
    layers = build_hand_augmentation(config.hand_policy, config.image_size,
                                     seeds.stream(config.seed, seeds.HAND_POLICY))
    return _train_with(layers, config, splits, workdir, callbacks,
                       hand_policy(config.hand_policy, config.image_size))


@_mode("dabo")
def run_dabo(config, splits, workdir, callbacks) -> RunResult:
    """`DaboModel`: the classifier and its augmenter learned jointly (online bilevel).

    `config.pre_augmentation` hand ops (the paper: flip on CIFAR) run in the input pipeline
    before the learned augmenter.
    """
    steps = steps_per_epoch(config, splits)
    pre = as_augment_fn(build_hand_augmentation(
        config.pre_augmentation, config.image_size,
        seeds.stream(config.seed, seeds.PRE_AUGMENTATION)))
    classifier = build_classifier(config, splits)
    augmenter = build_learned_augmenter(config, splits.image_shape)
    model = DaboModel(classifier, augmenter, inner_lr=config.inner_lr,
                      inner_steps=config.inner_steps,
                      augmenter_update_every=config.augmenter_update_every,
                      augmenter_warmup_steps=round(config.augmenter_warmup * config.epochs
                                                   * steps),
                      normalize_lookahead=config.normalize_lookahead,
                      calibrate_validation=config.calibrate_validation,
                      antithetic=config.antithetic,
                      train_unpaired=config.train_unpaired,
                      clean_fraction=config.clean_fraction,
                      prior_pull=config.augmenter_prior_pull,
                      prior_width=config.augmenter_prior_width,
                      prior_power=config.augmenter_prior_power,
                      hypergradient_fraction=config.hypergradient_fraction,
                      lookahead_whole_batch=config.lookahead_whole_batch,
                      lookahead_layers=config.lookahead_layers,
                      val_gradient_average=config.val_gradient_average,
                      hypergradient_dtype=(None if config.hypergradient_dtype == "policy"
                                           else config.hypergradient_dtype))
    compile_model(model, config, steps, build_optimizer=False,
                  augmenter_optimizer=make_augmenter_optimizer(config))
    val_batch = min(config.val_batch_size or config.batch_size, splits.sizes["val"])
    if val_batch < 1:
        raise ConfigError("mode dabo needs validation images: set val_fraction > 0 or give "
                          "the folder a val/ split. Received: val_fraction="
                          f"{config.val_fraction}")
    val_stream = splits.dataset("val", val_batch, training=True,
                                seed=seeds.stream(config.seed, seeds.VALIDATION_STREAM))
    train_ds = data.with_validation_stream(train_pipeline(config, splits, pre), val_stream)

    def augment_fn(images):
        images = tf.convert_to_tensor(images, tf.float32)
        return augmenter(pre(images) if pre else images, training=True)

    history, metrics = fit_and_evaluate(model, config, splits, train_ds, workdir, callbacks,
                                        augment_fn)
    metrics["augmenter_optimizer_iterations"] = to_int(model.augmenter_optimizer.iterations)
    metrics["validation_split_use"] = ("trains the augmenter (the hypergradient's look-ahead "
                                       "loss); chooses no epoch and no policy")
    metrics["augmenter_params"] = int(augmenter.count_params())
    return RunResult(model, classifier, history, metrics, policy=model.policy(),
                     augment_fn=augment_fn)


@_mode("randaugment")
def run_randaugment(config, splits, workdir, callbacks) -> RunResult:
    """Keras' RandAugment in the input pipeline (no search)."""
    layer = augmentation_front_end("randaugment", config, splits.image_shape)
    policy = {"randaugment": {"num_ops": config.randaugment_num_ops,
                              "factor": config.randaugment_factor}}
    return _train_with(layer, config, splits, workdir, callbacks, policy)


@_mode("trivialaugment")
def run_trivialaugment(config, splits, workdir, callbacks) -> RunResult:
    """TrivialAugment (wide) in the input pipeline (no search)."""
    layer = augmentation_front_end("trivialaugment", config, splits.image_shape)
    return _train_with(layer, config, splits, workdir, callbacks,
                       {"trivialaugment": {"ops": list(layer.ops)}})


@_mode("frozen")
def run_frozen(config, splits, workdir, callbacks) -> RunResult:
    """A policy learned by DABO (`config.policy_path`), frozen, with ordinary training."""
    if not config.policy_path:
        raise ConfigError("mode frozen needs the policy.json of a DABO run: pass "
                          "--policy_path=PATH. Received: policy_path=None")
    path = pathlib.Path(config.policy_path)
    if path.is_dir():
        path = path / "policy.json"
    if not path.is_file():
        raise ConfigError(f"No policy file at {path}: pass --policy_path=PATH, a DABO "
                          "run's policy.json or its folder. "
                          f"Received: policy_path={config.policy_path}")
    try:
        policy = load_policy(path)
    except ValueError as e:
        raise ConfigError(f"{e} (--policy_path)") from None
    layer = augmentation_front_end("policy", config, splits.image_shape, policy=policy)
    return _train_with(layer, config, splits, workdir, callbacks, policy)


@_mode("tuner")
def run_tuner(config, splits, workdir, callbacks) -> RunResult:
    """Keras Tuner search over hand policies, then the best one retrained from scratch.

    The trials live in `workdir/tuner` (Keras Tuner's project; a rerun resumes it). The
    retraining is this run's classifier; `metrics.json` adds the search's cost: trials,
    full trainings (trials + 1), images processed and wall time of the search.
    """
    search = run_search(config, splits, workdir, tuner=config.tuner, trials=config.trials)
    if search.get("role") == "worker":
        raise ConfigError("This process is a Keras Tuner worker: it ran trials for the chief, "
                          "which retrains and evaluates the best policy.")
    layer = augmentation_front_end("policy", config, splits.image_shape,
                                   policy=search["best_policy"])
    result = _train_with(layer, config, splits, workdir, callbacks, search["best_policy"])
    retrain_images = result.metrics["epochs"] * splits.sizes["train"]
    result.metrics.update(
        tuner=search["tuner"], trials=search["trials"],
        best_hyperparameters=search["best_hyperparameters"],
        best_trial_val_accuracy=search["best_val_accuracy"],
        search_epochs=search["search_epochs"],
        search_wall_time_s=search["wall_time_s"],
        full_trainings=search["full_trainings"] + 1,
        validation_split_use="chooses the search's best policy (its trials' validation "
                             "accuracy); the retrained model is reported at its last epoch",
        images_processed=search["images_processed"] + retrain_images)
    return result
