"""Benchmark: streamed input keeps memory flat as the data grows, and keeps up with training.

    python benchmarks/bench_input.py                   # 2,000 and 20,000 PNGs at 32x32
    python benchmarks/bench_input.py --sizes=2000,20000 --loadings=stream,memory

1. Generates image folders of N small PNGs (10 classes, `--image_size` squared, RGB),
   reused when already there.
2. For each N and loading (`--data_loading=stream|memory`) runs one epoch of `run.py` (DABO,
   `small_cnn`, batch 128) in its own process and records its peak resident memory
   (`os.wait4`), its training images/s and its wall time. Streamed, the peak should not grow
   with N (the goal: within 10% over a 10x larger folder); in memory it grows with the
   decoded arrays.
3. Reads the largest folder's training stream on its own (decode, resize, batch: exactly
   what training consumes) and compares its images/s with the training step's images/s of
   the same run: the input pipeline should never be the bottleneck (goal: >= 3x).

Absolute numbers depend on the machine; the memory growth and the rate ratio are what to
compare. On a 2-core machine the pipeline and the step share the cores during training.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from dabo_tf.logs import Progress  # no TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_folder(path, n, image_size, classes=10, seed=0):
    """`path/<class>/<i>.png`: n smooth random images (a gradient and a blob per class)."""
    from PIL import Image

    path = pathlib.Path(path)
    if path.is_dir() and sum(1 for _ in path.rglob("*.png")) == n:
        return path
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, image_size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    for i in range(n):
        label = i % classes
        folder = path / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        cy, cx = rng.uniform(0.2, 0.8, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
        image = np.stack([blob * (label + 1) / classes, xx * rng.uniform(), yy * blob], -1)
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return path


def run_once(data_dir, loading, output_dir, image_size, batch, epochs):
    """One `run.py` training in a child process: `(peak RSS MiB, metrics dict)`."""
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [sys.executable, str(ROOT / "run.py"), "--dataset=folder",
               f"--data_dir={data_dir}", f"--data_loading={loading}",
               f"--image_size={image_size}", "--model=small_cnn", f"--epochs={epochs}",
               f"--batch_size={batch}", "--profile_batches=0", "--verbose=0",
               f"--output_dir={output_dir}"]
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the maximum
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"run.py failed ({child.returncode}): {err.read()[-2000:]}")
    metrics = json.loads((pathlib.Path(output_dir) / "metrics.json").read_text())
    return usage.ru_maxrss / 1024.0, metrics


def pipeline_rate(data_dir, image_size, batch, passes=2):
    """Images/s of the streamed training split alone (after one warm-up pass)."""
    from dabo_tf import data

    splits = data.load("folder", data_dir=str(data_dir), image_size=image_size,
                       loading="stream")
    ds = splits.dataset("train", batch, training=True, seed=0)
    for _ in ds:
        pass
    start, images = time.perf_counter(), 0
    for _ in range(passes):
        for x, _ in ds:
            images += int(x.shape[0])
    return images / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--loadings", default="stream,memory")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work_dir", default="/tmp/dabo_bench_input")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    loadings = args.loadings.split(",")
    work = pathlib.Path(args.work_dir)
    start = time.perf_counter()
    folders = {n: make_folder(work / f"png{n}", n, args.image_size) for n in sizes}
    print(f"[bench_input] folders ready in {time.perf_counter() - start:.0f} s", flush=True)
    rows, jobs = [], [(n, loading) for n in sizes for loading in loadings]
    progress = Progress(total=len(jobs), label="bench_input")
    for n, loading in jobs:
        peak, metrics = run_once(folders[n], loading, work / f"run-{loading}-{n}",
                                 args.image_size, args.batch, args.epochs)
        rows.append(dict(images=n, loading=loading, peak_mib=peak,
                         step_images_per_s=metrics["images_per_second"],
                         wall_s=metrics["wall_time_s"]))
        progress.end(f"{n} images, {loading}: peak {peak:.0f} MiB", timed=True)
    largest = max(sizes)
    rate = pipeline_rate(folders[largest], args.image_size, args.batch)
    print(format_table(rows, rate, largest, args))
    return rows, rate


def format_table(rows, rate, largest, args):
    lines = [f"Input pipeline, {args.image_size}x{args.image_size} PNGs, batch {args.batch}, "
             f"DABO small_cnn, {args.epochs} epoch(s) per run", "",
             "| images | loading | peak RSS (MiB) | training images/s | wall time (s) |",
             "| ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['images']} | {r['loading']} | {r['peak_mib']:.0f} | "
                     f"{r['step_images_per_s']:.0f} | {r['wall_s']:.1f} |")
    for loading in sorted({r["loading"] for r in rows}):
        peaks = [r for r in rows if r["loading"] == loading]
        if len(peaks) > 1:
            small, big = min(peaks, key=lambda r: r["images"]), max(peaks,
                                                                     key=lambda r: r["images"])
            lines.append(f"\n{loading}: peak memory x{big['peak_mib'] / small['peak_mib']:.3f} "
                         f"from {small['images']} to {big['images']} images")
    step = [r["step_images_per_s"] for r in rows
            if r["images"] == largest and r["loading"] == "stream"]
    if step:
        lines.append(f"\nstreamed pipeline alone: {rate:.0f} images/s, "
                     f"{rate / step[0]:.1f}x the training step's {step[0]:.0f} images/s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
