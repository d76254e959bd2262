"""The benchmark runner's bookkeeping: failures become rows that say why, unchanged runs are not
rescored, and the table keeps the reference rows first."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import protocols  # noqa: E402
import run as runner  # noqa: E402

CPU = protocols.get("cpu", None, None)


def test_a_failed_training_reports_its_last_line(tmp_path, monkeypatch):
    monkeypatch.setattr(protocols.Protocol, "overrides", lambda self, method: ["epochs=zero"])
    with pytest.raises(runner.TrainingFailed, match=r"exited with status \d+: .*'epochs' must be int"):
        runner.train_method("simclr", CPU, tmp_path, reuse=False, seed=0)


def test_an_unchanged_run_keeps_its_row_and_a_changed_one_is_rescored(tmp_path):
    run_dir = tmp_path / "cpu-simclr"
    run_dir.mkdir()
    (run_dir / "backbone.safetensors").write_bytes(b"weights")
    previous = {"method": "simclr", "knn_top1": 80.0, "backbone_sha256": runner.file_sha256(run_dir / "backbone.safetensors")}
    assert runner.method_row("simclr", run_dir, CPU, None, "cpu", 0, previous) is previous
    (run_dir / "backbone.safetensors").write_bytes(b"other weights")
    with pytest.raises(FileNotFoundError):  # rescoring reads the run's summary, which this fake run lacks
        runner.method_row("simclr", run_dir, CPU, None, "cpu", 0, previous)


def test_table_lists_references_first_and_failures_with_their_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    rows = {"vicreg": {"method": "vicreg", "knn_top1": 84.4}, "raw pixels": {"method": "raw pixels", "knn_top1": 81.8},
            "byol": {"method": "byol", "error": "selfsup train exited with status 1: LinAlgError"},
            "random init": {"method": "random init", "knn_top1": 76.2}}
    ordered = runner.write_table(rows, CPU, ["python benchmarks/run.py"], "header", tmp_path / "t.json")
    assert [r["method"] for r in ordered] == ["raw pixels", "random init", "byol", "vicreg"]
    text = (tmp_path / "t.md").read_text().splitlines()
    assert text[0] == "header" and "| byol |  | failed: selfsup train exited with status 1: LinAlgError |" in text[6]
    assert json.loads((tmp_path / "t.json").read_text())["commands"] == ["python benchmarks/run.py"]
