"""How close can the student get, and how long does it take? Patient and consistent teaching against the demo's recipe.

    python benchmarks/patient.py --data-dir data --teacher saved_models/demo/teacher.keras --seeds 3 --schedules 1,3,9
    python benchmarks/patient.py --report-only --work-dir saved_models/patient      # tables and picture from the finished runs

The demo's pair (its ResNet-20 teacher, MobileNetV2-0.35 at 32x32, 10,000 labelled
and 44,000 unlabelled Fashion-MNIST images, split with seed 0). For each seed every
recipe starts from the same initial weights and reads its batches in the order drawn
from that seed; a schedule of m is m times the demo's student steps (15 epochs of
157 steps of 64 images). Recipes:
    alone    the student on the labelled images alone, with crop + flip + mixup in the input pipeline (Keras' MixUp:
             partners from the same batch of labelled images; the cached views' partners are mostly unlabelled)
    demo     the demo's recipe: KD (T = 4, alpha 0.9) + normalized MSE on two taps, labelled + unlabelled, no augmentation
    fm       function matching (Beyer et al. 2022): KL at T = 1 only, on cached crop + flip + mixup views of the
             labelled and unlabelled images, Adam with one epoch of warm-up, cosine decay, global clipping at 1.0
    fm_live  the same views, in the same order, with the teacher run on each batch instead of read from the cache: a
             check that the cache teaches what the live teacher does (not run by default: --recipes fm_live)
The teacher caches (plain, and --views views per image) are built once in --work-dir.
Two processes can share the runs (`--recipes`, `--schedules` and `--only-seeds` split them): each
appends to the same log.
Every run is appended to <work-dir>/runs.jsonl as it finishes, and a rerun skips the
finished ones: stop it at any time and run the same command to go on. The report
(last-epoch test top-1, the share of the teacher-student gap recovered against the
student alone's best schedule with its paired 95 % interval, seconds per step) goes to
<out>/patient_fashion_mnist.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import study_log

from kdistill.run import environment

RECIPES = ("alone", "demo", "fm", "fm_live")
AUGMENT = ("crop", "flip", "mixup")
DEMO_EPOCHS = 15


def _setup(args):
    """The data (seed-0 split), the teacher and the two caches."""
    import kdistill
    from kdistill import evaluation
    from kdistill.models import taps as taps_module
    from kdistill.run import demo, teacher_cache
    from kdistill.run.demo_settings import DEMO_QUICK

    settings = dataclasses.replace(
        DEMO_QUICK, train_limit=args.train_limit, test_limit=args.test_limit, batch_size=args.batch_size
    )
    splits, pool = demo._load_data(settings, args.data_dir, 0)
    teacher = kdistill.teachers.load(args.teacher)
    probe = _student(args, splits, 0)
    layers = sorted(taps_module.preset(teacher, probe)) if args.student == "mobilenet_v2" else []
    caches = {}
    for name, views in (("plain", 0), ("views", args.views)):
        folder = os.path.join(args.work_dir, f"cache_{name}_{pool.counts['train']}")
        try:
            caches[name] = teacher_cache.load(folder, teacher, layers if not views else [], dataset=pool.train_plain)
        except (FileNotFoundError, teacher_cache.StaleCacheError):
            started = time.perf_counter()
            caches[name] = teacher_cache.build(
                teacher,
                layers if not views else [],
                pool.train_plain,
                folder,
                augment=AUGMENT if views else (),
                views=views,
                verbose=0,
                seed=0,
            )
            print(f"built the {name} cache in {time.perf_counter() - started:.0f} s", flush=True)
    teacher_top1 = evaluation.evaluate(teacher, splits.test, timing_batches=1)["top1"]
    return splits, teacher, caches, teacher_top1, layers


def _student(args, splits, seed: int):
    from kdistill.run import training

    return training.build_student(args.student, splits, args.width, seed)


def _train(recipe: str, schedule: int, seed: int, args, splits, teacher, caches, layers) -> dict:
    """One run: the recipe's student for `schedule` x the demo's steps from the seed's initial weights; its test top-1 and time."""

    from kdistill import FeatureDistiller, evaluation
    from kdistill.run import optimizers, paired, training

    from kdistill.models import taps as taps_module

    steps = -(-splits.counts["train"] // args.batch_size)
    epochs = DEMO_EPOCHS * schedule if not args.epochs else args.epochs * schedule
    student = _student(args, splits, seed)
    if recipe == "alone":
        return _alone(student, schedule, seed, epochs, steps, args, splits)
    if recipe == "demo":
        options = {
            "taps": taps_module.preset(teacher, student) if layers else {},
            "feature_loss": "normalized_mse",
            "logits_loss": "kl",
            "temperature": 4.0,
            "alpha": 0.9,
            "tap_weights": 10.0,
        }
        cache, indices, optimizer = caches["plain"], None, paired.cosine_adam(epochs * steps)
    else:
        options = {"taps": {}, "logits_loss": "kl", "temperature": 1.0, "alpha": 1.0}
        cache, indices = caches["views"], None
        optimizer = optimizers.make_optimizer(
            "adam", 1e-3, steps_per_epoch=steps, schedule="cosine", warmup_epochs=1, epochs=epochs, global_clipnorm=1.0
        )
    distiller = FeatureDistiller(teacher, student, **options)
    # fm: alpha 1, no CE
    distiller.compile(optimizer=optimizer, loss=training.label_loss(AUGMENT if cache is caches["views"] else ()))
    train = cache.dataset(
        args.batch_size, seed=seed, layers=list(distiller.taps), indices=indices, repeat=True, pipeline="numpy"
    )
    if recipe == "fm_live":
        train = _WithoutTeacher(train)
    started = time.perf_counter()
    distiller.fit(train, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started
    top1 = evaluation.evaluate(student, splits.test, timing_batches=1)["top1"]
    return {
        "recipe": recipe,
        "schedule": schedule,
        "seed": seed,
        "top1": top1,
        "seconds": seconds,
        "steps": epochs * steps,
    }


class _WithoutTeacher(keras.utils.PyDataset):
    """The replayed views' images and labels without the cached outputs, so that the distiller runs its teacher on them."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    @property
    def num_batches(self):
        return self.batches.num_batches

    def __getitem__(self, index):
        inputs, labels = self.batches[index]
        return inputs["images"], labels

    def on_epoch_end(self):
        self.batches.on_epoch_end()


def _alone(student, schedule: int, seed: int, epochs: int, steps: int, args, splits) -> dict:
    """The student alone on the labelled images, crop + flip + mixup in the pipeline (one-hot mixed labels), cosine Adam."""
    import keras

    from kdistill import data, evaluation
    from kdistill.run import paired

    # the split of the teacher and the caches (seed 0)
    augmented = data.load(
        "fashion_mnist",
        data_dir=args.data_dir,
        image_size=32,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=0,
        augment=AUGMENT,
    )
    student.compile(
        optimizer=paired.cosine_adam(epochs * steps), loss=keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    started = time.perf_counter()
    student.fit(augmented.train, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - started
    top1 = evaluation.evaluate(student, splits.test, timing_batches=1)["top1"]
    return {
        "recipe": "alone",
        "schedule": schedule,
        "seed": seed,
        "top1": top1,
        "seconds": seconds,
        "steps": epochs * steps,
    }


def _plan(args) -> list[tuple[str, int, int]]:
    """(recipe, schedule, seed) of every run, the short ones first so that a stopped study has whole columns."""
    runs = []
    for schedule in args.schedules:
        for seed in args.only_seeds if args.only_seeds is not None else range(args.seeds):
            for recipe in args.recipes:
                if recipe == "alone" and schedule > max(args.alone_schedules):
                    continue
                runs.append((recipe, schedule, seed))
    return runs


def report(runs: list[dict], teacher_top1: float, meta: dict) -> tuple[dict, list[str]]:
    """The summary (per recipe and schedule: mean and std of top-1, gap recovered with its paired interval) and its table."""
    from kdistill import statistics

    by = {}
    for run in runs:
        by.setdefault((run["recipe"], run["schedule"]), {})[run["seed"]] = run
    alone = {key: rows for key, rows in by.items() if key[0] == "alone"}
    best_alone = (
        max(alone, key=lambda key: statistics.mean_std([r["top1"] for r in alone[key].values()])[0]) if alone else None
    )
    rows, lines = (
        [],
        [
            f"Patient and consistent teaching on the demo's pair ({meta['student']}, teacher {100 * teacher_top1:.2f} %); "
            f"{meta['seeds']} seed(s) planned; gap recovered = (recipe - alone) / (teacher - alone), against the student "
            f"alone's best schedule ({'x%d' % best_alone[1] if best_alone else '-'}), paired by seed.",
            "",
            f"Command: `{meta['command']}`; {meta['environment']['cpu']}, {meta['environment']['cpu_cores']} cores.",
            "",
            "| recipe | schedule | seeds | top-1 (%) mean ± std | gap recovered, mean [95 % CI] | seconds per step |",
            "|---|---:|---:|---:|---:|---:|",
        ],
    )
    groups = sorted(by.items(), key=lambda item: (RECIPES.index(item[0][0]), item[0][1]))
    baseline = alone.get(best_alone, {})
    for (recipe, schedule), seeds in groups:
        mean, std = statistics.mean_std([r["top1"] for r in seeds.values()])
        shares = list(_gap_shares(seeds, baseline, teacher_top1).values())
        interval = statistics.t_interval(shares) if len(shares) > 1 else None
        gap = (
            "-"
            if not shares or recipe == "alone"
            else (
                f"{100 * sum(shares) / len(shares):.0f} %"
                + (f" [{100 * interval[1]:.0f}, {100 * interval[2]:.0f}]" if interval else " (one seed)")
            )
        )
        per_step = sum(r["seconds"] / r["steps"] for r in seeds.values()) / len(seeds)
        rows.append(
            {
                "recipe": recipe,
                "schedule": schedule,
                "seeds": sorted(seeds),
                "top1_mean": mean,
                "top1_std": std,
                "gap_shares": shares,
                "seconds_per_step": per_step,
            }
        )
        lines.append(
            f"| {recipe} | x{schedule} | {len(seeds)} | {100 * mean:.2f} ± {100 * std:.2f} | {gap} | {per_step:.3f} |"
        )
    lines += ["", *_per_seed(groups, baseline, teacher_top1)]
    return {
        "rows": rows,
        "teacher_top1": teacher_top1,
        "best_alone_schedule": best_alone[1] if best_alone else None,
    }, lines


def _gap_shares(runs: dict, baseline: dict, teacher_top1: float) -> dict[int, float]:
    """{seed: (top-1 - alone) / (teacher - alone)} for the seeds `runs` and the student alone's `baseline` share.

    A seed whose student alone is as good as the teacher has no gap to recover: it is left out.
    """
    return {
        seed: (runs[seed]["top1"] - baseline[seed]["top1"]) / (teacher_top1 - baseline[seed]["top1"])
        for seed in sorted(set(runs) & set(baseline))
        if baseline[seed]["top1"] != teacher_top1
    }


def _per_seed(groups: list, baseline: dict, teacher_top1: float) -> list[str]:
    """Each run's top-1 and, in brackets, its share of that seed's gap (against the student alone's best schedule)."""
    seeds = sorted({seed for _, runs in groups for seed in runs})
    lines = [
        "Per seed: test top-1 (%) [gap recovered on that seed]",
        "",
        "| recipe | schedule | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
        "|---|---:|" + "---:|" * len(seeds),
    ]
    for (recipe, schedule), runs in groups:
        shares = _gap_shares(runs, baseline, teacher_top1) if recipe != "alone" else {}
        cells = [
            "-"
            if seed not in runs
            else f"{100 * runs[seed]['top1']:.2f}" + (f" [{100 * shares[seed]:.0f} %]" if seed in shares else "")
            for seed in seeds
        ]
        lines.append(f"| {recipe} | x{schedule} | " + " | ".join(cells) + " |")
    return lines


def _picture(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4))
    for recipe in RECIPES:
        rows = [row for row in summary["rows"] if row["recipe"] == recipe]
        if rows:
            axes.errorbar(
                [r["schedule"] for r in rows],
                [100 * r["top1_mean"] for r in rows],
                yerr=[100 * r["top1_std"] for r in rows],
                marker="o",
                capsize=3,
                label=recipe,
            )
    axes.axhline(100 * summary["teacher_top1"], color="black", linestyle="--", label="teacher")
    axes.set_xscale("log")
    schedules = sorted({row["schedule"] for row in summary["rows"]})
    axes.set_xticks(schedules, [f"{schedule}x" for schedule in schedules])
    axes.minorticks_off()
    axes.set_xlabel("schedule (x the demo's student steps)")
    axes.set_ylabel("test top-1 (%)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default=os.path.join("saved_models", "demo", "teacher.keras"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--only-seeds",
        default=None,
        help="run these seeds only (e.g. 2 or 1,2), so that two processes or machines can share a study's runs",
    )
    parser.add_argument("--schedules", default="1,3,9", help="multiples of the demo's student steps")
    parser.add_argument("--alone-schedules", default="1,3", help="the student alone's schedules")
    parser.add_argument("--recipes", default="alone,demo,fm", help=f"any of {', '.join(RECIPES)}")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of schedule x1 (default: the demo's 15; smoke tests use 1)"
    )
    parser.add_argument("--train-limit", type=int, default=10_000)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--student", default="mobilenet_v2")
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--work-dir", default=os.path.join("saved_models", "patient"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from the finished runs, train nothing"
    )
    args = parser.parse_args(argv)
    args.schedules = [int(s) for s in args.schedules.split(",")]
    args.alone_schedules = [int(s) for s in args.alone_schedules.split(",")]
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if args.only_seeds is not None:
        args.only_seeds = [int(s) for s in args.only_seeds.split(",")]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.makedirs(args.work_dir, exist_ok=True)
    log = os.path.join(args.work_dir, "runs.jsonl")
    splits, teacher, caches, teacher_top1, layers = _setup(args)
    for recipe, schedule, seed in [] if args.report_only else _plan(args):
        # read before each run: another process sharing the log may have finished this one meanwhile
        if any((r["recipe"], r["schedule"], r["seed"]) == (recipe, schedule, seed) for r in study_log.finished(log)):
            continue
        run = _train(recipe, schedule, seed, args, splits, teacher, caches, layers)
        study_log.append(log, run)  # one line per finished run: a stopped study resumes from here
        print(
            f"{recipe:<6} x{schedule} seed {seed}: top-1 {100 * run['top1']:.2f} % ({run['seconds']:.0f} s)", flush=True
        )
    meta = {
        "seeds": args.seeds,
        "schedules": args.schedules,
        "views": args.views,
        "student": f"{args.student} {args.width}",
        "train": splits.counts,
        "environment": environment.describe(),
        "command": "python benchmarks/patient.py "
        + environment.portable_command(argv if argv is not None else sys.argv[1:]),
    }
    runs = study_log.finished(log)
    summary, lines = report(runs, teacher_top1, meta)
    study_log.write_report(os.path.join(args.out, "patient_fashion_mnist"), meta, runs, summary, lines, _picture)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
