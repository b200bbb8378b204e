"""Keras Tuner baseline: search an augmentation policy by full trainings.

The search space is DABO's own op family, one symmetric magnitude per op, named as Keras
Tuner's `HyperImageAugment` (`applications/augment.py`) names its factors, so a learned
magnitude (`augmenter.policy()`) and a tuned factor compare line by line:

| hyperparameter | policy ops (human units) | default search range |
| --- | --- | --- |
| `factor_rotate` | `rotate` in `[-f, f]` degrees | 0 .. 30, step 5 |
| `factor_shear` | `shear` in `[-f, f]` | 0 .. 0.3, step 0.05 |
| `factor_scale` | `scale_x`, `scale_y` in `[1 / (1 + f), 1 + f]` | 0 .. 0.3, step 0.05 |
| `factor_translate` | `translate_x`, `translate_y` in `[-f, f]` (of the size) | 0 .. 0.25, 0.05 |
| `factor_brightness` | `brightness` additive in `[-f, f]` | 0 .. 0.3, step 0.05 |
| `factor_contrast` | `contrast` factor in `[1 - f, 1 + f]` | 0 .. 0.5, step 0.1 |
| `factor_saturation` | `saturation` factor in `[1 - f, 1 + f]` (RGB only) | 0 .. 0.5, step 0.1 |
| `flip` | horizontal flip with probability 0.5 | False / True |

Every factor defaults to 0 (off). Each trial trains the classifier of the DABO run (same
architecture, optimiser and schedule from `dabo_tf.train.recipe.compile_model`, epochs, batch
size, seed) with the frozen policy (`dabo_tf.augment.policy_to_layers`) in front of it, active
only in training, and scores `val_accuracy` on the held-out validation split. The `tuner` mode
(`dabo_tf.train.modes.run_tuner`) then retrains the best policy from scratch and evaluates it
on the test split.

Distributed tuning (Keras Tuner's chief/worker mode; no custom oracle here): start the same
command once per process with the environment set, e.g.

```shell
export KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000
KERASTUNER_TUNER_ID=chief python run.py --mode=tuner --output_dir=/shared/run &  # oracle
KERASTUNER_TUNER_ID=tuner0 python run.py --mode=tuner --output_dir=/shared/run &  # worker
KERASTUNER_TUNER_ID=tuner1 python run.py --mode=tuner --output_dir=/shared/run &  # worker
```

The output folder must be on a file system all of them share. The chief owns the run folder:
it serves the oracle (it trains no trial) until the workers have run all trials, then
retrains the best policy and writes the run's outputs. A worker waits (up to 10 minutes) for
the chief's `config.json`, refuses settings that differ from it, writes only its trials and
ends with "Keras Tuner worker tuner0: ran N trial(s) ..." (`run_worker`).
`tests/test_train_search.py` runs these commands (a chief and two workers on 127.0.0.1,
three trials) and checks that every trial ran exactly once.
"""

from __future__ import annotations

import gc
import os
import time

import keras
import keras_tuner
import tensorflow as tf

from dabo_tf import seeds
from dabo_tf.augment.policy import policy_from_factors
from dabo_tf.config import TUNERS
from dabo_tf.keras_compat import release_traced_gradients
from dabo_tf.train.loop import build_classifier
from dabo_tf.train.recipe import augmentation_front_end, compile_model

# factor -> (policy ops it drives, default maximum, step)
FACTORS = {
    "rotate": (("rotate",), 30.0, 5.0),
    "shear": (("shear",), 0.3, 0.05),
    "scale": (("scale_x", "scale_y"), 0.3, 0.05),
    "translate": (("translate_x", "translate_y"), 0.25, 0.05),
    "brightness": (("brightness",), 0.3, 0.05),
    "contrast": (("contrast",), 0.5, 0.1),
    "saturation": (("saturation",), 0.5, 0.1),
}


class AugmentationHyperModel(keras_tuner.HyperModel):
    """Classifier with a tunable augmentation policy in front of it (training only).

    Args:
        config: the run's `dabo_tf.config.Config` (model, optimiser, epochs, batch size,
            seed, fill mode, jit_compile, steps_per_execution, verbose).
        splits: `dabo_tf.data.DataSplits` or `dabo_tf.streaming.StreamedSplits`; trials train
            on the training split and are scored on the validation split.
        search_space: optional overrides `{factor: maximum | (minimum, maximum) | None}`
            (None drops the factor; keep the minimum at 0 so "off" stays reachable); `"flip":
            False` drops the flip hyperparameter.
        name: name of the hypermodel.
    """

    def __init__(self, config, splits, *, search_space=None, name="augmentation_policy"):
        super().__init__(name=name, tunable=True)
        self.config = config
        self.splits = splits
        self.batch_size = max(1, min(int(config.batch_size), splits.sizes["train"]))
        self.steps_per_epoch = splits.sizes["train"] // self.batch_size
        space = {op: (0.0, hi) for op, (_, hi, _) in FACTORS.items()}
        if splits.image_shape[-1] != 3:
            space.pop("saturation")
        space["flip"] = True
        for key, value in (search_space or {}).items():
            if key not in space and key not in FACTORS:
                raise ValueError(f"Unknown search-space entry. Expected one of "
                                 f"{list(FACTORS) + ['flip']}. Received: {key}={value!r}")
            if value is None or value is False:
                space.pop(key, None)
            elif key == "flip":
                space[key] = True
            else:
                space[key] = tuple(value) if isinstance(value, (tuple, list)) else (0.0, value)
        self.search_space = space
        self.trials_run = 0  # trials trained by this process (a worker's share of a search)

    def factors(self, hp) -> dict:
        """Declares the hyperparameters on `hp` and returns their values as factors."""
        out = {}
        for op, bounds in self.search_space.items():
            if op == "flip":
                out["flip"] = hp.Boolean("flip", default=False)
                continue
            lo, hi = float(bounds[0]), float(bounds[1])
            out[op] = hp.Float(f"factor_{op}", lo, hi, step=FACTORS[op][2], default=lo)
        return out

    def policy(self, hp) -> dict:
        """The policy (human units, `augmenter.policy()` format) of `hp`'s values."""
        factors = self.factors(hp)
        if self.splits.image_shape[-1] == 3:
            factors.setdefault("saturation", 0.0)
        return policy_from_factors(**factors)

    def build(self, hp):
        # The stock tuners clear the session before every trial; this covers other callers
        # (retraining, `get_best_models`).
        keras.backend.clear_session()
        return self.build_model(self.policy(hp))

    def build_model(self, policy: dict) -> keras.Model:
        """Compiled classifier with `policy` as its training-only front end."""
        config, splits = self.config, self.splits
        classifier = build_classifier(config, splits)
        front = augmentation_front_end("policy", config, splits.image_shape, policy=policy)
        inputs = keras.Input(splits.image_shape, name="images")
        model = keras.Model(inputs, classifier(front(inputs)), name="augmented_classifier")
        return compile_model(model, config, self.steps_per_epoch)

    def fit(self, hp, model, *args, **kwargs):
        """Trains on the training split, validating on the validation split.

        `epochs` defaults to `config.epochs` (Hyperband passes its own `epochs` and
        `initial_epoch`); data passed by the caller (`tuner.search(x, ...)`) is used as given.
        """
        config, splits = self.config, self.splits
        self.trials_run += 1
        kwargs.setdefault("epochs", config.epochs)
        kwargs.setdefault("verbose", config.verbose)
        if not args and "x" not in kwargs:
            args = (splits.dataset("train", self.batch_size, training=True,
                                   seed=seeds.stream(config.seed, seeds.TRAIN_ORDER)),)
            kwargs.setdefault("validation_data", splits.dataset("val", self.batch_size,
                                                                training=False))
            kwargs.setdefault("shuffle", False)  # the pipeline reshuffles every epoch
        try:
            with release_traced_gradients():
                return model.fit(*args, **kwargs)
        finally:
            args = kwargs = None  # drop the pipelines before the next trial
            gc.collect()


def tuner_role() -> str:
    """`"chief"`, `"worker"` or `"single"`, from Keras Tuner's environment variables.

    As Keras Tuner decides: with `KERASTUNER_ORACLE_IP` set, a `KERASTUNER_TUNER_ID`
    containing "chief" serves the oracle and any other id runs trials.
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _strategy(config):
    """MirroredStrategy for `distribute="mirrored"`, unless the caller has entered a strategy
    scope already (then models are built in it and the tuner gets none)."""
    if config.distribute == "mirrored" and not tf.distribute.has_strategy():
        return tf.distribute.MirroredStrategy()
    return None


def _make_tuner(kind, hypermodel, config, workdir, trials, overwrite, hyperband_factor):
    common = dict(objective="val_accuracy", directory=os.fspath(workdir), project_name="tuner",
                  overwrite=overwrite, seed=config.seed, distribution_strategy=_strategy(config))
    if kind == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=trials, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=trials, **common)
    if kind == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=config.epochs,
                                     factor=hyperband_factor, **common)
    raise ValueError(f"Unknown tuner. Expected one of {TUNERS}. Received: tuner={kind!r}")


def best_completed_trial(oracle):
    """The best completed trial; ties go to the earliest trial (stable across resumes).

    `oracle.get_best_trials` breaks ties by the order trials were read back from disk, which
    can differ between a run and its resumption.
    """
    trials = [t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
    if not trials:
        raise RuntimeError("No trial completed; each trial's `trial.json` in the project "
                           "directory holds its error message.")
    sign = 1.0 if oracle.objective.direction == "max" else -1.0
    return min(trials, key=lambda t: (-sign * t.score, t.trial_id))


def search_epochs(tuner, epochs_per_training: int) -> int:
    """Epochs trained by the completed trials of `tuner` (Hyperband: only the new ones)."""
    total = 0
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED":
            continue
        values = trial.hyperparameters.values
        if "tuner/epochs" in values:
            total += values["tuner/epochs"] - values.get("tuner/initial_epoch", 0)
        else:
            total += epochs_per_training
    return int(total)


def trial_tensorboard(workdir) -> keras.callbacks.TensorBoard:
    """TensorBoard callback of the trials: scalars and the HParams dashboard.

    Keras Tuner recognises Keras' own `TensorBoard` class: it points each trial's copy at
    `workdir/logs/trials/<trial id>/execution0` and adds TensorBoard's HParams callback with
    the trial's hyperparameters, so `tensorboard --logdir workdir/logs` compares trials in
    its HParams tab. No profiler (the run's final training records one).
    """
    return keras.callbacks.TensorBoard(log_dir=os.path.join(os.fspath(workdir), "logs", "trials"),
                                       write_graph=False, profile_batch=0)


def run_search(config, splits, workdir, *, tuner=None, trials=None, overwrite=False,
               search_space=None, callbacks=None, hyperband_factor=3) -> dict:
    """Searches a policy with a stock Keras Tuner; returns the best one and the search's cost.

    Trials are stored under `workdir/tuner` and logged for TensorBoard (scalars and the
    HParams dashboard) under `workdir/logs/trials` (`trial_tensorboard`); a rerun with
    `overwrite=False` resumes the search as Keras Tuner does (finished trials are not rerun;
    a larger `trials` extends it). Retraining the best policy from scratch is the `tuner`
    mode's job (`dabo_tf.train.modes.run_tuner`), the one retraining path.

    Args:
        config: the run's `Config`; `config.tuner` and `config.trials` are the defaults.
        splits: `dabo_tf.data.DataSplits` or `dabo_tf.streaming.StreamedSplits`.
        workdir: run directory (shared by all processes in distributed tuning).
        tuner: `"random"` (`RandomSearch`), `"bayesian"` (`BayesianOptimization`) or
            `"hyperband"` (`Hyperband` with `max_epochs=config.epochs`; `trials` is unused,
            the budget follows from `max_epochs` and `hyperband_factor`).
        trials: number of trials (random and bayesian).
        overwrite: delete a previous search in `workdir/tuner` first.
        search_space: overrides of the search space, see `AugmentationHyperModel`.
        callbacks: extra Keras callbacks for every trial (copied by the tuner).
        hyperband_factor: Hyperband's reduction factor. Defaults to 3.

    Returns:
        A dict with `tuner`, `best_hyperparameters` (`factor_*` and `flip`), `best_policy`
        (human units, `augmenter.policy()` format), `best_val_accuracy` (of the best trial),
        `trials` (completed), `search_epochs`, `full_trainings` (search epochs / epochs per
        training), `images_processed` (epochs trained times the training-set size),
        `wall_time_s` and `project_dir`. The cost fields count the whole search, resumed
        parts included; `wall_time_s` is this call's only.
    """
    start = time.perf_counter()
    kind = tuner or config.tuner
    trials = int(trials or config.trials)
    hypermodel = AugmentationHyperModel(config, splits, search_space=search_space)
    tuner_obj = _make_tuner(kind, hypermodel, config, workdir, trials, overwrite,
                            hyperband_factor)
    role = tuner_role()
    if role == "chief" and config.verbose:
        print(f"Keras Tuner chief: serving the oracle on {os.environ['KERASTUNER_ORACLE_IP']}:"
              f"{os.environ.get('KERASTUNER_ORACLE_PORT')} until the workers (the same command "
              "with KERASTUNER_TUNER_ID=tuner0, tuner1, ...) have run the trials.", flush=True)
    tuner_obj.search(callbacks=[trial_tensorboard(workdir), *(callbacks or [])],
                     verbose=config.verbose)
    project_dir = tuner_obj.project_dir
    if role == "worker":
        return {"role": "worker", "tuner": kind, "project_dir": project_dir,
                "trials_run": hypermodel.trials_run,
                "wall_time_s": time.perf_counter() - start}

    best_trial = best_completed_trial(tuner_obj.oracle)
    best_hp = best_trial.hyperparameters
    hp_values = {k: v for k, v in best_hp.values.items() if not k.startswith("tuner/")}
    result = {
        "tuner": kind,
        "best_hyperparameters": hp_values,
        "best_policy": hypermodel.policy(best_hp.copy()),
        "best_val_accuracy": float(best_trial.score),
        "trials": sum(t.status == "COMPLETED" for t in tuner_obj.oracle.trials.values()),
        "search_epochs": search_epochs(tuner_obj, config.epochs),
        "project_dir": project_dir,
    }
    del tuner_obj
    epochs = result["search_epochs"]
    result["full_trainings"] = epochs / config.epochs
    result["images_processed"] = int(epochs * splits.sizes["train"])
    result["wall_time_s"] = time.perf_counter() - start
    return result


def run_worker(config, workdir, *, wait_s: float = 600.0) -> dict:
    """One worker of a distributed search: trains the trials the chief's oracle hands out.

    The chief (`KERASTUNER_TUNER_ID=chief`, the same command) owns the run folder: the
    worker waits up to `wait_s` seconds for its `config.json`, refuses settings that differ
    from the chief's, then writes only its trials (`workdir/tuner/trial_*`, and their logs
    under `workdir/logs/trials`). The chief retrains and evaluates the best policy.

    Returns:
        `run_search`'s worker result: `role`, `trials_run` (by this worker),
        `project_dir`, `wall_time_s`.

    Raises:
        ConfigError: no chief's run appeared in `workdir`, or its settings differ.
    """
    import pathlib

    from dabo_tf.config import ConfigError, check_config
    from dabo_tf.train import rundir
    from dabo_tf.train.loop import load_data
    from dabo_tf.train.recipe import resolve_jit_compile

    config = check_config(config)
    workdir = pathlib.Path(workdir)
    deadline = time.monotonic() + wait_s
    while not (rundir.is_run_folder(workdir) and (workdir / "config.json").is_file()):
        if time.monotonic() > deadline:
            raise ConfigError(
                f"No Keras Tuner chief's run appeared in {str(workdir)!r} within {wait_s:g} s. "
                "Start the chief (KERASTUNER_TUNER_ID=chief, the same command and "
                "--output_dir, on a file system the workers share). "
                f"Received: output_dir={str(workdir)!r}")
        time.sleep(0.5)
    rundir.check_same_config(workdir, config, "This worker's settings differ from the "
                             "chief's run")
    config = config.replace(jit_compile=resolve_jit_compile(config))
    splits = load_data(config)
    keras.utils.set_random_seed(config.seed)
    return run_search(config, splits, workdir)


def load_search(run_dir):
    """The Keras Tuner of a `tuner` run (finished or not), its trials reloaded from disk.

    Rebuilds the `AugmentationHyperModel` from the run's `config.json` and data, so that
    `tuner.oracle.trials`, `tuner.get_best_hyperparameters()` and `tuner.results_summary()`
    work as after the search; `hypermodel.policy(hp)` gives a trial's policy.

    Raises:
        ConfigError: `run_dir` holds no Keras Tuner search.
    """
    import pathlib

    from dabo_tf.config import ConfigError, config_from_dict
    from dabo_tf.train import rundir
    from dabo_tf.train.loop import load_data

    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "tuner").is_dir():
        raise ConfigError(f"{str(run_dir)!r} holds no Keras Tuner search (config.json and "
                          f"tuner/ of a --mode=tuner run). Received: run_dir={str(run_dir)!r}")
    config = config_from_dict(rundir.read_settings(run_dir))
    hypermodel = AugmentationHyperModel(config, load_data(config))
    return _make_tuner(config.tuner, hypermodel, config, run_dir, config.trials,
                       overwrite=False, hyperband_factor=3)
