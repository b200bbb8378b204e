"""Tests of dabo_tf.train and dabo_tf.recipe: configuration, schedules, runs, resume."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dabo_tf import data, presets, train
from dabo_tf.config import Config, ConfigError, check_config, config_from_dict
from dabo_tf.train import loop, recipe, rundir
from dabo_tf.train.callbacks import parse_profile_batches


def tiny(**changes):
    """The digits smoke preset (16x16, tiny_cnn, 2 epochs, 160 images, batch 32), quiet."""
    return Config(**{**presets.get_config("digits", "smoke"), "verbose": 0,
                     "profile_batches": "0", **changes})


class Snapshot(keras.callbacks.Callback):
    """Records the model state at a hook; optionally raises afterwards (a crash)."""

    def __init__(self, hook, crash=False):
        super().__init__()
        self.hook, self.crash, self.state, self.model_seen = hook, crash, None, None

    def _record(self):
        m = self.model
        self.model_seen = m
        self.state = {"classifier": [v.numpy() for v in m.classifier.weights],
                      "augmenter": [v.numpy() for v in m.augmenter.weights],
                      "optimizer": [v.numpy() for v in m.optimizer.variables],
                      "augmenter_optimizer": [v.numpy() for v in m.augmenter_optimizer.variables]}

    def on_train_begin(self, logs=None):
        if self.hook == "train_begin":
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        if self.hook == "epoch_end":
            self._record()
            if self.crash:
                raise RuntimeError("simulated crash")


def _is_share_of(accuracy, n):
    """True when `accuracy` is k/n for an integer k (an accuracy over exactly n images)."""
    return 0 <= accuracy <= 1 and abs(accuracy * n - round(accuracy * n)) < 1e-3


@pytest.mark.parametrize("name", presets.PRESETS)
@pytest.mark.parametrize("variant", [None, "smoke", "paper"])
def test_presets_are_valid_configs(name, variant):
    overrides = presets.get_config(name, variant)
    config = check_config(Config(**overrides))
    if variant == "smoke":
        assert config.epochs <= 2 and config.model == "tiny_cnn" and config.image_size == 16
    doc = __import__(f"dabo_tf.presets.{name}", fromlist=["x"]).__doc__
    assert "python run.py" in doc.split("\n\n")[1]  # the exact command opens the docstring


def test_colour_ops_are_learned_by_default_for_colour_images_only():
    colour = recipe.build_learned_augmenter(Config(), (16, 16, 3))
    gray = recipe.build_learned_augmenter(Config(), (16, 16, 1))
    assert [type(a).__name__ for a in colour.augmenters] == ["LearnedAffine", "LearnedColor"]
    assert [type(a).__name__ for a in gray.augmenters] == ["LearnedAffine"]
    forced = recipe.build_learned_augmenter(
        Config(augmenter_color=True, augmenter_flip=True, augmenter_cutout=True), (16, 16, 1))
    assert [type(a).__name__ for a in forced.augmenters] == [
        "LearnedAffine", "LearnedColor", "LearnedFlip", "LearnedCutout"]


def test_paper_presets():
    c = Config(**presets.get_config("cifar10"))
    assert (c.model, c.epochs, c.batch_size, c.lr, c.lr_milestones, c.lr_decay) == (
        "resnet18", 201, 128, 0.1, (60, 120, 160), 0.2)
    assert (c.augmenter, c.normalize_lookahead, c.antithetic, c.pre_augmentation) == (
        "distribution", True, True, ("flip",))  # dabo-tf's learned augmentation
    p = Config(**presets.get_config("cifar10:paper"))
    assert (p.model, p.epochs, p.lr_milestones, p.pre_augmentation) == (
        c.model, c.epochs, c.lr_milestones, c.pre_augmentation)
    assert (p.augmenter, p.augmenter_identity_init, p.augmenter_optimizer, p.augmenter_lr,
            p.augmenter_weight_decay, p.normalize_lookahead, p.antithetic) == (
        "network", False, "sgd", 0.2, 0.01, False, False)
    b = Config(**presets.get_config("bach"))
    assert (b.model, b.epochs, b.batch_size, b.lr_milestones, b.lr_decay, b.dataset) == (
        "resnet18_imagenet", 40, 16, (6, 10, 20), 0.1, "folder")
    assert b.augmenter_flip and b.augmenter_vflip  # histology has no up or left
    bp = Config(**presets.get_config("bach:paper"))
    assert not (bp.augmenter_flip or bp.augmenter_vflip or bp.augmenter_cutout)
    i = Config(**presets.get_config("imagenet"))
    assert (i.dataset, i.data_loading, i.model, i.epochs, i.batch_size, i.lr, i.weight_decay,
            i.image_size) == ("imagenet2012", "stream", "resnet50", 90, 800, 0.1, 1e-4, 224)
    with pytest.raises(ValueError, match="Unknown experiment"):
        presets.get_config("imagenet21k")


@pytest.mark.parametrize("changes, name", [
    (dict(mode="magic"), "mode"),
    (dict(model="resnet7"), "model"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=-4), "batch_size"),
    (dict(lr=-0.1), "lr"),
    (dict(lr_schedule="linear"), "lr_schedule"),
    (dict(lr_milestones=(10, 5)), "lr_milestones"),
    (dict(momentum=1.5), "momentum"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(val_fraction=0.0), "val_fraction"),  # mode dabo needs validation data
    (dict(augmenter="gan"), "augmenter"),
    (dict(hand_policy=("crop", "shear")), "hand_policy"),
    (dict(profile_batches="5,2"), "profile_batches"),
    (dict(patch_grid="3by4"), "patch_grid"),
    (dict(patch_grid="3x4"), "patch_grid"),  # digits: patches are for streamed folders
    (dict(dataset="folder", patch_grid="3x4", data_loading="memory"), "patch_grid"),
    (dict(dataset="folder", eval_shift="rotate:10", data_loading="stream"), "data_loading"),
    (dict(distribute="tpu"), "distribute"),
    (dict(mixed_precision="float8"), "mixed_precision"),
    (dict(val_batch_size=0), "val_batch_size"),
    (dict(hypergradient_dtype="float16"), "hypergradient_dtype"),
    (dict(augmenter_prior_pull=-0.1), "augmenter_prior_pull"),
    (dict(augmenter_prior_width=0.0), "augmenter_prior_width"),
    (dict(augmenter_prior_power=0.0), "augmenter_prior_power"),
])
def test_check_config_rejects_bad_values(changes, name):
    with pytest.raises(ConfigError, match=f"Received: {name}="):
        check_config(tiny(**changes))


def test_config_from_dict_round_trip():
    config = tiny(lr_milestones=(1, 2), hand_policy=("flip",))
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ConfigError, match="Unknown configuration keys"):
        config_from_dict({"learning_rate": 0.1})


def test_learning_rate_schedules():
    step = recipe.learning_rate_schedule(
        tiny(lr=0.1, lr_schedule="step", lr_milestones=(2, 4), lr_decay=0.1, epochs=6), 10)
    # As PyTorch's MultiStepLR: the rate changes at the first step of epoch 2 (0-based).
    got = [float(step(s)) for s in (0, 19, 20, 39, 40, 59)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    cosine = recipe.learning_rate_schedule(tiny(lr=0.1, lr_schedule="cosine", epochs=3), 10)
    assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(30)) == pytest.approx(0.0)
    assert recipe.learning_rate_schedule(tiny(lr_schedule="constant", lr=0.3), 10) == 0.3
    sgd = recipe.make_augmenter_optimizer(tiny(augmenter_optimizer="sgd", augmenter_lr=0.2,
                                               augmenter_weight_decay=0.01))
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9
    assert sgd.weight_decay == pytest.approx(0.01)


def test_parse_profile_batches():
    assert parse_profile_batches("", epochs=3, steps_per_epoch=10) == (12, 14)
    assert parse_profile_batches("", epochs=3, steps_per_epoch=2) == (3, 4)
    assert parse_profile_batches("", epochs=1, steps_per_epoch=10) == 0
    assert parse_profile_batches("", epochs=3, steps_per_epoch=10, initial_epoch=2) == 0
    assert parse_profile_batches("0", epochs=3, steps_per_epoch=10) == 0
    assert parse_profile_batches("7", epochs=3, steps_per_epoch=10) == (7, 7)
    assert parse_profile_batches("3,6", epochs=3, steps_per_epoch=10) == (3, 6)
    for bad in ("x", "1,2,3", "-1", "0,4", "6,3"):
        with pytest.raises(ValueError, match="profile_batches"):
            parse_profile_batches(bad, epochs=3, steps_per_epoch=10)


def test_prepare_workdir_rules(tmp_path):
    assert rundir.prepare_workdir(tmp_path / "new") is True
    finished = tmp_path / "finished"
    rundir.mark(finished)
    (finished / "metrics.json").write_text("{}")
    for kwargs in ({}, {"resume": True}):
        with pytest.raises(ConfigError, match="finished run"):
            rundir.prepare_workdir(finished, **kwargs)
    unfinished = tmp_path / "unfinished"
    rundir.mark(unfinished)
    (unfinished / "backup").mkdir()
    with pytest.raises(ConfigError, match="unfinished run.*--resume"):
        rundir.prepare_workdir(unfinished)
    assert rundir.prepare_workdir(unfinished, resume=True) is False
    with pytest.raises(ConfigError, match="exclude each other"):
        rundir.prepare_workdir(unfinished, resume=True, overwrite=True)
    assert rundir.prepare_workdir(finished, overwrite=True) is True and not finished.exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        rundir.prepare_workdir(tmp_path / "file")
    (tmp_path / "other" / "notes").mkdir(parents=True)  # not a run: never used, never deleted
    for kwargs in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(ConfigError, match="not a dabo-tf run"):
            rundir.prepare_workdir(tmp_path / "other", **kwargs)
    assert (tmp_path / "other" / "notes").is_dir()


def test_a_backup_torn_while_being_written(tmp_path):
    """A run killed while writing its weights resumes from the previous copy, or says why not."""
    import h5py

    rundir.mark(tmp_path / "run")
    backup = tmp_path / "run" / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # torn
    (backup / "training_metadata.json").write_text('{"epoch": 5, "batch": 0}')
    with pytest.raises(ConfigError, match="cannot be resumed.*--overwrite"):
        rundir.check_workdir(tmp_path / "run", resume=True)
    rundir.check_workdir(tmp_path / "run", overwrite=True)  # starting over is allowed

    with h5py.File(backup / "latest.weights.h5.bkp", "w"):  # the previous epoch's copy
        pass
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 4, "batch": 0}')
    rundir.check_workdir(tmp_path / "run", resume=True)
    assert rundir.completed_epochs(tmp_path / "run") == 4  # what Keras will restore


def test_one_registry_of_run_modes():
    from dabo_tf.config import MODES
    from dabo_tf.train import modes

    assert {mode: fn.__name__ for mode, fn in train.RUNNERS.items()} == {
        mode: f"run_{mode}" for mode in MODES if mode != "compare"}
    assert train.get_runner("frozen") is modes.run_frozen
    with pytest.raises(ConfigError, match="compare runs several.*Received: mode='compare'"):
        train.get_runner("compare")


def test_failures_before_training_leave_no_directory(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="batch_size is larger"):
        train.train_and_evaluate(tiny(batch_size=1000, mode="none"), tmp_path / "big_batch")
    assert not (tmp_path / "big_batch").exists()
    monkeypatch.setattr(data, "is_online", lambda *args, **kwargs: False)
    (tmp_path / "empty").mkdir()
    config = tiny(dataset="cifar10", data_dir=str(tmp_path / "empty"))
    with pytest.raises(data.DataUnavailableError, match="no internet connection"):
        train.train_and_evaluate(config, tmp_path / "offline")
    assert not (tmp_path / "offline").exists()


def test_hand_run_saved_model_matches_in_memory_classifier(tmp_path):
    capture = Snapshot("never")
    metrics = train.train_and_evaluate(tiny(mode="hand", epochs=1), tmp_path / "run",
                                       callbacks=[capture])
    classifier = capture.model
    x = data.load("digits", image_size=16).x_test[:20].astype(np.float32) / 255.0
    expected = classifier(x, training=False).numpy()
    exported = tf.saved_model.load(str(tmp_path / "run" / "saved_model"))
    served = exported.serve(x)
    np.testing.assert_allclose(served["logits"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(served["class_id"].numpy(), expected.argmax(-1))
    signature = exported.signatures["serving_default"]
    np.testing.assert_allclose(signature(images=tf.constant(x))["logits"].numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    reloaded = keras.saving.load_model(tmp_path / "run" / "classifier.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    policy = json.loads((tmp_path / "run" / "policy.json").read_text())
    assert list(policy) == ["crop", "rotate"] and policy["rotate"]["unit"] == "degrees"
    assert metrics["epochs"] == 1 and _is_share_of(metrics["test_accuracy"], 539)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_paper_recipe_smoke_on_digits(tmp_path):
    """cifar10:paper, shrunk (noise network, SGD augmenter, step schedule, flip first)."""
    config = Config(**{**presets.get_config("cifar10", "smoke"), **presets.PAPER,
                       "dataset": "digits", "verbose": 0, "profile_batches": "0"})
    capture = Snapshot("never")
    metrics = train.train_and_evaluate(config, tmp_path / "run", callbacks=[capture])
    model = capture.model
    assert isinstance(model.augmenter_optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1 * 0.2)  # after epoch 1
    assert not model.augmenter.augmenters[0].identity_init
    steps = metrics["steps_per_epoch"]
    assert metrics["optimizer_iterations"] == metrics["augmenter_optimizer_iterations"] == 2 * steps
    policy = json.loads((tmp_path / "run" / "policy.json").read_text())
    assert {"rotate", "scale_x", "translate_x"} <= set(policy)
    assert policy["rotate"]["low"] < policy["rotate"]["high"]
    loaded = keras.saving.load_model(tmp_path / "run" / "dabo.keras")
    assert loaded.augmenter.policy().keys() == policy.keys()


def test_val_batch_size_sets_the_look_ahead_batch(tmp_path, monkeypatch):
    seen = {}
    pair = data.with_validation_stream

    def spy(train_ds, val_ds):
        seen["train"], seen["val"] = (int(ds.element_spec[0].shape[0]) for ds in (train_ds, val_ds))
        return pair(train_ds, val_ds)

    monkeypatch.setattr(data, "with_validation_stream", spy)
    metrics = train.train_and_evaluate(tiny(epochs=1, val_batch_size=8), tmp_path / "run")
    assert seen == {"train": 32, "val": 8}
    assert metrics["config"]["val_batch_size"] == 8 and np.isfinite(metrics["test_accuracy"])


def test_resume_restores_classifier_augmenter_and_both_optimizers(tmp_path):
    workdir = tmp_path / "run"
    crash = Snapshot("epoch_end", crash=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train_and_evaluate(tiny(), workdir, callbacks=[crash])
    assert (workdir / "backup").is_dir() and not (workdir / "metrics.json").exists()
    assert json.loads((workdir / "config.json").read_text())["mode"] == "dabo"
    with pytest.raises(ConfigError, match="unfinished run"):
        train.train_and_evaluate(tiny(), workdir)

    restored = Snapshot("train_begin")
    metrics = train.train_and_evaluate(tiny(), workdir, resume=True, callbacks=[restored])
    for key, saved in crash.state.items():
        assert len(saved) == len(restored.state[key]), key
        for a, b in zip(saved, restored.state[key], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=key)
    assert np.any(crash.state["augmenter_optimizer"][0] > 0)  # it had taken steps
    steps = metrics["steps_per_epoch"]
    assert metrics["initial_epoch"] == 1 and metrics["epochs"] == 2
    assert metrics["optimizer_iterations"] == metrics["augmenter_optimizer_iterations"] == 2 * steps
    assert rundir.read_history(workdir / "history.csv")["epoch"] == [0, 1]
    assert not (workdir / "backup").exists()


def test_mixed_precision_and_mirrored_strategy(tmp_path):
    metrics = train.train_and_evaluate(
        tiny(mode="none", epochs=1, mixed_precision="mixed_bfloat16", distribute="mirrored"),
        tmp_path / "run")
    assert metrics["num_replicas"] == len(tf.config.list_logical_devices("CPU"))
    assert metrics["config"]["mixed_precision"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # reset afterwards


@pytest.mark.parametrize("choice, expected", [("float32", "float32"), ("policy", None)])
def test_dabo_under_mixed_precision_with_either_hypergradient_dtype(tmp_path, choice, expected):
    capture = Snapshot("never")
    metrics = train.train_and_evaluate(
        tiny(epochs=1, mixed_precision="mixed_bfloat16", hypergradient_dtype=choice),
        tmp_path / "run", callbacks=[capture])
    assert capture.model.hypergradient_dtype == expected
    assert np.isfinite(metrics["test_accuracy"]) and metrics["augmenter_optimizer_iterations"] > 0


def test_fit_classifier_with_any_front_end_and_no_workdir():
    """The helper baselines reuse: same recipe, a callable front-end, nothing written."""
    config = check_config(tiny(mode="none", epochs=1))
    splits = train.load_data(config)
    seen = []

    def invert(images):
        seen.append(images.shape)
        return 1.0 - images

    classifier, history, metrics = train.fit_classifier(config, splits, invert)
    assert seen and seen[0][1:] == (16, 16, 1)  # applied to batches in the pipeline
    assert history["epoch"] == [0] and "val_accuracy" in history
    assert metrics["steps_per_epoch"] == 128 // 32 and _is_share_of(metrics["test_accuracy"], 539)
    assert classifier.optimizer.momentum == config.momentum


def test_worker_workdir(tmp_path):
    class FakeStrategy:
        def __init__(self, task_type, task_id, cluster):
            self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)

    workers = {"worker": ["a:1", "b:1"]}
    run = tmp_path / "run"
    assert rundir.worker_workdir(FakeStrategy("worker", 0, workers), run) == run
    assert rundir.worker_workdir(FakeStrategy("worker", 1, workers), run) == (
        tmp_path / "run.worker-1")
    with_chief = {"chief": ["c:1"], **workers}
    assert rundir.worker_workdir(FakeStrategy("chief", 0, with_chief), run) == run
    assert rundir.worker_workdir(FakeStrategy("worker", 0, with_chief), run) == (
        tmp_path / "run.worker-0")
    assert rundir.worker_workdir(tf.distribute.get_strategy(), run) == run
    # Only the chief profiles (TensorFlow's profiler aborts other workers now and then).
    config = check_config(tiny(profile_batches="2,3"))
    assert loop.profile_batches(config, 4, 0, FakeStrategy("worker", 0, workers)) == (2, 3)
    assert loop.profile_batches(config, 4, 0, FakeStrategy("worker", 1, workers)) == 0
    assert loop.profile_batches(config, 4, 0, tf.distribute.get_strategy()) == (2, 3)
