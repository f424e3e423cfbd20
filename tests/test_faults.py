"""Smoke run of benchmarks/faults.py (the replay of user faults through the real `kdistill` CLI) on two cases that need no model."""

import importlib
import json
import os

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def test_faults_replays_broken_configs_as_cli_processes_and_reports_each_verdict(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    faults = importlib.import_module("faults")
    assert (
        faults.main(
            ["--cases", "yaml_list,json_syntax", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
        )
        == 0
    )
    records = {
        record["name"]: record for record in json.loads((tmp_path / "out" / "faults_cli.json").read_text())["cases"]
    }
    assert set(records) == {"yaml_list", "json_syntax"}
    for record in records.values():
        assert (
            record["verdict"] == "ok" and record["rc"] == 2 and record["message_lines"] == 1 and not record["traceback"]
        ), record
    assert "holds a list" in records["yaml_list"]["last_line"] and "'run.json'" in records["json_syntax"]["last_line"]
    table = (tmp_path / "out" / "faults.md").read_text()
    assert (
        table.startswith("Produced by `python benchmarks/faults.py --cases yaml_list,json_syntax")
        and "2 cases: 2 ok, 0 not ok" in table
    )
