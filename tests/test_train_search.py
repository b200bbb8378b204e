"""Tests of the Keras Tuner baseline: `dabo_tf.policy_search`."""

import glob
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from dabo_tf import augment, data
from dabo_tf.augment import policy
from dabo_tf.config import Config
from dabo_tf.train import recipe
from dabo_tf.train import search as policy_search


@pytest.fixture(scope="module")
def splits():
    return data.load("digits", image_size=16, train_size=150, seed=0)


def _config(**changes):
    return Config(model="tiny_cnn", image_size=16, train_size=150, epochs=1, batch_size=32,
                  verbose=0, jit_compile=False).replace(**changes)


def _rgb(splits):
    rgb = lambda x: np.repeat(x, 3, axis=-1)  # noqa: E731
    return data.DataSplits(
        name="rgb", x_train=rgb(splits.x_train), y_train=splits.y_train,
        x_val=rgb(splits.x_val), y_val=splits.y_val, x_test=rgb(splits.x_test),
        y_test=splits.y_test, num_classes=10, class_names=splits.class_names,
        image_shape=(16, 16, 3), mean=(0.5,) * 3, std=(0.25,) * 3)


def test_hyperparameter_names_follow_dabo_ops(splits):
    for data_splits, saturation in [(splits, False), (_rgb(splits), True)]:
        model = policy_search.AugmentationHyperModel(_config(), data_splits)
        hp = keras_tuner.HyperParameters()
        factors = model.factors(hp)
        names = {p.name for p in hp.space}
        expected = {f"factor_{f}" for f in policy_search.FACTORS} | {"flip"}
        if not saturation:
            expected.discard("factor_saturation")
        assert names == expected
        known = set(augment.AFFINE_OPS) | set(augment.COLOR_OPS)
        for factor, (ops, _, _) in policy_search.FACTORS.items():
            assert set(ops) <= known and all(op.startswith(factor) for op in ops)
        # Every factor defaults to "off": the default policy is the identity.
        assert not any(factors.values())
        pol = model.policy(hp)
        assert policy.split_policy(pol) == ({}, {}, {})
        assert ("saturation" in pol) == saturation
    custom = policy_search.AugmentationHyperModel(
        _config(), splits, search_space={"rotate": (0, 90), "shear": None, "flip": False})
    hp = keras_tuner.HyperParameters()
    custom.factors(hp)
    assert hp.get("factor_rotate") == 0 and hp.space[0].max_value == 90
    assert "factor_shear" not in hp and "flip" not in hp
    with pytest.raises(ValueError, match="Unknown search-space entry"):
        policy_search.AugmentationHyperModel(_config(), splits, search_space={"hue": 0.1})


def test_policy_of_tuned_factors(splits):
    model = policy_search.AugmentationHyperModel(_config(), _rgb(splits))
    hp = keras_tuner.HyperParameters()
    model.factors(hp)
    hp.values.update(factor_rotate=20.0, factor_scale=0.25, factor_saturation=0.5, flip=True)
    pol = model.policy(hp)
    assert pol["rotate"] == {"low": -20.0, "high": 20.0, "unit": "degrees"}
    assert pol["scale_x"]["low"] == pytest.approx(0.8) and pol["scale_x"]["high"] == 1.25
    assert (pol["saturation"]["low"], pol["saturation"]["high"]) == (0.5, 1.5)
    assert pol["flip"]["low"] == pol["flip"]["high"] == 0.5


def test_best_trial_ties_go_to_the_earliest():
    def trial(trial_id, score, status="COMPLETED"):
        return SimpleNamespace(trial_id=trial_id, score=score, status=status)

    trials = [trial("2", 0.5), trial("0", 0.4), trial("1", 0.5), trial("3", 0.9, "INVALID")]
    oracle = SimpleNamespace(trials={t.trial_id: t for t in trials},
                             objective=SimpleNamespace(direction="max"))
    assert policy_search.best_completed_trial(oracle).trial_id == "1"
    oracle.objective.direction = "min"
    assert policy_search.best_completed_trial(oracle).trial_id == "0"


def test_build_uses_the_run_recipe(splits):
    config = _config(lr=0.1, epochs=2, weight_decay=1e-4, momentum=0.8)
    hypermodel = policy_search.AugmentationHyperModel(config, splits)
    model = hypermodel.build(keras_tuner.HyperParameters())
    reference = recipe.make_optimizer(config, hypermodel.steps_per_epoch)
    assert isinstance(model.optimizer, type(reference))
    for key in ("learning_rate", "momentum", "weight_decay"):
        assert model.optimizer.get_config()[key] == reference.get_config()[key], key
    assert model.optimizer.built and hypermodel.steps_per_epoch == len(splits.y_train) // 32
    assert isinstance(model.layers[1], policy.FrozenPolicy)
    assert model.layers[2].name == "tiny_cnn"


def test_random_search_resumes(splits, tmp_path):
    config = _config()
    result = policy_search.run_search(config, splits, tmp_path, tuner="random", trials=2)
    project = tmp_path / "tuner"
    assert result["project_dir"] == str(project) and (project / "oracle.json").exists()
    trial_files = sorted(project.glob("trial_*/trial.json"))
    assert len(trial_files) == 2
    assert result["trials"] == 2 and result["search_epochs"] == 2
    assert result["full_trainings"] == 2.0  # the search only: the tuner mode retrains
    assert result["images_processed"] == 2 * len(splits.y_train)
    scores = [json.loads(f.read_text())["score"] for f in trial_files]
    assert result["best_val_accuracy"] == max(scores)
    assert set(result["best_hyperparameters"]) == {f"factor_{f}" for f in policy_search.FACTORS
                                                   if f != "saturation"} | {"flip"}
    assert set(result["best_policy"]) >= {"rotate", "translate_x", "contrast", "flip"}
    assert result["wall_time_s"] > 0
    json.dumps(result)  # plain types only
    # Every trial is in TensorBoard's HParams dashboard, with its hyperparameters.
    for trial_file in trial_files:
        trial = json.loads(trial_file.read_text())
        events = glob.glob(str(tmp_path / "logs" / "trials" / trial["trial_id"] / "execution0"
                               / "**" / "events.out.tfevents.*"), recursive=True)
        tags = {v.tag for path in events for event in tf.compat.v1.train.summary_iterator(path)
                for v in event.summary.value}
        assert {"_hparams_/session_start_info", "epoch_loss"} <= tags, (trial_file, tags)

    stamps = [os.stat(f).st_mtime_ns for f in trial_files]
    again = policy_search.run_search(config, splits, tmp_path, tuner="random", trials=2)
    assert [os.stat(f).st_mtime_ns for f in trial_files] == stamps  # nothing rerun
    assert {k: again[k] for k in ("best_hyperparameters", "best_val_accuracy", "full_trainings")} \
        == {k: result[k] for k in ("best_hyperparameters", "best_val_accuracy", "full_trainings")}
    more = policy_search.run_search(config, splits, tmp_path, tuner="random", trials=3)
    assert more["trials"] == 3 and "test_accuracy" not in more
    assert len(list(project.glob("trial_*/trial.json"))) == 3


def test_bayesian_search(splits, tmp_path):
    result = policy_search.run_search(_config(), splits, tmp_path, tuner="bayesian", trials=2)
    assert result["tuner"] == "bayesian" and result["trials"] == 2
    assert result["full_trainings"] == 2.0
    with pytest.raises(ValueError, match="Unknown tuner"):
        policy_search.run_search(_config(), splits, tmp_path / "x", tuner="grid")


def test_hyperband_counts_epochs(splits, tmp_path):
    config = _config(epochs=2)
    result = policy_search.run_search(config, splits, tmp_path, tuner="hyperband",
                                      hyperband_factor=2)
    assert result["trials"] >= 2 and result["tuner"] == "hyperband"
    assert 0 < result["search_epochs"] < 2 * result["trials"]  # brackets resume trials
    assert result["full_trainings"] == result["search_epochs"] / 2


MEMORY_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys
    import keras
    from dabo_tf import config as config_lib, data
    from dabo_tf.train import search as policy_search

    RECORDS = []

    class Memory(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            RECORDS.append({"peak_mb": round(peak, 1), "rss_mb": round(rss, 1)})

    splits = data.load("digits", image_size=16, train_size=150, seed=0)
    config = config_lib.Config(model="tiny_cnn", image_size=16, train_size=150, epochs=1,
                               batch_size=32, verbose=0, jit_compile=False)
    policy_search.run_search(config, splits, sys.argv[1], tuner="random", trials=5,
                             callbacks=[Memory()])
    print("MEMORY " + json.dumps(RECORDS))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_trials_do_not_leak_memory(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("MEMORY ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    # rss_mb is the process's current resident memory. peak_mb (ru_maxrss) survives exec on
    # Linux, so in a child of pytest it mostly shows the parent's peak.
    records = json.loads(lines[-1][len("MEMORY "):])
    print("\nper-trial memory (MB):", records)
    assert len(records) == 5
    for key in ("peak_mb", "rss_mb"):
        growth = records[4][key] / records[1][key] - 1.0
        assert growth < 0.2, (key, records)
    # Stricter: before the fixes in `build_model`/`fit` a trial leaked ~15 MB (~45 MB here).
    assert records[4]["rss_mb"] - records[1]["rss_mb"] < 15.0, records


def test_distributed_search_chief_and_two_workers(tmp_path):
    """The module docstring's commands, run: a chief and two workers on 127.0.0.1."""
    import re

    from conftest import ROOT, free_ports

    port, = free_ports()
    workdir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "run.py"), "--experiment=digits:smoke", "--mode=tuner",
               "--trials=3", f"--output_dir={workdir}"]
    env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
    procs = {tid: subprocess.Popen(command, env=dict(env, KERASTUNER_TUNER_ID=tid),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tid in ("tuner0", "tuner1", "chief")}  # workers first: they wait for the chief
    try:
        out = {tid: p.communicate(timeout=300) for tid, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    for tid, p in procs.items():
        assert p.returncode == 0, (tid, out[tid][1][-3000:])
    ran = {tid: int(re.search(r"ran (\d+) trial", out[tid][0]).group(1))
           for tid in ("tuner0", "tuner1")}
    trials = sorted(json.loads(f.read_text())["trial_id"]
                    for f in (workdir / "tuner").glob("trial_*/trial.json"))
    assert sum(ran.values()) == len(trials) == 3  # every trial ran exactly once
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["trials"] == 3 and metrics["full_trainings"] == 4  # as one process counts
    assert "serving the oracle on 127.0.0.1" in out["chief"][0]


def test_worker_waits_for_the_chief_and_refuses_other_settings(tmp_path):
    from dabo_tf.config import ConfigError
    from dabo_tf.train import rundir

    with pytest.raises(ConfigError, match="No Keras Tuner chief's run appeared"):
        policy_search.run_worker(_config(mode="tuner"), tmp_path / "none", wait_s=0.2)
    rundir.mark(tmp_path)
    rundir.write_json(tmp_path / "config.json", _config(mode="tuner").to_dict())
    with pytest.raises(ConfigError, match=r"differ from the chief's run: model='small_cnn'"):
        policy_search.run_worker(_config(mode="tuner", model="small_cnn"), tmp_path, wait_s=0.2)
