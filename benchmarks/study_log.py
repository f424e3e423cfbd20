"""The run log and report files of a resumable study (`patient.py`, `segmentation.py`).

Each finished run is one JSON line in `<work-dir>/runs.jsonl`, so a stopped
study resumes where it stopped; the report is written as `<stem>.json`,
`<stem>.md` and `<stem>.png`.
"""

from __future__ import annotations

import json
import os


def finished(path: str) -> list[dict]:
    """The runs the log at `path` holds (none when it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def append(path: str, run: dict) -> None:
    """Adds one finished run to the log."""
    with open(path, "a") as handle:
        handle.write(json.dumps(run) + "\n")


def write_report(stem: str, meta: dict, runs: list[dict], summary: dict, lines: list[str], picture) -> None:
    """`<stem>.json` (meta, runs and summary), `<stem>.md` (the table lines) and `<stem>.png` (`picture(summary, path)`)."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    with open(stem + ".json", "w") as handle:
        json.dump({"meta": meta, "runs": runs, **summary}, handle, indent=2)
    with open(stem + ".md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    picture(summary, stem + ".png")
