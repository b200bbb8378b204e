"""Tiny ImageNet (200 classes, 64x64) with the CIFAR-10 recipe, from an image folder.

    python run.py --dataset=tiny_imagenet --data_dir=/path/to/tiny-imagenet-200

Expected runtime: not measured yet (100k training images, 201 epochs of ResNet-18 at 64x64
with a bilevel step: about 10x a CIFAR run, i.e. GPU-days on one GPU; shorten with --epochs).

Tiny ImageNet is not in TensorFlow Datasets under that name, so it is read as
`--dataset=folder`. `dabo_tf.data` expects `PATH/train/<class>/*.JPEG` (and optionally
`PATH/val/<class>/*`, `PATH/test/<class>/*`); the official archive nests the training images
in `train/<wnid>/images/` and lists the validation labels in `val/val_annotations.txt`, so
reorganise it once, e.g.:

    cd tiny-imagenet-200
    for d in train/*/; do mv "$d"images/* "$d"; rmdir "$d"images; done
    mkdir -p test && while read f c _; do mkdir -p test/$c; mv val/images/$f test/$c/;
      done < val/val_annotations.txt && rm -r val

(the official validation set becomes the test split; 20% of train is held out for DABO's
validation). The paper released no Tiny ImageNet configuration: this reuses CIFAR-10's
(ResNet-18 with the 3x3 stem, 201 epochs, batch 128, SGD 0.1 with x0.2 steps at 60/120/160,
dabo-tf's default learned augmenter, flip before it).
"""


def get_config(variant=None) -> dict:
    from dabo_tf.presets import cifar10

    config = dict(cifar10.get_config(variant), dataset="folder")
    if variant != "smoke":
        config["image_size"] = 64
    return config
