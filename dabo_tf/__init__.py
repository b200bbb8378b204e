"""dabo-tf: learned data augmentation by online bilevel optimisation (DABO) for Keras 3."""

from dabo_tf import data, models
from dabo_tf.augment import Augmenter, LearnedAffine, LearnedColor, NoiseAugmenter
from dabo_tf.bilevel import unrolled_hypergradient
from dabo_tf.dabo_model import DaboModel
from dabo_tf.warp import projective_warp

__all__ = ["Augmenter", "DaboModel", "LearnedAffine", "LearnedColor", "NoiseAugmenter", "data",
           "models", "projective_warp", "unrolled_hypergradient"]
__version__ = "0.1.0"
