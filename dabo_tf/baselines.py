"""Run modes of the baselines DABO is compared with, registered in `dabo_tf.train`.

Every baseline trains the same classifier with the same optimiser, schedule, epochs and
data as a DABO run (`train.fit_classifier`); only the augmentation differs:

- `tuner`: a Keras Tuner search over hand-written policies (`dabo_tf.policy_search`), then
  the best policy retrained from scratch; its metrics carry the cost of the whole search.
- `randaugment`: Keras' `RandAugment` (`--randaugment_num_ops`, `--randaugment_factor`).
- `trivialaugment`: TrivialAugment, wide op set (`dabo_tf.trivial_augment`).
- `frozen`: a learned DABO policy (`policy.json` of an earlier run, `--policy_path`) frozen into
  fixed-range augmentation layers and used with ordinary `fit`: learn once, reuse anywhere.
"""

from __future__ import annotations

import pathlib

from dabo_tf import policy_search
from dabo_tf.policy import load_policy, policy_to_layers
from dabo_tf.recipe import ConfigError, as_augment_fn
from dabo_tf.train import RunResult, fit_classifier, register_mode
from dabo_tf.trivial_augment import augmentation_front_end


def _train_with(layer, config, splits, workdir, callbacks, policy):
    classifier, history, metrics = fit_classifier(config, splits, layer, workdir, callbacks)
    return RunResult(classifier, classifier, history, metrics, policy=policy,
                     augment_fn=as_augment_fn(layer))


@register_mode("randaugment")
def run_randaugment(config, splits, workdir, callbacks) -> RunResult:
    """Keras' RandAugment in the input pipeline (no search)."""
    layer = augmentation_front_end("randaugment", config, splits.image_shape)
    policy = {"randaugment": {"num_ops": config.randaugment_num_ops,
                              "factor": config.randaugment_factor}}
    return _train_with(layer, config, splits, workdir, callbacks, policy)


@register_mode("trivialaugment")
def run_trivialaugment(config, splits, workdir, callbacks) -> RunResult:
    """TrivialAugment (wide) in the input pipeline (no search)."""
    layer = augmentation_front_end("trivialaugment", config, splits.image_shape)
    return _train_with(layer, config, splits, workdir, callbacks,
                       {"trivialaugment": {"ops": list(layer.ops)}})


@register_mode("frozen")
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
    policy = load_policy(path)
    layer = policy_to_layers(policy, seed=config.seed, fill_mode=config.fill_mode)
    return _train_with(layer, config, splits, workdir, callbacks, policy)


@register_mode("tuner")
def run_tuner(config, splits, workdir, callbacks) -> RunResult:
    """Keras Tuner search over hand policies, then the best one retrained from scratch.

    The trials live in `workdir/tuner` (Keras Tuner's project; a rerun resumes it). The
    retraining is this run's classifier; `metrics.json` adds the search's cost: trials,
    full trainings (trials + 1), images processed and wall time of the search.
    """
    search = policy_search.run_search(config, splits, workdir, tuner=config.tuner,
                                      trials=config.trials, retrain=False)
    if search.get("role") == "worker":
        raise ConfigError("This process is a Keras Tuner worker: it ran trials for the chief, "
                          "which retrains and evaluates the best policy.")
    layer = policy_to_layers(search["best_policy"], seed=config.seed,
                             fill_mode=config.fill_mode)
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
