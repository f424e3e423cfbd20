"""The README's feature-method table is the committed screening's JSON (benchmarks/results/features_screen_fashion_mnist.json)."""

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "features_screen_fashion_mnist.json")

#: README row label -> the method's key in the JSON
ROWS = {"KD alone (`kd_transfer`)": "kd_transfer", "FitNets": "fitnets_transfer", "feature KL at T": "feature_kl_transfer",
        "channel-wise distillation (CWD)": "cwd_transfer", "attention transfer (AT)": "at_transfer"}


def _expected_cells(record: dict, method: str) -> list[str]:
    top1 = record["results"][method]["top1"]
    mean = 100 * sum(top1) / len(top1)
    std = record["comparisons"][method]["method_std"] * 100
    cells = [f"{mean:.2f} ± {std:.2f}", f"{100 * record['comparisons'][method]['difference_mean']:+.2f}"]
    if method == "kd_transfer":  # the baseline of the last two columns
        return cells + ["-", "-"]
    versus = record["comparisons_vs_kd"][method]
    interval = "[{:+.2f}, {:+.2f}]".format(100 * versus["difference_low"], 100 * versus["difference_high"]).replace("-", "−")
    return cells + [f"{100 * versus['difference_mean']:+.2f} {interval}", f"{versus['wins']}/{versus['seeds']}"]


def test_readme_feature_table_is_the_committed_screening():
    with open(RESULTS) as handle:
        record = json.load(handle)
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("## How should ResNet features be distilled?"):]
    for label, method in ROWS.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {label}"))
        cells = [re.sub(r"\*\*", "", cell).strip() for cell in row.strip("|").split("|")[1:]]
        assert cells == _expected_cells(record, method), (label, cells)
    assert "![Paired gain of each feature method over KD alone](benchmarks/results/features_screen_fashion_mnist_vs_kd.png)" in section
