"""Does distillation help a segmenter? A paired study on the offline synthetic scenes.

    python benchmarks/segmentation.py --data-dir data --seeds 3                  # resumable: rerun the same command to go on
    python benchmarks/segmentation.py --data-dir data --report-only             # tables and picture from the finished runs

A conv_segmenter teacher (trained once, saved in --work-dir; Adam, warm-up and cosine decay) and a MobileNetV2-0.35
segmenter student on 32x32 scenes (`kdistill.data.load_scenes`, the segmentation demo's data). The student alone reads
the 2,000 labelled scenes for --epochs; the distilled students read them and --transfer-scenes unlabelled scenes (masks
all ignored: only the teacher labels them) for as many steps, as the classification demo's students read a transfer
set. Every student: Adam with one epoch of warm-up and cosine decay. For each seed every recipe starts the student
from the same initial weights (`kdistill.run.segmentation.train_student`). Recipes:
    alone         the student alone: per-pixel cross-entropy on the labelled scenes
    kd            pixel-wise KD: Hinton's KL at T = 4 on each pixel's class vector, alpha 0.5
    cwd           channel-wise distillation of the logit map (Shu et al., ICCV 2021), T = 1, weight 3, alpha 0.5
    cwd_features  cwd plus a CWD feature term on two pyramid levels (the students' stride-8 and stride-16 stages, projected)
Every run is appended to <work-dir>/runs.jsonl as it finishes and skipped on a rerun. The report (last-epoch test mIoU,
the paired difference against the student alone with its 95 % t-interval, the share of the teacher-student gap
recovered) goes to <out>/segmentation_scenes.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import study_log

from kdistill.run import environment
from kdistill.run.segmentation_commands import DEMO_RECIPE

RECIPES = ("alone", "kd", "cwd", "cwd_features")
_CWD = {"logits_loss": {"name": "cwd", "temperature": 1.0}, "logits_weight": 3.0, "alpha": 0.5}
OPTIONS = {  # FeatureDistiller options of each distilling recipe
    "kd": dict(DEMO_RECIPE),  # the segmentation demo's recipe
    "cwd": dict(_CWD, feature_loss=None, taps={}),
    "cwd_features": dict(_CWD, feature_loss={"name": "cwd", "temperature": 1.0}, taps="two_levels"),
}


def _setup(args):
    """The scenes and the teacher (trained once and saved in the work folder, or --teacher)."""
    from kdistill.models import saving
    from kdistill.run import segmentation, segmentation_data
    from kdistill.segmentation_metrics import evaluate_segmenter

    splits = segmentation_data.load(
        "scenes", args.data_dir, args.image_size, args.train_scenes, args.test_scenes, seed=0
    )
    path = args.teacher or os.path.join(args.work_dir, "teacher.keras")
    if os.path.exists(path):
        teacher = saving.load_model(path, role="teacher", classifier=False)
    else:
        started = time.perf_counter()
        teacher = segmentation.train_teacher(
            splits,
            path,
            epochs=args.teacher_epochs,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            verbose=0,
        )
        print(f"trained the teacher in {time.perf_counter() - started:.0f} s", flush=True)
    teacher_miou = evaluate_segmenter(teacher, splits.test_images, splits.test_masks, splits.class_names)["mean_iou"]
    return splits, teacher, teacher_miou


def _two_levels(teacher, student) -> dict:
    """The two deepest stage pairs of the preset pairing (stride 8 and 16 of the student)."""
    from kdistill.models import taps as taps_module

    pairs = list(taps_module.preset(teacher, student).items())
    return dict(pairs[-2:])


def _train(recipe: str, seed: int, args, splits, transfer, teacher) -> dict:
    """One run: the recipe's student from the seed's initial weights (`kdistill.run.segmentation.train_student`); its last-epoch test
    mIoU and time. The student alone reads the labelled scenes; the distilled students also read the unlabelled ones (`transfer`),
    for as many steps."""
    from kdistill.run import segmentation
    from kdistill.run.demo_settings import SegmentationDemoSettings
    from kdistill.segmentation_metrics import evaluate_segmenter

    options = None if recipe == "alone" else dict(OPTIONS[recipe])
    if options and options["taps"] == "two_levels":
        from kdistill.models import segmenters

        student = segmenters.get(
            "mobilenet_v2_segmenter", len(splits.class_names), tuple(splits.train_images.shape[1:]), width=args.width
        )
        options["taps"] = _two_levels(teacher, student)
    schedule = SegmentationDemoSettings(
        student_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate
    )
    started = time.perf_counter()
    student = segmentation.train_student(
        teacher, splits if recipe == "alone" else transfer, options, schedule, seed, width=args.width
    )
    seconds = time.perf_counter() - started
    report = evaluate_segmenter(student, splits.test_images, splits.test_masks, splits.class_names)
    return {
        "recipe": recipe,
        "seed": seed,
        "mean_iou": report["mean_iou"],
        "pixel_accuracy": report["pixel_accuracy"],
        "seconds": seconds,
    }


def report(runs: list[dict], teacher_miou: float, meta: dict) -> tuple[dict, list[str]]:
    """Per recipe: mean mIoU and, paired by seed against the student alone, the difference with its 95 % interval and the gap recovered."""
    from kdistill import statistics

    by = {}
    for run in runs:
        by.setdefault(run["recipe"], {})[run["seed"]] = run["mean_iou"]
    alone = by.get("alone", {})
    lines = [
        f"Segmentation on the synthetic scenes: teacher conv_segmenter {100 * teacher_miou:.2f} % mIoU, student {meta['student']}; "
        "last-epoch test mIoU; differences paired by seed against the student alone.",
        "",
        f"Command: `{meta['command']}`; {meta['environment']['cpu']}, {meta['environment']['cpu_cores']} cores.",
        "",
        "| recipe | seeds | mIoU (%) mean ± std | difference vs alone (points) [95 % CI] | gap recovered |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = []
    for recipe in [name for name in RECIPES if name in by]:
        seeds = by[recipe]
        mean, std = statistics.mean_std(list(seeds.values()))
        shared = sorted(set(seeds) & set(alone))
        row = {"recipe": recipe, "seeds": sorted(seeds), "miou_mean": mean, "miou_std": std}
        difference, gap = "-", "-"
        if recipe != "alone" and len(shared) >= 2:
            compared = statistics.paired_comparison(
                [alone[s] for s in shared], [seeds[s] for s in shared], teacher=teacher_miou
            )
            row["paired"] = compared
            difference = f"{100 * compared['difference_mean']:+.2f} [{100 * compared['difference_low']:+.2f}, {100 * compared['difference_high']:+.2f}]"
            gap = "-" if compared.get("gap_recovered") is None else f"{100 * compared['gap_recovered']:.0f} %"
        rows.append(row)
        lines.append(f"| {recipe} | {len(seeds)} | {100 * mean:.2f} ± {100 * std:.2f} | {difference} | {gap} |")
    return {"rows": rows, "teacher_miou": teacher_miou}, lines


def _picture(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4))
    rows = summary["rows"]
    axes.bar(
        [row["recipe"] for row in rows],
        [100 * row["miou_mean"] for row in rows],
        yerr=[100 * row["miou_std"] for row in rows],
        capsize=4,
    )
    axes.axhline(100 * summary["teacher_miou"], color="black", linestyle="--", label="teacher")
    axes.set_ylabel("test mIoU (%)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--teacher", default=None, help="a saved segmenter teacher (default: trained once into --work-dir)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--test-scenes", type=int, default=500)
    parser.add_argument(
        "--transfer-scenes", type=int, default=6000, help="unlabelled scenes the distilled students also read"
    )
    parser.add_argument(
        "--epochs", type=int, default=16, help="the student alone's epochs; the distilled students take as many steps"
    )
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--work-dir", default=os.path.join("saved_models", "segmentation_study"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from the finished runs, train nothing"
    )
    args = parser.parse_args(argv)
    recipes = [name.strip() for name in args.recipes.split(",") if name.strip()]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.makedirs(args.work_dir, exist_ok=True)
    log = os.path.join(args.work_dir, "runs.jsonl")
    splits, teacher, teacher_miou = _setup(args)
    from kdistill.run import segmentation_data

    transfer = segmentation_data.add_unlabelled_scenes(splits, args.transfer_scenes, args.data_dir, seed=100)
    done = {(run["recipe"], run["seed"]) for run in study_log.finished(log)}
    for seed in range(args.seeds):
        for recipe in [] if args.report_only else recipes:
            if (recipe, seed) in done:
                continue
            run = _train(recipe, seed, args, splits, transfer, teacher)
            study_log.append(log, run)  # one line per finished run: a stopped study resumes from here
            print(f"{recipe:<12} seed {seed}: mIoU {100 * run['mean_iou']:.2f} % ({run['seconds']:.0f} s)", flush=True)
    meta = {
        "seeds": args.seeds,
        "student": f"mobilenet_v2_segmenter {args.width}",
        "train_scenes": args.train_scenes,
        "transfer_scenes": args.transfer_scenes,
        "epochs": args.epochs,
        "environment": environment.describe(),
        "command": "python benchmarks/segmentation.py "
        + environment.portable_command(argv if argv is not None else sys.argv[1:]),
    }
    runs = study_log.finished(log)
    summary, lines = report(runs, teacher_miou, meta)
    study_log.write_report(os.path.join(args.out, "segmentation_scenes"), meta, runs, summary, lines, _picture)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
