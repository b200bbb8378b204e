#!/usr/bin/env bash
# The benchmarks on a GPU: the warp and step tables (bench_warp.py, bench_step.py, with and
# without XLA) and 100 steps of the CIFAR-10 ResNet-18 preset with XLA and mixed_float16.
#
#   bash benchmarks/gpu.sh            # on a machine with a CUDA GPU: pip install -e ".[gpu]"
#
# On a machine where TensorFlow sees no GPU it says so and exits 0 (nothing to measure). The
# CIFAR-10 run needs the data set (downloaded by TensorFlow Datasets when online, or
# DATA_DIR=/path/to/tensorflow_datasets).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! gpus=$(python -c "
import sys, tensorflow as tf
gpus = tf.config.list_physical_devices('GPU')
print(', '.join(g.name for g in gpus))
sys.exit(0 if gpus else 1)" 2>/dev/null); then
  echo "benchmarks/gpu.sh: TensorFlow sees no GPU on this machine; nothing to measure." \
       "Run it where 'python -c \"import tensorflow as tf; print(tf.config.list_physical_devices(\\\"GPU\\\"))\"'" \
       "lists one (install with: pip install -e \".[gpu]\")."
  exit 0
fi
echo "GPUs: $gpus"

python benchmarks/bench_warp.py --batch 256 --size 32
python benchmarks/bench_step.py --models small_cnn,resnet18 --batch 128 --jit 0,1 --steps 16

# 16,000 images: 12,800 for training (the preset's 20% validation split), 100 steps of 128.
out=$(mktemp -d)
python run.py --dataset=cifar10 ${DATA_DIR:+--data_dir="$DATA_DIR"} --train_size=16000 \
  --epochs=1 --jit_compile --mixed_precision=mixed_float16 --profile_batches=0 \
  --output_dir="$out/cifar10"
echo "CIFAR-10 run: $out/cifar10 (metrics.json: images_per_second, test_accuracy)"
