"""Keras classifiers mapping `[0, 1]` images to logits.

Every model is a functional `keras.Model` whose first layer is a `Normalization` layer
(`(x - mean) / std` with the training split's per-channel statistics), so it takes float
`[0, 1]` NHWC images, the same pixels augmentation acts on, and returns float32 logits (no
softmax; the final `Dense` is float32 also under a `mixed_float16` policy). Convolutions use
He-normal initialisation (the final `Dense` Keras' Glorot-uniform default) and no kernel
regularisers: weight decay belongs to the optimizer. BatchNormalization uses PyTorch's
defaults (momentum 0.9 in Keras terms, epsilon 1e-5), as the DABO paper's models were
trained in PyTorch.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from dabo_tf.config import MODELS  # noqa: F401  (the names; built by _ARCHITECTURES)

DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25


class _Init:
    """Hands out a fresh He-normal initializer per layer, seeded `seed, seed + 1, ...`.

    Keras 3 initializers seeded with an int return the same values at every call, so sharing
    one across layers would give identical kernels.
    """

    def __init__(self, seed):
        self.seed = seed

    def next_seed(self):
        if self.seed is None:
            return None
        self.seed += 1
        return self.seed

    def __call__(self, kind="he_normal"):
        if self.seed is None:
            return kind
        cls = keras.initializers.GlorotUniform if kind == "glorot_uniform" else \
            keras.initializers.HeNormal
        return cls(seed=self.next_seed())


def _normalize(inputs, mean, std):
    channels = inputs.shape[-1]
    mean = np.broadcast_to(np.asarray(DEFAULT_MEAN if mean is None else mean, np.float32),
                           [channels])
    std = np.broadcast_to(np.asarray(DEFAULT_STD if std is None else std, np.float32),
                          [channels])
    var = np.square(np.maximum(std, 1e-3))  # guard constant channels
    return keras.layers.Normalization(mean=mean.tolist(), variance=var.tolist(),
                                      name="normalization")(inputs)


def _bn(x, name):
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def _conv(x, filters, kernel, init, name, strides=1, padding="same"):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                               use_bias=False, kernel_initializer=init(), name=name)(x)


def _head(x, num_classes, init):
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=init("glorot_uniform"),
                              dtype="float32", name="logits")(x)


def _conv_bn_relu(x, filters, init, name, strides=1):
    x = _conv(x, filters, 3, init, f"{name}_conv", strides=strides)
    return keras.layers.ReLU(name=f"{name}_relu")(_bn(x, f"{name}_bn"))


def _small_cnn(inputs, num_classes, init, width=32):
    """A few conv-BN-ReLU blocks, global pooling and a dense layer (~66k parameters)."""
    x = _conv_bn_relu(inputs, width, init, "block1a")
    x = _conv_bn_relu(x, width, init, "block1b")
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = _conv_bn_relu(x, 2 * width, init, "block2")
    x = keras.layers.MaxPooling2D(2, name="block2_pool")(x)
    x = _conv_bn_relu(x, 2 * width, init, "block3")
    return _head(x, num_classes, init)


def _tiny_cnn(inputs, num_classes, init, width=8):
    """Two conv-BN-ReLU layers and a dense layer, for tests."""
    x = _conv_bn_relu(inputs, width, init, "conv1", strides=2)
    x = _conv_bn_relu(x, 2 * width, init, "conv2", strides=2)
    return _head(x, num_classes, init)


def _basic_block(x, filters, strides, init, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _bn(_conv(x, filters, 1, init, f"{name}_proj_conv", strides=strides),
                       f"{name}_proj_bn")
    x = _conv_bn_relu(x, filters, init, f"{name}_1", strides=strides)
    x = _bn(_conv(x, filters, 3, init, f"{name}_2_conv"), f"{name}_2_bn")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _resnet18(inputs, num_classes, init, imagenet_stem=False):
    """ResNet-18 with BasicBlocks in 4 stages of 64/128/256/512 channels.

    With `imagenet_stem=False` (CIFAR variant, the paper's CIFAR classifier) the stem is one
    3x3 convolution without max-pooling. With `imagenet_stem=True` it is the original 7x7
    stride-2 convolution and 3x3 stride-2 max-pooling (the paper's BACH classifier; the paper
    fine-tuned ImageNet-pretrained weights, which Keras applications do not ship for
    ResNet-18, so this model trains from scratch).
    """
    if imagenet_stem:
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(inputs)
        x = _conv(x, 64, 7, init, "stem_conv", strides=2, padding="valid")
        x = keras.layers.ReLU(name="stem_relu")(_bn(x, "stem_bn"))
        x = keras.layers.ZeroPadding2D(1, name="pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    else:
        x = _conv_bn_relu(inputs, 64, init, "stem")
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides, init, f"stage{stage + 1}_block{block + 1}")
    return _head(x, num_classes, init)


def wide_resnet(depth=28, width=10, dropout=0.0, *, input_shape=(32, 32, 3), num_classes=10,
                mean=None, std=None, seed=None):
    """Builds WideResNet-`depth`-`width` (Zagoruyko & Komodakis 2016) with pre-activation.

    Args:
        depth: total depth, `6 n + 4` (n blocks per group).
        width: widening factor `k`; the three groups have 16k, 32k and 64k channels.
        dropout: dropout rate between the two convolutions of each block.
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        mean: per-channel mean for the `Normalization` layer (see `build_classifier`).
        std: per-channel standard deviation for the `Normalization` layer.
        seed: optional int making initialisation and dropout deterministic.

    Returns:
        A `keras.Model` named `wrn{depth}_{width}`.
    """
    return build_classifier(f"wrn{depth}_{width}", input_shape, num_classes, mean=mean, std=std,
                            seed=seed, depth=depth, width=width, dropout=dropout)


def _wide_resnet(inputs, num_classes, init, depth=28, width=10, dropout=0.0):
    """WideResNet body on the normalised inputs; returns the logits tensor."""
    if (depth - 4) % 6:
        raise ValueError(f"depth must be 6 n + 4. Received: depth={depth}")
    n = (depth - 4) // 6
    x = _conv(inputs, 16, 3, init, "stem_conv")
    for group, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(n):
            name = f"group{group + 1}_block{block + 1}"
            strides = 2 if group > 0 and block == 0 else 1
            act = keras.layers.ReLU(name=f"{name}_relu1")(_bn(x, f"{name}_bn1"))
            if strides != 1 or x.shape[-1] != filters:
                shortcut = _conv(act, filters, 1, init, f"{name}_proj_conv", strides=strides)
            else:
                shortcut = x
            y = _conv(act, filters, 3, init, f"{name}_conv1", strides=strides)
            y = keras.layers.ReLU(name=f"{name}_relu2")(_bn(y, f"{name}_bn2"))
            if dropout:
                y = keras.layers.Dropout(dropout, seed=init.next_seed(),
                                         name=f"{name}_dropout")(y)
            y = _conv(y, filters, 3, init, f"{name}_conv2")
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    x = keras.layers.ReLU(name="final_relu")(_bn(x, "final_bn"))
    return _head(x, num_classes, init)


def _resnet50(inputs, num_classes, init):
    """Keras applications' ResNet50 (`weights=None`), the paper's ImageNet classifier.

    Same as `keras.applications.ResNet50(weights=None, include_top=True,
    classes=num_classes, classifier_activation=None)`: built with `include_top=False,
    pooling="avg"` plus our float32 `Dense` so logits stay float32 under mixed precision.
    Keeps the application's own initialisers and BatchNormalization settings.
    """
    backbone = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                           input_shape=tuple(inputs.shape[1:]))
    x = backbone(inputs)
    return keras.layers.Dense(num_classes, kernel_initializer=init("glorot_uniform"),
                              dtype="float32", name="logits")(x)


def build_classifier(name, input_shape, num_classes, *, mean=None, std=None, seed=None,
                     **kwargs):
    """Builds a classifier from `[0, 1]` images to float32 logits.

    Args:
        name: one of `MODELS`, or `"wrn{depth}_{width}"` for any other WideResNet.
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        mean: per-channel mean (or a scalar) of the training images in `[0, 1]` units;
            defaults to 0.5.
        std: per-channel standard deviation (or a scalar); defaults to 0.25.
        seed: optional int making the initialisation (and WRN dropout) deterministic.
        **kwargs: passed to the architecture: `width` (small_cnn, tiny_cnn, wrn*),
            `depth` and `dropout` (wrn*).

    Returns:
        An uncompiled `keras.Model` named `name`.

    Raises:
        ValueError: if `name` is unknown.
    """
    builder, defaults = _ARCHITECTURES.get(name, (None, None))
    match = re.fullmatch(r"wrn(\d+)_(\d+)", str(name))
    if builder is None and match:  # any other WideResNet, e.g. "wrn16_4"
        builder, defaults = _wide_resnet, dict(depth=int(match[1]), width=int(match[2]))
    if builder is None:
        raise ValueError(f"Unknown model. Expected one of {MODELS}. Received: name={name!r}")
    init = _Init(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = _normalize(inputs, mean, std)
    outputs = builder(x, num_classes, init, **dict(defaults, **kwargs))
    return keras.Model(inputs, outputs, name=name)


_ARCHITECTURES = {
    "small_cnn": (_small_cnn, {}),
    "tiny_cnn": (_tiny_cnn, {}),
    "resnet18": (_resnet18, {}),
    "resnet18_imagenet": (_resnet18, dict(imagenet_stem=True)),
    "wrn28_10": (_wide_resnet, dict(depth=28, width=10, dropout=0.3)),
    "wrn40_2": (_wide_resnet, dict(depth=40, width=2, dropout=0.0)),
    "resnet50": (_resnet50, {}),
}
