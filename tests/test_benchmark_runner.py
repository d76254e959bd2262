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


def test_a_failed_training_reports_its_last_line_and_extra_overrides_win(tmp_path, monkeypatch):
    monkeypatch.setattr(protocols.Protocol, "overrides", lambda self, method: ["epochs=2"])
    with pytest.raises(runner.TrainingFailed, match=r"exited with status \d+: .*'epochs' must be int"):
        runner.train_method("simclr", CPU, tmp_path, reuse=False, seed=0, extra=("epochs=zero",), suffix="-x")


def test_a_variant_row_trains_its_method_with_its_options(tmp_path, monkeypatch):
    """`dinov2+gram` trains DINOv2's recipe under the protocol with Gram anchoring switched on."""
    started = []

    class Finished:  # stands for the training process: records its command, exits at once
        def __init__(self, command, **kwargs):
            started.append(command)
            self.stderr, self.returncode = [], 0

        def wait(self):
            return 0

    monkeypatch.setattr(runner.subprocess, "Popen", Finished)
    run_dir = runner.train_method("dinov2+gram", CPU, tmp_path, reuse=False, seed=0)
    command = " ".join(started[0])
    assert run_dir == tmp_path / "cpu-dinov2+gram"
    assert f"--config {CPU.recipe('dinov2')} --name cpu-dinov2+gram" in command
    assert command.index(" ".join(CPU.overrides("dinov2"))) < command.index("method.gram_weight=2")
    assert runner.base_method("dinov2+gram") == "dinov2" and runner.base_method("simclr") == "simclr"


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
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{runner.table_marker('fashion_mnist', 'cpu')}\n| old |\n{runner.TABLE_END}\nrest\n")
    monkeypatch.setattr(runner, "README", readme)
    rows = {"vicreg": {"method": "vicreg", "knn_top1": 84.4}, "raw pixels": {"method": "raw pixels", "knn_top1": 81.8},
            "byol": {"method": "byol", "error": "selfsup train exited with status 1: LinAlgError"},
            "random init": {"method": "random init", "knn_top1": 76.2}}
    ordered = runner.write_table(rows, CPU, ["python benchmarks/run.py"], "header", tmp_path / "t.json")
    assert [r["method"] for r in ordered] == ["raw pixels", "random init", "byol", "vicreg"]
    text = (tmp_path / "t.md").read_text().splitlines()
    assert text[0] == "header" and "| byol |  | failed: selfsup train exited with status 1: LinAlgError |" in text[6]
    assert json.loads((tmp_path / "t.json").read_text())["commands"] == ["python benchmarks/run.py"]
    table_lines = [line for line in text if line.startswith("|")]
    assert readme.read_text() == ("intro\n<!-- fashion_mnist-cpu table -->\n" + "\n".join(table_lines)
                                  + "\n<!-- end of table -->\nrest\n")


def test_readme_table_without_its_end_marker_is_refused():
    with pytest.raises(ValueError, match="has no '<!-- end of table -->'"):
        runner.readme_with_table("<!-- x-cpu table -->\n| a |\n", "<!-- x-cpu table -->", "| b |")
    assert runner.readme_with_table("no marker", "<!-- x-cpu table -->", "| b |") == "no marker"


def test_readme_shows_the_measured_cpu_table():
    """The README's CPU table is the one benchmarks/run.py wrote, row for row."""
    readme = runner.README.read_text()
    marker = runner.table_marker("fashion_mnist", "cpu")
    table = (runner.RESULTS / "fashion_mnist-cpu.md").read_text()
    assert marker in readme
    assert runner.readme_with_table(readme, marker, table) == readme


def test_peak_memory_cell_shows_only_readings_of_the_training_process():
    peak = {"cpu_rss_mb": 1234.5}
    assert runner.peak_cell({"peak_memory_mb": peak, "peak_memory_from": runner.OWN_RUN}) == "1234.5"
    assert runner.peak_cell({"peak_memory_mb": peak, "peak_memory_from": runner.ONE_EPOCH_RUN}) == "1234.5*"
    assert runner.peak_cell({"peak_memory_mb": peak}) is None  # an old ru_maxrss reading (the runner's peak)
    assert runner.peak_cell({"peak_memory_mb": {"cuda_allocated_mb": 99.0}, "peak_memory_from": runner.OWN_RUN}) == "99.0"


def test_the_memory_pass_fills_old_rows_and_keeps_own_run_readings_beside_its_own():
    import peak_memory
    old = {"method": "byol", "knn_top1": 83.2, "peak_memory_mb": {"cpu_rss_mb": 1800.0}}
    own = {"method": "ibot", "knn_top1": 70.0, "peak_memory_mb": {"cpu_rss_mb": 900.0},
           "peak_memory_from": runner.OWN_RUN}
    assert peak_memory.needs_reading(old) and not peak_memory.needs_reading(own)
    assert not peak_memory.needs_reading({"method": "raw pixels", "knn_top1": 81.8})
    assert not peak_memory.needs_reading({"method": "npid", "error": "failed"})
    reading = {"cpu_rss_mb": 1100.0}
    filled = peak_memory.record(old, reading, "2026-12-01")
    assert filled["peak_memory_mb"] == reading and filled["peak_memory_from"] == runner.ONE_EPOCH_RUN
    kept = peak_memory.record(own, reading, "2026-12-01")
    assert kept["peak_memory_mb"] == {"cpu_rss_mb": 900.0} and kept["peak_memory_1epoch_mb"] == reading


def test_hardware_cell_names_the_vector_units_and_precision():
    row = {"method": "simclr", "knn_top1": 80.0, "precision": "32-true",
           "machine": "CPU only: AMD EPYC (family 25 model 1, AVX2), 2 cores usable"}
    assert runner.hardware_cell(row) == "AVX2, fp32"
    assert runner.hardware_cell({"method": "simclr", "knn_top1": 80.0}) == "?, ?"  # not recorded
    assert runner.hardware_cell({"method": "raw pixels", "knn_top1": 81.8}) is None
