"""Training: a run from a `Config`, from the loop to the files it leaves.

- `runner`: `run(config, workdir)` (any mode, `compare` included) and `train_and_evaluate`
  (one training: validation, folder, seeding, strategy, saving);
- `modes`: the one registry of run modes (`RUNNERS`) and the augmentation front ends;
- `loop`: the shared fit-and-evaluate loop; `recipe`: optimisers, schedules, the learned
  augmenter and the one compile helper;
- `search`: the Keras Tuner search; `compare`: methods side by side over seeds;
- `rundir`: the output folder; `callbacks`: image summaries, throughput, profiling;
  `report`: figures and the printed summary.
"""

from dabo_tf.config import Config, ConfigError, check_config, config_from_dict
from dabo_tf.train.loop import (
    RunResult,
    build_classifier,
    fit_and_evaluate,
    fit_classifier,
    load_data,
    steps_per_epoch,
    train_pipeline,
)
from dabo_tf.train.modes import RUNNERS
from dabo_tf.train.recipe import augmentation_front_end
from dabo_tf.train.runner import get_runner, run, train_and_evaluate

__all__ = ["RUNNERS", "Config", "ConfigError", "RunResult", "augmentation_front_end",
           "build_classifier", "check_config", "config_from_dict", "fit_and_evaluate",
           "fit_classifier", "get_runner", "load_data", "run", "steps_per_epoch",
           "train_and_evaluate", "train_pipeline"]
