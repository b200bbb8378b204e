"""A run from a `Config`: `run(config, workdir)` for any mode, `train_and_evaluate` for one.

`train_and_evaluate` does everything around a mode runner (`dabo_tf.train.modes.RUNNERS`):
validation, the output folder, seeding, precision policy, strategy, saving and reporting.
`run` dispatches the jobs that are not a single training: `compare`
(`dabo_tf.train.compare`) and a distributed Keras Tuner worker (`dabo_tf.train.search`).
What a run leaves in `workdir` is described in `dabo_tf.train.rundir`.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import keras
import tensorflow as tf

from dabo_tf import distribute
from dabo_tf.config import Config, ConfigError, check_config
from dabo_tf.train import report, rundir, search
from dabo_tf.train.loop import load_data
from dabo_tf.train.modes import RUNNERS
from dabo_tf.train.recipe import resolve_jit_compile


def run(config: Config, workdir, *, resume: bool = False, overwrite: bool = False) -> str:
    """Runs `config.mode` into `workdir`; returns the summary to print.

    `compare` trains every method over `config.compare_seeds` (`dabo_tf.train.compare`);
    every other mode is one `train_and_evaluate`.
    """
    if config.mode == "compare":
        from dabo_tf.train import compare

        rundir.check_workdir(workdir, resume=resume, overwrite=overwrite)
        rows = compare.run_comparison(config, workdir)
        return (f"{compare.format_table(rows)}\nComparison written to {workdir}/comparison.md, "
                "comparison.csv and comparison.png")
    if config.mode == "tuner" and search.tuner_role() == "worker":
        result = search.run_worker(config, workdir)
        return (f"Keras Tuner worker {os.environ.get('KERASTUNER_TUNER_ID')}: ran "
                f"{result['trials_run']} trial(s) of the search in {result['project_dir']}; "
                f"the chief retrains and evaluates the best policy in {workdir}.")
    metrics = train_and_evaluate(config, workdir, resume=resume, overwrite=overwrite)
    if "worker_of" in metrics:
        return (f"Worker finished (test accuracy {metrics['test_accuracy']:.2%}); the chief "
                f"wrote the run to {metrics['worker_of']}.")
    return report.format_summary(metrics, rundir.read_policy(workdir), workdir)


def check_classifier(config: Config) -> None:
    """Builds `config.model` once for `config.image_size` images, or fails with what to do.

    Catches impossible pairs (a network that pools small images down to nothing, a Wide
    ResNet depth its rule does not allow) before any data is loaded.
    """
    from dabo_tf import models

    size = config.image_size
    try:
        models.build_classifier(config.model, (size, size, 3), 10, seed=0)
    except (ValueError, TypeError) as e:
        reason = str(e).strip().splitlines()[0][:300]
        if "Pooling" in reason or "negative" in reason.lower():
            reason = "its pooling reduces them to nothing"
        raise ConfigError(f"The classifier {config.model!r} cannot be built for {size}x{size} "
                          f"images ({reason}). Choose another --image_size or --model. "
                          f"Received: model={config.model!r}, image_size={size}") from None


def get_runner(mode: str):
    """The runner of a single-training `mode` (`ConfigError` for any other)."""
    if mode not in RUNNERS:
        raise ConfigError(f"mode must be one of {sorted(RUNNERS)} for one training "
                          f"(compare runs several: dabo_tf.train.run). Received: mode={mode!r}")
    return RUNNERS[mode]


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
            `dabo_tf.train.rundir.check_workdir`).
        dabo_tf.data.DataUnavailableError: the data set cannot be loaded.

    A run that fails before an epoch has completed removes the folder it created; one that
    fails later keeps it (without `metrics.json`) for `resume`.
    """
    start = time.perf_counter()
    config = check_config(config)
    runner = get_runner(config.mode)
    strategy = distribute.make_strategy(config.distribute)
    requested, workdir = workdir, rundir.worker_workdir(strategy, workdir)
    # Everything that can be checked is, before data loads and before a folder is touched.
    rundir.check_workdir(workdir, resume=resume, overwrite=overwrite)
    if resume:
        rundir.check_resume_config(workdir, config)
    check_classifier(config)
    config = config.replace(jit_compile=resolve_jit_compile(config))
    splits = load_data(config)
    # Only now, with the configuration and the data known to work, is an old run replaced.
    create = rundir.prepare_workdir(workdir, resume=resume, overwrite=overwrite)
    rundir.mark(workdir)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        rundir.write_config(workdir, config, splits.class_names)
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
        "data_loading": "stream" if splits.streaming else "memory",
        "image_shape": list(splits.image_shape),
        "num_classes": splits.num_classes,
        "class_names": list(splits.class_names),
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
    if workdir != pathlib.Path(requested):
        # A non-chief worker of a multi-worker run: it saved too (saving can need every
        # worker), into its own folder, which the finished run no longer needs.
        shutil.rmtree(workdir, ignore_errors=True)
        metrics["worker_of"] = str(requested)
    return metrics
