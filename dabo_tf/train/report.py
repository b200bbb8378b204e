"""Figures and the text summary a run leaves behind (matplotlib with the Agg backend).

* `plot_augmentations`: a few original images, each beside several of its augmentations,
  as in the DABO paper's figures (`augmentations.png`).
* `plot_curves`: training and validation loss and accuracy, and the learned policy's
  range per op (`aug_*`), over epochs (`curves.png`).
* `format_summary`: the one-screen text summary `run.py` prints at the end.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _show(ax, image):
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_augmentations(images, augment_fn: Optional[Callable], path, *,
                       num_augmentations: int = 7, title: str = "") -> str:
    """Saves a grid: one row per image, the original first, then its augmentations.

    Args:
        images: float `[N, H, W, C]` images in `[0, 1]` (a handful, e.g. one per class).
        augment_fn: callable `images -> augmented images`, called once per column (fresh
            random draws each time), or None for "no augmentation" (originals only).
        path: output PNG path.
        num_augmentations: augmented columns. Defaults to 7.
        title: figure title.

    Returns:
        `str(path)`.
    """
    plt = _pyplot()
    images = np.asarray(images, np.float32)
    columns = [images]
    if augment_fn is not None:
        columns += [np.asarray(augment_fn(images), np.float32) for _ in range(num_augmentations)]
    rows, cols = len(images), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols + 0.2, 1.2 * rows + 0.5),
                             squeeze=False)
    for c, column in enumerate(columns):
        for r in range(rows):
            _show(axes[r, c], column[r])
        axes[0, c].set_title("original" if c == 0 else f"aug {c}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def policy_panels(history: Mapping[str, list]) -> dict:
    """`{panel title: [log keys]}` of the policy logs (`aug_*`), one panel per op.

    An op's `aug_<op>_low` and `aug_<op>_high` share a panel (the range, whose centre shows
    a learned mean shift); any other `aug_*` key gets its own.
    """
    panels = {}
    for key in sorted(k for k in history if k.startswith("aug_")):
        name = key[4:]
        for end in ("_low", "_high"):
            if name.endswith(end) and f"aug_{name[:-len(end)]}_low" in history \
                    and f"aug_{name[:-len(end)]}_high" in history:
                name = name[:-len(end)]
                break
        panels.setdefault(name, []).append(key)
    return {name: sorted(keys, key=lambda k: (not k.endswith("_low"), k))
            for name, keys in panels.items()}


def plot_curves(history: Mapping[str, list], path, *, title: str = "") -> str:
    """Saves loss, accuracy and policy-scalar curves over epochs.

    The first row shows loss and accuracy (training on augmented data, validation); each
    op of the policy (`aug_*` logs in human units, see `policy_panels`: an op's low and high
    together) gets its own small panel below, as their units differ.

    Args:
        history: epoch-wise logs, e.g. `{"epoch": [0, 1], "loss": [...], "val_loss": [...],
            "accuracy": [...], "val_accuracy": [...], "aug_rotate_low": [...], ...}` (Keras'
            `History.history` plus an optional 0-based `epoch` list).
        path: output PNG path.
        title: figure title.

    Returns:
        `str(path)`.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    n = max((len(v) for v in history.values()), default=0)
    epochs = np.asarray(history.get("epoch", range(n)), np.float64) + 1
    policy = policy_panels(history)
    cols = max(2, min(4, len(policy)))
    rows = 1 + -(-len(policy) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.8 * rows), squeeze=False)
    panels = [(axes[0, 0], "loss", ["loss", "val_loss"]),
              (axes[0, 1], "accuracy", ["accuracy", "val_accuracy"])]
    panels += [(axes[1 + i // cols, i % cols], name, keys)
               for i, (name, keys) in enumerate(policy.items())]
    used = {id(ax) for ax, _, _ in panels}
    for ax in axes.flat:
        if id(ax) not in used:
            ax.axis("off")
    labels = {"loss": "train", "accuracy": "train (augmented)", "val_loss": "validation",
              "val_accuracy": "validation"}
    for ax, name, keys in panels:
        for key in keys:
            values = history.get(key)
            if values is None or not len(values):
                continue
            ax.plot(epochs[:len(values)], values, marker="o" if n < 30 else None, ms=3,
                    label=labels.get(key) or key.rsplit("_", 1)[-1])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(keys) > 1 and ax.lines:
            ax.legend(fontsize=7)
    if title:
        note = "  (bottom rows: the learned policy, low and high per op)" if policy else ""
        fig.suptitle(title + note, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def format_policy(policy: Mapping[str, Mapping]) -> list:
    """One line per op: `rotate  [-3.52, 1.2] degrees`, `zoom  [0.7, 1.3] ... (uniform)`."""
    if not policy:
        return ["(no augmentation)"]
    width = max(len(op) for op in policy)
    lines = []
    for op, spec in policy.items():
        if "low" in spec and "high" in spec:
            text = f"[{_fmt(spec['low'], 3)}, {_fmt(spec['high'], 3)}]"
        else:
            text = ", ".join(f"{k}={_fmt(v, 3)}" for k, v in spec.items() if k != "unit")
        draw = f" ({spec['draw']})" if "draw" in spec else ""  # how a scale is drawn
        lines.append(f"{op:<{width}}  {text} {spec.get('unit', '')}{draw}".rstrip())
    return lines


_TITLES = {"dabo": "DABO run", "none": "Baseline run", "hand": "Baseline run",
           "randaugment": "Baseline run", "trivialaugment": "Baseline run",
           "frozen": "Frozen-policy run", "tuner": "Keras Tuner search"}


def _class_list(names, limit=12) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def format_summary(metrics: Mapping, policy: Optional[Mapping], workdir) -> str:
    """The one-screen end-of-run summary printed by `run.py`."""
    config = metrics.get("config", {})
    sizes = metrics.get("data_sizes", {})
    acc = metrics.get("test_accuracy")
    val = metrics.get("best_val_accuracy")
    lines = [
        "=" * 72,
        f"{_TITLES.get(metrics.get('mode'), 'Run')} finished: mode={metrics.get('mode')}  "
        f"dataset={metrics.get('dataset')}  "
        f"model={config.get('model')}",
        f"data        {sizes.get('train')} train / {sizes.get('val')} val / "
        f"{sizes.get('test')} test, images {'x'.join(map(str, metrics.get('image_shape', [])))},"
        f" {metrics.get('num_classes')} classes"
        + (", streamed" if metrics.get("data_loading") == "stream" else ""),
        "classes     " + _class_list(metrics.get("class_names") or []),
        f"training    {metrics.get('epochs')} epochs x {metrics.get('steps_per_epoch')} steps, "
        f"batch {config.get('batch_size')}, lr {config.get('lr')} ({config.get('lr_schedule')})"
        f", jit_compile={config.get('jit_compile')}",
        f"test acc    {_fmt(None if acc is None else 100 * acc, 4)}%   "
        f"(best val acc {_fmt(None if val is None else 100 * val, 4)}%)",
        f"speed       {_fmt(metrics.get('images_per_second'), 4)} images/s, wall time "
        f"{_fmt(metrics.get('wall_time_s'), 4)} s",
        "policy      " + ("\n            ".join(format_policy(policy or {}))),
        f"outputs     {workdir}",
    ]
    for name, rel in metrics.get("outputs", {}).items():
        lines.append(f"            {name:<16} {rel}")
    lines.append("=" * 72)
    return "\n".join(lines)
