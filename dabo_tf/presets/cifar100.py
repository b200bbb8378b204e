"""CIFAR-100 with the CIFAR-10 recipe (the paper released no CIFAR-100 configuration).

    python run.py --dataset=cifar100   # same as: python run.py --experiment=cifar100

Expected runtime: not measured yet; as `dabo_tf/presets/cifar10.py` (same model, epochs and
data size). The data comes from TensorFlow Datasets (`cifar100`, downloaded on first use
when online, or read from `--data_dir`).

The DABO paper's code has no CIFAR-100 settings, so this preset reuses CIFAR-10's exactly
(ResNet-18, 201 epochs, batch 128, SGD 0.1 with x0.2 steps at 60/120/160, dabo-tf's default
learned augmenter, flip before it, 20% validation split); only the data set differs.
"""


def get_config(variant=None) -> dict:
    from dabo_tf.presets import cifar10

    config = dict(cifar10.get_config(variant), dataset="cifar100")
    return config
