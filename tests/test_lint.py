"""The code passes the linter configured in pyproject.toml (ruff: pycodestyle, pyflakes, no stale noqa markers)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing_in_the_package_tests_benchmarks_examples_and_tools():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "kdistill", "tests", "benchmarks", "examples", "tools"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
