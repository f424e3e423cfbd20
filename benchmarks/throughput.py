"""Training throughput of kdistill against what a user would otherwise write, same machine, same run.

Each variant runs in its own process (clean memory figures), trains on the same
teacher (ResNet50), student (MobileNetV2), batch and input size, and reports the
median images/s of several timed windows after warm-up, and the process's peak
resident memory.

    python benchmarks/throughput.py                       # all variants, 32x32, batch 64
    python benchmarks/throughput.py --size 224 --batch 32
    KERAS_BACKEND=jax python benchmarks/throughput.py     # the backend-agnostic variants

Variants:
    a  student alone (the floor of the cost)
    b  keras.distillation.Distiller + LogitsDistillation
    c  keras.distillation.Distiller + LogitsDistillation + FeatureDistillation (equal shapes only)
    d  the tutorial custom loop: teacher called inside the GradientTape (TensorFlow only)
    e  kdistill FeatureDistiller, logits KD
    f  kdistill FeatureDistiller, logits KD + 2 feature taps with projections
    g  (f) fed from the teacher cache
Writes <out>/throughput_<backend>_<size>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "a": "student alone",
    "b": "keras Distiller, logits",
    "c": "keras Distiller, logits + feature",
    "d": "custom loop, teacher in tape",
    "e": "kdistill, logits KD",
    "f": "kdistill, KD + 2 feature taps",
    "g": "kdistill, (f) from teacher cache",
}


def _data(args, count):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (count, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, (count,)).astype("int32")
    return x, y


def _models(args):
    import kdistill

    teacher = kdistill.teachers.resnet50(num_classes=10, input_shape=(args.size, args.size, 3), weights=None)
    student = kdistill.students.get("mobilenet_v2", num_classes=10, input_shape=(args.size, args.size, 3), width=args.width)
    return teacher, student


def _fit_timer(model, dataset, args):
    """images/s of `model.fit` windows of `args.steps` steps, after a warm-up window."""
    model.fit(dataset, epochs=1, steps_per_epoch=args.warmup, verbose=0)
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0)
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    return rates


def run_variant(args) -> dict:
    import keras
    import tensorflow as tf

    import kdistill

    keras.utils.set_random_seed(0)
    x, y = _data(args, args.batch * 8)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    teacher, student = _models(args)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    variant = args.variant
    if variant == "a":
        student.compile(optimizer="adam", loss=ce, jit_compile=jit)
        return {"rates": _fit_timer(student, dataset, args)}
    if variant in ("b", "c"):
        losses = [keras.distillation.LogitsDistillation(temperature=4.0)]
        if variant == "c":
            teacher_layer, student_layer = "conv5_block3_out", "out_relu"
            shapes = (teacher.get_layer(teacher_layer).output.shape, student.get_layer(student_layer).output.shape)
            if tuple(shapes[0][1:]) != tuple(shapes[1][1:]):
                return {"skipped": f"FeatureDistillation has no projection and needs equal shapes; deepest taps differ: "
                                   f"{teacher_layer} {tuple(shapes[0][1:])} vs {student_layer} {tuple(shapes[1][1:])}"}
            losses.append(keras.distillation.FeatureDistillation(teacher_layer_name=teacher_layer, student_layer_name=student_layer))
        distiller = keras.distillation.Distiller(teacher, student, distillation_losses=losses, student_loss_weight=0.5)
        distiller.compile(optimizer="adam", loss=ce, jit_compile=jit)
        return {"rates": _fit_timer(distiller, dataset, args)}
    if variant == "d":
        if keras.backend.backend() != "tensorflow":
            return {"skipped": "the tutorial loop uses tf.GradientTape (TensorFlow backend only)"}
        optimizer = keras.optimizers.Adam()

        @tf.function(jit_compile=args.jit == "on")
        def step(images, labels):
            with tf.GradientTape() as tape:
                teacher_logits = teacher(images, training=False)
                student_logits = student(images, training=True)
                kd = kdistill.losses.kd_kl_divergence(teacher_logits, student_logits, 4.0)
                loss = 0.5 * tf.reduce_mean(ce(labels, student_logits)) + 0.5 * tf.reduce_mean(kd)
            gradients = tape.gradient(loss, student.trainable_variables)
            optimizer.apply_gradients(zip(gradients, student.trainable_variables))
            return loss

        iterator = iter(dataset)
        for _ in range(args.warmup):
            step(*next(iterator))
        rates = []
        for _ in range(args.windows):
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = step(*next(iterator))
            float(loss)
            rates.append(args.steps * args.batch / (time.perf_counter() - start))
        return {"rates": rates}
    taps = {} if variant == "e" else kdistill.taps.preset(teacher, student, stages=range(args.num_taps) if args.num_taps != 2 else (1, 2))
    distiller = kdistill.FeatureDistiller(teacher, student, taps=taps, feature_loss="mse", logits_loss="kl", temperature=4.0, alpha=0.5)
    distiller.compile(optimizer="adam", metrics=None, jit_compile=jit)
    if variant == "g":
        from kdistill.run import teacher_cache

        plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch)
        cache = teacher_cache.build(teacher, list(taps), plain, os.path.join(tempfile.mkdtemp(), "cache"), verbose=0)
        dataset = cache.dataset(args.batch, shuffle=False).repeat().prefetch(tf.data.AUTOTUNE)
    return {"rates": _fit_timer(distiller, dataset, args), "taps": taps}


def _table(results: dict, meta: dict) -> str:
    base_a = results.get("a", {}).get("images_per_second")
    base_b = results.get("b", {}).get("images_per_second")
    lines = [f"Training throughput, {meta['backend']} backend, {meta['size']}x{meta['size']}, batch {meta['batch']}, "
             f"student MobileNetV2 (width {meta['width']}), teacher ResNet50; {meta['machine']}", "",
             "| variant | images/s (median) | vs (a) | vs (b) | peak RSS (MB) |", "|---|---:|---:|---:|---:|"]
    for key, name in VARIANTS.items():
        row = results.get(key)
        if row is None:
            continue
        if "skipped" in row or "error" in row:
            lines.append(f"| ({key}) {name} | n/a: {row.get('skipped') or row.get('error')} | | | |")
            continue
        rate = row["images_per_second"]
        ratio = lambda base: f"{rate / base:.2f}x" if base else "-"  # noqa: E731
        lines.append(f"| ({key}) {name} | {rate:.0f} | {ratio(base_a)} | {ratio(base_b)} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def measure(variant: str, **settings) -> dict:
    """Runs one variant in a fresh process and returns its result (used by scaling.py)."""
    command = [sys.executable, os.path.abspath(__file__), "--variant", variant] + [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    output = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else {"error": (output.stderr or "no output")[-300:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.5, help="MobileNetV2 width multiplier")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto", help="jit_compile for every variant")
    parser.add_argument("--num-taps", type=int, default=2, help="feature taps of (f) and (g): 2 = the middle stages, else the first N")
    parser.add_argument("--variants", default="abcdefg")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args(argv)
    if args.variant:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            result = run_variant(args)
        except Exception as error:  # noqa: BLE001 - reported in the table instead of stopping the benchmark
            result = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        if "rates" in result:
            result["images_per_second"] = statistics.median(result["rates"])
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return 0

    import keras

    results = {}
    for key in args.variants:
        started = time.perf_counter()
        results[key] = measure(key, **{name: getattr(args, name) for name in ("size", "batch", "width", "steps", "windows", "warmup", "jit", "num_taps")})
        shown = results[key].get("images_per_second")
        print(f"({key}) {VARIANTS[key]}: " + (f"{shown:.0f} images/s" if shown else str(results[key].get("skipped") or results[key].get("error")))
              + f"  [{time.perf_counter() - started:.0f} s]", flush=True)
    meta = {"backend": keras.backend.backend(), "size": args.size, "batch": args.batch, "width": args.width, "steps": args.steps, "num_taps": args.num_taps,
            "windows": args.windows, "warmup": args.warmup, "jit": args.jit, "keras": keras.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}"}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"throughput_{meta['backend']}_{args.size}")
    with open(stem + ".json", "w") as handle:
        json.dump({"meta": meta, "results": results}, handle, indent=2)
    table = _table(results, meta)
    with open(stem + ".md", "w") as handle:
        handle.write(table + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
