"""The README's feature-method tables are the committed study JSON (benchmarks/results/features_*fashion_mnist.json)."""

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

#: JSON file -> README row label -> the method's key in the JSON
TABLES = {
    "features_fashion_mnist.json": {
        "KD alone (`kd_transfer`)": "kd_transfer",
        "FitNets": "fitnets_transfer",
        "feature KL at T": "feature_kl_transfer",
        "channel-wise distillation (CWD)": "cwd_transfer",
        "attention transfer (AT)": "at_transfer",
    },
    "features_more_fashion_mnist.json": {
        "KD alone, seeds 0–2": "kd_transfer",
        "MSE on projected features": "mse_kd_transfer",
        "0.9 feature KL + 0.1 CE": "feature_kl_ce_transfer",
        "DKD": "dkd_transfer",
        "DIST": "dist_transfer",
        "IRG": "irg_transfer",
        "MEAL V2": "meal_v2_transfer",
        "ReviewKD": "reviewkd_transfer",
        "CRD": "crd_transfer",
        "two teachers": "two_teachers_transfer",
    },
}


def _record(name: str) -> dict:
    with open(os.path.join(RESULTS, name)) as handle:
        return json.load(handle)


def _section() -> str:
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("## How should ResNet features be distilled?")
    return readme[start : readme.index("\n## ", start + 1)]


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}"


def _expected_cells(record: dict, method: str) -> list[str]:
    compared = record["comparisons"][method]
    cells = [
        f"{100 * compared['method_mean']:.2f} ± {100 * compared['method_std']:.2f}",
        _signed(compared["difference_mean"]).replace("-", "−"),
    ]
    if method == "kd_transfer":  # the baseline of the last two columns
        return cells + ["-", "-"]
    versus = record["comparisons_vs_kd"][method]
    gain = f"{_signed(versus['difference_mean'])} [{_signed(versus['difference_low'])}, {_signed(versus['difference_high'])}]"
    return cells + [gain.replace("-", "−"), f"{versus['wins']}/{versus['seeds']}"]


def test_readme_feature_tables_are_the_committed_study():
    section = _section()
    for name, rows in TABLES.items():
        record = _record(name)
        assert (
            f"benchmarks/results/{name.removesuffix('.json')}.md" in section
            and f"{name.removesuffix('.json')}_vs_kd.png" in section
        )
        for label, method in rows.items():
            row = next(line for line in section.splitlines() if line.startswith(f"| {label}"))
            cells = [re.sub(r"\*\*", "", cell).strip() for cell in row.strip("|").split("|")[1:]]
            assert cells == _expected_cells(record, method), (name, label, cells)
        seeds = {len(record["results"][method]["top1"]) for method in rows.values()}
        assert seeds == {record["meta"]["seeds"]}, (name, seeds)


def test_readme_prose_figures_are_the_study_s():
    """The student-alone line, the interval that excludes zero, the KD gain and the best share of the gap."""
    section = _section()
    record = _record("features_fashion_mnist.json")
    some = next(iter(record["comparisons"].values()))
    assert f"student alone: {100 * some['alone_mean']:.2f} ± {100 * some['alone_std']:.2f}" in section
    excluding = [m for m, c in record["comparisons_vs_kd"].items() if c["difference_low"] > 0]
    assert (
        excluding == ["cwd_transfer"]
        and f"(p = {record['comparisons_vs_kd']['cwd_transfer']['p_value']:.1g})" in section
    )
    assert (
        f"+{100 * record['comparisons']['kd_transfer']['difference_mean']:.1f}\npoints over the student alone"
        in section
    )
    best = max(record["comparisons"].values(), key=lambda c: c["gap_recovered"])
    assert f"recovers {100 * best['gap_recovered']:.0f} % of the teacher–student gap" in section
    assert f"{record['meta']['wall_seconds'] / 60:.0f} min" in section


def test_readme_figures_of_the_other_methods_are_the_study_s():
    """The two teachers' joint top-1 and the time the screened methods' runs took."""
    section = _section()
    record = _record("features_more_fashion_mnist.json")
    assert f"({100 * record['ensemble_top1']:.2f} % together)" in section
    screened = [m for m in record["results"] if m not in ("alone", "kd_transfer")]
    assert f"which took {sum(sum(record['results'][m]['seconds']) for m in screened) / 60:.0f} min" in section
