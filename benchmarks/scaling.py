"""How kdistill's step time grows with batch size, input size and the number of feature taps.

    python benchmarks/scaling.py                 # batch 16..256, size 32..224, taps 0..4
    python benchmarks/scaling.py --quick         # a smaller grid
Writes results/scaling_<backend>.json, .md and .png. Each point is variant (f) of
throughput.py (kdistill, logits KD + taps; 0 taps = variant (e)) in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import throughput


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batches", help="comma-separated batch sizes (overrides the grid)")
    parser.add_argument("--sizes", help="comma-separated input sizes")
    parser.add_argument("--taps", help="comma-separated numbers of taps")
    parser.add_argument("--windows", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=10.0, help="shortest timed window (seconds)")
    parser.add_argument("--axes", default="batch,size,taps", help="which sweeps to run (comma-separated)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    batches = [16, 64] if args.quick else [16, 32, 64, 128, 256]
    sizes = [32, 64] if args.quick else [32, 64, 128, 224]
    tap_counts = [0, 2] if args.quick else [0, 1, 2, 3, 4]
    numbers = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    batches = numbers(args.batches) if args.batches else batches
    sizes = numbers(args.sizes) if args.sizes else sizes
    tap_counts = numbers(args.taps) if args.taps else tap_counts
    common = dict(
        steps=args.steps,
        seconds=args.seconds,
        windows=args.windows or (2 if args.quick else 3),
        warmup=2 if args.quick else 3,
    )

    def point(batch=64, size=32, taps=2):
        result = throughput.measure("e" if taps == 0 else "f", batch=batch, size=size, num_taps=taps, **common)
        rate = result.get("images_per_second")
        row = {
            "batch": batch,
            "size": size,
            "taps": taps,
            "images_per_second": rate,
            "ms_per_step": round(1000 * batch / rate, 1) if rate else None,
            "error": result.get("error"),
        }
        print(row, flush=True)
        return row

    sweeps = {
        "batch": lambda: [point(batch=b, size=32) for b in batches],
        "size": lambda: [point(size=s, batch=16 if s >= 128 else 64) for s in sizes],
        "taps": lambda: [point(taps=t) for t in tap_counts],
    }
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    unknown = sorted(set(axes) - set(sweeps))
    if unknown:
        parser.error(f"unknown axes {unknown}; use batch, size, taps")
    grid = {axis: sweeps[axis]() for axis in axes}
    import keras

    backend = keras.backend.backend()
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"scaling_{backend}")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    with open(stem + ".json", "w") as handle:
        json.dump({"backend": backend, "machine": machine, "grid": grid}, handle, indent=2)
    lines = [f"kdistill step time (ResNet50 -> MobileNetV2, KD + taps), {backend} backend, {machine}", ""]
    for axis, rows in grid.items():
        lines += [f"| {axis} | ms/step | images/s |", "|---:|---:|---:|"]
        lines += [
            f"| {r[axis]} | {r['ms_per_step']} | {r['images_per_second'] and round(r['images_per_second'])} |"
            for r in rows
        ] + [""]
    with open(stem + ".md", "w") as handle:
        handle.write("\n".join(lines))
    from kdistill.plots import _pyplot

    plt = _pyplot()
    figure, panels = plt.subplots(1, len(grid), figsize=(4.7 * len(grid), 4), squeeze=False)
    for axis, (name, rows) in zip(panels[0], grid.items()):
        good = [r for r in rows if r["ms_per_step"]]
        axis.plot([r[name] for r in good], [r["ms_per_step"] for r in good], marker="o")
        axis.set_xlabel(name if name != "size" else "input size (batch 64, 16 from 128)")
        axis.set_ylabel("ms / step")
        axis.grid(alpha=0.3)
    figure.suptitle(f"kdistill step time, {backend}, {machine}")
    figure.tight_layout()
    figure.savefig(stem + ".png", dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
