"""How well each integer TFLite export agrees with its Keras student, per student and calibration.

    python benchmarks/quantization.py                                   # the table in results/
    python benchmarks/quantization.py --students resnet20 --epochs 1 --train-limit 500 --test-limit 200   # a smoke run
    python benchmarks/quantization.py --models saved_models/demo/student_distilled.keras                  # saved students

Trains each student on labels alone (Adam 1e-3, batch 64) on the offline
Fashion-MNIST, or loads the saved students given with --models, exports it as
int8 (min/max and percentile calibration, 500 validation images) and int16x8,
and measures top-1 agreement with Keras on the first --test-limit test images.
Writes results/quantization_fashion_mnist.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

from kdistill.run import environment

#: (label, export mode, calibration)
VARIANTS = [
    ("int8 min/max", "int8", "minmax"),
    ("int8 percentile", "int8", "percentile"),
    ("int16x8", "int16x8", "minmax"),
]


def _students(args, splits):
    import keras

    import kdistill
    from kdistill.fit_build import build_before_fit

    for path in args.models:
        yield os.path.basename(path), keras.models.load_model(path, compile=False), None
    for name in args.students:
        keras.utils.set_random_seed(args.seed)
        kwargs = {"width": args.width} if name.startswith("mobilenet") else {}
        student = kdistill.students.get(name, num_classes=splits.num_classes, input_shape=splits.image_shape, **kwargs)
        student.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        # on TensorFlow its first step is then traced once, not twice (same weights)
        build_before_fit(student, splits.train)
        start = time.perf_counter()
        student.fit(splits.train, epochs=args.epochs, verbose=0, shuffle=False)  # the pipeline shuffles
        label = f"{name} (width {args.width})" if kwargs else name
        yield label, student, round(time.perf_counter() - start, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--students",
        default="mobilenet_v2,resnet20",
        help="registered students to train (comma-separated; '' for none)",
    )
    parser.add_argument("--models", default="", help="saved .keras students to measure as they are (comma-separated)")
    parser.add_argument("--width", type=float, default=0.35, help="MobileNet width multiplier")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--test-limit", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    args.students = [s for s in args.students.split(",") if s]
    args.models = [m for m in args.models.split(",") if m]

    import kdistill
    from kdistill import export

    splits = kdistill.data.load(
        "fashion_mnist", data_dir=args.data_dir, batch_size=64, train_limit=args.train_limit, test_limit=args.test_limit
    )
    images, labels = export.collect_images(splits.test, args.test_limit)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, student, train_seconds in _students(args, splits):
            keras_top1 = student.predict(images, verbose=0).argmax(-1)
            row = {
                "student": label,
                "parameters": int(student.count_params()),
                "train_seconds": train_seconds,
                "keras_top1": float((keras_top1 == labels).mean()),
                "agreement": {},
            }
            # one SavedModel for its three files
            served = export.saved_model(student, os.path.join(folder, f"serving_{len(rows)}"))
            for name, mode, calibration in VARIANTS:
                path = export.tflite(
                    student,
                    os.path.join(folder, "model.tflite"),
                    quantize=mode,
                    representative=splits.validation,
                    calibration=calibration,
                    saved_model_dir=served,
                )
                row["agreement"][name] = float((export.tflite_predict(path, images).argmax(-1) == keras_top1).mean())
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(args.out, exist_ok=True)
    report = {
        "command": "python benchmarks/quantization.py "
        + environment.portable_command(sys.argv[1:] if argv is None else argv),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "train_images": splits.counts["train"],
        "epochs": args.epochs,
        "test_images": int(len(labels)),
        "rows": rows,
    }
    with open(os.path.join(args.out, "quantization_fashion_mnist.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    lines = [
        f"Top-1 agreement with the Keras student on {len(labels)} real Fashion-MNIST test images ({report['command']})",
        "",
        "| student | parameters | Keras top-1 | " + " | ".join(name for name, _, _ in VARIANTS) + " |",
        "|---|---:|---:|" + "---:|" * len(VARIANTS),
    ]
    for row in rows:
        lines.append(
            f"| {row['student']} | {row['parameters']:,} | {100 * row['keras_top1']:.2f}% | "
            + " | ".join(f"{100 * row['agreement'][name]:.2f}%" for name, _, _ in VARIANTS)
            + " |"
        )
    with open(os.path.join(args.out, "quantization_fashion_mnist.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
