"""BACH (ICIAR 2018 breast-cancer histology, 4 classes) as in the DABO paper's code.

    python run.py --dataset=bach --data_dir=/path/to/ICIAR2018_BACH_Challenge/Photos
    python run.py --experiment=bach:paper --data_dir=...   # the paper's noise-MLP augmenter

Expected runtime: not measured yet (400 microscopy images, 4,800 patches of 512x512; 40
epochs of ResNet-18 with a bilevel step: of the order of hours on one GPU). BACH is not in
TensorFlow Datasets: download it from the challenge site yourself and point `--data_dir` at
the folder holding one subfolder per class (`Benign/`, `InSitu/`, `Invasive/`, `Normal/`
with the `.tif` images); it is read as `--dataset=folder`, streamed, with a fixed 30% test
and a 20% validation split made per image.

The paper's protocol (`patch_grid="3x4"`): each 2048x1536 image is cut into the
non-overlapping grid of twelve 512x512 patches (3 rows, 4 columns, at full resolution);
training and validation use every patch with its image's label, and a test image is
predicted by the mean of its twelve patches' logits (`metrics.json`: `test_unit`). The
splits are drawn per image before cutting, so the patches of one image are never in two
splits. (The public BACH release does not say which patient an image comes from, so the
split cannot be by patient.) The validation accuracy during training is per patch.

Settings from the released configs: ResNet-18 with the ImageNet stem, 40 epochs, batch 16,
SGD 0.1, momentum 0.9, weight decay 5e-4, learning rate 0.1 -> 0.01 (epoch 6) -> 0.001
(epoch 10) -> 1e-4 (epoch 20); no hand augmentation. The augmentation is learned with
dabo-tf's defaults plus learned horizontal and vertical flips (histology has no up or left);
`bach:paper` uses the paper's noise-MLP augmenter with SGD 0.2, momentum 0.9, weight decay
0.01 (`dabo_tf.presets.PAPER`). Differences: the paper fine-tunes ImageNet-pretrained weights
(Keras has none for ResNet-18: this trains from scratch); TIFFs are decoded by PIL.
"""


def get_config(variant=None) -> dict:
    config = dict(
        dataset="folder",
        data_loading="stream",
        patch_grid="3x4",
        image_size=512,
        model="resnet18_imagenet",
        epochs=40,
        batch_size=16,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        lr_schedule="step",
        lr_milestones=(6, 10, 20),
        lr_decay=0.1,
        val_fraction=0.2,
        mode="dabo",
        augmenter_flip=True,
        augmenter_vflip=True,
        pre_augmentation=(),
        hand_policy=("flip", "vflip", "rotate"),
    )
    if variant == "smoke":
        from dabo_tf.presets import shrink

        config = shrink(config)
    return config
