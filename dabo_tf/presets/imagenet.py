"""ImageNet (ILSVRC 2012, 1,000 classes) as in the DABO paper's code: ResNet-50 from scratch.

    python run.py --experiment=imagenet --data_dir=/path/to/tensorflow_datasets
    python run.py --experiment=imagenet:paper --data_dir=...   # the paper's noise-MLP augmenter

Expected runtime: not measured (no GPU here). 90 epochs of ResNet-50 on 1.28 M images with a
bilevel step (about 3.3x the work of plain training, `benchmarks/bench_step.py --flops`):
days on 8 recent GPUs; check the setup first with `--epochs=1 --train_size=20000`.

The data is TensorFlow Datasets' `imagenet2012`, which TFDS cannot download: put
`ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in `<data_dir>/downloads/manual/`
and the first run prepares the records there (hours, once). The images are streamed
(`data_loading="stream"`): read, decoded and resized per step by `tf.data`, never held in
memory. The official validation set is the test split; the first 20% of the training split
(TFDS shuffled it when preparing) is DABO's validation split, as the paper's code holds out a
fixed 20%. `batch_size` is global: 800 over all replicas (`--distribute=mirrored` on one
machine, `multi_worker` on several; the README's *At scale*).

Settings from the released configs (shared/PAPER.md): ResNet-50 from scratch, 90 epochs,
batch 800, SGD 0.1, momentum 0.9, weight decay 1e-4, step decay (x0.1 at epochs 30 and 60,
the usual ImageNet steps: the config says only "step"); images resized to 224x224, random
crop (pad 4) and flip before the augmenter. The augmentation is learned with dabo-tf's
defaults (colour ops on for RGB); `imagenet:paper` uses the paper's noise MLP trained by SGD
0.2 (`dabo_tf.presets.PAPER`; the released ImageNet config trains it with SGD 0.1, momentum
0.9, weight decay 0.1: pass `--augmenter_lr=0.1 --augmenter_weight_decay=0.1`). Differences:
the paper resizes and centre-crops where this resizes the whole image to a square, and its
learning rate is not scaled with the batch of 800.
"""


def get_config(variant=None) -> dict:
    config = dict(
        dataset="imagenet2012",
        data_loading="stream",
        image_size=224,
        model="resnet50",
        epochs=90,
        batch_size=800,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        lr_schedule="step",
        lr_milestones=(30, 60),
        lr_decay=0.1,
        val_fraction=0.2,
        mode="dabo",
        pre_augmentation=("crop", "flip"),
        hand_policy=("crop", "flip"),
    )
    if variant == "smoke":
        from dabo_tf.presets import shrink

        config = shrink(config)
    return config
