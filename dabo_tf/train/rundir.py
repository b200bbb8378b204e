"""The output folder of a run: what it holds, when it may be used, and writing it.

What a run leaves in `workdir`:

* `config.json`: the resolved `Config` (written first; `run.py --resume` reads it back).
* `saved_model/`: `classifier.export(...)`, a TF SavedModel (endpoint `serve`, signature
  `serving_default`): float32 `[N, H, W, C]` images in `[0, 1]` -> logits.
* `classifier.keras`: the trained classifier; mode dabo also saves `dabo.keras`, the whole
  `DaboModel` (load either with `dabo_tf.load_model(path)`, which registers dabo-tf's layers).
* `policy.json`: the augmentation in human units (`augmenter.policy()`, the hand policy, or
  `{}`); `augmentations.png` and `curves.png` (see `dabo_tf.report`); `history.csv`.
* `logs/`: TensorBoard: `train/` and `validation/` scalars (losses, accuracy, `aug_*` policy
  scalars, learning rate) and a profiler trace, `augmentations/` images per epoch.
* `metrics.json`, written last: its presence marks a finished run.
* `backup/`, only while a run is unfinished: `keras.callbacks.BackupAndRestore`'s state
  (model, both optimisers, epoch) from which `resume=True` continues.

Under `MultiWorkerMirroredStrategy` only the chief writes `workdir`; the other workers write
the same files to `<workdir>.<task_type>-<task_id>` (see `worker_workdir`).
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil

import numpy as np
import tensorflow as tf
from absl import logging

from dabo_tf.config import ConfigError
from dabo_tf.train import report


def write_json(path, obj):
    """Writes JSON atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, pathlib.Path):
        return str(obj)
    raise TypeError(f"Not JSON serialisable: {obj!r}")


def check_workdir(workdir, *, resume=False, overwrite=False) -> None:
    """Checks that a run may write to `workdir` (no side effects).

    Raises:
        ConfigError: `workdir` holds a finished run (`metrics.json`) and `overwrite` is
            False, holds an unfinished run and neither `resume` nor `overwrite` is set,
            is a file, or both `resume` and `overwrite` are set.
    """
    workdir = pathlib.Path(workdir)
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume continues the run "
                          f"in {str(workdir)!r}, overwrite deletes it. Received: resume=True, "
                          "overwrite=True")
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"Output path {str(workdir)!r} is a file, not a folder. Choose "
                          f"another output folder. Received: workdir={str(workdir)!r}")
    if (workdir / "metrics.json").exists() and not overwrite:
        raise ConfigError(f"{str(workdir)!r} holds a finished run (metrics.json). Choose "
                          "another output folder, or pass overwrite (--overwrite) to replace "
                          f"it. Received: workdir={str(workdir)!r}")
    if workdir.is_dir() and any(workdir.iterdir()) and not (resume or overwrite):
        raise ConfigError(f"{str(workdir)!r} holds an unfinished run. Pass resume "
                          "(--resume) to continue it, overwrite (--overwrite) to start "
                          f"over, or choose another output folder. "
                          f"Received: workdir={str(workdir)!r}")
    if resume and not overwrite and not backup_readable(workdir):
        raise ConfigError(f"The unfinished run in {str(workdir)!r} cannot be resumed: it "
                          "stopped while writing its backup, which is unreadable. Pass "
                          "overwrite (--overwrite) to start it over. "
                          f"Received: workdir={str(workdir)!r}")


def backup_readable(workdir) -> bool:
    """Whether `BackupAndRestore` can restore `workdir`'s backup (True when there is none).

    A run killed while its weights were being written leaves a truncated HDF5 file. Keras
    falls back to the previous epoch's copy (`double_checkpoint=True`, see `dabo_tf.train`);
    only when that copy is missing or unreadable too is the run lost.
    """
    weights = pathlib.Path(workdir) / "backup" / "latest.weights.h5"
    return not weights.exists() or any(
        _readable_hdf5(path) for path in (weights, _previous(weights)))


def _previous(path):
    """The previous copy `BackupAndRestore(double_checkpoint=True)` keeps of `path`."""
    return path.with_name(path.name + ".bkp")


def _readable_hdf5(path) -> bool:
    import h5py  # a Keras dependency: `.weights.h5` files are HDF5

    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def prepare_workdir(workdir, *, resume=False, overwrite=False) -> bool:
    """`check_workdir`, then deletes what is in `workdir` when `overwrite` is set.

    Returns:
        Whether `workdir` has to be created (it does not exist yet).
    """
    workdir = pathlib.Path(workdir)
    check_workdir(workdir, resume=resume, overwrite=overwrite)
    if overwrite and workdir.is_dir():
        shutil.rmtree(workdir)
    if resume and not workdir.is_dir():
        logging.warning("Nothing to resume in %s: starting a new run.", workdir)
    return not workdir.exists()


def worker_workdir(strategy: tf.distribute.Strategy, workdir) -> pathlib.Path:
    """`workdir` for the chief (or without a cluster); `<workdir>.<task>-<id>` otherwise.

    Under `MultiWorkerMirroredStrategy` every worker trains and saves, but only the chief
    writes the run's folder; the others keep their own (for their `BackupAndRestore` state).
    """
    workdir = pathlib.Path(workdir)
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return workdir
    task_id = int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief):
        return workdir
    return workdir.with_name(f"{workdir.name}.{task_type}-{task_id}")


def save_outputs(result, config, splits, workdir) -> dict:
    """Writes the models, `policy.json` and the figures; returns their relative paths.

    Args:
        result: the run's `dabo_tf.train.RunResult`.
        config: the run's `Config`.
        splits: its `DataSplits` (images for the figure).
        workdir: the output folder.
    """
    workdir = pathlib.Path(workdir)
    outputs = {"saved_model": "saved_model", "classifier": "classifier.keras"}
    result.classifier.export(str(workdir / "saved_model"), verbose=False)
    result.classifier.save(workdir / "classifier.keras")
    if result.model is not result.classifier:
        outputs["model"] = f"{config.mode}.keras"
        result.model.save(workdir / outputs["model"])
    write_json(workdir / "policy.json", result.policy or {})
    title = f"{splits.name}, mode {config.mode}"
    images = report.sample_images(splits.x_train, splits.y_train, 6)
    report.plot_augmentations(images, result.augment_fn, workdir / "augmentations.png",
                              title=title)
    report.plot_curves(result.history, workdir / "curves.png", title=title)
    outputs.update(policy="policy.json", augmentations="augmentations.png",
                   curves="curves.png", history="history.csv", logs="logs",
                   metrics="metrics.json")
    return outputs


def read_history(path) -> dict:
    """Epoch-wise logs from a `CSVLogger` file; the last row wins for a repeated epoch."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    keys = sorted({k for row in rows.values() for k in row if k != "epoch"})
    history = {"epoch": sorted(rows)}
    for key in keys:
        history[key] = [float(rows[e][key]) if rows[e].get(key) not in (None, "") else
                        float("nan") for e in history["epoch"]]
    return history


def completed_epochs(workdir) -> int:
    """Epochs completed by the unfinished run in `workdir` (from its `BackupAndRestore` state)."""
    backup = pathlib.Path(workdir) / "backup"
    path = backup / "training_metadata.json"
    weights = backup / "latest.weights.h5"
    if weights.exists() and not _readable_hdf5(weights):  # Keras restores the previous copy
        path = _previous(path)
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def read_policy(workdir) -> dict:
    """The `policy.json` of a finished run."""
    return json.loads((pathlib.Path(workdir) / "policy.json").read_text())
