"""Collects `kdistill demo` summaries of several seeds into docs/demo_seeds.json (the README's per-seed demo table).

Usage:
    python tools/demo_seeds.py --run SEED COMMIT RUN/summary.json [--run ...] [--output docs/demo_seeds.json]

COMMIT is the commit whose code made that run. Each summary gives one row: the seed, its settings (the schedule
among them), the teacher's, the student alone's and the distilled student's test top-1, the gain, and the stage
times. `tests/test_demo.py` checks the README's table against the file.
"""

import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def row(summary: dict, seed: int, commit: str) -> dict:
    """One seed's figures from a demo summary (test top-1 in %)."""
    top1 = {result["name"]: round(100 * result["top1"], 2) for result in summary["results"]}
    teacher = next(name for name in top1 if name.startswith("teacher"))
    return {
        "seed": seed,
        "commit": commit,
        "teacher_reused": summary["teacher_reused"],
        "settings": summary["settings"],
        "teacher": top1[teacher],
        "student_alone": top1["student alone"],
        "distilled": top1["distilled student"],
        "gain": round(100 * summary["distillation_gain_top1"], 2),
        "seconds": summary["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        nargs=3,
        action="append",
        required=True,
        metavar=("SEED", "COMMIT", "SUMMARY"),
        help="a run's --seed, the commit of its code, and the summary.json `kdistill demo` wrote",
    )
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "demo_seeds.json"))
    args = parser.parse_args()
    rows = []
    for seed, commit, path in args.run:
        with open(path) as handle:
            rows.append(row(json.load(handle), int(seed), commit))
    rows.sort(
        key=lambda entry: (entry["settings"]["teacher_epochs"], entry["settings"]["student_epochs"], entry["seed"])
    )
    with open(args.output, "w") as handle:
        json.dump({"runs": rows}, handle, indent=1)
        handle.write("\n")


if __name__ == "__main__":
    main()
