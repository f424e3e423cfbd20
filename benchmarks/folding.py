"""What folding the teacher's BatchNormalization into its convolutions gives: teacher forward images/s, plain vs folded.

`FeatureDistiller(fold_batch_norm=True)` (the default) runs the teacher through
`kdistill.models.folding.fold_batch_norm`, which folds the weights on every call
(no stale copy). That saves a pass over every feature map and costs a pass over
the convolution weights, so it pays with large maps (big inputs, big batches)
and is about even with small ones. Both forwards run compiled (tf.function on
TensorFlow, jax.jit on JAX), in one process, in interleaved windows.

    python benchmarks/folding.py                          # 32x32 batch 64 and 224x224 batch 16
    python benchmarks/folding.py --settings 224:16 --seconds 10 --windows 5
Writes <out>/folding_<backend>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def _forward(model):
    """A compiled inference call of `model` returning something whose readiness can be waited for."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        function = tf.function(lambda x: model(x, training=False))
        return lambda x: function(x).numpy()
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        function = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
        return lambda x: jax.block_until_ready(function(trainable, non_trainable, x))
    return lambda x: keras.ops.convert_to_numpy(model(x, training=False))


def measure(size: int, batch: int, windows: int, seconds: float) -> dict:
    import numpy as np

    import kdistill
    from kdistill.models import folding

    teacher = kdistill.teachers.resnet50(num_classes=10, input_shape=(size, size, 3), weights=None)
    variants = {"plain": _forward(teacher), "folded": _forward(folding.fold_batch_norm(teacher))}
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    for run in variants.values():  # compile and warm up
        run(x)
        run(x)
    rates = {name: [] for name in variants}
    for round_number in range(windows):
        order = list(variants) if round_number % 2 == 0 else list(variants)[::-1]
        for name in order:
            start, steps = time.perf_counter(), 0
            while not steps or time.perf_counter() - start < seconds:  # at least one call
                variants[name](x)
                steps += 1
            rates[name].append(steps * batch / (time.perf_counter() - start))
    ratios = [f / p for f, p in zip(rates["folded"], rates["plain"])]
    return {"size": size, "batch": batch, "rates": rates, "ratio": statistics.median(ratios), "ratios": ratios}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="32:64,224:16", help="size:batch pairs, comma-separated")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    import keras

    results = [measure(*map(int, pair.split(":")), args.windows, args.seconds) for pair in args.settings.split(",")]
    backend = keras.backend.backend()
    lines = [
        f"Teacher (ResNet50, random weights) forward, {backend} backend, float32; {platform.machine()}, {os.cpu_count()} CPU cores",
        "",
        f"{args.windows} interleaved windows of >= {args.seconds} s per variant.",
        "",
        "| input | batch | plain (images/s) | folded (images/s) | folded / plain (median of rounds) | rounds |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in results:
        rounds = ", ".join(f"{r:.2f}" for r in row["ratios"])
        lines.append(
            f"| {row['size']}x{row['size']} | {row['batch']} | {statistics.median(row['rates']['plain']):.1f} | "
            f"{statistics.median(row['rates']['folded']):.1f} | {row['ratio']:.2f}x | {rounds} |"
        )
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"folding_{backend}")
    with open(stem + ".json", "w") as handle:
        json.dump(
            {"backend": backend, "windows": args.windows, "seconds": args.seconds, "results": results}, handle, indent=2
        )
    with open(stem + ".md", "w") as handle:
        handle.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
