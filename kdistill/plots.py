"""PNG figures of a run: training curves and an accuracy/size comparison (matplotlib, no display)."""

from __future__ import annotations

import os

__all__ = ["training_curves", "comparison", "cka_heatmap", "accuracy_latency"]


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


def cka_heatmap(suggestion, path: str) -> str:
    """Saves the teacher x student CKA matrix of a `kdistill.tap_suggest.Suggestion` as a PNG; returns the path."""
    if suggestion.cka is None:
        raise ValueError("No CKA scores to plot: call suggest(..., images=batch).")

    def _shape(shape) -> str:
        return "x".join(str(d) for d in shape[1:])

    plt = _pyplot()
    figure, axis = plt.subplots(
        figsize=(1.6 * len(suggestion.student_stages) + 3, 0.9 * len(suggestion.teacher_stages) + 2)
    )
    image = axis.imshow(suggestion.cka, vmin=0, vmax=1, cmap="viridis")
    axis.set_xticks(
        range(len(suggestion.student_stages)), [f"{n}\n{_shape(s)}" for n, s in suggestion.student_stages], fontsize=8
    )
    axis.set_yticks(
        range(len(suggestion.teacher_stages)), [f"{n} {_shape(s)}" for n, s in suggestion.teacher_stages], fontsize=8
    )
    for i in range(suggestion.cka.shape[0]):
        for j in range(suggestion.cka.shape[1]):
            axis.text(
                j,
                i,
                f"{suggestion.cka[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if suggestion.cka[i, j] < 0.6 else "black",
            )
    axis.set_title("linear CKA, teacher stage vs student stage")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def accuracy_latency(rows: list[dict], path: str) -> str:
    """Test top-1 against single-image latency, one marker per model and runtime (what real-time work trades).

    Args:
        rows: dicts with `model` (e.g. "teacher"), `runtime` (e.g. "TFLite int8"),
            `top1` (0..1) and `latency_ms`.
        path: the PNG to write.

    Returns:
        `path`.
    """
    plt = _pyplot()
    markers = {"Keras": "o", "TFLite float32": "s", "TFLite int8": "^"}
    colours = {}
    palette = ["#4c72b0", "#999999", "#55a868", "#c44e52", "#8172b2"]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        colour = colours.setdefault(row["model"], palette[len(colours) % len(palette)])
        axis.scatter(
            row["latency_ms"],
            100 * row["top1"],
            marker=markers.get(row["runtime"], "x"),
            color=colour,
            s=60,
            label=f"{row['model']}, {row['runtime']}",
        )
        axis.annotate(
            f"{100 * row['top1']:.1f}",
            (row["latency_ms"], 100 * row["top1"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=7,
        )
    axis.set_xscale("log")
    axis.set_xlabel("latency, one image (ms, log scale)")
    axis.set_ylabel("test top-1 (%)")
    axis.set_title("accuracy against single-image latency on this CPU")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
