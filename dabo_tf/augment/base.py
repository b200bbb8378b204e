"""The base of every dabo-tf augmentation layer, and the one way to compose them.

Every layer splits *sampling* a transformation from *applying* it, as Keras' preprocessing
layers do:

- `get_random_transformation(images)` draws the per-image noise (from a
  `keras.random.SeedGenerator`, so runs are reproducible from a seed) and returns it in a dict;
- `transform_images(images, transformation)` maps the noise to op parameters (with the
  reparameterisation trick in learned layers) and applies them, differentiably in the layer's
  weights;
- `call(images, training=None, transformation=None)` does both when `training` is true and
  returns its input unchanged otherwise. Passing a `transformation` replays one sample.

Noise keys follow one convention, which `mirror_transformation` relies on: `"noise"` is
uniform in `[-1, 1]`; `"uniform"`, `"gate"` and `"centre"` are uniform in `[0, 1)`.

Images are `[N, H, W, C]` (or one `[H, W, C]`) floats in [0, 1] pixel units; the output has
the input's shape and dtype (float16/bfloat16 included), while parameters and transforms stay
float32. `policy()` reports what a layer samples in human units, `{op: {"low": ..., "high":
..., "unit": ...}}` (`dabo_tf.augment.policy`).

Why `keras.layers.Layer` and not Keras' `BaseImagePreprocessingLayer`: that base converts
inputs to the layer's compute dtype and runs its `transform_*` methods through backend
switching meant for `tf.data` pipelines, without a way to replay or mirror a sampled
transformation (which DABO's antithetic pairs need) or to keep gradients flowing into the
transformation's parameters under XLA. The method names here are Keras' own
(`get_random_transformation`, `transform_images`), so bounding boxes and segmentation masks
(`transform_bounding_boxes`, `transform_segmentation_masks`) can be added in the same shape.
"""

from __future__ import annotations

from typing import Callable, Optional

import keras
import tensorflow as tf

from dabo_tf.augment.noise import hash_uniform

_register = keras.saving.register_keras_serializable(package="dabo_tf")


def as_float32(images):
    return tf.cast(images, tf.float32) if images.dtype not in (tf.float32, tf.float64) else images


class AugmentationLayer(keras.layers.Layer):
    """Base of dabo-tf's augmentation layers: a seeded sampler and a differentiable applier.

    Subclasses implement `get_random_transformation(images)` and `transform_images(images,
    transformation)`, and may report `policy()` (empty here).

    Args:
        seed: seed of the layer's `keras.random.SeedGenerator` (layers that only compose
            others, `COMPOSITE = True`, draw nothing themselves and have none).
    """

    COMPOSITE = False

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        if not self.COMPOSITE:
            self.seed_generator = keras.random.SeedGenerator(seed)
        # Keep the caller's image dtype; parameters and transforms use the variable dtype.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def __call__(self, images, *args, **kwargs):
        # Input conversion is off (to keep the caller's dtype); still hand Keras a tensor so
        # `build` receives the input shape.
        if not (tf.is_tensor(images) or isinstance(images, keras.KerasTensor)):
            images = tf.convert_to_tensor(images)
        return super().__call__(images, *args, **kwargs)

    def uniform_noise(self, shape, minval=-1.0, maxval=1.0):
        """Uniform noise from the layer's `SeedGenerator`, identical with and without XLA.

        TensorFlow's stateless generators give different numbers under XLA than with the
        default kernels, so the bits come from `hash_uniform` (plain integer arithmetic).
        Under `tf.distribute`, replica r draws rows `[r * n, (r + 1) * n)` of the noise the
        global batch would get on one device, so distributed and single-device runs agree.
        """
        offset = 0
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            offset = (tf.cast(ctx.replica_id_in_sync_group, tf.int64)
                      * tf.reduce_prod(tf.cast(tf.stack(shape), tf.int64)))
        noise = hash_uniform(shape, self.seed_generator.next(), minval, maxval, offset=offset)
        return tf.cast(noise, self.variable_dtype)

    def call(self, images, training=None, transformation=None):
        images = tf.convert_to_tensor(images)
        if not training:
            return images
        unbatched = images.shape.rank == 3  # one image, e.g. in tf.data before batching
        batch = images[None] if unbatched else images
        if transformation is None:
            transformation = self.get_random_transformation(batch)
        out = self.transform_images(batch, transformation)
        return out[0] if unbatched else out

    def mirror_transformation(self, transformation):
        """The antithetic sample of `transformation`: each op at the opposite end of its range.

        Noise in `[-1, 1]` (key `"noise"`) is negated, noise in `[0, 1)` (keys `"uniform"`,
        `"gate"` and `"centre"`) is replaced by `1 - u`; anything else (dropout masks) is
        kept. Used by `DaboModel(antithetic=True)` to pair each image with its mirrored
        transformation.
        """
        def complement(u):
            return 1.0 - u

        mirror = {"noise": lambda u: -u, "uniform": complement, "gate": complement,
                  "centre": complement}
        return {key: mirror.get(key, lambda v: v)(value)
                for key, value in transformation.items()}

    def policy(self) -> dict:
        """What the layer samples, in human units (`{op: {"low", "high", "unit"}}`)."""
        return {}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@_register
class Augmenter(AugmentationLayer):
    """Applies augmentation layers in sequence: the one way dabo-tf composes them.

    Sampling draws every layer's transformation (a list), applying runs them in order, and
    the policy is the union of the layers' policies: DABO's learned augmenter and a frozen
    policy (`FrozenPolicy`) are both Augmenters.

    Args:
        layers: augmentation layers (`LearnedAffine`, `LearnedColor`, `NoiseAugmenter`,
            `FixedAffine`...). Defaults to `[LearnedAffine()]`, the geometric learned
            distribution.
        seed: unused by the container itself; each layer has its own seed.

    Example:
        ```python
        augmenter = dabo_tf.Augmenter([dabo_tf.LearnedAffine(seed=1),
                                       dabo_tf.LearnedColor(seed=2)])
        augmented = augmenter(images, training=True)
        augmenter.policy()  # {"rotate": {"low": ..., "high": ..., "unit": "degrees"}, ...}
        ```
    """

    COMPOSITE = True

    def __init__(self, layers=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if layers is None:
            from dabo_tf.augment.learned import LearnedAffine

            layers = [LearnedAffine(seed=seed)]
        self.augmenters = [keras.saving.deserialize_keras_object(layer)
                           if isinstance(layer, dict) else layer for layer in layers]

    def parts(self) -> list:
        """The composed layers, in the order they apply."""
        return list(self.augmenters)

    def build(self, input_shape=None):
        for layer in self.parts():
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def get_random_transformation(self, images):
        return [layer.get_random_transformation(images) for layer in self.parts()]

    def transform_images(self, images, transformation):
        for layer, t in zip(self.parts(), transformation):
            images = layer.transform_images(images, t)
        return images

    def mirror_transformation(self, transformation):
        return [layer.mirror_transformation(t)
                for layer, t in zip(self.parts(), transformation)]

    def policy(self):
        out = {}
        for layer in self.parts():
            out.update(layer.policy())
        return out

    def get_config(self):
        return {**super().get_config(),
                "layers": [keras.saving.serialize_keras_object(layer)
                           for layer in self.augmenters]}


def as_augment_fn(augmentation) -> Optional[Callable]:
    """`None`, a layer, a list of layers or a callable -> callable `images -> images` or None.

    Layers are called with `training=True` on float32 images.
    """
    if augmentation is None:
        return None
    if isinstance(augmentation, keras.layers.Layer):
        augmentation = [augmentation]
    if isinstance(augmentation, (list, tuple)):
        if not augmentation:
            return None
        layers = list(augmentation)

        def apply(images):
            images = tf.convert_to_tensor(images, tf.float32)
            for layer in layers:
                images = layer(images, training=True)
            return images

        return apply
    if callable(augmentation):
        return augmentation
    raise TypeError(f"augmentation must be None, a layer, a list of layers or a callable. "
                    f"Received: augmentation={augmentation!r}")
