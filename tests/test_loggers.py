"""Loggers besides metrics.jsonl: a run with ``loggers=[csv]`` writes the same metrics to metrics.csv;
unknown or unavailable loggers are refused before any work starts."""
from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from selfsup.cli import main
from selfsup.config import load
from selfsup.errors import ConfigError

TINY = ["--data", "digits", "--backbone", "resnet_tiny", "backbone.width=4", "--batch-size", "128", "--epochs", "1",
        "--precision", "32-true", "progress_bar=false", "augment.size=16", "data.val_fraction=0.2",
        "monitor.test_at_end=true", "optimizer.warmup_epochs=0", "log_every_n_steps=2"]


def test_csv_and_tensorboard_loggers_receive_what_metrics_jsonl_receives(tmp_path):
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    loggers = "loggers=[csv,tensorboard]" if tensorboard else "loggers=[csv]"
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", *TINY, loggers]) == 0
    run = tmp_path / "run"
    logged = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key not in ("step", "time", "epoch"):
                logged.setdefault(key, {})[record["step"]] = value
    with (run / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    in_csv = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("step", "epoch") and value != "":
                in_csv.setdefault(key, {})[int(row["step"])] = float(value)
    assert {"train/loss", "knn/top1", "test/knn_top1"} <= in_csv.keys()
    assert in_csv.keys() == logged.keys()
    for key in logged:
        assert in_csv[key] == pytest.approx(logged[key]), key
    assert (run / "csv" / "hparams.yaml").is_file()  # the resolved config
    if not tensorboard:
        pytest.skip("the TensorBoard half needs the tensorboard package (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    in_events = {key: {event.step: event.value for event in events.Scalars(key)} for key in events.Tags()["scalars"]}
    in_events = {key: series for key, series in in_events.items() if key != "epoch"}
    assert in_events.keys() == logged.keys()
    for key in logged:
        assert in_events[key] == pytest.approx(logged[key], rel=1e-6), key


@pytest.mark.parametrize("loggers, message", [
    ("[jsonl]", "metrics.jsonl is always written"),
    ("[csv,csv]", "repeats a logger"),
    ("[tensorbord]", "expected some of: csv, tensorboard, wandb, mlflow"),
])
def test_bad_logger_lists_are_refused_before_training(loggers, message):
    with pytest.raises(ConfigError, match=message):
        load(overrides=[f"loggers={loggers}"])


def test_a_logger_whose_package_is_missing_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install wandb"):
        load(overrides=["loggers=[wandb]"])
