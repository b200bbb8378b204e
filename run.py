"""Trains a classifier with learned (DABO), hand-written or no augmentation: the command line.

    python run.py                                   # DABO on the embedded digits, ~2 min on CPU
    python run.py --dataset=cifar10                 # the paper's CIFAR-10 preset
    python run.py --mode=hand --epochs=5 --output_dir=runs/try
    python run.py --resume --output_dir=runs/try    # continue an interrupted run
    python run.py --helpfull                        # every flag

Settings are resolved as: `dabo_tf.config.Config` defaults < the `--experiment` preset
(`experiments/<name>.py`; by default the preset named like `--dataset`, if any) < flags given
on the command line. With `--resume`, the interrupted run's `config.json` takes the
preset's place. The run's outputs (SavedModel, `metrics.json`, `policy.json`, figures,
TensorBoard logs) go to `--output_dir`; see `dabo_tf.train`.

This is the only module that reads flags.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
import warnings

from absl import app, flags, logging


def _start_tensorflow_quietly():
    """Imports TensorFlow and finds its devices with its C++ start-up log lines hidden.

    TensorFlow writes them to stderr before its logging is set up, whatever
    TF_CPP_MIN_LOG_LEVEL says from inside Python. When TF_CPP_MIN_LOG_LEVEL is set in the
    environment (e.g. to 0, to see them), nothing is hidden.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_start_tensorflow_quietly()

import experiments  # noqa: E402
from dabo_tf.augment import MAGNITUDE_SCALES  # noqa: E402
from dabo_tf.config import MODES, Config  # noqa: E402

_D = Config()
FLAGS = flags.FLAGS

# What to run.
flags.DEFINE_string(
    "experiment", None,
    f"Preset from experiments/: one of {', '.join(experiments.PRESETS)}, optionally with a "
    "variant as NAME:smoke (tiny, for tests). Defaults to the preset named like --dataset, "
    "if there is one (digits when no flag is given).")
flags.DEFINE_enum("mode", _D.mode, MODES,
                  "dabo: learn the augmentation (DABO); none: no augmentation; hand: the fixed "
                  "--hand_policy; tuner: Keras Tuner search over hand policies (--tuner, "
                  "--trials) + retraining; randaugment, trivialaugment: zero-search baselines; "
                  "frozen: retrain with a DABO policy frozen (--policy_path); compare: all of "
                  "them side by side over --compare_seeds (comparison.md/.csv/.png).")
flags.DEFINE_string("output_dir", None,
                    "Output folder. Defaults to runs/<experiment or dataset>-<mode>-<timestamp>."
                    " A folder holding a finished run (metrics.json) is never overwritten "
                    "without --overwrite.")
flags.DEFINE_bool("resume", False, "Continue the interrupted run in --output_dir from its last "
                  "completed epoch (its config.json is reused; flags given override it).")
flags.DEFINE_bool("overwrite", False, "Delete the run already in --output_dir and start over.")
flags.DEFINE_integer("seed", _D.seed, "Random seed (initialisation, data order, splits, "
                     "augmentation).")
flags.DEFINE_integer("verbose", None, "Keras progress output: 0 silent, 1 progress bar, 2 one "
                     "line per epoch. Defaults to 1 on a terminal, else 2.")
# Data.
flags.DEFINE_string("dataset", _D.dataset,
                    "digits (embedded, offline), folder (your images in class subfolders under "
                    "--data_dir), or a TensorFlow Datasets name such as cifar10, cifar100, "
                    "svhn_cropped, fashion_mnist, mnist; also a preset name (bach, "
                    "tiny_imagenet) whose data is a folder.")
flags.DEFINE_string("data_dir", _D.data_dir,
                    "TFDS data folder (prepared data is read from it, downloads go to it), or "
                    "the image folder for --dataset=folder.")
flags.DEFINE_string("eval_shift", _D.eval_shift,
                    "Transform the validation and test splits (not training) by a known random "
                    "shift, a task whose right augmentation is known: rotate:DEGREES, "
                    "translate:FRACTION or scale:LOW:HIGH (e.g. rotate:40).")
flags.DEFINE_integer("image_size", _D.image_size, "Images are resized to this square size.",
                     lower_bound=1)
flags.DEFINE_float("val_fraction", _D.val_fraction,
                   "Fraction of the training data held out for validation (DABO's outer "
                   "problem and per-epoch validation accuracy).")
flags.DEFINE_integer("train_size", _D.train_size,
                     "Use a class-balanced random subset of this many training images (before "
                     "the validation split). Default: all.", lower_bound=1)
# Classifier and its optimiser.
flags.DEFINE_string("model", _D.model,
                    "Classifier: small_cnn, tiny_cnn, resnet18 (CIFAR stem), resnet18_imagenet, "
                    "resnet50, wrn28_10, wrn40_2 or any wrn<depth>_<width>.")
flags.DEFINE_integer("epochs", _D.epochs, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", _D.batch_size,
                     "Global batch size (split across replicas under --distribute).",
                     lower_bound=1)
flags.DEFINE_float("lr", _D.lr, "Classifier learning rate (SGD).")
flags.DEFINE_enum("lr_schedule", _D.lr_schedule, ["cosine", "step", "constant"],
                  "cosine: cosine decay to 0 over all steps; step: x --lr_decay at each of "
                  "--lr_milestones; constant.")
flags.DEFINE_list("lr_milestones", list(map(str, _D.lr_milestones)),
                  "Epochs at which --lr_schedule=step multiplies the rate by --lr_decay, "
                  "e.g. 60,120,160.")
flags.DEFINE_float("lr_decay", _D.lr_decay, "Factor of each step of --lr_schedule=step.")
flags.DEFINE_float("momentum", _D.momentum, "SGD momentum of the classifier.")
flags.DEFINE_float("weight_decay", _D.weight_decay,
                   "Decoupled weight decay of the classifier's SGD (Keras semantics).")
# Learned augmentation (DABO).
flags.DEFINE_enum("augmenter", _D.augmenter, ["distribution", "network"],
                  "distribution: learned uniform ranges per op; network: the paper's noise MLP.")
flags.DEFINE_bool("augmenter_color", _D.augmenter_color,
                  "Also learn colour jitter (brightness, contrast, saturation). Default: on for "
                  "colour (3-channel) images, off for grayscale.")
flags.DEFINE_bool("augmenter_flip", _D.augmenter_flip,
                  "Also learn a horizontal flip's probability (straight-through gradient).")
flags.DEFINE_bool("augmenter_vflip", _D.augmenter_vflip,
                  "Also learn a vertical flip's probability (straight-through gradient).")
flags.DEFINE_bool("augmenter_cutout", _D.augmenter_cutout,
                  "Also learn cutout's square size and probability.")
flags.DEFINE_float("augmenter_init_magnitude", _D.augmenter_init_magnitude,
                   "Distribution augmenter: initial half-width of every op (internal units: "
                   "radians, fractions of the size, log-scale...). A zero width gets no "
                   "hypergradient, so learning starts from a small one.")
flags.DEFINE_enum("augmenter_magnitude_scale", _D.augmenter_magnitude_scale, MAGNITUDE_SCALES,
                  "Distribution augmenter: learn log half-widths (a step changes a width by a "
                  "factor; a shrunk width can grow again) or linear ones.")
flags.DEFINE_float("augmenter_warmup", _D.augmenter_warmup,
                   "Fraction of the training steps before the augmenter starts learning.")
flags.DEFINE_bool("normalize_lookahead", _D.normalize_lookahead,
                  "Hold DABO's virtual step length fixed, so the augmenter is credited for the "
                  "direction of the training gradient only, not its size "
                  "(--nonormalize_lookahead: the paper's step).")
flags.DEFINE_bool("augmenter_projective", _D.augmenter_projective,
                  "Also learn projective (perspective) terms (distribution augmenter).")
flags.DEFINE_bool("augmenter_learn_mean", _D.augmenter_learn_mean,
                  "Distribution augmenter: learn a mean (bias) per op besides its magnitude "
                  "(default off: each op's range is centred on the identity).")
flags.DEFINE_bool("augmenter_identity_init", _D.augmenter_identity_init,
                  "Network augmenter: start near the identity (the paper starts random around "
                  "it: --noaugmenter_identity_init).")
flags.DEFINE_enum("augmenter_optimizer", _D.augmenter_optimizer, ["adam", "sgd"],
                  "Optimiser of the augmenter (sgd: momentum 0.9, as the paper).")
flags.DEFINE_float("augmenter_lr", _D.augmenter_lr, "Learning rate of the augmenter.")
flags.DEFINE_float("augmenter_weight_decay", _D.augmenter_weight_decay,
                   "Weight decay of the augmenter's optimiser (the paper: 0.01).")
flags.DEFINE_float("inner_lr", _D.inner_lr,
                   "Learning rate of DABO's virtual (look-ahead) step. Default: the "
                   "classifier's current learning rate.")
flags.DEFINE_integer("inner_steps", _D.inner_steps, "Unrolled inner steps (the paper: 1).",
                     lower_bound=1)
flags.DEFINE_integer("augmenter_update_every", _D.augmenter_update_every,
                     "Update the augmenter every k-th step only (cheaper).", lower_bound=1)
flags.DEFINE_bool("antithetic", _D.antithetic,
                  "DABO's bilevel steps train on half of each batch twice, each image with a "
                  "sampled transformation and with its mirror image (every op at the other end "
                  "of its range): the noise's first-order effect cancels, a cleaner "
                  "hypergradient at no extra cost.")
flags.DEFINE_integer("val_batch_size", _D.val_batch_size,
                     "Validation batch of DABO's look-ahead loss. Default: --batch_size (the "
                     "paper). Smaller is cheaper: the look-ahead pass is about 3 of a step's "
                     "10 units of work.", lower_bound=1)
flags.DEFINE_enum("fill_mode", _D.fill_mode, ["reflect", "wrap", "constant", "nearest"],
                  "How the learned warp fills pixels from outside the image.")
flags.DEFINE_list("pre_augmentation", list(_D.pre_augmentation),
                  "Hand ops applied before the learned augmenter in mode dabo (the paper: flip "
                  "on CIFAR). Same names as --hand_policy.")
# Hand-written policy and baselines.
flags.DEFINE_list("hand_policy", list(_D.hand_policy),
                  "Ops of --mode=hand, in order: crop (pad 1/8 and random crop), flip, vflip, "
                  "rotate (+-15 deg), translate (+-10%), zoom (+-10%), contrast, brightness.")
flags.DEFINE_string("policy_path", _D.policy_path,
                    "policy.json of a DABO run (or its folder), for --mode=frozen.")
flags.DEFINE_enum("tuner", _D.tuner, ["random", "bayesian", "hyperband"],
                  "Keras Tuner algorithm of --mode=tuner. Distributed tuning: start one "
                  "chief and several workers with Keras Tuner's KERASTUNER_TUNER_ID, "
                  "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set; see "
                  "dabo_tf/policy_search.py.")
flags.DEFINE_integer("trials", _D.trials, "Trials of --mode=tuner.", lower_bound=1)
flags.DEFINE_integer("randaugment_num_ops", _D.randaugment_num_ops,
                     "Ops per image of --mode=randaugment.", lower_bound=0)
flags.DEFINE_float("randaugment_factor", _D.randaugment_factor,
                   "Magnitude of --mode=randaugment.")
flags.DEFINE_list("compare_seeds", list(map(str, _D.compare_seeds)),
                  "Seeds of --mode=compare.")
# Execution.
flags.DEFINE_bool("jit_compile", _D.jit_compile,
                  "Compile training with XLA. Default: on when a GPU is present "
                  "(--jit_compile / --nojit_compile to force). On CPU it also makes a seeded "
                  "DABO run bit-reproducible (see the README).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                  "Keras mixed-precision policy.")
flags.DEFINE_enum("hypergradient_dtype", _D.hypergradient_dtype, ["float32", "policy"],
                  "Under --mixed_precision: compute DABO's bilevel passes (the training pass "
                  "differentiated twice and the look-ahead) in float32, or in the mixed "
                  "policy (faster on accelerators, less exact).")
flags.DEFINE_enum("distribute", _D.distribute, ["none", "mirrored", "multi_worker"],
                  "none; mirrored: all local GPUs (tf.distribute.MirroredStrategy); "
                  "multi_worker: MultiWorkerMirroredStrategy configured by TF_CONFIG.")
flags.DEFINE_string("profile_batches", _D.profile_batches,
                    "TensorBoard profiler range, 'START,STOP' (batches counted from 1 across "
                    "epochs) or 'N'; '0' turns it off. Default: three batches early in the "
                    "2nd epoch (none with a single epoch).")
flags.DEFINE_integer("steps_per_execution", _D.steps_per_execution,
                     "Training steps per compiled call (Keras).", lower_bound=1)

_RUN_FLAGS = ("experiment", "output_dir", "resume", "overwrite")
_INT_LISTS = ("lr_milestones", "compare_seeds")


class UserError(Exception):
    """Bad input from the command line; reported as one message, without a traceback."""


def _flag_value(name):
    value = FLAGS[name].value
    if name in _INT_LISTS:
        try:
            return tuple(int(v) for v in value)
        except ValueError:
            raise UserError(f"--{name} must be a comma-separated list of integers. "
                            f"Received: {name}={','.join(value)!r}") from None
    if isinstance(value, list):
        return tuple(v.strip() for v in value if v.strip())
    if name == "mixed_precision":
        return None if value == "none" else value
    return value


def _config_fields():
    return [f for f in Config.__dataclass_fields__ if f in FLAGS]


def resolve_config():
    """Config from defaults < preset (or a resumed run's config.json) < explicit flags.

    Returns:
        `(config, experiment name or None, output folder)`.
    """
    from dabo_tf import recipe

    dataset_flag = FLAGS["dataset"].present
    experiment = FLAGS.experiment
    from_dataset = False
    if experiment is None:
        dataset = FLAGS.dataset if dataset_flag else _D.dataset
        if dataset in experiments.PRESETS:
            experiment, from_dataset = dataset, dataset_flag
    values = {}
    output_dir = FLAGS.output_dir
    saved = pathlib.Path(output_dir or "", "config.json")
    if FLAGS.resume and not output_dir:
        raise UserError("--resume needs --output_dir, the folder of the run to continue.")
    if FLAGS.resume and saved.is_file():
        try:
            values = json.loads(saved.read_text())
        except ValueError as e:
            raise UserError(f"Cannot read {saved} ({e}); the run cannot be resumed. Start it "
                            "again with --overwrite.") from None
        experiment = None
    elif experiment is not None:
        try:
            values = experiments.get_config(experiment)
        except ValueError as e:
            raise UserError(str(e)) from None
    for name in _config_fields():
        if FLAGS[name].present and not (name == "dataset" and from_dataset):
            values[name] = _flag_value(name)
    if "verbose" not in values or values["verbose"] is None:
        values["verbose"] = 1 if sys.stdout.isatty() else 2
    if FLAGS.resume and saved.is_file():
        missing = sorted(set(_config_fields()) - set(values))
        if missing:  # an older dabo-tf wrote it: today's defaults may not be its settings
            raise UserError(f"{saved} has no value for {', '.join(missing)} (written by an "
                            "older dabo-tf), so resuming could silently change how the run "
                            "trains. Pass them as flags, or start again with --overwrite. "
                            f"Received: output_dir={output_dir}")
    config = recipe.config_from_dict(values)
    if not output_dir:
        name = experiments.parse_name(experiment)[0] if experiment else config.dataset
        name = name.replace("/", "_").replace(":", "_")
        output_dir = os.path.join("runs", f"{name}-{config.mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config, experiment, pathlib.Path(output_dir)


def _format_warning(message, category, filename, lineno, line=None):
    return f"run.py: warning: {message}\n"


def _fail(message, code=2):
    sys.stderr.write(f"run.py: error: {message}\n")
    sys.exit(code)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}: write flags as --name=value "
              "(python run.py --helpfull lists them).")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # e.g. TFDS' INFO lines before an error
    from dabo_tf import data, report, train

    workdir = None
    try:
        config, experiment, workdir = resolve_config()
        source = (f"experiment={experiment}" if experiment else
                  "settings from config.json" if FLAGS.resume else "no preset")
        print(f"{'Resuming' if FLAGS.resume else 'Run'}: {source}, mode={config.mode}, "
              f"dataset={config.dataset}, model={config.model}, epochs={config.epochs} "
              f"-> {workdir}", flush=True)
        if config.mode == "compare":
            from dabo_tf import compare, rundir

            rundir.check_workdir(workdir, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
            rows = compare.run_comparison(config, workdir)
            print(compare.format_table(rows))
            print(f"Comparison written to {workdir}/comparison.md, comparison.csv and "
                  "comparison.png", flush=True)
            return
        metrics = train.train_and_evaluate(config, workdir, resume=FLAGS.resume,
                                           overwrite=FLAGS.overwrite)
    except (UserError, train.ConfigError, data.DataUnavailableError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        if workdir is not None and (workdir / "backup").exists():
            _fail(f"interrupted. Continue with: python run.py --resume --output_dir={workdir}",
                  130)
        _fail("interrupted.", 130)
    policy = json.loads((workdir / "policy.json").read_text())
    print(report.format_summary(metrics, policy, workdir), flush=True)


def _parse_flags(argv):
    """absl's parser, but a bad flag ends with one message and exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e}. See python run.py --helpfull.")


if __name__ == "__main__":
    warnings.formatwarning = _format_warning
    app.run(main, flags_parser=_parse_flags)
