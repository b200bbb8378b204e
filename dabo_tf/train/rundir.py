"""The output folder of a run: what it holds, when it may be used, and writing it.

What a run leaves in `workdir`:

* `config.json`: the resolved `Config` (written first; `run.py --resume` reads it back) and
  the data's `class_names` (`DATA_KEYS`: facts of the data, not settings).
* `saved_model/`: a TF SavedModel loadable without dabo-tf (`export_classifier`): endpoints
  and signatures `serve` (= `serving_default`, float32 images in `[0, 1]`), `serve_uint8`
  (uint8 in `[0, 255]`) and `serve_bytes` (encoded image files), returning `logits`,
  `probabilities`, `class_id`, `class_name`.
* `classifier.keras`: the trained classifier; mode dabo also saves `dabo.keras`, the whole
  `DaboModel` (load either with `dabo_tf.load_model(path)`, which registers dabo-tf's layers).
* `policy.json`: the augmentation in human units (`augmenter.policy()`, the hand policy, or
  `{}`); `augmentations.png` and `curves.png` (see `dabo_tf.report`); `history.csv`.
* `logs/`: TensorBoard: `train/` and `validation/` scalars (losses, accuracy, the policy's
  `aug_<op>_low`/`aug_<op>_high` per epoch, learning rate) and a profiler trace,
  `augmentations/` images per epoch.
* `.dabo-tf-run`, written when the folder is created: it marks the folder as a dabo-tf run
  (only such a folder is ever resumed, overwritten or deleted; a run folder written before
  the marker existed is recognised by its `config.json`).
* `metrics.json`, written last: its presence marks a finished run.
* `backup/`, only while a run is unfinished: `keras.callbacks.BackupAndRestore`'s state
  (model, both optimisers, epoch) from which `resume=True` continues.

Every output is written to a temporary name beside it and renamed into place, so a crash or a
full disk never leaves a half-written artefact that looks finished. Under
`MultiWorkerMirroredStrategy` only the chief writes `workdir`; the other workers write
the same files to `<workdir>.<task_type>-<task_id>` (see `worker_workdir`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from dabo_tf.config import ConfigError
from dabo_tf.train import report

MARKER = ".dabo-tf-run"
"""The file that marks a folder as a dabo-tf run."""


def to_json(obj) -> str:
    """Strict JSON text of `obj` (NaN and inf become null; numpy values, tuples, paths)."""
    return json.dumps(_strict(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path, obj):
    """Writes `to_json(obj)` atomically (temporary file, then rename)."""
    text = to_json(obj)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _strict(obj):
    """`obj` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary sibling path to write; renames it to `path` if the block succeeds.

    The temporary name keeps `path`'s suffix (Keras insists on `.keras`), and is removed when
    the block fails (a full disk, an interrupt), so `path` is either its old self or whole.
    A folder (a SavedModel) replaces an existing one.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".partial-{path.name}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path):
    path = pathlib.Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _json_default(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, pathlib.Path):
        return str(obj)
    raise TypeError(f"Not JSON serialisable: {obj!r}")


def is_run_folder(workdir) -> bool:
    """Whether `workdir` is a dabo-tf run's folder (its marker, or an older run's config)."""
    workdir = pathlib.Path(workdir)
    return (workdir / MARKER).is_file() or (workdir / "config.json").is_file()


def check_workdir(workdir, *, resume=False, overwrite=False) -> None:
    """Checks that a run may write to `workdir` (no side effects).

    Raises:
        ConfigError: `workdir` cannot be created or written; holds files that are not a
            dabo-tf run; holds a finished run (`metrics.json`) and `overwrite` is False;
            holds an unfinished run and neither `resume` nor `overwrite` is set; is a file;
            or both `resume` and `overwrite` are set.
    """
    workdir = pathlib.Path(workdir)
    received = f"Received: workdir={str(workdir)!r}"
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume continues the run "
                          f"in {str(workdir)!r}, overwrite deletes it. Received: resume=True, "
                          "overwrite=True")
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"Output path {str(workdir)!r} is a file, not a folder. Choose "
                          f"another output folder. {received}")
    _check_writable(workdir, received)
    occupied = workdir.is_dir() and any(workdir.iterdir())
    if occupied and not is_run_folder(workdir):
        raise ConfigError(f"{str(workdir)!r} holds files that are not a dabo-tf run, so no "
                          "run is written there (nor, with --overwrite, deletes them). Choose "
                          f"a new or empty output folder. {received}")
    if (workdir / "metrics.json").exists() and not overwrite:
        raise ConfigError(f"{str(workdir)!r} holds a finished run (metrics.json). Choose "
                          "another output folder, or pass overwrite (--overwrite) to replace "
                          f"it. Received: workdir={str(workdir)!r}")
    if occupied and not (resume or overwrite):
        raise ConfigError(f"{str(workdir)!r} holds an unfinished run. Pass resume "
                          "(--resume) to continue it, overwrite (--overwrite) to start "
                          f"over, or choose another output folder. "
                          f"Received: workdir={str(workdir)!r}")
    if resume and not overwrite and not backup_readable(workdir):
        raise ConfigError(f"The unfinished run in {str(workdir)!r} cannot be resumed: it "
                          "stopped while writing its backup, which is unreadable. Pass "
                          "overwrite (--overwrite) to start it over. "
                          f"Received: workdir={str(workdir)!r}")


def _check_writable(workdir, received):
    """Fails unless the folder `workdir` exists writable or can be created (tried, undone)."""
    ancestor = workdir.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"Output folder {str(workdir)!r} would be inside {str(ancestor)!r}, "
                          f"which is a file. Choose another output folder. {received}")
    try:  # the only reliable test (/proc, /sys, read-only mounts, root's permissions)
        probe = tempfile.mkdtemp(prefix=".dabo-tf-probe-", dir=workdir if workdir.is_dir()
                                 else ancestor)
        os.rmdir(probe)
    except OSError as e:
        raise ConfigError(f"Cannot write the output folder {str(workdir)!r} "
                          f"({e.strerror or e}). Choose a writable output folder. "
                          f"{received}") from None


def check_resume_config(workdir, config) -> None:
    """Fails when `config` changes what the unfinished run in `workdir` trains.

    Only fields marked `resumable` (e.g. `epochs`, `verbose`) may differ from its
    `config.json`; the model, the data and the method may not.
    """
    check_same_config(workdir, config, "Resuming the run in {workdir!r} would change what it "
                      "trains", "Resume without those flags, or start a new run in another "
                      "output folder.")


def check_same_config(workdir, config, problem,
                      advice="Pass the same settings as the run's config.json.") -> None:
    """Fails when `config` differs from `workdir/config.json` in a field that is not
    `resumable`, naming each one (`problem` starts the message; `{workdir!r}` is filled in).

    Nothing is checked when there is no `config.json`.
    """
    from dabo_tf.config import fields

    if not (pathlib.Path(workdir) / "config.json").is_file():
        return
    saved = read_settings(workdir)
    current = json.loads(to_json(config.to_dict()))  # as config.json holds it
    changed = [f.name for f in fields() if not f.metadata.get("resumable")
               and f.name in saved and saved[f.name] != current[f.name]]
    if changed:
        shown = ", ".join(f"{name}={current[name]!r} (the run has {saved[name]!r})"
                          for name in changed)
        raise ConfigError(f"{problem.format(workdir=str(workdir))}: {shown}. {advice} "
                          f"Received: {shown}")


DATA_KEYS = ("class_names",)
"""Keys `config.json` holds beside the run's settings: facts of its data, not settings."""


def write_config(workdir, config, class_names) -> None:
    """Writes `config.json`: the settings, then the class names (index = class id)."""
    write_json(pathlib.Path(workdir) / "config.json",
               {**config.to_dict(), "class_names": [str(c) for c in class_names]})


def read_settings(workdir) -> dict:
    """The settings in `workdir/config.json` (without `DATA_KEYS`), for `config_from_dict`.

    Raises:
        ConfigError: the file cannot be read.
    """
    path = pathlib.Path(workdir) / "config.json"
    try:
        values = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"Cannot read {path} ({e}); the run cannot be resumed. Start it "
                          "again with overwrite (--overwrite).") from None
    return {k: v for k, v in values.items() if k not in DATA_KEYS}


def mark(workdir) -> None:
    """Creates `workdir` (if needed) with its marker file."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / MARKER).exists():
        (workdir / MARKER).write_text("dabo-tf run folder\n")


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
        shutil.rmtree(workdir)  # a run folder (checked), and the new run has been validated
    if resume and not workdir.is_dir():
        logging.warning("Nothing to resume in %s: starting a new run.", workdir)
    return not workdir.exists()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run: no cluster, the `chief` task, or worker 0 of a
    cluster without one (`MultiWorkerMirroredStrategy`'s rule)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (
        task_type == "worker" and int(resolver.task_id or 0) == 0 and not has_chief)


def worker_workdir(strategy: tf.distribute.Strategy, workdir) -> pathlib.Path:
    """`workdir` for the chief (or without a cluster); `<workdir>.<task>-<id>` otherwise.

    Under `MultiWorkerMirroredStrategy` every worker trains and saves, but only the chief
    writes the run's folder; the others keep their own for their `BackupAndRestore` state
    (`--resume` after a worker failed), removed when the run has finished.
    """
    workdir = pathlib.Path(workdir)
    if is_chief(strategy):
        return workdir
    resolver = strategy.cluster_resolver
    return workdir.with_name(f"{workdir.name}.{resolver.task_type}-{int(resolver.task_id or 0)}")


def export_classifier(classifier, path, class_names=None) -> None:
    """Exports `classifier` as a SavedModel for serving, loadable without dabo-tf.

    Endpoints (signatures of the same names; `serving_default` is `serve`):

    - `serve(images)`: float32 `[N, H, W, C]` images in `[0, 1]`;
    - `serve_uint8(images)`: uint8 `[N, H, W, C]` images in `[0, 255]`;
    - `serve_bytes(images)`: a string `[N]` of encoded PNG, JPEG, GIF or BMP files
      (`tf.io.decode_image`, any size and channel count: converted to C channels and resized
      to H x W, bilinear with antialiasing, as the data loaders resize).

    All return `logits`, `probabilities` (softmax), `class_id` (int64) and `class_name`
    (string, from `class_names`; the class id as text without them). Any other shape fails
    with a message naming the expected one (not TensorFlow's signature-binding error), and an
    empty batch gives empty outputs.
    """
    import keras

    height, width, channels = (int(d) for d in classifier.input_shape[1:])
    classes = int(classifier.output_shape[-1])
    names = tf.constant([str(c) for c in (class_names or range(classes))])
    expected = tf.constant([height, width, channels])

    def predict(images, dtype, scale):
        shape = tf.shape(images)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)  # any rank: compare 4 dims
        ok = tf.logical_and(tf.equal(tf.size(shape), 4),
                            tf.reduce_all(tf.equal(padded[1:4], expected)))
        check = tf.debugging.Assert(ok, [f"serve expects {dtype} images of shape [N, {height}, "
                                         f"{width}, {channels}] in [0, {scale}]; received "
                                         "shape:", shape])
        with tf.control_dependencies([check]):
            images = tf.reshape(tf.cast(images, tf.float32) / scale,
                                [-1, height, width, channels])
        logits = tf.cond(tf.shape(images)[0] > 0,
                         lambda: tf.cast(classifier(images, training=False), tf.float32),
                         lambda: tf.zeros([0, classes], tf.float32))
        class_id = tf.argmax(logits, axis=-1)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), "class_id": class_id,
                "class_name": tf.gather(names, class_id)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def serve(images):
        return predict(images, "float32", 1.0)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serve_uint8(images):
        return predict(images, "uint8", 255.0)

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32),
                                [height, width], antialias=True)
        return tf.clip_by_value(image, 0.0, 1.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_bytes(images):
        decoded = tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec(
            [height, width, channels], tf.float32))
        return predict(decoded, "float32", 1.0)

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint("serve", serve)
    archive.add_endpoint("serve_uint8", serve_uint8)
    archive.add_endpoint("serve_bytes", serve_bytes)
    archive.write_out(str(path), verbose=False)


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
    with atomic_path(workdir / "saved_model") as tmp:
        export_classifier(result.classifier, tmp, splits.class_names)
    with atomic_path(workdir / "classifier.keras") as tmp:
        result.classifier.save(tmp)
    if result.model is not result.classifier:
        outputs["model"] = f"{config.mode}.keras"
        with atomic_path(workdir / outputs["model"]) as tmp:
            result.model.save(tmp)
    write_json(workdir / "policy.json", result.policy or {})
    title = f"{splits.name}, mode {config.mode}"
    images = splits.sample_images(6)
    with atomic_path(workdir / "augmentations.png") as tmp:
        report.plot_augmentations(images, result.augment_fn, tmp, title=title)
    with atomic_path(workdir / "curves.png") as tmp:
        report.plot_curves(result.history, tmp, title=title)
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
        # CSVLogger writes "NA" for a key an epoch did not log (no validation split).
        history[key] = [float(rows[e][key]) if rows[e].get(key) not in (None, "", "NA") else
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
