"""Comparison on digits in the reduced-data regime: DABO against no, hand, zero-search and
searched augmentation, several seeds.

    python run.py --experiment=compare                       # 3 seeds, 20 tuner trials
    python run.py --experiment=compare --compare_seeds=0,1,2,3,4 --trials=10

Every method trains `small_cnn` on 300 digits (240 train / 60 validation) at 32x32 for 30
epochs with the same optimiser; the test split is the fixed 539-image hold-out. Writes
`comparison.md/.csv/.png` to the output folder. The measured comparison, on more regimes
and with the learned ranges scored, is the development suite `benchmarks/quality.py` (README).
"""

from dabo_tf.presets import digits


def get_config(variant=None) -> dict:
    config = dict(digits.get_config(), mode="compare", train_size=300, epochs=30,
                  batch_size=32, tuner="random", trials=20, compare_seeds=(0, 1, 2))
    if variant == "smoke":
        from dabo_tf.presets import shrink

        config = dict(shrink(config), epochs=1, trials=2, compare_seeds=(0,), train_size=120)
    return config
