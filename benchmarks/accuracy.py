"""Accuracy of kdistill's methods on the offline Fashion-MNIST: same student, same epochs, several seeds.

    python benchmarks/accuracy.py                           # 3 seeds, 10,000 images, 5 epochs each
    python benchmarks/accuracy.py --seeds 1 --epochs 1 --train-limit 500 --methods alone,kd   # a smoke run
    python benchmarks/accuracy.py --cifar100 --data-dir ~/tensorflow_datasets               # the published recipe

The teacher is read from --teacher (default: the one `kdistill demo` saved) or
trained once. Writes results/accuracy_fashion_mnist.json and .md (mean ± std
over seeds). With --cifar100 it runs examples/configs/cifar100_r50_mv2.yaml per
method (240 epochs; needs a prepared TFDS folder and a CIFAR-100 teacher) and
puts the published figures beside the columns it fills.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

#: method -> FeatureDistiller options (alpha 0 = labels only)
METHODS = {
    "alone": dict(taps={}, logits_loss="kl", alpha=0.0),
    "kd": dict(taps={}, logits_loss="kl", alpha=0.9),
    "dkd": dict(taps={}, logits_loss={"name": "dkd", "beta": 2.0}, alpha=0.9),
    "fitnets": dict(taps=None, feature_loss="normalized_mse", tap_weights=10.0, logits_loss="kl", alpha=0.9),
    "at": dict(taps=None, feature_loss="at", tap_weights=1000.0, logits_loss="kl", alpha=0.9),
    "sp": dict(taps=None, feature_loss="sp", tap_weights=100.0, logits_loss="kl", alpha=0.9),
    "pkt": dict(taps=None, feature_loss="pkt", tap_weights=10.0, logits_loss="kl", alpha=0.9),
    "rkd": dict(taps=None, feature_loss="rkd", tap_weights=1.0, logits_loss="kl", alpha=0.9),
    "crd": dict(taps=None, feature_loss="crd", tap_weights=0.8, logits_loss="kl", alpha=0.9),
    "hcl": dict(taps=None, feature_loss="hcl", tap_weights=1.0, logits_loss="kl", alpha=0.9),
    "reviewkd": dict(taps=None, feature_loss="hcl", review=True, tap_weights=1.0, logits_loss="kl", alpha=0.9),
}
#: published CIFAR-100 top-1 (%) for ResNet50 -> MobileNetV2 (CRD ICLR 2020; ReviewKD CVPR 2021; DKD CVPR 2022)
PUBLISHED_CIFAR100 = {"alone": 64.6, "kd": 67.4, "fitnets": 63.2, "crd": 69.1, "reviewkd": 69.9, "dkd": 70.4}


def _fashion_mnist(args) -> dict:
    import keras

    import kdistill
    from kdistill import evaluation, recipes

    def load(seed):
        return kdistill.data.load("fashion_mnist", data_dir=args.data_dir, batch_size=64, train_limit=args.train_limit, test_limit=args.test_limit, seed=seed)

    splits = load(0)
    if os.path.exists(args.teacher):
        teacher = kdistill.teachers.load(args.teacher)
    else:
        teacher, _ = recipes.train_teacher(splits, args.teacher, epochs=4, verbose=2)
    results = {"teacher": {"top1": [evaluation.evaluate(teacher, splits.test)["top1"]]}}
    for method in args.methods:
        scores, seconds = [], []
        for seed in range(args.seeds):
            # A fresh pipeline per run: every method sees the same data order for a given seed
            # (a shared pipeline reshuffles on each pass, so later methods would see other orders).
            splits = load(seed)
            keras.utils.set_random_seed(seed)
            student = kdistill.students.get("mobilenet_v2", num_classes=splits.num_classes, width=args.width)
            distiller = kdistill.FeatureDistiller(teacher, student, temperature=4.0, **METHODS[method])
            distiller.compile(optimizer="adam", metrics=["accuracy"])
            start = time.perf_counter()
            distiller.fit(splits.train, epochs=args.epochs, verbose=0, shuffle=False)  # the pipeline reshuffles itself
            seconds.append(time.perf_counter() - start)
            scores.append(evaluation.evaluate(student, splits.test)["top1"])
            print(f"{method:<8} seed {seed}: top-1 {100 * scores[-1]:.2f}%  ({seconds[-1]:.0f} s)", flush=True)
        results[method] = {"top1": scores, "seconds": seconds}
    return results


def _summary(values):
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _cifar100(args) -> dict:
    from kdistill import recipes
    from kdistill.config import DistillConfig

    import yaml

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "configs", "cifar100_r50_mv2.yaml")
    base = yaml.safe_load(open(path))
    if args.data_dir:
        base["data_dir"] = args.data_dir
    results = {}
    for method in args.methods:
        options = dict(METHODS[method])
        values = dict(base, run_name=f"cifar100_{method}", alpha=options["alpha"], logits_loss=options.get("logits_loss"),
                      feature_loss=options.get("feature_loss", "mse"), taps="none" if options["taps"] == {} else "preset",
                      tap_weights=options.get("tap_weights", 1.0))
        summary = recipes.distill(DistillConfig.from_dict(values), verbose=2)
        results[method] = {"top1": [summary["test"]["top1"]]}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--teacher", default=os.path.join("saved_models", "demo", "teacher.keras"))
    parser.add_argument("--cifar100", action="store_true", help="the published CIFAR-100 recipe (needs the data and a teacher)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    dataset = "cifar100" if args.cifar100 else "fashion_mnist"
    results = _cifar100(args) if args.cifar100 else _fashion_mnist(args)
    meta = {"dataset": dataset, "seeds": args.seeds, "epochs": args.epochs, "train_limit": args.train_limit, "student": f"mobilenet_v2 width {args.width}",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "wall_seconds": round(time.perf_counter() - started)}
    lines = [f"Top-1 on {dataset} test ({meta['student']}, {args.epochs} epochs on {args.train_limit} images, "
             f"{args.seeds} seed(s), mean ± std; {meta['machine']})", ""]
    header = "| method | top-1 (%) |" + (" published CIFAR-100 (%) |" if args.cifar100 else "")
    lines += [header, "|---|---:|" + ("---:|" if args.cifar100 else "")]
    for method, row in results.items():
        mean, std = _summary(row["top1"])
        published = f" {PUBLISHED_CIFAR100.get(method, '-')} |" if args.cifar100 else ""
        lines.append(f"| {method} | {mean:.2f} ± {std:.2f} |{published}")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"accuracy_{dataset}")
    with open(stem + ".json", "w") as handle:
        json.dump({"meta": meta, "results": results}, handle, indent=2)
    with open(stem + ".md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
