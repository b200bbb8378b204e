"""dabo-tf: learned data augmentation by online bilevel optimisation (DABO) for Keras 3."""

__version__ = "0.1.0"
