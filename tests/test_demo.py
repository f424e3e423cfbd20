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


def seeds() -> list[dict]:
    """The demo's runs on several seeds (docs/demo_seeds.json, written by tools/demo_seeds.py)."""
    with open(os.path.join(ROOT, "docs", "demo_seeds.json")) as handle:
        return json.load(handle)["runs"]


def _schedule(run: dict) -> tuple[int, int]:
    return run["settings"]["teacher_epochs"], run["settings"]["student_epochs"]


def seeds_table(runs: list[dict]) -> str:
    """The README's per-seed table: the default schedule's runs, and the gains of the other schedules run beside them."""
    from kdistill.run.demo_settings import DEMO_QUICK

    current = DEMO_QUICK.teacher_epochs, DEMO_QUICK.student_epochs
    others = sorted({_schedule(run) for run in runs} - {current}, reverse=True)
    gains = {(_schedule(run), run["seed"]): f"{run['gain']:+.2f}" for run in runs}
    lines = [
        "| seed | teacher | student alone | distilled student | gain (points) | "
        + " | ".join(f"gain, teacher {teacher} / students {students} epochs" for teacher, students in others)
        + " |",
        "|---:|---:|---:|---:|---:|" + "---:|" * len(others),
    ]
    for run in sorted((run for run in runs if _schedule(run) == current), key=lambda run: run["seed"]):
        earlier = " | ".join(gains.get((schedule, run["seed"]), "-") for schedule in others)
        lines.append(
            f"| {run['seed']} | {run['teacher']:.2f} | {run['student_alone']:.2f} | {run['distilled']:.2f} | {run['gain']:+.2f} | {earlier} |"
        )
    return "\n".join(lines)


def _readme_table(marker: str) -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(rf"<!-- {marker} -->\n((?:\|.*\n)+)", text)
    assert match, f"README.md has no table after <!-- {marker} -->"
    return match.group(1).rstrip("\n")


def table_block(run: dict) -> str:
    """What `kdistill demo` prints: the table and the gain line."""
    gain, total = 100 * run["distillation_gain_top1"], run["seconds"]["total"]
    return run["table"] + f"\n\ndistillation gain (top-1): {gain:+.2f} points (one seed); wall time {total:.0f} s"


def latency_block(run: dict) -> str:
    width = max(len(row["model"]) for row in run["latency"])
    return "\n".join(
        f"  {row['model']:<{width}} {row['runtime']:<15} top-1 {100 * row['top1']:6.2f}%  {row['latency_ms']:8.3f} ms"
        for row in run["latency"]
    )


def test_readme_demo_table_latency_and_parity_are_the_committed_summary():
    run = summary()
    assert _readme_block("demo-table") == table_block(run)
    assert _readme_block("demo-latency") == latency_block(run)
    assert _readme_block("demo-parity") == run["export_table"]
    assert run["teacher_reused"] is False  # the wall time includes training the teacher
    from kdistill.run.demo_settings import DEMO_QUICK

    assert run["settings"] == DEMO_QUICK.to_dict(), (
        "the demo's defaults changed: rerun `kdistill demo` and commit its summary and figures"
    )
    readme = open(os.path.join(ROOT, "README.md")).read()
    for figure in ("demo_comparison.png", "demo_curves.png", "demo_accuracy_latency.png"):
        assert open(os.path.join(ROOT, "docs", figure), "rb").read(4) == b"\x89PNG" and f"](docs/{figure})" in readme


def test_readme_per_seed_demo_table_is_the_committed_runs():
    """Every default-schedule run in docs/demo_seeds.json used the demo's student settings, and the README shows them all."""
    from kdistill.run.demo_settings import DEMO_QUICK

    runs, run = seeds(), summary()
    switches = {"export", "latency_plot", "qat_epochs"}  # stages after the students: they change no student result
    current = [entry for entry in runs if _schedule(entry) == (DEMO_QUICK.teacher_epochs, DEMO_QUICK.student_epochs)]
    assert sorted(entry["seed"] for entry in current) == [0, 1, 2]
    for entry in current:
        assert {k: v for k, v in entry["settings"].items() if k not in switches} == {
            k: v for k, v in DEMO_QUICK.to_dict().items() if k not in switches
        }
    seed0 = next(entry for entry in current if entry["seed"] == 0)
    assert seed0["distilled"] == round(100 * run["results"][2]["top1"], 2) and seed0["seconds"] == run["seconds"]
    assert _readme_table("demo-seeds") == seeds_table(runs)


def test_demo_seeds_file_is_what_the_tool_writes_from_the_committed_summary(tmp_path):
    """tools/demo_seeds.py turns docs/demo_summary.json into the seed-0 row that docs/demo_seeds.json holds."""
    import subprocess
    import sys

    entry = next(run for run in seeds() if run["seed"] == 0 and run["seconds"] == summary()["seconds"])
    output = tmp_path / "seeds.json"
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "demo_seeds.py"),
            "--run",
            "0",
            entry["commit"],
            os.path.join(ROOT, "docs", "demo_summary.json"),
            "--output",
            str(output),
        ],
        check=True,
    )
    assert json.loads(output.read_text())["runs"] == [entry]


if __name__ == "__main__":
    print(f"<!-- demo-seeds -->\n{seeds_table(seeds())}\n")
    run = summary()
    for marker, block in (
        ("demo-table", table_block(run)),
        ("demo-latency", latency_block(run)),
        ("demo-parity", run["export_table"]),
    ):
        print(f"<!-- {marker} -->\n```\n{block}\n```\n")


def test_demo_repeat_tool_reports_each_models_spread_and_whether_the_weights_match(tmp_path):
    """tools/demo_repeat.py: per-model top-1 of every run, the spread, and same weights only when the bytes match."""
    import subprocess
    import sys
    import zipfile

    base = summary()
    for run, (shift, weights) in {"a": (0.0, b"w0"), "b": (0.0012, b"w0"), "c": (0.0, b"w1")}.items():
        folder = tmp_path / run
        folder.mkdir()
        record = json.loads(json.dumps(base))
        record["results"][2]["top1"] += shift
        (folder / "summary.json").write_text(json.dumps(record))
        for file in ("teacher.keras", "student_alone.keras", "student_distilled.keras"):
            with zipfile.ZipFile(folder / file, "w") as archive:
                archive.writestr("model.weights.h5", weights if file == "student_distilled.keras" else b"same")
    output = tmp_path / "repeat"
    tool = os.path.join(ROOT, "tools", "demo_repeat.py")
    subprocess.run(
        [sys.executable, tool, "abc1234", *(str(tmp_path / r) for r in "ab"), "--output", str(output)], check=True
    )
    report = json.loads(output.with_suffix(".json").read_text())
    distilled = report["models"]["distilled student"]
    assert distilled["top1_spread"] == 0.12 and distilled["top1"][0] == round(100 * base["results"][2]["top1"], 2)
    assert report["models"]["teacher (resnet20)"]["top1_spread"] == 0 and report["commit"] == "abc1234"
    assert report["same_weights"] == {"teacher": True, "student alone": True, "distilled": True}
    assert (
        report["environment"] == base["environment"]
        and "| distilled student |" in output.with_suffix(".md").read_text()
    )
    subprocess.run(
        [sys.executable, tool, "abc1234", *(str(tmp_path / r) for r in "ac"), "--output", str(output)], check=True
    )
    assert json.loads(output.with_suffix(".json").read_text())["same_weights"]["distilled"] is False
