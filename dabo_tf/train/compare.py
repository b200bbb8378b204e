"""Side-by-side comparison of augmentation strategies at equal training budget.

`run_comparison(config, workdir)` trains, for every seed in `config.compare_seeds`, each
method with the run's classifier, optimiser, data and epochs:

- `none`: no augmentation; `hand`: the preset's hand policy;
- `trivialaugment`, `randaugment`: zero-search baselines;
- `tuner`: Keras Tuner search over hand policies (`config.trials` trials) + retraining;
- `dabo`: learned augmentation, one training;
- `frozen`: the policy DABO learned (same seed) frozen and retrained with plain `fit`.

Each training is an ordinary run folder `workdir/<method>-seed<seed>` (resumable: finished
ones are reused), and the comparison writes `comparison.csv`, `comparison.md` and
`comparison.png` (test accuracy against total compute). Cost is counted as full trainings,
wall-clock time and training images processed (epochs x training images; a DABO step also
reads one validation batch per training batch, which is not counted).
"""

from __future__ import annotations

import csv
import json
import pathlib
import time

import keras
import numpy as np
from absl import logging

from dabo_tf.config import Config, ConfigError
from dabo_tf.logs import Progress
from dabo_tf.train import rundir, runner

METHODS = ("none", "hand", "trivialaugment", "randaugment", "tuner", "dabo", "frozen")
LABELS = {
    "none": "no augmentation",
    "hand": "hand policy",
    "trivialaugment": "TrivialAugment (wide)",
    "randaugment": "RandAugment (Keras)",
    "tuner": "Keras Tuner search + retrain",
    "dabo": "DABO (one run)",
    "frozen": "DABO policy frozen, retrained",
}
COLUMNS = ("method", "seeds", "test_accuracy_mean", "test_accuracy_std", "full_trainings",
           "wall_time_s", "images_processed", "cost_vs_dabo")


def run_dir(workdir, method: str, seed: int) -> pathlib.Path:
    """The folder of one run of a comparison: `workdir/<method>-seed<seed>`."""
    return pathlib.Path(workdir) / f"{method}-seed{seed}"


def finished(workdir, method: str, seed: int) -> bool:
    """Whether `run_method` would reuse this run's result instead of training it."""
    return (run_dir(workdir, method, seed) / "metrics.json").exists()


def run_method(config: Config, method: str, seed: int, workdir: pathlib.Path) -> dict:
    """Trains `method` with `seed` in `run_dir(workdir, method, seed)` (reused if finished)."""
    sub = run_dir(workdir, method, seed)
    if finished(workdir, method, seed):
        return json.loads((sub / "metrics.json").read_text())
    changes = dict(mode=method, seed=seed)
    if method == "frozen":
        changes["policy_path"] = str(run_dir(workdir, "dabo", seed) / "policy.json")
    keras.backend.clear_session()
    lost = sub.exists() and not rundir.backup_readable(sub)
    if lost:
        logging.warning("%s stopped while writing its backup and cannot be resumed: "
                        "training it again.", sub)
    return runner.train_and_evaluate(config.replace(**changes), sub,
                                    resume=sub.exists() and not lost, overwrite=lost)


def _cost(metrics: dict) -> tuple:
    images = metrics.get("images_processed")
    if images is None:
        images = metrics["epochs"] * metrics["data_sizes"]["train"]
    return float(metrics.get("full_trainings", 1)), float(metrics["wall_time_s"]), int(images)


def summarise(runs: dict) -> list:
    """Rows of the comparison table from `{method: [metrics of each seed]}`."""
    rows = []
    for method, seeds in runs.items():
        acc = np.array([m["test_accuracy"] for m in seeds])
        costs = np.array([_cost(m) for m in seeds], dtype=float)
        rows.append({
            "method": method,
            "seeds": len(seeds),
            "test_accuracy_mean": float(acc.mean()),
            "test_accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "full_trainings": float(costs[:, 0].sum()),
            "wall_time_s": float(costs[:, 1].sum()),
            "images_processed": int(costs[:, 2].sum()),
        })
    dabo = next((r for r in rows if r["method"] == "dabo"), None)
    for r in rows:
        r["cost_vs_dabo"] = r["wall_time_s"] / dabo["wall_time_s"] if dabo else None
    return rows


def format_table(rows: list) -> str:
    lines = ["| method | seeds | test accuracy (mean +- std) | full trainings | wall time (s) "
             "| images processed | cost vs DABO (time) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cost = "-" if r["cost_vs_dabo"] is None else f"{r['cost_vs_dabo']:.2f}x"
        lines.append(f"| {LABELS.get(r['method'], r['method'])} | {r['seeds']} | "
                     f"{100 * r['test_accuracy_mean']:.2f} +- {100 * r['test_accuracy_std']:.2f}"
                     f" | {r['full_trainings']:g} | {r['wall_time_s']:.0f} | "
                     f"{r['images_processed']:,} | {cost} |")
    return "\n".join(lines)


def write_outputs(rows: list, config: Config, workdir: pathlib.Path) -> None:
    with open(workdir / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.errorbar(r["wall_time_s"], 100 * r["test_accuracy_mean"],
                    yerr=100 * r["test_accuracy_std"], fmt="o", capsize=4,
                    label=LABELS.get(r["method"], r["method"]))
    ax.set_xscale("log")
    ax.set_xlabel(f"total wall-clock time over {len(config.compare_seeds)} seed(s), s (log)")
    ax.set_ylabel("test accuracy, % (mean +- std over seeds)")
    ax.set_title(f"{config.dataset}: accuracy against compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "comparison.png", dpi=120)
    plt.close(fig)
    settings = (f"Data set `{config.dataset}` at {config.image_size}x{config.image_size}, "
                f"train_size={config.train_size}, val_fraction={config.val_fraction}, "
                f"model `{config.model}`, {config.epochs} epochs per training, batch "
                f"{config.batch_size}, seeds {list(config.compare_seeds)}, tuner "
                f"`{config.tuner}` with {config.trials} trials.")
    (workdir / "comparison.md").write_text(f"# Comparison\n\n{settings}\n\n"
                                           f"{format_table(rows)}\n")


def run_comparison(config: Config, workdir, *, methods=METHODS) -> list:
    """Trains every method for every seed; writes and returns the comparison rows."""
    workdir = pathlib.Path(workdir)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"Unknown comparison methods {unknown}; expected names from "
                                f"{METHODS}. Received: methods={tuple(methods)}")
    if "frozen" in methods and "dabo" not in methods:
        raise ConfigError("The frozen-policy method needs the dabo method in the "
                                f"comparison. Received: methods={tuple(methods)}")
    if not config.compare_seeds:
        raise ConfigError("compare needs at least one seed. Received: compare_seeds=()")
    workdir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(workdir / "config.json", config.to_dict())
    start = time.perf_counter()
    runs = {m: [] for m in methods}
    progress = Progress([Progress.REUSED if finished(workdir, m, seed) else m
                         for seed in config.compare_seeds for m in methods], label="compare")
    for seed in config.compare_seeds:
        for method in methods:
            print(f"[compare] {method}, seed {seed}", flush=True)
            progress.begin()
            metrics = run_method(config, method, seed, workdir)
            runs[method].append(metrics)
            progress.end(f"{method}, seed {seed}: test accuracy "
                         f"{100 * metrics['test_accuracy']:.2f}%", timed=True)
    rows = summarise(runs)
    write_outputs(rows, config, workdir)
    rundir.write_json(workdir / "metrics.json", {
        "mode": "compare", "rows": rows, "wall_time_s": time.perf_counter() - start,
        "config": config.to_dict(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return rows
