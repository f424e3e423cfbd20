"""Training throughput of kdistill against what a user would otherwise write, same machine, same run.

Each variant runs in its own process (clean memory figures), trains on the same
teacher (ResNet50), student (MobileNetV2), batch and input size. All processes are
set up and warmed up first; then the timed windows are interleaved (a b e f g, a b e
f g, ...), one process working at a time, so a slow patch of the machine hits every
variant alike. Each window lasts at least --seconds (default 10) and --steps steps.
It reports per variant the median images/s with the lowest and highest window, and
the ratios the speed targets are stated in, each the median over rounds of the
ratio within one round: (e)/(b), (f)/(b), (g)/(a).

    python benchmarks/throughput.py                       # all variants, 32x32, batch 64
    python benchmarks/throughput.py --size 224 --batch 32
    KERAS_BACKEND=jax python benchmarks/throughput.py     # JAX, no TensorFlow needed
    bash benchmarks/gpu.sh                                # the GPU set (JAX; 32 and 224, float32 and bfloat16)

On TensorFlow the input is a tf.data pipeline; on JAX and PyTorch NumPy batches
(`kdistill.data.batches.ArrayBatches`) and the teacher cache's memory maps.

Variants:
    a  student alone (the floor of the cost)
    b  keras.distillation.Distiller + LogitsDistillation
    c  keras.distillation.Distiller + LogitsDistillation + FeatureDistillation (equal shapes only)
    d  the tutorial custom loop: teacher called inside the GradientTape (TensorFlow only)
    e  kdistill FeatureDistiller, logits KD
    f  kdistill FeatureDistiller, logits KD + 2 feature taps with projections
    g  (f) fed from the teacher cache
    h  (f) fed from a teacher cache of 4 views per image, random crop and flip replayed
    i  (f) with the teacher and the data at twice the size (e.g. 64x64 -> a 32x32 student, which the
       distiller resizes each batch for): what distilling across input sizes costs
    m  function matching from the cache (`examples/configs/fashion_mnist_function_matching.yaml`): KL at T = 1 only,
       no taps, from a cache of 4 crop+flip+mixup views per image with the top-5 logits; the target (m)/(a) >= 0.83 is
       a step within 1.2x of the student alone's
    k  (e) with the teacher's BatchNormalization not folded (fold_batch_norm=False): what folding gives
    z  (b) again, in a process of its own: the control. Two processes running the same code differ by a few
       per cent on this CPU for their whole life (memory placement, scheduling), which interleaving cannot
       cancel; (z)/(b) shows how large that is in the run at hand, so smaller differences are not read as real
Writes <out>/throughput_<backend>_<size>[_<precision>].json and .md.
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

from kdistill.run import environment

VARIANTS = {
    "a": "student alone",
    "b": "keras Distiller, logits",
    "c": "keras Distiller, logits + feature",
    "d": "custom loop, teacher in tape",
    "e": "kdistill, logits KD",
    "f": "kdistill, KD + 2 feature taps",
    "g": "kdistill, (f) from teacher cache",
    "h": "kdistill, (f) from cache, crop+flip views",
    "i": "kdistill, (f), teacher + data at 2x size",
    "m": "kdistill, function matching from cache (mixup views, top-5)",
    "k": "kdistill, (e), teacher BatchNorm not folded",
    "z": "control: (b) in a second process",
}


def _data(args, count, size=None):
    import numpy as np

    rng = np.random.default_rng(0)
    size = size or args.size
    x = rng.integers(0, 256, (count, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, (count,)).astype("int32")
    return x, y


def _models(args, teacher_size=None):
    import kdistill

    teacher_size = teacher_size or args.size
    teacher = kdistill.teachers.resnet50(num_classes=10, input_shape=(teacher_size, teacher_size, 3), weights=None)
    student = kdistill.students.get(
        "mobilenet_v2", num_classes=10, input_shape=(args.size, args.size, 3), width=args.width
    )
    return teacher, student


#: the ratios the speed targets are stated in: (numerator, denominator, target)
# the same code in two processes: the noise floor of every other ratio
TARGETS = {
    "e/b": ("e", "b", 1.0),
    "f/b": ("f", "b", 0.85),
    "g/a": ("g", "a", 0.90),
    "h/a": ("h", "a", 0.90),
    "m/a": ("m", "a", 1 / 1.2),
    "i/f": ("i", "f", None),  # (i)/(f): the cost of a teacher and data at twice the student's size (no target)
    "e/k": ("e", "k", None),  # (e)/(k): what folding the teacher's BatchNormalization gives (no target)
    "z/b": ("z", "b", None),
}


def _serve_windows(run, args) -> dict:
    """Warms up, sizes a window to >= args.seconds and >= args.steps steps, then times one window per `go` on stdin.

    The sizing runs while the other variants set up, so it overestimates a step's time: windows come out longer, never shorter.
    """
    run(args.warmup)  # compiles
    start = time.perf_counter()
    run(args.warmup)
    per_step = (time.perf_counter() - start) / args.warmup
    steps = max(args.steps, int(args.seconds / max(per_step, 1e-6)) + 1)
    print("READY " + json.dumps({"steps": steps}), flush=True)
    rates = []
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        run(steps)
        rates.append(steps * args.batch / (time.perf_counter() - start))
        print("RATE " + json.dumps({"rate": rates[-1]}), flush=True)
    return {"rates": rates, "steps_per_window": steps}


def _fit_runner(model, dataset):
    """Fits `steps` steps per call. The model is built first (optimizer slots, metrics), so that on TensorFlow its first step
    is traced once rather than twice: warm-up gets shorter, the timed windows are the same (`kdistill.fit_build`)."""
    from kdistill.fit_build import build_before_fit

    build_before_fit(model, dataset)
    return lambda steps: model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)


def _input(args, x, y):
    """Endless batches: tf.data on TensorFlow, NumPy batches elsewhere."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .repeat()
            .batch(args.batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )
    from kdistill.data.batches import ArrayBatches

    return ArrayBatches(x, y, args.batch, repeat=True, workers=2, max_queue_size=8)


def run_variant(args) -> dict:
    import keras

    import kdistill

    keras.utils.set_random_seed(0)
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)
    variant = args.variant
    teacher_size = 2 * args.size if variant == "i" else args.size  # (i): one pipeline at the teacher's size feeds both
    x, y = _data(args, args.batch * 8, teacher_size)
    dataset = _input(args, x, y)
    teacher, student = _models(args, teacher_size)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    if variant == "a":
        student.compile(optimizer="adam", loss=ce, jit_compile=jit)
        return _serve_windows(_fit_runner(student, dataset), args)
    if variant in ("b", "c", "z"):
        losses = [keras.distillation.LogitsDistillation(temperature=4.0)]
        if variant == "c":
            teacher_layer, student_layer = "conv5_block3_out", "out_relu"
            shapes = (teacher.get_layer(teacher_layer).output.shape, student.get_layer(student_layer).output.shape)
            if tuple(shapes[0][1:]) != tuple(shapes[1][1:]):
                return {
                    "skipped": f"FeatureDistillation has no projection and needs equal shapes; deepest taps differ: "
                    f"{teacher_layer} {tuple(shapes[0][1:])} vs {student_layer} {tuple(shapes[1][1:])}"
                }
            losses.append(
                keras.distillation.FeatureDistillation(
                    teacher_layer_name=teacher_layer, student_layer_name=student_layer
                )
            )
        distiller = keras.distillation.Distiller(teacher, student, distillation_losses=losses, student_loss_weight=0.5)
        distiller.compile(optimizer="adam", loss=ce, jit_compile=jit)
        return _serve_windows(_fit_runner(distiller, dataset), args)
    if variant == "d":
        if keras.backend.backend() != "tensorflow":
            return {"skipped": "the tutorial loop uses tf.GradientTape (TensorFlow backend only)"}
        import tensorflow as tf

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

        def run(steps):
            for _ in range(steps):
                loss = step(*next(iterator))
            float(loss)

        return _serve_windows(run, args)
    taps = (
        {}
        if variant in "ekm"
        else kdistill.taps.preset(teacher, student, stages=range(args.num_taps) if args.num_taps != 2 else (1, 2))
    )
    recipe = (
        dict(feature_loss=None, temperature=1.0, alpha=1.0)
        if variant == "m"
        else dict(feature_loss="mse", temperature=4.0, alpha=0.5)
    )
    distiller = kdistill.FeatureDistiller(
        teacher,
        student,
        taps=taps,
        logits_loss="kl",
        **recipe,
        **({"fold_batch_norm": False} if variant == "k" else {}),
    )
    # mixed labels
    distiller.compile(
        optimizer="adam",
        metrics=None,
        jit_compile=jit,
        **({"loss": "categorical_crossentropy"} if variant == "m" else {}),
    )
    if variant in ("g", "h", "m"):
        from kdistill.data.batches import ArrayBatches
        from kdistill.run import teacher_cache

        views = {
            "g": {},
            "h": dict(views=4, augment=("crop", "flip")),
            "m": dict(views=4, augment=("crop", "flip", "mixup"), top_k=5),
        }[variant]
        cache = teacher_cache.build(
            teacher,
            list(taps),
            ArrayBatches(x, y, args.batch),
            os.path.join(tempfile.mkdtemp(), "cache"),
            verbose=0,
            dtype="float16",
            **views,
        )
        dataset = cache.dataset(args.batch, shuffle=variant != "g", repeat=True)
    return dict(_serve_windows(_fit_runner(distiller, dataset), args), taps=taps)


def _device() -> str:
    """The accelerator (or CPU) the worker runs on, in words."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform.upper()} {getattr(device, 'device_kind', '')} x{jax.device_count()}".strip()
    if keras.backend.backend() == "torch":
        import torch

        return f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU x{len(gpus)}" if gpus else "CPU"


def _spread(values) -> str:
    return f"{min(values):.0f}–{max(values):.0f}" if len(values) > 1 else "-"


def _table(results: dict, meta: dict) -> str:
    base_a = results.get("a", {}).get("images_per_second")
    base_b = results.get("b", {}).get("images_per_second")
    lines = [
        f"Training throughput, {meta['backend']} backend, {meta['precision']}, {meta['size']}x{meta['size']}, batch {meta['batch']}, "
        f"student MobileNetV2 (width {meta['width']}), teacher ResNet50; {meta['device']}; {meta['machine']}",
        "",
        f"{meta['windows']} interleaved windows per variant, each >= {meta['seconds']} s and >= {meta['steps']} steps, after warm-up.",
        "",
        "| variant | images/s (median) | lowest–highest window | vs (a) | vs (b) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name in VARIANTS.items():
        row = results.get(key)
        if row is None:
            continue
        if "skipped" in row or "error" in row:
            lines.append(f"| ({key}) {name} | n/a: {row.get('skipped') or row.get('error')} | | | | |")
            continue
        rate = row["images_per_second"]
        ratio = lambda base: f"{rate / base:.2f}x" if base else "-"  # noqa: E731
        lines.append(
            f"| ({key}) {name} | {rate:.0f} | {_spread(row['rates'])} | {ratio(base_a)} | {ratio(base_b)} | {row['peak_rss_mb']:.0f} |"
        )
    ratios = meta.get("ratios", {})
    if ratios:
        lines += [
            "",
            "Targets (each ratio: the median over rounds of the ratio within one round):",
            "",
            "| ratio | median | lowest–highest round | target | met |",
            "|---|---:|---:|---:|---|",
        ]
        for name, row in ratios.items():
            spread = f"{min(row['rounds']):.2f}–{max(row['rounds']):.2f}" if len(row["rounds"]) > 1 else "-"
            if row["target"] is None:
                lines.append(f"| ({name}) | {row['median']:.2f}x | {spread} | - | - |")
            else:
                lines.append(
                    f"| ({name}) | {row['median']:.2f}x | {spread} | ≥ {row['target']:.2f}x | {'yes' if row['median'] >= row['target'] else 'no'} |"
                )
    return "\n".join(lines)


def _read(process, prefixes, log) -> tuple[str, dict]:
    """The next protocol line of a worker (READY, RATE or RESULT), or an error with the tail of its log."""
    for line in process.stdout:
        for prefix in prefixes:
            if line.startswith(prefix + " "):
                return prefix, json.loads(line[len(prefix) + 1 :])
    process.wait()
    log.seek(0)
    return "RESULT", {"error": (log.read().decode(errors="replace") or "no output")[-300:]}


def run_interleaved(variants, windows: int = 3, **settings) -> dict:
    """Starts one process per variant, warms each up, then times their windows in turn; returns {variant: result}."""
    command = [sys.executable, os.path.abspath(__file__)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in settings.items()
    ]
    # JAX would reserve most of the accelerator's memory in each of the processes held open together.
    environment = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    results, started = {}, {}
    for key in variants:  # set up in parallel (compiling is most of it); timing comes after, one process at a time
        log = tempfile.TemporaryFile()
        started[key] = (
            subprocess.Popen(
                command + ["--variant", key],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=environment,
            ),
            log,
        )
    workers = {}
    for key, (process, log) in started.items():
        kind, payload = _read(process, ("READY", "RESULT"), log)
        if kind == "RESULT":  # skipped or failed before timing
            results[key] = payload
            continue
        workers[key] = (process, log)
        results[key] = {"rates": [], "steps_per_window": payload["steps"]}
    keys = list(workers)
    for round_number in range(windows):
        shift = round_number % max(len(keys), 1)
        for key in keys[shift:] + keys[:shift]:
            process, log = workers[key]
            process.stdin.write("go\n")
            process.stdin.flush()
            kind, payload = _read(process, ("RATE",), log)
            if "error" in payload:
                results[key] = payload
                keys.remove(key)
                break
            results[key]["rates"].append(payload["rate"])
    for key, (process, log) in workers.items():
        if "error" in results[key]:
            continue
        process.stdin.write("stop\n")
        process.stdin.flush()
        _, payload = _read(process, ("RESULT",), log)
        process.wait()
        results[key].update({k: v for k, v in payload.items() if k != "rates"})
        results[key]["images_per_second"] = statistics.median(results[key]["rates"])
    return results


def ratios(results: dict) -> dict:
    """The target ratios, each the median over rounds of the within-round ratio (a slow patch cancels out)."""
    found = {}
    for name, (top, bottom, target) in TARGETS.items():
        if all(results.get(k, {}).get("rates") for k in (top, bottom)):
            rounds = [a / b for a, b in zip(results[top]["rates"], results[bottom]["rates"])]
            found[name] = {"median": statistics.median(rounds), "rounds": rounds, "target": target}
    return found


def measure(variant: str, windows: int = 3, **settings) -> dict:
    """Runs one variant in a fresh process and returns its result (used by scaling.py)."""
    return run_interleaved([variant], windows=windows, **settings)[variant]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.5, help="MobileNetV2 width multiplier")
    parser.add_argument("--steps", type=int, default=20, help="fewest steps per timed window")
    parser.add_argument("--seconds", type=float, default=10.0, help="shortest timed window (seconds)")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per variant (interleaved rounds)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto", help="jit_compile for every variant")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32")
    parser.add_argument(
        "--num-taps", type=int, default=2, help="feature taps of (f) and (g): 2 = the middle stages, else the first N"
    )
    parser.add_argument("--variants", default="abcdefghz")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument(
        "--name", help="file name stem of the results (default throughput_<backend>_<size>[_<precision>])"
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args(argv)
    if args.variant:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            result = run_variant(args)
            result["device"] = _device()
        except Exception as error:
            result = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    import keras

    started = time.perf_counter()
    settings = {
        name: getattr(args, name)
        for name in ("size", "batch", "width", "steps", "seconds", "warmup", "jit", "num_taps", "precision")
    }
    results = run_interleaved(list(args.variants), windows=args.windows, **settings)
    for key, row in results.items():
        shown = row.get("images_per_second")
        print(
            f"({key}) {VARIANTS[key]}: "
            + (
                f"{shown:.0f} images/s ({_spread(row['rates'])})"
                if shown
                else str(row.get("skipped") or row.get("error"))
            ),
            flush=True,
        )
    devices = sorted({row["device"] for row in results.values() if "device" in row})
    meta = {
        "backend": keras.backend.backend(),
        "size": args.size,
        "batch": args.batch,
        "width": args.width,
        "steps": args.steps,
        "seconds": args.seconds,
        "num_taps": args.num_taps,
        "windows": args.windows,
        "warmup": args.warmup,
        "jit": args.jit,
        "precision": args.precision,
        "keras": keras.__version__,
        "device": ", ".join(devices) or "unknown",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "ratios": ratios(results),
        "command": "python benchmarks/throughput.py "
        + environment.portable_command(argv if argv is not None else sys.argv[1:]),
        "wall_seconds": round(time.perf_counter() - started),
    }
    os.makedirs(args.out, exist_ok=True)
    suffix = "" if args.precision == "float32" else f"_{args.precision}"
    stem = os.path.join(args.out, args.name or f"throughput_{meta['backend']}_{args.size}{suffix}")
    with open(stem + ".json", "w") as handle:
        json.dump({"meta": meta, "results": results}, handle, indent=2)
    table = _table(results, meta)
    with open(stem + ".md", "w") as handle:
        handle.write(table + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
