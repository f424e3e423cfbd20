"""Distilling with random crop and flip: the live teacher against a teacher cache of stored views (Fast Knowledge Distillation).

    python benchmarks/views.py --teacher saved_models/evidence/teacher.keras --data-dir data --seeds 3 --epochs 8
    python benchmarks/views.py --seeds 1 --epochs 1 --train-limit 256 --test-limit 256 --teacher T.keras   # a smoke run

Same student (MobileNetV2 0.35), the same labelled images, the same schedule
(Adam 1e-3 with cosine decay, batch 64) and the same initial weights per seed:
    live    logits KD, the teacher run on every augmented batch (crop + flip in the pipeline)
    views   logits KD from a teacher cache of --views crops/flips per image, one replayed per image per epoch
    alone   the student alone, crop + flip (for reference)
It reports last-epoch test top-1 (mean ± std, paired difference views - live with
its 95 % interval) and the wall time of each run, in results/views_fashion_mnist.{json,md}.
The cache is built once (its time is reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import student_from_args

from kdistill.run import environment

LEARNING_RATE = 1e-3
AUGMENT = ("crop", "flip")


def run(args) -> dict:
    import keras

    import kdistill
    from kdistill import evaluation, statistics
    from kdistill.run import teacher_cache

    (x_train, y_train), (x_test, y_test) = kdistill.data.load_fashion_mnist(args.data_dir)
    if args.test_limit:
        x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    common = dict(
        batch_size=args.batch_size,
        validation_fraction=0.1,
        train_limit=args.train_limit,
        class_names=kdistill.data.FASHION_MNIST_CLASSES,
    )
    augmented = kdistill.data.from_arrays(x_train, y_train, x_test, y_test, augment=AUGMENT, **common)
    teacher = kdistill.teachers.load(args.teacher)
    teacher_top1 = evaluation.evaluate(teacher, augmented.test, timing_batches=1)["top1"]
    started = time.perf_counter()
    folder = os.path.join(args.work_dir or tempfile.mkdtemp(), f"views_{args.views}_{augmented.counts['train']}")
    try:
        cache = teacher_cache.load(folder, teacher, dataset=augmented.train_plain)
    except (FileNotFoundError, teacher_cache.StaleCacheError):
        cache = teacher_cache.build(
            teacher, [], augmented.train_plain, folder, augment=AUGMENT, views=args.views, dtype="float16", verbose=0
        )
    cache_seconds = time.perf_counter() - started
    print(
        f"teacher {100 * teacher_top1:.2f} %; cache of {args.views} views for {len(cache)} images: {cache_seconds:.0f} s",
        flush=True,
    )
    steps = -(-augmented.counts["train"] // args.batch_size)
    results = {name: {"top1": [], "seconds": []} for name in args.methods}
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        initial = student_from_args(args).get_weights()
        for name in args.methods:
            keras.utils.set_random_seed(seed)
            student = student_from_args(args)
            student.set_weights(initial)
            schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=steps * args.epochs)
            seeded = kdistill.data.from_arrays(x_train, y_train, x_test, y_test, augment=AUGMENT, seed=0, **common)
            if name == "alone":
                student.compile(
                    optimizer=keras.optimizers.Adam(schedule),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                )
                model, train = student, seeded.train
            else:
                model = kdistill.FeatureDistiller(
                    teacher, student, taps={}, logits_loss="kl", temperature=4.0, alpha=0.9
                )
                model.compile(optimizer=keras.optimizers.Adam(schedule))
                train = seeded.train if name == "live" else cache.dataset(args.batch_size, shuffle=True, seed=seed)
            start = time.perf_counter()
            model.fit(train, epochs=args.epochs, verbose=0)
            results[name]["seconds"].append(time.perf_counter() - start)
            results[name]["top1"].append(evaluation.evaluate(student, seeded.test, timing_batches=1)["top1"])
            print(
                f"seed {seed} {name:<6} top-1 {100 * results[name]['top1'][-1]:.2f}%  ({results[name]['seconds'][-1]:.0f} s)",
                flush=True,
            )
    comparison = None
    if args.seeds > 1 and {"live", "views"} <= set(results):
        comparison = statistics.paired_comparison(results["live"]["top1"], results["views"]["top1"])
    return {
        "teacher_top1": teacher_top1,
        "cache_seconds": cache_seconds,
        "results": results,
        "comparison": comparison,
        "train": augmented.counts["train"],
        "steps_per_epoch": steps,
    }


def report(record: dict, meta: dict) -> list[str]:
    from kdistill import statistics

    lines = [
        f"Random crop + flip with a cached teacher: live teacher against {meta['views']} stored views per image "
        f"({meta['student']}, {record['train']:,} labelled images, {meta['epochs']} epochs, batch {meta['batch_size']}, "
        f"{meta['seeds']} seed(s); teacher ResNet50 {100 * record['teacher_top1']:.2f} %; {meta['machine']})",
        "",
        f"Command: `{meta['command']}`. Building the cache took {record['cache_seconds']:.0f} s (once).",
        "",
        "| run | top-1 (%) mean ± std | seconds per run (mean) |",
        "|---|---:|---:|",
    ]
    for name, row in record["results"].items():
        mean, std = statistics.mean_std(row["top1"])
        lines.append(
            f"| {name} | {100 * mean:.2f} ± {100 * std:.2f} | {sum(row['seconds']) / len(row['seconds']):.0f} |"
        )
    if record["comparison"]:
        c = record["comparison"]
        lines += [
            "",
            f"views - live: {100 * c['difference_mean']:+.2f} points, 95 % CI [{100 * c['difference_low']:+.2f}, "
            f"{100 * c['difference_high']:+.2f}], {c['seeds']} paired seeds.",
        ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default=os.path.join("saved_models", "evidence", "teacher.keras"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument(
        "--student",
        default="mobilenet_v2",
        help="registered student (default MobileNetV2 at --width; tests use a smaller one)",
    )
    parser.add_argument("--methods", default="live,views,alone")
    parser.add_argument("--work-dir", default=os.path.join("saved_models", "evidence"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - {"live", "views", "alone"})
    if unknown:
        parser.error(f"unknown runs {unknown}; known: live, views, alone")
    if not os.path.exists(args.teacher):
        raise SystemExit(
            f"No teacher at {args.teacher!r}: train one with `python benchmarks/teacher.py --train` or pass --teacher PATH."
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    record = run(args)
    meta = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "views": args.views,
        "batch_size": args.batch_size,
        "width": args.width,
        "student": f"MobileNetV2 {args.width}" if args.student == "mobilenet_v2" else args.student,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "environment": environment.describe(),
        "wall_seconds": round(time.perf_counter() - started),
        "command": "python benchmarks/views.py "
        + environment.portable_command(argv if argv is not None else sys.argv[1:]),
    }
    lines = report(record, meta)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "views_fashion_mnist.json"), "w") as handle:
        json.dump({"meta": meta, **record}, handle, indent=2)
    with open(os.path.join(args.out, "views_fashion_mnist.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
