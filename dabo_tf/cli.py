"""The command line: `dabo-tf` (also `python run.py` and `python -m dabo_tf`).

    dabo-tf                                         # DABO on the embedded digits, ~2 min on CPU
    dabo-tf --dataset=cifar10                       # the paper's CIFAR-10 preset
    dabo-tf --mode=hand --epochs=5 --output_dir=runs/try
    dabo-tf --resume --output_dir=runs/try          # continue an interrupted run
    dabo-tf --helpfull                              # every flag

Settings are resolved as: `dabo_tf.config.Config` defaults < the `--experiment` preset
(`dabo_tf/presets/<name>.py`; by default the preset named like `--dataset`, if any) < flags
given on the command line. With `--resume`, the interrupted run's `config.json` takes the
preset's place. The run's outputs (SavedModel, `metrics.json`, `policy.json`, figures,
TensorBoard logs) go to `--output_dir`; see `dabo_tf.train.rundir`.

One flag per `Config` field is generated from the field's help text, type, choices and lower
bound (`dabo_tf.config.field`), so a new field cannot be forgotten. Flags are parsed before
TensorFlow is imported: `--helpfull` and a bad flag answer at once. This is the only module
that reads flags.
"""

from __future__ import annotations

import errno
import os
import pathlib
import sys
import time
import typing
import warnings

from absl import app, flags, logging

from dabo_tf import config as config_lib
from dabo_tf import presets
from dabo_tf.config import Config

FLAGS = flags.FLAGS
_NONE = "none"  # how an enum flag spells a None choice (e.g. --mixed_precision=none)
_FIELDS = {f.name: f for f in config_lib.fields()}


def _start_tensorflow_quietly():
    """Imports TensorFlow and finds its devices with its C++ start-up log lines hidden."""
    from dabo_tf.logs import quiet_stderr

    with quiet_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()


def _unwrap(hint):
    """`Optional[X]` -> X."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def define_config_flags(flag_values=FLAGS):
    """Defines one flag per `Config` field (type, default, help, choices, bound)."""
    hints = typing.get_type_hints(Config)
    for name, field in _FIELDS.items():
        meta, default, kind = field.metadata, field.default, _unwrap(hints[name])
        kwargs = dict(flag_values=flag_values)
        if kind is tuple:
            flags.DEFINE_list(name, [str(v) for v in default], meta["help"], **kwargs)
        elif meta["choices"] is not None:
            choices = [_NONE if c is None else c for c in meta["choices"]]
            flags.DEFINE_enum(name, _NONE if default is None else default, choices,
                              meta["help"], **kwargs)
        elif kind is bool:
            flags.DEFINE_bool(name, default, meta["help"], **kwargs)
        elif kind is int:
            flags.DEFINE_integer(name, default, meta["help"], lower_bound=meta["lower_bound"],
                                 **kwargs)
        elif kind is float:
            flags.DEFINE_float(name, default, meta["help"], lower_bound=meta["lower_bound"],
                               **kwargs)
        elif kind is str:
            flags.DEFINE_string(name, default, meta["help"], **kwargs)
        else:
            raise TypeError(f"No flag type for Config.{name}: {hints[name]}")


# What to run, and where: the flags that are not `Config` fields.
flags.DEFINE_string(
    "experiment", None,
    f"Preset from dabo_tf/presets/: one of {', '.join(presets.PRESETS)}, optionally with a "
    "variant as NAME:smoke (tiny, for tests) or NAME:paper (the paper's augmenter). Defaults "
    "to the preset named like --dataset, if there is one (digits when no flag is given).")
flags.DEFINE_string("output_dir", None,
                    "Output folder. Defaults to runs/<experiment or dataset>-<mode>-<timestamp>."
                    " A folder holding a finished run (metrics.json) is never overwritten "
                    "without --overwrite.")
flags.DEFINE_bool("resume", False, "Continue the interrupted run in --output_dir from its last "
                  "completed epoch (its config.json is reused; flags given override it).")
flags.DEFINE_bool("overwrite", False, "Delete the run already in --output_dir and start over.")
define_config_flags()


class UserError(Exception):
    """Bad input from the command line; reported as one message, without a traceback."""


def _flag_value(name):
    """A flag's value as its `Config` field holds it."""
    value = FLAGS[name].value
    meta = _FIELDS[name].metadata
    if isinstance(value, list):
        if meta["items"] is int:
            try:
                return tuple(int(v) for v in value)
            except ValueError:
                raise UserError(f"--{name} must be a comma-separated list of integers. "
                                f"Received: {name}={','.join(value)!r}") from None
        return tuple(v.strip() for v in value if v.strip())
    if value == _NONE and meta["choices"] is not None and None in meta["choices"]:
        return None
    return value


def resolve_config():
    """Config from defaults < preset (or a resumed run's config.json) < explicit flags.

    Returns:
        `(config, experiment name or None, output folder)`.
    """
    dataset_flag = FLAGS["dataset"].present
    experiment = FLAGS.experiment
    from_dataset = False
    if experiment is None:
        dataset = FLAGS.dataset if dataset_flag else Config().dataset
        if dataset in presets.PRESETS:
            experiment, from_dataset = dataset, dataset_flag
    values = {}
    output_dir = FLAGS.output_dir
    saved = pathlib.Path(output_dir or "", "config.json")
    if FLAGS.resume and not output_dir:
        raise UserError("--resume needs --output_dir, the folder of the run to continue.")
    if FLAGS.resume and saved.is_file():
        from dabo_tf.train import rundir

        try:
            values = rundir.read_settings(output_dir)
        except config_lib.ConfigError as e:
            raise UserError(str(e)) from None
        experiment = None
    elif experiment is not None:
        try:
            values = presets.get_config(experiment)
        except ValueError as e:
            raise UserError(str(e)) from None
    for name in _FIELDS:
        if FLAGS[name].present and not (name == "dataset" and from_dataset):
            values[name] = _flag_value(name)
    if "verbose" not in values or values["verbose"] is None:
        values["verbose"] = 1 if sys.stdout.isatty() else 2
    if FLAGS.resume and saved.is_file():
        missing = sorted(set(_FIELDS) - set(values))
        if missing:  # an older dabo-tf wrote it: today's defaults may not be its settings
            raise UserError(f"{saved} has no value for {', '.join(missing)} (written by an "
                            "older dabo-tf), so resuming could silently change how the run "
                            "trains. Pass them as flags, or start again with --overwrite. "
                            f"Received: output_dir={output_dir}")
    try:
        config = config_lib.config_from_dict(values)
    except config_lib.ConfigError as e:
        raise UserError(str(e)) from None
    if not output_dir:
        name = presets.parse_name(experiment)[0] if experiment else config.dataset
        name = name.replace("/", "_").replace(":", "_")
        output_dir = os.path.join("runs", f"{name}-{config.mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config, experiment, pathlib.Path(output_dir)


_PROGRAM = ["dabo-tf"]  # the name the command was called by (argv[0] as parsed)


def _program():
    return _PROGRAM[0]


def _format_warning(message, category, filename, lineno, line=None):
    return f"{_program()}: warning: {message}\n"


def _fail(message, code=2):
    sys.stderr.write(f"{_program()}: error: {message}\n")
    sys.exit(code)


def _main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}: write flags as --name=value "
              f"({_program()} --helpfull lists them).")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # e.g. TFDS' INFO lines before an error
    _start_tensorflow_quietly()
    import tensorflow as tf

    from dabo_tf import data, train

    workdir = None
    try:
        config, experiment, workdir = resolve_config()
        source = (f"experiment={experiment}" if experiment else
                  "settings from config.json" if FLAGS.resume else "no preset")
        print(f"{'Resuming' if FLAGS.resume else 'Run'}: {source}, mode={config.mode}, "
              f"dataset={config.dataset}, model={config.model}, epochs={config.epochs} "
              f"-> {workdir}", flush=True)
        summary = train.run(config, workdir, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
    except (UserError, train.ConfigError, data.DataUnavailableError) as e:
        _fail(str(e))
    except tf.errors.UnavailableError as e:  # a worker of a multi-worker cluster went away
        cause = str(e.message).strip().splitlines()[0][:200]
        _fail(f"Another worker of the cluster stopped responding ({cause}). Restart every "
              f"worker (the same TF_CONFIG) with: {_program()} --resume "
              f"--output_dir={workdir}", 1)
    except OSError as e:  # a full disk, a folder made read-only during the run...
        where = f" writing {e.filename}" if e.filename else ""
        advice = ("Free some space, then" if e.errno in (errno.ENOSPC, errno.EDQUOT)
                  else "Fix that, then")
        resume = (f" continue with: {_program()} --resume --output_dir={workdir}"
                  if workdir is not None and (workdir / "backup").exists()
                  else " run again")
        _fail(f"{e.strerror or e}{where}. {advice}{resume}. Received: "
              f"output_dir={workdir}", 1)
    except KeyboardInterrupt:
        if workdir is not None and (workdir / "backup").exists():
            _fail(f"interrupted. Continue with: {_program()} --resume --output_dir={workdir}",
                  130)
        _fail("interrupted.", 130)
    print(summary, flush=True)


def _parse_flags(argv):
    """absl's parser, but a bad flag ends with one message and exit code 2."""
    _PROGRAM[0] = os.path.basename(argv[0]) if argv and argv[0] else "dabo-tf"
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e}. See {_program()} --helpfull.")


def main(argv=None):
    """The `dabo-tf` command (and `python run.py`, `python -m dabo_tf`)."""
    warnings.formatwarning = _format_warning
    app.run(_main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    main()
