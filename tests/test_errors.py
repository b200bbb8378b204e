"""Bad inputs and faults: each ends in one clear message, a non-zero exit, and nothing lost.

Every case runs the command line in-process (the `cli` fixture) and checks the exit code, that
the message is one line without a traceback, what it says, and the state of the output folder
afterwards. Cases fail before training where they can; those that need a finished run share
one (`finished`, copied per test).
"""

import errno
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

TINY = ["--experiment=digits:smoke", "--epochs=1", "--profile_batches=0"]


def one_message(err):
    lines = err.strip().splitlines()
    return len(lines) == 1 and "Traceback" not in err and lines[0].startswith("run.py: error: ")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny finished run (mode none), shared; tests get a copy."""
    from dabo_tf import train
    from dabo_tf.config import Config
    from dabo_tf.presets import get_config

    path = tmp_path_factory.mktemp("shared") / "run"
    config = Config(**{**get_config("digits:smoke"), "mode": "none", "epochs": 1,
                       "profile_batches": "0", "verbose": 0})
    train.train_and_evaluate(config, path)
    return path


@pytest.fixture
def finished(finished_run, tmp_path):
    path = tmp_path / "finished"
    shutil.copytree(finished_run, path)
    return path


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


# --- Data loss ---------------------------------------------------------------------------

def test_overwrite_never_deletes_a_folder_that_is_not_a_run(cli, tmp_path):
    folder = tmp_path / "mydocs"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    for extra in ([], ["--overwrite"], ["--resume"]):
        code, _, err = cli(*TINY, f"--output_dir={folder}", *extra)
        assert code == 2 and one_message(err) and "not a dabo-tf run" in err, err
        assert (folder / "thesis.txt").read_text() == "precious"
        assert [p.name for p in folder.iterdir()] == ["thesis.txt"]


def test_overwrite_keeps_a_finished_run_until_the_new_settings_work(cli, finished):
    before = snapshot(finished)
    code, _, err = cli(*TINY, f"--output_dir={finished}", "--overwrite", "--image_size=3",
                       "--model=small_cnn")
    assert code == 2 and one_message(err) and "pooling reduces them to nothing" in err, err
    assert snapshot(finished) == before


@pytest.mark.parametrize("flag, fragment", [
    ("--model=small_cnn", "model='small_cnn' (the run has 'tiny_cnn')"),
    ("--mode=hand", "mode='hand' (the run has 'none')"),
    ("--train_size=100", "train_size=100"),
])
def test_resume_refuses_to_change_what_the_run_trains(cli, finished, flag, fragment):
    (finished / "metrics.json").unlink()  # make it unfinished
    before = snapshot(finished)
    code, _, err = cli(f"--output_dir={finished}", "--resume", flag)
    assert code == 2 and one_message(err) and fragment in err, err
    assert snapshot(finished) == before  # config.json untouched: a plain --resume still works


def test_a_full_disk_while_saving_leaves_no_half_written_file_and_resumes(cli, tmp_path,
                                                                        monkeypatch):
    import keras

    workdir = tmp_path / "run"
    save = keras.Model.save

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"truncated")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(keras.Model, "save", full_disk)
    code, _, err = cli(*TINY, f"--output_dir={workdir}")
    assert code == 1 and one_message(err) and "No space left on device" in err, err
    assert "--resume" in err and not (workdir / "metrics.json").exists()
    assert not list(workdir.glob("*.keras")) and not list(workdir.glob(".partial-*"))
    monkeypatch.setattr(keras.Model, "save", save)
    code, out, err = cli(f"--output_dir={workdir}", "--resume")
    assert code == 0, err
    resumed = json.loads((workdir / "metrics.json").read_text())
    reference_dir = tmp_path / "reference"
    assert cli(*TINY, f"--output_dir={reference_dir}")[0] == 0
    reference = json.loads((reference_dir / "metrics.json").read_text())
    assert set(resumed) == set(reference) and resumed["epochs"] == reference["epochs"] == 1
    assert (workdir / "classifier.keras").stat().st_size > 1000


def test_resume_after_an_interrupt_in_the_final_saving(cli, tmp_path, monkeypatch):
    from dabo_tf.train import report

    workdir = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_curves", interrupted)
    code, _, err = cli(*TINY, f"--output_dir={workdir}")
    assert code == 130 and "--resume" in err and not (workdir / "metrics.json").exists()
    monkeypatch.undo()
    code, _, err = cli(f"--output_dir={workdir}", "--resume")
    assert code == 0, err
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and (workdir / "curves.png").exists()
    assert not (workdir / "backup").exists()


# --- Tracebacks instead of a message -----------------------------------------------------

def test_unwritable_output_folders_fail_before_loading_data(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    for path, fragment in ((tmp_path / "file" / "run", "which is a file"),
                           ("/proc/dabo-tf-run", "Cannot write the output folder"),
                           ("/sys/dabo-tf-run", "Cannot write the output folder")):
        code, _, err = cli(*TINY, f"--output_dir={path}")
        assert code == 2 and one_message(err) and fragment in err, err


def test_no_validation_split_finishes_with_strict_json(cli, tmp_path):
    workdir = tmp_path / "run"
    code, _, err = cli(*TINY, "--mode=none", "--val_fraction=0", f"--output_dir={workdir}")
    assert code == 0, err

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    metrics = json.loads((workdir / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["best_val_accuracy"] is None and metrics["data_sizes"]["val"] == 0


@pytest.mark.parametrize("args, fragment", [
    (["--image_size=3", "--model=small_cnn"], "pooling reduces them to nothing"),
    (["--model=wrn5_1"], "depth must be 6 n + 4"),
    (["--image_size=4096"], "GiB"),
    (["--lr=inf"], "lr must be a positive number"),
    (["--mode=frozen"], "--policy_path"),
])
def test_impossible_settings_fail_before_training(cli, tmp_path, args, fragment):
    workdir = tmp_path / "run"
    code, _, err = cli(*TINY, *args, f"--output_dir={workdir}")
    assert code == 2 and one_message(err) and fragment in err, err
    assert not workdir.exists()


@pytest.mark.parametrize("content, fragment", [
    ("{garbage", "is not a policy file"),
    ('{"rotate": {"low": NaN, "high": 1, "unit": "degrees"}}', "needs finite low <= high"),
    ('{"rotate": {"low": -1e308, "high": 1e308, "unit": "degrees"}}', "within +-360"),
    ('{"cutout": {"low": 0.1, "high": 0.2, "probability": 2}}', "probability must be in"),
    ('[1, 2]', "is not a policy file"),
])
def test_corrupt_policy_files(cli, tmp_path, content, fragment):
    policy = tmp_path / "policy.json"
    policy.write_text(content)
    workdir = tmp_path / "run"
    code, _, err = cli(*TINY, "--mode=frozen", f"--policy_path={policy}",
                       f"--output_dir={workdir}")
    assert code == 2 and one_message(err) and fragment in err, err
    assert not workdir.exists()


def test_truncated_backup_cannot_be_resumed_and_says_so(cli, finished):
    (finished / "metrics.json").unlink()
    backup = finished / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n truncated")
    (backup / "training_metadata.json").write_text('{"epoch": 1}')
    before = snapshot(finished)
    code, _, err = cli(f"--output_dir={finished}", "--resume")
    assert code == 2 and one_message(err) and "cannot be resumed" in err, err
    assert snapshot(finished) == before


def test_garbage_tfds_metadata(cli, tmp_path):
    version = tmp_path / "tfds" / "mnist" / "3.0.1"
    version.mkdir(parents=True)
    (version / "dataset_info.json").write_text("{garbage")
    code, _, err = cli(*TINY, "--dataset=mnist", f"--data_dir={tmp_path / 'tfds'}",
                       f"--output_dir={tmp_path / 'run'}")
    assert code == 2 and one_message(err) and "look damaged" in err, err
    assert not (tmp_path / "run").exists()


# --- Wrong results without a word --------------------------------------------------------

def test_a_run_that_diverges_fails(cli, tmp_path):
    workdir = tmp_path / "run"
    code, _, err = cli(*TINY, "--mode=none", "--lr=1e30", f"--output_dir={workdir}")
    assert code == 2 and one_message(err) and "Training diverged" in err, err
    assert not (workdir / "metrics.json").exists()


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_one_class_folder_is_refused(cli, tmp_path):
    for i in range(6):
        _png(tmp_path / "images" / "only" / f"{i}.png", 40 * i)
    code, _, err = cli(*TINY, "--dataset=folder", f"--data_dir={tmp_path / 'images'}",
                       f"--output_dir={tmp_path / 'run'}")
    assert code == 2 and one_message(err) and "one class" in err, err


def test_test_split_lacking_a_class_is_warned_about(tmp_path):
    from dabo_tf import data

    for cls in ("a", "b"):
        for i in range(6):
            _png(tmp_path / "train" / cls / f"{i}.png", 30 * i + (100 if cls == "b" else 0))
    for i in range(3):
        _png(tmp_path / "test" / "a" / f"{i}.png", 10 * i)
    with pytest.warns(UserWarning, match=r"test split .* no image of class\(es\) \['b'\]"):
        data.load("folder", data_dir=tmp_path, image_size=8)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_among_the_images_is_skipped_not_waited_on(tmp_path):
    from dabo_tf import data

    for cls in ("a", "b"):
        for i in range(4):
            _png(tmp_path / cls / f"{i}.png", 50 * i + (20 if cls == "b" else 0))
    os.mkfifo(tmp_path / "a" / "pipe.png")
    with pytest.warns(UserWarning, match=r"pipe.png \(not a regular file\)"):
        splits = data.load("folder", data_dir=tmp_path, image_size=8, val_fraction=0.25)
    assert sum(splits.sizes.values()) == 8


def test_the_saved_model_checks_its_input_and_serves_an_empty_batch(finished_run):
    import tensorflow as tf

    served = tf.saved_model.load(str(finished_run / "saved_model"))
    for shape in ((2, 20, 20, 1), (16, 16, 1), (2, 16, 16, 3)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"serve expects float32 images of shape \[N, 16, 16, 1\]"):
            served.serve(tf.zeros(shape))
    assert served.serve(tf.zeros((0, 16, 16, 1)))["logits"].shape == (0, 10)
    assert served.serve(tf.zeros((3, 16, 16, 1)))["probabilities"].shape == (3, 10)


def test_profiler_and_start_up_lines_stay_off_the_console(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "dabo_tf", *TINY[:2], "--mode=none",
                           "--profile_batches=2,3", f"--output_dir={tmp_path / 'run'}",
                           "--verbose=2"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # no I0000 / W0000 / absl lines
    assert list((tmp_path / "run" / "logs").rglob("*.xplane.pb"))  # the trace is recorded


SERVE_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
assert not any(m.startswith("dabo_tf") for m in sys.modules)
served = tf.saved_model.load(sys.argv[1])
images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1)).astype(np.uint8)
as_float = served.signatures["serving_default"](images=tf.constant(images / 255, tf.float32))
as_uint8 = served.signatures["serve_uint8"](images=tf.constant(images))
# Encoded files: the same image as PNG, as an RGB PNG (converted to gray by the model) and
# 2x larger as JPEG (resized by the model).
rgb = np.repeat(images, 3, -1)
big = np.repeat(np.repeat(rgb, 2, 1), 2, 2)
files = [tf.io.encode_png(images[0]), tf.io.encode_png(rgb[1]), tf.io.encode_jpeg(big[2])]
as_bytes = served.signatures["serve_bytes"](images=tf.stack(files))
print(json.dumps({
    "signatures": sorted(served.signatures),
    "keys": sorted(as_float), "same": bool(np.allclose(as_float["logits"], as_uint8["logits"],
                                                        atol=1e-5)),
    "rows": [float(r) for r in tf.reduce_sum(as_float["probabilities"], -1).numpy()],
    "names": [n.decode() for n in as_uint8["class_name"].numpy()],
    "ids": as_uint8["class_id"].numpy().tolist(),
    "bytes_shape": as_bytes["probabilities"].shape.as_list(),
    "bytes_err": float(np.abs(as_bytes["logits"][:2] - as_uint8["logits"][:2]).max()),
    "no_dabo_tf": not any(m.startswith("dabo_tf") for m in sys.modules)}))
"""


def test_the_saved_model_serves_in_a_process_without_dabo_tf(finished_run, tmp_path):
    import subprocess
    import sys

    path = str(finished_run / "saved_model")
    proc = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, path], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["signatures"] == ["serve", "serve_bytes", "serve_uint8", "serving_default"]
    assert out["keys"] == ["class_id", "class_name", "logits", "probabilities"]
    assert out["same"] and out["no_dabo_tf"] and np.allclose(out["rows"], 1.0, atol=1e-5)
    assert out["names"] == [str(i) for i in out["ids"]]  # digits' classes are "0".."9"
    assert out["bytes_shape"] == [3, 10] and out["bytes_err"] < 0.05, out  # PNGs: as uint8
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["class_names"] == [str(i) for i in range(10)]
    config = json.loads((finished_run / "config.json").read_text())
    assert config["class_names"] == metrics["class_names"]
    cli = subprocess.run([str(pathlib.Path(sys.executable).with_name("saved_model_cli")),
                          "show", "--dir", path, "--tag_set", "serve",
                          "--signature_def", "serving_default"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "class_name" in cli.stdout and "probabilities" in cli.stdout
    np.save(tmp_path / "images.npy", np.full((2, 16, 16, 1), 255, np.uint8))
    cli = subprocess.run([str(pathlib.Path(sys.executable).with_name("saved_model_cli")),
                          "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                          "serve_uint8", "--inputs", f"images={tmp_path / 'images.npy'}"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "class_name" in cli.stdout and "probabilities" in cli.stdout, cli.stdout
