"""PNG figures of a run: training curves and an accuracy/size comparison (matplotlib, no display)."""

from __future__ import annotations

import os

__all__ = ["training_curves", "comparison"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def training_curves(histories: dict[str, dict], path: str, metric: str = "accuracy") -> str:
    """Plots `metric` and `val_<metric>` per epoch for each named history; returns the path."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        for axis, key in zip(axes, (metric, f"val_{metric}")):
            if key in history:
                axis.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=name)
    for axis, title in zip(axes, ("training", "validation")):
        axis.set_title(f"{title} {metric}")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(_integer_locator())
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def comparison(rows: list[dict], path: str) -> str:
    """Bar charts of test accuracy and model size, one bar per row (`name`, `top1`, `size_mb`)."""
    plt = _pyplot()
    names = [row["name"] for row in rows]
    colours = ["#4c72b0", "#999999", "#55a868", "#c44e52"][: len(rows)]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    bars = axes[0].bar(names, [100 * row["top1"] for row in rows], color=colours)
    axes[0].bar_label(bars, fmt="%.2f%%")
    low = min(100 * row["top1"] for row in rows)
    axes[0].set_ylim(max(0, low - 10), 100)
    axes[0].set_title("test top-1 accuracy (%)")
    bars = axes[1].bar(names, [row["size_mb"] for row in rows], color=colours)
    axes[1].bar_label(bars, fmt="%.1f MB")
    axes[1].set_title("saved model size (MB)")
    for axis in axes:
        axis.tick_params(axis="x", labelrotation=10)
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
