"""`dabo_tf.config`: one flag per field, every choice validated, one registry of modes."""

import dataclasses
import subprocess
import sys
import time
import typing

import pytest

from dabo_tf import config as config_lib
from dabo_tf.config import Config, ConfigError, check_config


def _flags():
    from dabo_tf import cli

    return cli.FLAGS


@pytest.mark.parametrize("field", config_lib.fields(), ids=lambda f: f.name)
def test_every_field_has_a_flag_with_its_default_and_help(field):
    flag = _flags()[field.name]
    assert flag.help.endswith(field.metadata["help"]) and len(field.metadata["help"]) > 10
    default = field.default
    if isinstance(default, tuple):
        assert flag.default == [str(v) for v in default]
    elif default is None and field.metadata["choices"] is not None:
        assert flag.default == "none"
    else:
        assert flag.default == default
    choices = field.metadata["choices"]
    if choices is not None and typing.get_type_hints(Config)[field.name] is not tuple:
        assert list(flag.parser.enum_values) == ["none" if c is None else c for c in choices]


CHOICE_FIELDS = [f for f in config_lib.fields() if f.metadata["choices"] is not None]


@pytest.mark.parametrize("field", CHOICE_FIELDS, ids=lambda f: f.name)
def test_every_choice_is_validated(field):
    is_tuple = typing.get_type_hints(Config)[field.name] is tuple
    for choice in field.metadata["choices"]:
        value = (choice,) if is_tuple else choice
        assert getattr(check_config(Config(**{field.name: value})), field.name) == value
    bad = ("no-such-choice",) if is_tuple else "no-such-choice"
    with pytest.raises(ConfigError, match=f"{field.name} must be one of .* Received: "
                                          f"{field.name}="):
        check_config(Config(**{field.name: bad}))


BOUNDED = [f for f in config_lib.fields() if f.metadata["lower_bound"] is not None]


@pytest.mark.parametrize("field", BOUNDED, ids=lambda f: f.name)
def test_every_lower_bound_is_validated(field):
    bound = field.metadata["lower_bound"]
    assert check_config(Config(**{field.name: bound + 1}))
    with pytest.raises(ConfigError, match=f"{field.name} must be >= {bound}"):
        check_config(Config(**{field.name: bound - 1}))


def test_augmenter_update_every_zero_is_valid_as_documented():
    assert check_config(Config(augmenter_update_every=0)).augmenter_update_every == 0
    assert _flags()["augmenter_update_every"].parser.lower_bound == 0


def test_one_registry_of_modes_and_named_choices():
    import tensorflow as tf

    from dabo_tf import models
    from dabo_tf.augment import hand, warp
    from dabo_tf.train import RUNNERS

    assert set(config_lib.MODES) == set(RUNNERS) | {"compare"}
    assert config_lib.HAND_OPS == tuple(hand.HAND_OPS)
    assert set(config_lib.MODELS) == set(models._ARCHITECTURES)
    images = tf.random.uniform((1, 4, 4, 1), seed=0)
    identity = tf.constant([[1.0, 0, 0, 0, 1, 0, 0, 0]])
    for mode in config_lib.FILL_MODES:  # every choice is one the warp implements
        out = warp.projective_warp(images, identity, fill_mode=mode)
        assert float(tf.reduce_max(tf.abs(out - images))) < 1e-6


def test_config_from_dict_round_trip_and_unknown_keys():
    config = Config(lr_milestones=(3, 6), hand_policy=("crop",))
    assert config_lib.config_from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="Unknown configuration keys \\['nope'\\]"):
        config_lib.config_from_dict({"nope": 1})


def test_flags_parse_before_tensorflow_loads():
    code = ("import sys, time; t = time.perf_counter(); from dabo_tf import cli; "
            "cli.FLAGS(['dabo-tf', '--epochs=3']); "
            "print('tensorflow' in sys.modules, cli.FLAGS.epochs, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out[:2] == ["False", "3"], out
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dabo_tf", "--helpfull"], capture_output=True,
                          text=True, timeout=60)
    assert "--augmenter_lr" in proc.stdout, proc.stderr  # (absl exits 1 after --helpfull)
    assert time.perf_counter() - start < 3.0


def test_old_import_paths_keep_working():
    import dabo_tf.policy
    import dabo_tf.warp

    import dabo_tf
    import dabo_tf.augment
    from dabo_tf import augment, policy, train, warp

    assert dabo_tf.augment.LearnedAffine is augment.learned.LearnedAffine
    assert dabo_tf.DaboModel.__module__ == "dabo_tf.dabo_model"
    assert dabo_tf.policy.policy_to_layers is augment.policy.policy_to_layers
    assert policy is augment.policy and warp is augment.warp
    assert dabo_tf.warp.projective_warp is augment.warp.projective_warp
    assert train.train_and_evaluate is train.runner.train_and_evaluate


def test_config_is_a_plain_dataclass_without_tensorflow():
    assert dataclasses.is_dataclass(Config)
    code = "import sys; import dabo_tf.config; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "False"


def test_saved_models_load_after_import_keras_then_dabo_tf(tmp_path):
    code = ("import keras, sys; import dabo_tf; "
            "m = keras.saving.load_model(sys.argv[1]); print(type(m).__name__)")
    from dabo_tf import augment

    model = keras_model_with_augmenter(augment)
    path = tmp_path / "m.keras"
    model.save(path)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("Functional"), out.stderr


@pytest.mark.parametrize("first_import", ["from dabo_tf import augment", "import dabo_tf.data"])
def test_layers_register_when_a_dabo_tf_module_loads_tensorflow(first_import):
    # TF loads while that module is half-imported: registering then would import it
    # half-done (an ImportError turned into a warning); it must wait until it has finished.
    code = (f"{first_import}\nimport keras\n"
            "print(all(keras.saving.get_registered_object(f'dabo_tf>{name}') is not None "
            "for name in ('DaboModel', 'LearnedAffine', 'FrozenPolicy')))")
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]


def keras_model_with_augmenter(augment):
    import keras

    inputs = keras.Input((8, 8, 1))
    front = augment.policy_to_layers(augment.policy_from_factors(rotate=10), seed=0)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(front(inputs)))
    return keras.Model(inputs, outputs)


def test_clean_fraction_is_bounded_by_the_images_outside_the_bilevel_pass():
    check_config(Config(clean_fraction=0.5))  # the unpaired half of the batch
    for bad in (dict(clean_fraction=0.6), dict(clean_fraction=1.0),
                dict(clean_fraction=0.3, train_unpaired=False),
                dict(clean_fraction=0.3, antithetic=False)):
        with pytest.raises(ConfigError, match="Received: clean_fraction="):
            check_config(Config(**bad))
    check_config(Config(clean_fraction=0.3, antithetic=False, hypergradient_fraction=0.5))


def test_lookahead_layers_needs_one_inner_step():
    check_config(Config(lookahead_layers=3))
    with pytest.raises(ConfigError, match="Received: lookahead_layers=3"):
        check_config(Config(lookahead_layers=3, inner_steps=2))


def test_val_gradient_average_is_a_beta_in_zero_one():
    check_config(Config(val_gradient_average=0.97))
    for bad in (1.0, -0.5):
        with pytest.raises(ConfigError, match=f"Received: val_gradient_average={bad}"):
            check_config(Config(val_gradient_average=bad))


def test_clean_fraction_defaults_to_a_quarter_where_that_many_are_outside_the_bilevel_pass():
    from dabo_tf.config import default_clean_fraction

    assert default_clean_fraction() == 0.25
    assert default_clean_fraction(antithetic=False) == 0.0  # the paper's step: all augmented
    assert default_clean_fraction(0.9, antithetic=False) == pytest.approx(0.1)
    assert default_clean_fraction(train_unpaired=False) == 0.0
    check_config(Config(antithetic=False))  # the default follows, never fails
