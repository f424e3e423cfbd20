"""What makes ResNet50 a good teacher on 32x32 Fashion-MNIST: input size and recipe against cost, then the teacher itself.

    python benchmarks/teacher.py --study --train-limit 4000 --epochs 3      # sizes 32/48/64 and recipes, ~15 min
    python benchmarks/teacher.py --train --epochs 5 --resize-to 0           # the evidence teacher on all 54,000 images

`--study` trains ResNet50 from scratch once per setting on the same images and
reports validation top-1 after the last epoch, the best epoch's, training
seconds and inference images/s. Keras' ResNet50 shrinks its input 4x in the stem,
so at 32x32 its last stage sees 1x1 maps; `resize_to` upsamples inside the
teacher only (data and student stay 32x32). `--train` trains the teacher the
evidence benchmark (`benchmarks/accuracy.py --paired`) reuses and records its
cost. Results go to results/teacher_fashion_mnist.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from kdistill.run import environment

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

#: (label, resize_to, optimizer, warm-up epochs, schedule)
SETTINGS = [
    ("32x32, adam 1e-3 flat (old default)", None, "adam", 1e-3, 0, "constant"),
    ("32x32, sgd 0.05 warm-up + cosine", None, "sgd", 0.05, 1, "cosine"),
    ("32x32, sgd 0.01 warm-up + cosine", None, "sgd", 0.01, 1, "cosine"),
    ("32x32, adam 1e-3 warm-up + cosine", None, "adam", 1e-3, 1, "cosine"),
    ("48x48 inside, adam 1e-3 warm-up + cosine", 48, "adam", 1e-3, 1, "cosine"),
    ("64x64 inside, adam 1e-3 warm-up + cosine", 64, "adam", 1e-3, 1, "cosine"),
]


def _inference_rate(model, images, batch: int = 64, seconds: float = 10.0) -> float:
    """Images/s of `model.predict_on_batch` over a window of at least `seconds`."""
    model.predict_on_batch(images[:batch])
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict_on_batch(images[:batch])
        count += batch
    return count / (time.perf_counter() - start)


def study(args) -> list[dict]:
    import keras
    import numpy as np

    import kdistill
    from kdistill import evaluation
    from kdistill.run import callbacks, training as recipes

    rows = []
    for label, resize_to, optimizer, learning_rate, warmup, schedule in SETTINGS:
        if args.only and not any(key in label for key in args.only.split(";")):
            continue
        splits = kdistill.data.load(
            "fashion_mnist", data_dir=args.data_dir, train_limit=args.train_limit, test_limit=args.test_limit, seed=0
        )
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        try:
            teacher, history = recipes.train_teacher(
                splits,
                os.path.join(args.work_dir, "study_teacher.keras"),
                epochs=args.epochs,
                optimizer=optimizer,
                learning_rate=learning_rate,
                warmup_epochs=warmup,
                schedule=schedule,
                resize_to=resize_to,
                verbose=2,
            )
        except callbacks.ChanceLevelError as error:
            print(f"{label}: {error}", flush=True)
            rows.append(
                {
                    "setting": label,
                    "resize_to": resize_to or 32,
                    "val_last": 0.1,
                    "val_best": 0.1,
                    "test_best_epoch": float("nan"),
                    "train_seconds": round(time.perf_counter() - start, 1),
                    "inference_images_per_second": float("nan"),
                    "val_accuracy": [],
                }
            )
            continue
        seconds = time.perf_counter() - start
        images = next(iter(splits.test))[0].numpy()
        rate = _inference_rate(teacher, np.asarray(images))
        test = evaluation.evaluate(teacher, splits.test)["top1"]
        row = {
            "setting": label,
            "resize_to": resize_to or 32,
            "val_last": history["val_accuracy"][-1],
            "val_best": max(history["val_accuracy"]),
            "test_best_epoch": test,
            "train_seconds": round(seconds, 1),
            "inference_images_per_second": round(rate, 1),
            "val_accuracy": history["val_accuracy"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def train(args) -> dict:
    import keras

    import kdistill
    from kdistill import evaluation
    from kdistill.run import training as recipes

    splits = kdistill.data.load("fashion_mnist", data_dir=args.data_dir, seed=0)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    teacher, history = recipes.train_teacher(
        splits, args.teacher, epochs=args.epochs, resize_to=args.resize_to or None, verbose=2
    )
    seconds = time.perf_counter() - start
    test = evaluation.evaluate(teacher, splits.test)
    row = {
        "teacher": args.teacher,
        "train_images": splits.counts["train"],
        "epochs": args.epochs,
        "resize_to": args.resize_to or 32,
        "recipe": recipes.TEACHER_RECIPE,
        "val_accuracy": history["val_accuracy"],
        "best_epoch": history.get("best_epoch"),
        "test_top1": test["top1"],
        "train_seconds": round(seconds, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", action="store_true")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--only", default="", help="semicolon-separated substrings of study settings to run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--resize-to", type=int, default=0, help="0: none (32x32)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--teacher", default=os.path.join("saved_models", "evidence", "teacher.keras"))
    parser.add_argument("--work-dir", default=os.path.join("saved_models", "teacher_study"))
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "teacher_fashion_mnist.json")
    record = json.load(open(path)) if os.path.exists(path) else {}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    started = time.perf_counter()
    if args.study:
        new_rows = study(args)
        for row in new_rows:
            row["command"] = "python benchmarks/teacher.py " + environment.portable_command(
                argv if argv is not None else sys.argv[1:]
            )
        # Settings run earlier (e.g. with --only) keep their rows unless rerun now.
        kept = [
            row
            for row in record.get("study", {}).get("rows", [])
            if row["setting"] not in {r["setting"] for r in new_rows}
        ]
        order = [setting[0] for setting in SETTINGS]
        rows = sorted(
            kept + new_rows, key=lambda row: order.index(row["setting"]) if row["setting"] in order else len(order)
        )
        record["study"] = {
            "rows": rows,
            "train_limit": args.train_limit,
            "epochs": args.epochs,
            "machine": machine,
            "command": "python benchmarks/teacher.py "
            + environment.portable_command(argv if argv is not None else sys.argv[1:]),
            "wall_seconds": round(time.perf_counter() - started),
        }
    if args.train:
        record["teacher"] = dict(
            train(args),
            machine=machine,
            command="python benchmarks/teacher.py "
            + environment.portable_command(argv if argv is not None else sys.argv[1:]),
        )
    with open(path, "w") as handle:
        json.dump(record, handle, indent=2)
    lines = []
    if "study" in record:
        study_record = record["study"]
        lines += [
            f"Teacher study: ResNet50 from scratch, {study_record['epochs']} epochs on {study_record['train_limit']} Fashion-MNIST images, "
            f"seed 0, {study_record['machine']} (`{study_record['command']}`, {study_record['wall_seconds']} s)",
            "",
            "| setting | val top-1 last epoch | val top-1 best epoch | test top-1 (best epoch) | training s | inference images/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in study_record["rows"]:
            lines.append(
                f"| {row['setting']} | {100 * row['val_last']:.2f} | {100 * row['val_best']:.2f} | {100 * row['test_best_epoch']:.2f} | "
                f"{row['train_seconds']:.0f} | {row['inference_images_per_second']:.0f} |"
            )
        commands = sorted({row.get("command", study_record["command"]) for row in study_record["rows"]})
        lines += ["", "Measured by: " + "; ".join(f"`{command}`" for command in commands), ""]
    if "teacher" in record:
        row = record["teacher"]
        lines += [
            f"Evidence teacher: ResNet50 at {row['resize_to']}x{row['resize_to']}, {row['epochs']} epochs on {row['train_images']} images, "
            f"recipe {row['recipe']}: test top-1 {100 * row['test_top1']:.2f} % (best epoch {row['best_epoch'] + 1}), "
            f"validation per epoch {', '.join(f'{100 * v:.2f}' for v in row['val_accuracy'])}; "
            f"training took {row['train_seconds'] / 60:.1f} min on {row['machine']} (`{row['command']}`).",
            "",
        ]
    with open(os.path.join(args.out, "teacher_fashion_mnist.md"), "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
