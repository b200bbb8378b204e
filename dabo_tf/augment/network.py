"""The paper's augmenter: a noise MLP whose outputs are an affine warp (and colour jitter)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dabo_tf import seeds
from dabo_tf.augment import warp
from dabo_tf.augment.base import AugmentationLayer, as_float32
from dabo_tf.augment.ops import AFFINE_OPS, adjust_color

_register = keras.saving.register_keras_serializable(package="dabo_tf")


@_register
class NoiseAugmenter(AugmentationLayer):
    """The paper's augmenter network: per-image noise -> MLP -> affine (and colour) parameters.

    As in the released DABO code (`small_affine`, `affine_color`): noise `z ~ U(-1, 1)^nz`
    per image (optionally concatenated with image features: per-channel mean and standard
    deviation) goes through `Dense(h1) -> ReLU -> Dropout -> Dense(h2) -> ReLU -> Dropout ->
    Dense(6 [+ 4])`. Six outputs are added to the identity 2x3 affine matrix in normalised
    coordinates (PyTorch `affine_grid(align_corners=True)` convention), so it starts *random
    around* the identity, as the paper's does. With `color=True` four more outputs, through
    tanh, drive brightness (multiply by 1 + c), an additive intensity shift, saturation
    (multiply by 1 + c) and contrast (instead of the paper's hue, which has no cheap
    differentiable form here), in a fixed order.

    Args:
        noise_dim: size of z. Defaults to 6 (10 with `color=True`, as in the paper).
        hidden: hidden layer sizes. Defaults to (6, 60) ((10, 100) with `color=True`).
        dropout: dropout rate after each hidden layer. Defaults to 0.2.
        color: also output colour parameters (`affine_color`). Defaults to False.
        image_features: concatenate per-channel mean and std of the image to the noise.
        identity_init: initialise the output layer near zero so training starts from (almost) no
            augmentation. Defaults to True; the paper's configuration (`NAME:paper` presets,
            `experiments.PAPER`) sets False: its network starts random around the identity.
        fill_mode, fill_value: passed to `projective_warp`. The paper fills with the data
            set's mean colour; `"reflect"` is the default here, as in Keras' layers.
        seed: seed of the layer's `SeedGenerator` (noise and dropout).
    """

    def __init__(self, noise_dim=None, hidden=None, dropout=0.2, color=False,
                 image_features=False, identity_init=True, fill_mode="reflect",
                 fill_value=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.noise_dim = int(noise_dim or (10 if color else 6))
        self.hidden = tuple(hidden or ((10, 100) if color else (6, 60)))
        self.dropout = float(dropout)
        self.color = bool(color)
        self.image_features = bool(image_features)
        self.identity_init = bool(identity_init)
        self.fill_mode = fill_mode
        self.fill_value = fill_value
        n_out = 6 + (4 if color else 0)
        def seeded(index):
            return seeds.stream(None if seed is None else seed * seeds.NETWORK_LAYER_STRIDE,
                                index)

        self.dense = [keras.layers.Dense(
            h, activation="relu", dtype="float32", name=f"hidden_{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seeded(i)))
            for i, h in enumerate(self.hidden)]
        out_seed = seeded(seeds.NETWORK_OUTPUT)
        init = (keras.initializers.RandomNormal(stddev=1e-3, seed=out_seed)
                if self.identity_init else keras.initializers.GlorotUniform(seed=out_seed))
        self.out = keras.layers.Dense(n_out, kernel_initializer=init, dtype="float32",
                                      name="params")

    def build(self, input_shape=None):
        channels = 1 if input_shape is None else (input_shape[-1] or 1)
        self._channels = channels
        width = self.noise_dim + (2 * channels if self.image_features else 0)
        for layer in self.dense:
            layer.build((None, width))
            width = layer.units
        self.out.build((None, width))
        self.built = True

    def get_random_transformation(self, images):
        n = tf.shape(images)[0]
        noise = self.uniform_noise((n, self.noise_dim))
        keep = 1.0 - self.dropout
        masks = [tf.cast(self.uniform_noise((n, h), 0.0, 1.0) < keep,
                         tf.float32) / keep for h in self.hidden]
        return {"noise": noise, "dropout_masks": masks}

    def parameters(self, images, transformation):
        """`[N, 6 (+4)]` raw network outputs for the given noise (and images)."""
        h = transformation["noise"]
        if self.image_features:
            x = as_float32(images)
            h = tf.concat([h, tf.reduce_mean(x, axis=[1, 2]), tf.math.reduce_std(x, axis=[1, 2])],
                          axis=-1)
        for layer, mask in zip(self.dense, transformation["dropout_masks"]):
            h = layer(h) * mask
        return self.out(h)

    def matrices(self, images, transformation, params=None):
        params = self.parameters(images, transformation) if params is None else params
        theta = tf.reshape(params[:, :6], [-1, 2, 3]) + tf.constant(
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[None]
        shape = tf.shape(images)
        return warp.normalized_affine_to_pixels(theta, shape[1], shape[2])

    def transform_images(self, images, transformation):
        params = self.parameters(images, transformation)
        transforms = warp.matrices_to_transforms(self.matrices(images, transformation, params))
        out = warp.projective_warp(images, transforms, fill_mode=self.fill_mode,
                                   fill_value=self.fill_value)
        if self.color:
            c = tf.tanh(params[:, 6:])
            x = as_float32(out) * (1.0 + c[:, 0, None, None, None]) + c[:, 1, None, None, None]
            x = adjust_color(x, saturation=c[:, 2], contrast=c[:, 3])
            out = tf.cast(x, images.dtype)
        return out

    def _samples(self, n=2048, size=32):
        images = tf.fill([n, size, size, getattr(self, "_channels", 1)], 0.5)
        t = self.get_random_transformation(images)
        params = self.parameters(images, t)
        human = warp.decompose_affine(self.matrices(images, t, params), size, size)
        human = {
            "rotate": warp.degrees(human["rotation"]),
            "shear": human["shear"],
            "scale_x": tf.exp(human["log_scale_x"]),
            "scale_y": tf.exp(human["log_scale_y"]),
            "translate_x": human["translate_x_px"] / size,
            "translate_y": human["translate_y_px"] / size,
        }
        if self.color:
            c = tf.tanh(params[:, 6:])
            human.update(brightness=1.0 + c[:, 0], intensity_shift=c[:, 1],
                         saturation=1.0 + c[:, 2], contrast=1.0 + c[:, 3])
        return human

    def policy(self):
        """Distribution of the sampled transforms (Monte Carlo): 5th-95th percentiles."""
        units = {**{k: v[0] for k, v in AFFINE_OPS.items()},
                 "brightness": "brightness factor", "intensity_shift": "additive delta",
                 "saturation": "saturation factor", "contrast": "contrast factor"}
        out = {}
        for op, values in self._samples().items():
            v = keras.ops.convert_to_numpy(values)
            lo, hi = (float(q) for q in np.percentile(v, [5, 95]))
            out[op] = {"low": lo, "high": hi, "mean": float(v.mean()), "std": float(v.std()),
                       "unit": units[op]}
        return out

    def get_config(self):
        return {**super().get_config(), "noise_dim": self.noise_dim, "hidden": list(self.hidden),
                "dropout": self.dropout, "color": self.color,
                "image_features": self.image_features, "identity_init": self.identity_init,
                "fill_mode": self.fill_mode,
                "fill_value": self.fill_value}
