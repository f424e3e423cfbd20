"""Accuracy of kdistill's methods on the offline Fashion-MNIST: same student, same epochs, several seeds.

    python benchmarks/accuracy.py                           # 3 seeds, 10,000 images, 5 epochs each
    python benchmarks/accuracy.py --seeds 1 --epochs 1 --train-limit 500 --methods alone,kd   # a smoke run
    python benchmarks/accuracy.py --cifar100 --data-dir ~/tensorflow_datasets               # the published recipe
    python benchmarks/accuracy.py --paired --seeds 5 --epochs 8 --methods alone,kd,fitnets,kd_transfer \
        --teacher saved_models/evidence/teacher.keras --data-dir data                        # the evidence protocol

`--paired` is the evidence protocol (resumable: each finished (method, seed) is
recorded in `<work-dir>/<name>_runs.json`, and a rerun with the same settings
continues where the last one stopped): the labelled split is fixed (seed 0), and
for each seed the student alone and every method start from the same initial
weights and read the same data order (the teacher's outputs are computed once
into a teacher cache, so every run costs about what the student alone costs).
It reports last-epoch test top-1 as mean ± std, each method's paired
difference to the student alone with its 95 % t-interval, and the share of the
teacher-student gap it recovers, in results/evidence_fashion_mnist.{json,md,png};
with `kd` among the methods, also each method against KD alone (`comparisons_vs_kd`,
the same keys) and a picture of those gains (`<name>_vs_kd.png`). `two_teachers`
distils the ensemble of `--teacher` and `--second-teacher`.
Methods ending in `_transfer` also read the training images beyond
`--train-limit` without their labels (a transfer set, Hinton et al. 2015), for
the same number of steps.

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

from kdistill.run import environment

#: method -> FeatureDistiller options (alpha 0 = labels only)
METHODS = {
    "alone": dict(taps={}, logits_loss="kl", alpha=0.0),
    "kd": dict(taps={}, logits_loss="kl", alpha=0.9),
    "dkd": dict(taps={}, logits_loss={"name": "dkd", "beta": 2.0}, alpha=0.9),
    "dist": dict(taps={}, logits_loss={"name": "dist", "beta": 2.0, "gamma": 2.0}, alpha=0.9),
    "standardized_dkd": dict(taps={}, logits_loss={"name": "standardized_dkd", "beta": 2.0}, alpha=0.9),
    "fitnets": dict(taps=None, feature_loss="normalized_mse", tap_weights=10.0, logits_loss="kl", alpha=0.9),
    "at": dict(taps=None, feature_loss="at", tap_weights=1000.0, logits_loss="kl", alpha=0.9),
    "sp": dict(taps=None, feature_loss="sp", tap_weights=100.0, logits_loss="kl", alpha=0.9),
    "pkt": dict(taps=None, feature_loss="pkt", tap_weights=10.0, logits_loss="kl", alpha=0.9),
    "rkd": dict(taps=None, feature_loss="rkd", tap_weights=1.0, logits_loss="kl", alpha=0.9),
    "crd": dict(taps=None, feature_loss="crd", tap_weights=0.8, logits_loss="kl", alpha=0.9),
    "hcl": dict(taps=None, feature_loss="hcl", tap_weights=1.0, logits_loss="kl", alpha=0.9),
    "reviewkd": dict(taps=None, feature_loss="hcl", adapter="review", tap_weights=1.0, logits_loss="kl", alpha=0.9),
    # The textbook recipe: (1) MSE on projected features + KD, (2) feature KL at T + KD, (3) 0.9 feature KL + 0.1 CE, no
    # logits term.
    "mse_kd": dict(taps=None, feature_loss="mse", tap_weights=1.0, logits_loss="kl", alpha=0.9),
    "feature_kl": dict(
        taps=None, feature_loss={"name": "kl", "spatial": "mean"}, tap_weights=1.0, logits_loss="kl", alpha=0.9
    ),
    "feature_kl_ce": dict(
        taps=None, feature_loss={"name": "kl", "spatial": "mean"}, tap_weights=1.0, logits_loss=None, alpha=0.9
    ),
    "cwd": dict(
        taps=None, feature_loss={"name": "cwd", "temperature": 1.0}, tap_weights=3.0, logits_loss="kl", alpha=0.9
    ),
    "irg": dict(taps=None, feature_loss="irg", tap_weights=1.0, logits_loss="kl", alpha=0.9),
    "meal_v2": dict(taps={}, logits_loss=[("kl", 1.0), ({"name": "meal_v2", "output_relu": False}, 1.0)], alpha=0.9),
    # KD from the ensemble of --teacher and --second-teacher (averaged probabilities at T).
    "two_teachers": dict(taps={}, logits_loss="kl", alpha=0.9),
}
#: methods whose teacher is the ensemble of --teacher and --second-teacher
ENSEMBLE_METHODS = ("two_teachers",)
#: published CIFAR-100 top-1 (%) for ResNet50 -> MobileNetV2 (CRD ICLR 2020; ReviewKD CVPR 2021; DKD CVPR 2022)
PUBLISHED_CIFAR100 = {"alone": 64.6, "kd": 67.4, "fitnets": 63.2, "crd": 69.1, "reviewkd": 69.9, "dkd": 70.4}


def _fashion_mnist(args) -> dict:
    import keras

    import kdistill
    from kdistill import evaluation
    from kdistill.run import training as recipes

    def load(seed):
        return kdistill.data.load(
            "fashion_mnist",
            data_dir=args.data_dir,
            batch_size=64,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
            seed=seed,
        )

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
            student = student_from_args(args)
            distiller = kdistill.FeatureDistiller(teacher, student, temperature=4.0, **METHODS[method])
            distiller.compile(optimizer="adam", metrics=["accuracy"])
            start = time.perf_counter()
            distiller.fit(splits.train, epochs=args.epochs, verbose=0, shuffle=False)  # the pipeline reshuffles itself
            seconds.append(time.perf_counter() - start)
            scores.append(evaluation.evaluate(student, splits.test)["top1"])
            print(f"{method:<8} seed {seed}: top-1 {100 * scores[-1]:.2f}%  ({seconds[-1]:.0f} s)", flush=True)
        results[method] = {"top1": scores, "seconds": seconds}
    return results


def student_from_args(args):
    """The benchmarks' student: `--student` (MobileNetV2 at `--width` by default; tests use a smaller one)."""
    import kdistill

    width = {"width": args.width} if args.student.startswith("mobilenet") else {}
    return kdistill.students.get(args.student, num_classes=10, **width)


def _split(args):
    """Labelled and transfer indices of the training images (the split of data.load(seed=0)), and the test set."""
    import numpy as np

    import kdistill

    (x_train, y_train), (x_test, y_test) = kdistill.data.load_fashion_mnist(args.data_dir)
    if args.test_limit:
        x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    # The split of data.load(seed=0): 6,000 validation images, then the labelled training images, then the rest.
    order = np.random.default_rng(0).permutation(len(x_train))[int(round(len(x_train) * 0.1)) :]
    labelled = order[: args.train_limit]
    transfer = (
        order[args.train_limit : args.train_limit + args.transfer_limit]
        if args.transfer_limit
        else order[args.train_limit :]
    )
    classes = kdistill.data.FASHION_MNIST_CLASSES
    test = kdistill.data.from_arrays(
        x_test[:2], y_test[:2], x_test, y_test, batch_size=256, validation_fraction=0.0, class_names=classes
    ).test
    return x_train, y_train, labelled, transfer, test


def _teachers(args):
    """The teacher, and the ensemble of it with --second-teacher when a method needs one."""
    import kdistill

    teacher = kdistill.teachers.load(args.teacher)
    if not any(m.removesuffix("_transfer") in ENSEMBLE_METHODS for m in args.methods):
        return teacher, None
    if not args.second_teacher or not os.path.exists(args.second_teacher):
        raise SystemExit(
            f"Methods {', '.join(ENSEMBLE_METHODS)} need --second-teacher PATH (received {args.second_teacher!r})."
        )
    second = kdistill.teachers.load(args.second_teacher)
    teacher_copy = kdistill.teachers.load(args.teacher)
    teacher_copy.name, second.name = "first_teacher", "second_teacher"
    return teacher, kdistill.teachers.ensemble([teacher_copy, second], temperature=args.temperature)


def _cache(args, teacher, layers, x_pool, pool_labels, name: str):
    """The teacher's outputs on the pool, built once into work_dir/<name> and reused while they still match."""
    import numpy as np

    import kdistill
    from kdistill.run import teacher_cache

    cache_dir = os.path.join(args.work_dir, name)
    try:
        cache = teacher_cache.load(cache_dir, teacher, layers)
        if len(cache) != len(pool_labels) or not np.array_equal(
            np.sort(np.asarray(cache.labels)), np.sort(pool_labels)
        ):
            raise teacher_cache.StaleCacheError("other images")
    except (FileNotFoundError, teacher_cache.StaleCacheError):
        print(
            f"caching the teacher's outputs for {len(pool_labels)} images into {cache_dir} ({layers or 'logits only'})",
            flush=True,
        )
        plain = kdistill.data.from_arrays(
            x_pool,
            pool_labels,
            batch_size=256,
            validation_fraction=0.0,
            class_names=kdistill.data.FASHION_MNIST_CLASSES,
        ).train_plain
        cache = teacher_cache.build(teacher, layers, plain, cache_dir, dtype="float16", verbose=0)
    return cache


def _run_one(args, method: str, seed: int, teacher, cache, layers, steps: int, test) -> dict:
    """Trains one student for (method, seed) from the seed's initial weights; returns its top-1 and seconds."""
    import keras

    import kdistill
    from kdistill import evaluation
    from kdistill.run import paired

    # the students' optimizer: Adam, peak 1e-3, cosine decay to zero over the run (kdistill.run.paired); last-epoch
    # figures
    keras.utils.set_random_seed(seed)
    initial = student_from_args(args).get_weights()
    options = dict(METHODS[method.removesuffix("_transfer")])
    keras.utils.set_random_seed(seed)
    student = student_from_args(args)
    student.set_weights(initial)
    if options["taps"] is None:
        options["taps"] = {t: s for t, s in kdistill.taps.preset(teacher, student).items() if t in layers}
    # _transfer: the same steps from labelled + unlabelled
    indices = None if method.endswith("_transfer") else paired.labelled_indices(cache)
    start = time.perf_counter()
    paired.train_from_cache(
        teacher,
        student,
        cache,
        options=dict(options, temperature=args.temperature),
        epochs=args.epochs,
        steps_per_epoch=steps,
        seed=seed,
        batch_size=args.batch_size,
        indices=indices,
        pipeline=args.pipeline,
        verbose=0,
    )
    return {
        "top1": evaluation.evaluate(student, test, timing_batches=1)["top1"],
        "seconds": time.perf_counter() - start,
    }


def _runs_file(args) -> str:
    """Where each finished (method, seed) is recorded: a stopped study continues from it (same settings only)."""
    return os.path.join(args.work_dir, f"{args.name}_runs.json")


def _settings(args) -> dict:
    """What every run of a study shares. The second teacher is not among them: only the ensemble methods' runs record it (`_load_runs`)."""
    return {
        key: getattr(args, key)
        for key in (
            "epochs",
            "train_limit",
            "transfer_limit",
            "test_limit",
            "width",
            "student",
            "temperature",
            "batch_size",
            "teacher",
        )
    } | ({"pipeline": args.pipeline} if args.pipeline != "tf" else {})


def _load_runs(args) -> dict:
    path = _runs_file(args)
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        stored = json.load(handle)
    # files from before it moved to the runs
    settings = {key: value for key, value in stored.get("settings", {}).items() if key != "second_teacher"}
    if settings != _settings(args):
        raise SystemExit(
            f"{path} holds runs made with other settings ({settings}); pass another --name or --work-dir, "
            "or delete it to start over."
        )
    for key, record in stored["runs"].items():
        method = key.split("/")[0]
        if (
            method in args.methods
            and method.removesuffix("_transfer") in ENSEMBLE_METHODS
            and record.get("second_teacher") != args.second_teacher
        ):
            raise SystemExit(
                f"{path} holds {key} made with --second-teacher {record.get('second_teacher')!r}, not {args.second_teacher!r}: "
                "pass that teacher, another --name, or delete those runs from the file."
            )
    return stored["runs"]


def _save_runs(args, runs: dict) -> None:
    path = _runs_file(args)
    with open(path + ".partial", "w") as handle:
        json.dump({"settings": _settings(args), "runs": runs}, handle, indent=1)
    os.replace(path + ".partial", path)


def _paired(args) -> dict:
    """The paired protocol; returns the JSON record (see the module docstring)."""
    import numpy as np

    import kdistill
    from kdistill import evaluation
    from kdistill.distiller import UNLABELED

    x_train, y_train, labelled, transfer, test = _split(args)
    uses_transfer = any(m.endswith("_transfer") for m in args.methods)
    pool = np.concatenate([labelled, transfer]) if uses_transfer else labelled
    pool_labels = np.where(np.isin(pool, labelled), y_train[pool].astype("int32"), UNLABELED).astype("int32")
    teacher, ensemble = _teachers(args)
    teacher_top1 = evaluation.evaluate(teacher, test, timing_batches=1)["top1"]
    print(f"teacher {args.teacher}: test top-1 {100 * teacher_top1:.2f}%", flush=True)
    probe = student_from_args(args)
    layers = (
        sorted(kdistill.taps.preset(teacher, probe))
        if any(METHODS[m.removesuffix("_transfer")]["taps"] is None for m in args.methods)
        else []
    )
    caches = {"teacher": _cache(args, teacher, layers, x_train[pool], pool_labels, f"cache_{len(pool)}")}
    if ensemble is not None:
        caches["ensemble"] = _cache(args, ensemble, [], x_train[pool], pool_labels, f"cache_ensemble_{len(pool)}")
    if int((np.asarray(caches["teacher"].labels) >= 0).sum()) != len(labelled):
        raise SystemExit(
            f"The teacher cache holds other labelled images than expected ({len(labelled)}): delete {args.work_dir} and rerun."
        )
    steps = -(-len(labelled) // args.batch_size)
    runs = _load_runs(args)
    for seed in range(args.seeds):
        for method in args.methods:
            key = f"{method}/{seed}"
            if key in runs:
                continue
            two = method.removesuffix("_transfer") in ENSEMBLE_METHODS
            runs[key] = _run_one(
                args,
                method,
                seed,
                ensemble if two else teacher,
                caches["ensemble" if two else "teacher"],
                [] if two else layers,
                steps,
                test,
            ) | ({"second_teacher": args.second_teacher} if two else {})
            _save_runs(args, runs)
            print(
                f"seed {seed} {method:<14} top-1 {100 * runs[key]['top1']:.2f}%  ({runs[key]['seconds']:.0f} s)",
                flush=True,
            )
    results = {
        m: {k: [runs[f"{m}/{seed}"][k] for seed in range(args.seeds)] for k in ("top1", "seconds")}
        for m in args.methods
    }
    record = {
        "teacher_top1": teacher_top1,
        "results": results,
        "labelled": len(labelled),
        "transfer": len(transfer) if uses_transfer else 0,
        "taps": layers,
    }
    if ensemble is not None:
        record["ensemble_top1"] = evaluation.evaluate(ensemble, test, timing_batches=1)["top1"]
    record["comparisons"] = _comparisons(results, "alone", teacher_top1, args.seeds)
    record["comparisons_vs_kd"] = _comparisons(results, "kd", teacher_top1, args.seeds)
    return record


def _comparisons(results: dict, baseline: str, teacher_top1: float, seeds: int) -> dict:
    """Each method against `baseline` seed by seed (the keys of `kdistill.statistics.paired_comparison`)."""
    from kdistill import statistics

    if seeds < 2:
        return {}
    compared = {}
    for method in results:
        # a `_transfer` method is compared with the baseline that saw the same images (kd_transfer for kd), when it ran
        own = (
            f"{baseline}_transfer"
            if method.endswith("_transfer") and f"{baseline}_transfer" in results and baseline != "alone"
            else baseline
        )
        if own in results and method not in (own, baseline, "alone"):
            compared[method] = statistics.paired_comparison(
                results[own]["top1"], results[method]["top1"], teacher=teacher_top1
            )
    return compared


def _paired_report(record: dict, meta: dict) -> list[str]:
    from kdistill import statistics

    lines = [
        f"Paired protocol on Fashion-MNIST ({meta['student']}, {meta['epochs']} epochs = {meta['steps']} steps of {meta['batch_size']}, "
        f"{record['labelled']:,} labelled training images, test {meta['test_images']:,} images, {meta['seeds']} seeds; "
        f"teacher ResNet50 {100 * record['teacher_top1']:.2f} %; {meta['machine']})",
        "",
        f"Command: `{meta['command']}` ({meta['wall_seconds'] / 60:.0f} min).",
        "",
        "| method | data | top-1 (%) mean ± std | paired gain (points) | 95 % CI | wins | p | gap recovered |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, row in record["results"].items():
        mean, std = statistics.mean_std(row["top1"])
        data = (
            f"{record['labelled']:,} labelled + {record['transfer']:,} unlabelled"
            if method.endswith("_transfer")
            else f"{record['labelled']:,} labelled"
        )
        if method in record["comparisons"]:
            c = record["comparisons"][method]
            lines.append(
                f"| {method} | {data} | {100 * mean:.2f} ± {100 * std:.2f} | {100 * c['difference_mean']:+.2f} | "
                f"[{100 * c['difference_low']:+.2f}, {100 * c['difference_high']:+.2f}] | {c['wins']}/{c['seeds']} | {c['p_value']:.3g} | "
                f"{100 * c['gap_recovered']:.0f} % |"
            )
        else:
            lines.append(f"| {method} | {data} | {100 * mean:.2f} ± {100 * std:.2f} | - | - | - | - | - |")
    lines += _versus_kd_lines(record)
    lines += [
        "",
        "Last-epoch test top-1 (no best-epoch picking). Paired gain: mean over seeds of (method - student alone), both from the "
        "same initial weights and data order; CI from Student's t with seeds - 1 degrees of freedom. Gap recovered: "
        "(method - alone) / (teacher - alone) on the means. `_transfer` runs take the same number of steps from a pool where "
        "the extra images carry no labels (only the distillation terms apply to them); the student alone never sees them.",
    ]
    return lines


def _versus_kd_lines(record: dict) -> list[str]:
    """The table of each method against KD alone (paired, same seeds), when KD was run."""
    if not record.get("comparisons_vs_kd"):
        return []
    lines = [
        "",
        "Against KD alone (the same seeds; `_transfer` methods against `kd_transfer`, which saw the same images; "
        "gap recovered: (method - KD) / (teacher - KD)):",
        "",
        "| method | paired gain over KD (points) | 95 % CI | wins | p | gap recovered |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, c in record["comparisons_vs_kd"].items():
        lines.append(
            f"| {method} | {100 * c['difference_mean']:+.2f} | [{100 * c['difference_low']:+.2f}, {100 * c['difference_high']:+.2f}] | "
            f"{c['wins']}/{c['seeds']} | {c['p_value']:.3g} | {100 * c['gap_recovered']:.0f} % |"
        )
    return lines


def _versus_kd_plot(record: dict, path: str) -> None:
    """Each method's paired gain over KD alone with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(record["comparisons_vs_kd"].items(), key=lambda item: item[1]["difference_mean"])
    figure, axis = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.4))
    for index, (method, c) in enumerate(rows):
        color = "#2e7d32" if c["difference_low"] > 0 else "#c0392b" if c["difference_high"] < 0 else "#555555"
        axis.errorbar(
            100 * c["difference_mean"],
            index,
            xerr=[
                [100 * (c["difference_mean"] - c["difference_low"])],
                [100 * (c["difference_high"] - c["difference_mean"])],
            ],
            fmt="o",
            color=color,
            capsize=3,
        )
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(rows)), [method for method, _ in rows])
    axis.set_xlabel("paired gain over KD alone (points of top-1), 95 % CI")
    axis.set_title("Which way of distilling features helps beyond logits?")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _paired_plot(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdistill import statistics

    methods = list(record["results"])
    means, stds = zip(*(statistics.mean_std(record["results"][m]["top1"]) for m in methods))
    figure, axis = plt.subplots(figsize=(1.4 * len(methods) + 2, 3.6))
    axis.bar(
        methods,
        [100 * m for m in means],
        yerr=[100 * s for s in stds],
        capsize=4,
        color=["#999999"] + ["#3572b0"] * (len(methods) - 1),
    )
    for index, method in enumerate(methods):
        for value in record["results"][method]["top1"]:
            axis.plot(index, 100 * value, "k.", markersize=4)
    axis.axhline(
        100 * record["teacher_top1"],
        color="#c0392b",
        linestyle="--",
        label=f"teacher {100 * record['teacher_top1']:.1f} %",
    )
    low = 100 * min(min(r["top1"]) for r in record["results"].values())
    axis.set_ylim(low - 2, 100 * record["teacher_top1"] + 1.5)
    axis.set_ylabel("test top-1 (%), last epoch")
    axis.set_title("Student alone vs distilled: mean ± std over seeds (dots: seeds)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _summary(values):
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _cifar100(args) -> dict:
    from kdistill.run import jobs as recipes
    from kdistill.run.config import DistillConfig

    import yaml

    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "configs", "cifar100_r50_mv2.yaml"
    )
    base = yaml.safe_load(open(path))
    if args.data_dir:
        base["data_dir"] = args.data_dir
    results = {}
    for method in args.methods:
        options = dict(METHODS[method])
        values = dict(
            base,
            run_name=f"cifar100_{method}",
            alpha=options["alpha"],
            logits_loss=options.get("logits_loss"),
            feature_loss=options.get("feature_loss", "mse"),
            taps="none" if options["taps"] == {} else "preset",
            tap_weights=options.get("tap_weights", 1.0),
        )
        # a new measurement each time
        summary = recipes.distill(DistillConfig.from_dict(values), verbose=2, restart=True)
        results[method] = {"top1": [summary["test"]["top1"]]}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument(
        "--student", default="mobilenet_v2", help="registered student (default mobilenet_v2 at --width)"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--teacher", default=os.path.join("saved_models", "demo", "teacher.keras"))
    parser.add_argument(
        "--cifar100", action="store_true", help="the published CIFAR-100 recipe (needs the data and a teacher)"
    )
    parser.add_argument("--paired", action="store_true", help="the evidence protocol (see the module docstring)")
    parser.add_argument(
        "--transfer-limit", type=int, default=None, help="--paired: at most this many unlabelled transfer images"
    )
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--pipeline",
        choices=("tf", "numpy"),
        default="tf",
        help="--paired: how the teacher cache is read: 'tf' holds it in memory (the committed results), 'numpy' reads its "
        "memory maps batch by batch (flat memory; another data order)",
    )
    parser.add_argument("--work-dir", default=os.path.join("saved_models", "evidence"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument(
        "--second-teacher", default=None, help="--paired: the second teacher of the two_teachers method (.keras)"
    )
    parser.add_argument(
        "--name",
        default="evidence_fashion_mnist",
        help="--paired: file stem of the results (a second study does not overwrite the first)",
    )
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted({m.removesuffix("_transfer") for m in args.methods} - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    if args.paired:
        return _run_paired(args, started, argv)
    dataset = "cifar100" if args.cifar100 else "fashion_mnist"
    results = _cifar100(args) if args.cifar100 else _fashion_mnist(args)
    meta = {
        "dataset": dataset,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "train_limit": args.train_limit,
        "student": f"mobilenet_v2 width {args.width}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "environment": environment.describe(),
        "wall_seconds": round(time.perf_counter() - started),
    }
    lines = [
        f"Top-1 on {dataset} test ({meta['student']}, {args.epochs} epochs on {args.train_limit} images, "
        f"{args.seeds} seed(s), mean ± std; {meta['machine']})",
        "",
    ]
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


def _run_paired(args, started: float, argv) -> int:
    if args.cifar100:
        raise SystemExit("--paired runs on the offline Fashion-MNIST; --cifar100 is the published single-run recipe.")
    if not os.path.exists(args.teacher):
        raise SystemExit(
            f"No teacher at {args.teacher!r}: train one with `python benchmarks/teacher.py --train` or pass --teacher PATH."
        )
    os.makedirs(args.work_dir, exist_ok=True)
    record = _paired(args)
    meta = {
        "dataset": "fashion_mnist",
        "seeds": args.seeds,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "steps": args.epochs * -(-record["labelled"] // args.batch_size),
        "test_images": args.test_limit or 10_000,
        "student": f"MobileNetV2 width {args.width}" if args.student == "mobilenet_v2" else args.student,
        "temperature": args.temperature,
        "teacher": args.teacher,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "environment": environment.describe(),
        "command": "python benchmarks/accuracy.py "
        + environment.portable_command(argv if argv is not None else sys.argv[1:]),
        "wall_seconds": round(time.perf_counter() - started),
    }
    lines = _paired_report(record, meta)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, args.name)
    with open(stem + ".json", "w") as handle:
        json.dump({"meta": meta, **record}, handle, indent=2)
    with open(stem + ".md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    if args.seeds > 1:
        _paired_plot(record, stem + ".png")
    if record.get("comparisons_vs_kd"):
        _versus_kd_plot(record, stem + "_vs_kd.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
