"""The code passes the linter and the formatter configured in pyproject.toml (ruff: pycodestyle, pyflakes, no stale noqa
markers; `ruff format` at 120 columns)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ["kdistill", "tests", "benchmarks", "examples", "tools"]


def _ruff(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, *FOLDERS], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_ruff_finds_nothing_in_the_package_tests_benchmarks_examples_and_tools():
    result = _ruff("check")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_every_file_is_as_ruff_format_writes_it():
    result = _ruff("format", "--check")
    assert result.returncode == 0, (
        "run `ruff format " + " ".join(FOLDERS) + "`:\n" + result.stdout[-4000:] + result.stderr[-2000:]
    )
