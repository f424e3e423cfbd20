"""A distillation's run object: what resuming a run folder keeps and what it discards."""

import json

import pytest

from kdistill.run.config import DistillConfig
from kdistill.run.distill_run import DistillRun


def _folder(tmp_path, backup: bool):
    """A run folder with a finished run's history.csv, and with `backup` an interrupted run's backup."""
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.5\n")
    if backup:
        (tmp_path / "backup").mkdir()
        (tmp_path / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 0}))
    return tmp_path


@pytest.mark.parametrize("backup, restart, resumes", [(False, False, False), (True, False, True), (True, True, False)])
def test_a_run_resumes_only_from_a_backup_it_keeps_and_otherwise_starts_its_history_afresh(
    tmp_path, backup, restart, resumes
):
    """No distiller is needed to decide: the run object carries the folder and the restart flag."""
    folder = _folder(tmp_path, backup)
    run = DistillRun(
        DistillConfig(), splits=None, strategy=None, output_dir=str(folder), distiller=None, restart=restart
    )
    assert run.backup().resuming is resumes
    # a fresh start over a finished run must not append to its epochs
    assert (folder / "history.csv").exists() is resumes
    assert (folder / "backup").exists() is (backup and not restart)
    assert run.path("summary.json") == str(folder / "summary.json")
