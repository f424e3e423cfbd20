"""The README's demo figures are the committed demo run's figures (docs/demo_summary.json).

`python tests/test_demo.py` prints the README's demo blocks from the committed summaries.
"""

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_block(marker: str) -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(rf"<!-- {marker} -->\s*```\n(.*?)```", text, re.S)
    assert match, f"README.md has no ``` block after <!-- {marker} -->"
    return match.group(1).rstrip("\n")


def summary() -> dict:
    with open(os.path.join(ROOT, "docs", "demo_summary.json")) as handle:
        return json.load(handle)


def table_block(run: dict) -> str:
    """What `kdistill demo` prints: the table and the gain line."""
    gain, total = 100 * run["distillation_gain_top1"], run["seconds"]["total"]
    return run["table"] + f"\n\ndistillation gain (top-1): {gain:+.2f} points (one seed); wall time {total:.0f} s"


def latency_block(run: dict) -> str:
    width = max(len(row["model"]) for row in run["latency"])
    return "\n".join(f"  {row['model']:<{width}} {row['runtime']:<15} top-1 {100 * row['top1']:6.2f}%  {row['latency_ms']:8.3f} ms"
                     for row in run["latency"])


def test_readme_demo_table_latency_and_parity_are_the_committed_summary():
    run = summary()
    assert _readme_block("demo-table") == table_block(run)
    assert _readme_block("demo-latency") == latency_block(run)
    assert _readme_block("demo-parity") == run["export_table"]
    assert run["teacher_reused"] is False  # the wall time includes training the teacher
    from kdistill.run import demo

    assert run["settings"] == demo.DEMO_QUICK, "the demo's defaults changed: rerun `kdistill demo` and commit its summary and figures"
    readme = open(os.path.join(ROOT, "README.md")).read()
    for figure in ("demo_comparison.png", "demo_curves.png", "demo_accuracy_latency.png"):
        assert open(os.path.join(ROOT, "docs", figure), "rb").read(4) == b"\x89PNG" and f"](docs/{figure})" in readme


if __name__ == "__main__":
    run = summary()
    for marker, block in (("demo-table", table_block(run)), ("demo-latency", latency_block(run)), ("demo-parity", run["export_table"])):
        print(f"<!-- {marker} -->\n```\n{block}\n```\n")
