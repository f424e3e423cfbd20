"""How much do the demo's figures move between runs of one commit? Compares the run folders of repeated `kdistill demo` runs.

Usage:
    python tools/demo_repeat.py COMMIT RUN_FOLDER RUN_FOLDER [...] [--output benchmarks/results/demo_repeat]

Each RUN_FOLDER is a `kdistill demo --output-dir` folder of the same commit and seed.
For every model it gives each run's test top-1 and top-5, the spread (largest minus
smallest), and whether the saved weights are the same bytes in every run
(`model.weights.h5` inside each `.keras` file; the archives themselves differ by
their timestamps). Writes OUTPUT.json and OUTPUT.md; the JSON records where the runs
ran (`environment`, from the first summary) and their stage times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import zipfile

MODELS = {"teacher.keras": "teacher", "student_alone.keras": "student alone", "student_distilled.keras": "distilled"}


def weights_digest(path: str) -> str | None:
    """SHA-256 of the weights inside a `.keras` file, or None when the file is missing."""
    if not os.path.exists(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return hashlib.sha256(archive.read("model.weights.h5")).hexdigest()


def compare(folders: list[str], commit: str) -> dict:
    """Each model's figures across the runs, their spread, and whether the weights match."""
    summaries = []
    for folder in folders:
        with open(os.path.join(folder, "summary.json")) as handle:
            summaries.append(json.load(handle))
    models = {}
    for index, result in enumerate(summaries[0]["results"]):
        top1 = [round(100 * summary["results"][index]["top1"], 2) for summary in summaries]
        top5 = [round(100 * summary["results"][index]["top5"], 2) for summary in summaries]
        models[result["name"]] = {"top1": top1, "top5": top5, "top1_spread": round(max(top1) - min(top1), 2)}
    same_weights = {}
    for file, name in MODELS.items():
        digests = [weights_digest(os.path.join(folder, file)) for folder in folders]
        same_weights[name] = None if None in digests else len(set(digests)) == 1
    return {
        "commit": commit,
        "runs": len(folders),
        "settings": summaries[0]["settings"],
        "models": models,
        "same_weights": same_weights,
        "seconds": [summary["seconds"]["total"] for summary in summaries],
        "environment": summaries[0].get("environment"),
    }


def table(report: dict) -> str:
    """The report as a Markdown table."""
    runs = report["runs"]
    lines = [
        f"`kdistill demo --data-dir data` run {runs} times at commit {report['commit']}, each in a fresh folder (test top-1, %)",
        "",
        "| model | " + " | ".join(f"run {i + 1}" for i in range(runs)) + " | spread (points) |",
        "|---|" + "---:|" * (runs + 1),
    ]
    for name, row in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row["top1"]) + f" | {row['top1_spread']:.2f} |")
    same = ", ".join(
        f"{name}: {'yes' if same else 'no' if same is False else '-'}" for name, same in report["same_weights"].items()
    )
    lines += [
        "",
        f"Same weights in every run: {same}. Wall times: {', '.join(f'{s:.0f} s' for s in report['seconds'])}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the commit whose code made the runs")
    parser.add_argument("folders", nargs="+", help="the runs' --output-dir folders")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results", "demo_repeat"))
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give at least two run folders to compare")
    report = compare(args.folders, args.commit)
    with open(args.output + ".json", "w") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")
    with open(args.output + ".md", "w") as handle:
        handle.write(table(report))


if __name__ == "__main__":
    main()
