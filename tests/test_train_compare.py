"""`--mode=compare` end to end on tiny settings: every method, its outputs and the table."""

import csv
import json

import numpy as np
import pytest

from dabo_tf.config import ConfigError, config_from_dict
from dabo_tf.presets import get_config
from dabo_tf.train import compare


def test_tiny_comparison_runs_every_method(tmp_path, capsys):
    config = config_from_dict(dict(get_config("compare:smoke"), verbose=0))
    assert config.trials == 2 and config.epochs == 1
    rows = compare.run_comparison(config, tmp_path)
    n = len(compare.METHODS) * len(config.compare_seeds)  # progress: run i of n, time left
    assert f"[compare] {n}/{n} " in capsys.readouterr().out
    methods = [r["method"] for r in rows]
    assert methods == list(compare.METHODS)
    for name in ("comparison.md", "comparison.csv", "comparison.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 100, name
    by_method = {r["method"]: r for r in rows}
    assert by_method["tuner"]["full_trainings"] == 3  # 2 trials + the retraining
    assert by_method["tuner"]["images_processed"] == 3 * by_method["none"]["images_processed"]
    assert by_method["dabo"]["cost_vs_dabo"] == 1.0
    for r in rows:  # each mean is the mean of the method's runs
        runs = [json.loads((tmp_path / f"{r['method']}-seed{seed}" / "metrics.json").read_text())
                for seed in config.compare_seeds]
        assert r["test_accuracy_mean"] == pytest.approx(
            np.mean([m["test_accuracy"] for m in runs]))
    with open(tmp_path / "comparison.csv") as f:
        assert len(list(csv.DictReader(f))) == len(compare.METHODS)
    table = (tmp_path / "comparison.md").read_text()
    assert "TrivialAugment" in table and "RandAugment" in table and "Keras Tuner" in table
    # The frozen run trained with the policy DABO learned for the same seed.
    frozen = json.loads((tmp_path / "frozen-seed0" / "policy.json").read_text())
    learned = json.loads((tmp_path / "dabo-seed0" / "policy.json").read_text())
    assert frozen == learned
    # The tuner run's search reloads from its folder alone.
    from dabo_tf.train import search

    tuner = search.load_search(tmp_path / "tuner-seed0")
    tuned = json.loads((tmp_path / "tuner-seed0" / "metrics.json").read_text())
    done = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(done) == config.trials == tuned["trials"]
    best = search.best_completed_trial(tuner.oracle).hyperparameters.values
    assert {k: v for k, v in best.items() if not k.startswith("tuner/")} \
        == tuned["best_hyperparameters"]
    with pytest.raises(ConfigError, match="holds no Keras Tuner search"):
        search.load_search(tmp_path / "dabo-seed0")
    # Finished runs are reused: a second call trains nothing and gives the same table.
    again = compare.run_comparison(config, tmp_path)
    assert [r["test_accuracy_mean"] for r in again] == [r["test_accuracy_mean"] for r in rows]
