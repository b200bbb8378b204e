"""dabo-tf: learned data augmentation by online bilevel optimisation (DABO) for Keras 3.

The package is laid out by concept (see the README's "The library"):

- `dabo_tf.augment`: every augmentation layer (learned, fixed, frozen policies, baselines)
  and the warp;
- `dabo_tf.bilevel` (the hypergradient, pure maths) and `dabo_tf.dabo_model` (`DaboModel`):
  the DABO core, with `batchnorm`, `precision` and `distribute` beside them;
- `dabo_tf.train`: a run from a `Config` (the loop, the modes, the tuner search, the
  comparison, the run folder, callbacks, reports);
- `dabo_tf.config` (the one configuration), `dabo_tf.cli` (the `dabo-tf` command),
  `dabo_tf.presets`, `dabo_tf.data`, `dabo_tf.models`, `dabo_tf.flops`.

`import dabo_tf` is light when Keras is not loaded yet (the command line answers before
TensorFlow loads): the names below load their modules on first use. dabo-tf's Keras layers
are registered as soon as TensorFlow and Keras are loaded, before or after `import dabo_tf`
(`dabo_tf._register`), so `keras.saving.load_model` reads models that contain them;
`dabo_tf.load_model(path)` does the same in one call.
"""

import importlib

from dabo_tf import _aliases, _register

_aliases.install()

_LAZY = {
    "Augmenter": "dabo_tf.augment",
    "AugmentationLayer": "dabo_tf.augment",
    "LearnedAffine": "dabo_tf.augment",
    "LearnedColor": "dabo_tf.augment",
    "NoiseAugmenter": "dabo_tf.augment",
    "FrozenPolicy": "dabo_tf.augment",
    "policy_to_layers": "dabo_tf.augment",
    "DaboModel": "dabo_tf.dabo_model",
    "unrolled_hypergradient": "dabo_tf.bilevel",
    "projective_warp": "dabo_tf.augment.warp",
    "Config": "dabo_tf.config",
}

__all__ = ["AugmentationLayer", "Augmenter", "Config", "DaboModel", "FrozenPolicy",
           "LearnedAffine", "LearnedColor", "NoiseAugmenter", "data", "load_model", "models",
           "policy_to_layers", "projective_warp", "unrolled_hypergradient"]
__version__ = "0.1.0"


def load_model(path, **kwargs):
    """`keras.saving.load_model` with every dabo-tf layer and model registered first.

    Loads `classifier.keras` (with or without a frozen policy in front) and `dabo.keras`.
    """
    import keras

    importlib.import_module("dabo_tf.augment")
    importlib.import_module("dabo_tf.dabo_model")
    return keras.saving.load_model(path, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in ("augment", "bilevel", "config", "dabo_model", "data", "models", "train",
                  "presets", "seeds", "flops", "distribute", "keras_compat", "batchnorm",
                  "precision", "cli"):
        value = importlib.import_module(f"dabo_tf.{name}")
    else:
        raise AttributeError(f"module 'dabo_tf' has no attribute {name!r}")
    globals()[name] = value
    return value


_register.install()
