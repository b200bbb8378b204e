"""End-to-end tests of the command line (`dabo_tf.cli`, `run.py`): outputs of a run, resume,
errors for users, flags."""

import csv
import glob
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, free_ports
from figures import assert_png

from dabo_tf import cli as cli_module

TINY = ["--experiment=digits:smoke"]  # 16x16, tiny_cnn, 2 epochs, 128/32/539 images, batch 32
FLAG_NAMES = (
    "dataset data_dir image_size model epochs batch_size lr lr_schedule lr_milestones momentum "
    "weight_decay mode experiment output_dir seed jit_compile mixed_precision distribute "
    "hypergradient_dtype profile_batches resume overwrite val_fraction train_size augmenter "
    "augmenter_color augmenter_projective augmenter_optimizer augmenter_lr inner_lr inner_steps "
    "augmenter_update_every val_batch_size fill_mode hand_policy tuner trials "
    "randaugment_num_ops randaugment_factor compare_seeds verbose").split()


def _env():
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: run.py hides TF's start-up lines
    return env


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one message, nothing else on stderr
    assert lines[0].startswith("run.py: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def _tags(folder):
    tags = set()
    for path in glob.glob(str(folder / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def check_run_dir(workdir, mode):
    """Everything a finished run leaves behind exists and is sane."""
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["mode"] == mode and metrics["config"]["mode"] == mode
    assert metrics["dataset"] == "digits" and metrics["epochs"] == 2
    assert metrics["data_sizes"] == {"train": 128, "val": 32, "test": 539}
    for key, images in (("test_accuracy", 539), ("best_val_accuracy", 32)):  # k of n images
        assert abs(metrics[key] * images - round(metrics[key] * images)) < 1e-3, key
    assert metrics["wall_time_s"] > 0 and metrics["images_per_second"] > 0
    assert metrics["config"]["model"] == "tiny_cnn" and metrics["config"]["jit_compile"] is False
    assert metrics["reported_epoch"] == "last"  # honest selection: nothing chosen on val
    assert metrics["validation_split_use"].startswith(
        "trains the augmenter" if mode == "dabo" else "monitoring")
    for rel in metrics["outputs"].values():
        assert (workdir / rel).exists(), rel

    policy = json.loads((workdir / "policy.json").read_text())
    if mode == "dabo":
        assert {"rotate", "shear", "zoom", "aspect", "translate_y"} <= set(policy)
        assert policy["zoom"]["draw"] == "uniform"  # --augmenter_scale_draw=linear
        assert policy["zoom"]["low"] + policy["zoom"]["high"] == pytest.approx(2.0)
        config = metrics["config"]
        learned_gates = config["augmenter_flip"] and config["augmenter_cutout"]
        if learned_gates:  # the relaxed flip and cutout reach policy.json
            assert {"flip", "cutout"} <= set(policy) and "probability" in policy["cutout"]
        assert all(p["low"] == -p["high"] and p["unit"] for op, p in policy.items()
                   if op in ("rotate", "shear", "translate_x", "translate_y"))  # centred
    elif mode == "hand":
        assert list(policy) == ["crop", "rotate"]
    else:
        assert policy == {}

    model = tf.saved_model.load(str(workdir / "saved_model"))
    x = np.random.default_rng(0).random((5, 16, 16, 1)).astype(np.float32)
    logits = model.serve(x)["logits"].numpy()
    assert logits.shape == (5, 10) and np.all(np.isfinite(logits))
    assert (workdir / "classifier.keras").is_file()
    assert (workdir / "dabo.keras").is_file() == (mode == "dabo")
    if mode == "dabo":  # the configuration reached the model (its saved config)
        with zipfile.ZipFile(workdir / "dabo.keras") as archive:
            saved = json.loads(archive.read("config.json"))["config"]
        config = metrics["config"]
        assert (saved["prior_pull"], saved["prior_width"], saved["prior_power"],
                saved["lookahead_layers"], saved["val_gradient_average"]) == (
            config["augmenter_prior_pull"], config["augmenter_prior_width"],
            config["augmenter_prior_power"], config["lookahead_layers"],
            config["val_gradient_average"])

    assert_png(workdir / "augmentations.png", 100, 300, min_bytes=5000)
    assert_png(workdir / "curves.png", 400, 200, min_bytes=5000)
    with open(workdir / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]

    logs = workdir / "logs"
    train_tags = _tags(logs / "train")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= train_tags
    assert {"epoch_loss", "epoch_accuracy"} <= _tags(logs / "validation")
    if mode == "dabo":
        assert {"epoch_aug_rotate_low", "epoch_aug_rotate_high",
                "epoch_hypergrad_norm"} <= train_tags
        if learned_gates:
            assert {"epoch_aug_flip_probability", "epoch_aug_cutout_size"} <= train_tags
    if mode != "none":
        assert "original_vs_augmented" in _tags(logs / "augmentations")
    assert glob.glob(str(logs / "train" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert not (workdir / "backup").exists() and not list(workdir.glob("*.tmp"))
    return metrics


@pytest.fixture(scope="module")
def none_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "none"
    proc = run_cli(*TINY, "--mode=none", f"--output_dir={workdir}")
    assert proc.returncode == 0, proc.stderr
    return workdir, proc


def test_mode_none_end_to_end(none_run):
    workdir, proc = none_run
    check_run_dir(workdir, "none")
    assert "test acc" in proc.stdout and str(workdir) in proc.stdout  # the summary
    assert "Epoch 2/2" in proc.stdout  # one line per epoch when stdout is not a terminal


def test_tensorboard_shows_the_profile(none_run):
    """A real TensorBoard on a run's logs (127.0.0.1) lists the Profile tab and the trace."""
    import gzip
    import time
    import urllib.request

    workdir, _ = none_run
    port, = free_ports()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main",
                              f"--logdir={workdir / 'logs'}", "--host=127.0.0.1", f"--port={port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            body = r.read()
            if r.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return json.loads(body)

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                plugins = get("/data/plugins_listing")
                break
            except OSError:
                assert board.poll() is None and time.monotonic() < deadline, "no TensorBoard"
                time.sleep(0.5)
        assert plugins["profile"]["enabled"], plugins.get("profile")
        assert "profile_redirect" not in plugins  # the stub shown when the plugin is missing
        assert [run for run in get("/data/plugin/profile/runs") if run.startswith("train/")]
    finally:
        board.terminate()
        board.wait(timeout=30)


def test_mode_hand_end_to_end(tmp_path):
    proc = run_cli(*TINY, "--mode=hand", f"--output_dir={tmp_path / 'hand'}")
    assert proc.returncode == 0, proc.stderr
    check_run_dir(tmp_path / "hand", "hand")
    assert "crop" in proc.stdout and "pixels" in proc.stdout  # the policy in the summary


def test_dabo_killed_after_first_epoch_then_resumed(tmp_path):
    """A run hard-killed after epoch 1 continues with `--resume` and finishes epoch 2 only."""
    workdir = tmp_path / "dabo"
    driver = textwrap.dedent(f"""
        import os, sys
        import keras
        from dabo_tf import presets, train
        from dabo_tf.config import Config

        class Kill(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                os._exit(17)  # like SIGKILL: no cleanup at all

        config = Config(**presets.get_config("digits:smoke"), verbose=2,
                        augmenter_flip=True, augmenter_cutout=True,
                        augmenter_prior_pull=0.2, augmenter_prior_width=0.3,
                        augmenter_prior_power=3.0, lookahead_layers=3,
                        val_gradient_average=0.9)
        train.train_and_evaluate(config, {str(workdir)!r}, callbacks=[Kill()])
    """)
    killed = subprocess.run([sys.executable, "-c", driver], env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == 17, killed.stderr
    assert (workdir / "backup").is_dir() and not (workdir / "metrics.json").exists()

    proc = run_cli(f"--output_dir={workdir}")  # no --resume: refused, nothing touched
    _assert_user_error(proc, "unfinished run", "--resume")

    # The run's config.json is reused; flags given explicitly still apply.
    proc = run_cli("--resume", f"--output_dir={workdir}", "--profile_batches=1,2")
    assert proc.returncode == 0, proc.stderr
    assert "Epoch 2/2" in proc.stdout and "Epoch 1/2" not in proc.stdout
    metrics = check_run_dir(workdir, "dabo")
    steps = metrics["steps_per_epoch"]
    assert metrics["initial_epoch"] == 1
    assert metrics["optimizer_iterations"] == metrics["augmenter_optimizer_iterations"] == 2 * steps
    assert metrics["config"]["profile_batches"] == "1,2"
    assert (metrics["config"]["augmenter_prior_pull"],
            metrics["config"]["augmenter_prior_width"],
            metrics["config"]["augmenter_prior_power"],
            metrics["config"]["lookahead_layers"],
            metrics["config"]["val_gradient_average"]) == (0.2, 0.3, 3.0, 3, 0.9)  # not defaults


def test_helpfull_documents_every_flag():
    proc = run_cli("--helpfull")
    for name in FLAG_NAMES:
        assert f"--{name}" in proc.stdout or f"--[no]{name}" in proc.stdout, name
    assert "python run.py" in proc.stdout


@pytest.mark.parametrize("args, fragments", [
    (["--mode=bogus"], ["--mode=bogus", "dabo|none|hand"]),
    (["--dataset=no_such_dataset_xyz"], ["Unknown data set 'no_such_dataset_xyz'",
                                         "--dataset=digits"]),
])
def test_user_errors_in_a_subprocess(tmp_path, args, fragments):
    proc = run_cli(*args, f"--output_dir={tmp_path / 'out'}")
    _assert_user_error(proc, *fragments)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# In process: main() with parsed flags.

def test_offline_tfds_error(cli, tmp_path, monkeypatch):
    from dabo_tf import data

    monkeypatch.setattr(data, "is_online", lambda *args, **kwargs: False)
    (tmp_path / "empty").mkdir()
    code, _, err = cli("--dataset=cifar10", f"--data_dir={tmp_path / 'empty'}",
                       f"--output_dir={tmp_path / 'out'}")
    assert code == 2 and err.startswith("run.py: error: ") and len(err.splitlines()) == 1
    assert "no internet connection" in err and "--data_dir" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--model=resnet7"], "Received: model='resnet7'"),
    (["--lr=-0.1"], "Received: lr=-0.1"),
    (["--lr_milestones=5,x"], "--lr_milestones must be"),
    (["--hand_policy=crop,warp"], "hand_policy must be one of"),
    (["--eval_shift=spin:3"], "Received: eval_shift='spin:3'"),
    (["--augmenter_warmup=1.5"], "Received: augmenter_warmup=1.5"),
    (["--experiment=imagenet21k"], "Unknown experiment preset"),
    (["--experiment=imagenet", "--data_dir=/nonexistent"], "/nonexistent/downloads/manual"),
    (["--dataset=folder", "--data_dir=/no/such/folder"], "does not exist"),
    (["--resume"], "--resume needs --output_dir"),
])
def test_bad_values_end_with_one_message(cli, tmp_path, args, fragment):
    code, _, err = cli(*TINY, *args, f"--output_dir={tmp_path / 'out'}"
                       if "--resume" not in args else "--seed=0")
    assert code == 2 and fragment in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_resuming_a_run_of_an_older_version_names_the_missing_settings(cli, tmp_path):
    from dabo_tf.config import Config

    run_dir = tmp_path / "old"
    (run_dir / "backup").mkdir(parents=True)
    saved = {k: v for k, v in Config().to_dict().items() if k != "antithetic"}
    (run_dir / "config.json").write_text(json.dumps(saved))
    code, _, err = cli("--resume", f"--output_dir={run_dir}")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no value for antithetic" in err and "--overwrite" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["backup", "config.json"]


def test_empty_or_corrupt_image_folder(cli, tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "broken.png").write_bytes(b"not a png")
    for folder in ("images", "images/cat/missing"):
        code, _, err = cli("--dataset=folder", f"--data_dir={tmp_path / folder}",
                           f"--output_dir={tmp_path / 'out'}")
        assert code == 2 and err.startswith("run.py: error: ") and "data_dir=" in err, err
        assert not (tmp_path / "out").exists()


def test_finished_run_is_not_overwritten(cli, none_run):
    workdir, _ = none_run
    before = (workdir / "metrics.json").stat().st_mtime_ns
    code, _, err = cli(*TINY, "--mode=none", f"--output_dir={workdir}")
    assert code == 2 and "finished run" in err and "--overwrite" in err
    code, _, err = cli("--resume", f"--output_dir={workdir}")
    assert code == 2 and "finished run" in err
    assert (workdir / "metrics.json").stat().st_mtime_ns == before


def test_flag_precedence(tmp_path):
    def resolve(*args):
        cli_module.FLAGS.unparse_flags()
        cli_module._parse_flags(["run.py", *args])
        try:
            return cli_module.resolve_config()
        finally:
            cli_module.FLAGS.unparse_flags()

    config, experiment, workdir = resolve()
    assert experiment == "digits" and config.model == "small_cnn" and config.image_size == 32
    assert workdir.parts[0] == "runs" and workdir.name.startswith("digits-dabo-")
    config, experiment, _ = resolve("--dataset=cifar10")
    assert experiment == "cifar10" and config.dataset == "cifar10" and config.epochs == 201
    assert config.model == "resnet18" and config.lr_milestones == (60, 120, 160)
    config, _, _ = resolve("--dataset=cifar10", "--epochs=3", "--lr_milestones=1,2")
    assert config.epochs == 3 and config.lr_milestones == (1, 2) and config.batch_size == 128
    config, experiment, _ = resolve("--dataset=bach", "--data_dir=/data/bach")
    assert experiment == "bach" and config.dataset == "folder"
    config, experiment, _ = resolve("--dataset=mnist", "--mode=none")
    assert experiment is None and config.dataset == "mnist" and config.mode == "none"
    config, _, _ = resolve("--experiment=digits:smoke", "--jit_compile")
    assert config.model == "tiny_cnn" and config.jit_compile is True
    config, _, _ = resolve("--experiment=digits:smoke")
    assert config.jit_compile is None and config.mixed_precision is None


def _workers(tmp_path, *args):
    """Two `run.py` workers of a MultiWorkerMirroredStrategy cluster on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    return [subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "--distribute=multi_worker", *args,
         f"--output_dir={tmp_path / 'run'}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(_env(), TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})))
        for i in range(2)]


ATTEMPTS = 5  # of a two-worker run whose worker TensorFlow aborts (see _run_workers)


def _run_workers(tmp_path, *args):
    """Runs two workers to the end; `[(returncode, stdout, stderr)]`. A worker killed by a
    signal (not our error path, which exits 1 with one line) is TensorFlow's: its profiler,
    stopped in a worker other than the chief, aborted it now and then (twice in a row in one
    CI run, three times in another) until only the chief profiled (`train.loop.
    profile_batches`, 2026-12-08); such a run is still tried up to ATTEMPTS times."""
    for attempt in range(ATTEMPTS):
        procs = _workers(tmp_path / f"try{attempt}", *args)
        try:
            outs = [p.communicate(timeout=300) for p in procs]
        finally:
            for p in procs:
                p.kill()
        results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]
        if not any(code is not None and code < 0 for code, _, _ in results):
            break
    return results, tmp_path / f"try{attempt}"


def test_multi_worker_run_and_a_killed_worker(tmp_path):
    """Two workers finish one run, written by the chief only; when a worker is killed, the
    other ends (no hang) with one message saying how to resume."""
    import time

    results, folder = _run_workers(tmp_path / "a", *TINY)
    assert all(code == 0 for code, _, _ in results), "\n=====\n".join(
        err[-3000:] for _, _, err in results)
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    assert metrics["num_replicas"] == 2 and metrics["config"]["distribute"] == "multi_worker"
    assert sorted(os.listdir(folder)) == ["run"]  # the other worker's folder is gone
    assert glob.glob(str(folder / "run" / "logs" / "train" / "plugins" / "profile" / "*" / "*.pb"))
    assert "the chief wrote the run to" in results[1][1]

    for attempt in range(ATTEMPTS):  # a worker aborted by TensorFlow itself (_run_workers)
        folder = tmp_path / f"b{attempt}"
        procs = _workers(folder, *TINY, "--epochs=400", "--verbose=2")
        history = folder / "run" / "history.csv"
        try:
            deadline = time.monotonic() + 240
            while not (epoch := history.is_file()
                       and len(history.read_text().splitlines()) > 2):
                if procs[0].poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            aborted = procs[1].poll() is not None and procs[1].returncode < 0
            procs[1].kill()
            if aborted and attempt < ATTEMPTS - 1:
                continue
            if not epoch:
                pytest.fail("no epoch: " + procs[0].communicate(timeout=60)[1][-3000:])
            _, err = procs[0].communicate(timeout=180)  # ends: no hang
            break
        finally:
            for p in procs:
                p.kill()
    assert procs[0].returncode == 1
    last = err.strip().splitlines()[-1]
    assert "Another worker of the cluster stopped responding" in last and "--resume" in last
    assert "Traceback" not in err
    assert (folder / "run" / "backup").is_dir()  # kept for --resume
