"""What a training run measures about itself: throughput, peak memory, and the test split once at the end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup import data
from selfsup.augment import EvalTransform
from selfsup.checkpoints import load_backbone
from selfsup.cli import main
from selfsup.config import packaged_recipes
from selfsup.config.load import read_yaml
from selfsup.eval import knn_eval

TINY = ["--data", "digits", "--backbone", "resnet_tiny", "--batch-size", "64", "--precision", "32-true",
        "backbone.width=4", "augment.size=16", "progress_bar=false", "method.proj_output_dim=16"]


def test_validation_run_measures_the_test_split_once_at_the_end(tmp_path):
    # trained in bf16: the test measurement is still fp32, the figure `selfsup eval knn` gives
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", *TINY,
                 "--precision", "bf16-mixed", "data.val_fraction=0.2", "monitor.test_at_end=true",
                 "monitor.knn_every=1"]) == 0
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    # the monitor's held-out split is the validation part: 20% of the 1,347 training digits
    assert "knn/top1" in summary["metrics"] and "test/knn_top1" in summary["metrics"]
    assert [i for i, line in enumerate(lines) if "test/knn_top1" in line] == [len(lines) - 1]  # once, last
    assert lines[-1]["step"] == max(line["step"] for line in lines[:-1])  # at the last training step, not after it
    # the test score is the k-NN of the exported backbone with the whole training split as memory
    backbone, info = load_backbone(run)
    expected = knn_eval(backbone, data.get("digits", split="train"), data.get("digits", split="test"),
                        EvalTransform(16, info["mean"], info["std"]))
    assert summary["metrics"]["test/knn_top1"] == pytest.approx(expected["top1"], abs=1e-6)
    # throughput and memory are recorded
    assert summary["train_images_per_s"] > 0
    assert summary["train_views_per_s"] == pytest.approx(2 * summary["train_images_per_s"], rel=0.01)
    assert summary["peak_memory_mb"]["cpu_rss_mb"] > 50
    assert any("train/images_per_s" in line for line in lines)


def test_without_a_validation_split_the_test_split_is_not_scored_twice(tmp_path):
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", *TINY,
                 "monitor.test_at_end=true"]) == 0
    metrics = json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]
    assert "knn/top1" in metrics and "test/knn_top1" not in metrics  # the monitor already used the test split


def test_cpu_recipes_hold_out_validation_and_score_test_at_the_end():
    recipes = [name for name in packaged_recipes() if name.startswith("fashion_mnist_cpu/")]
    assert len(recipes) >= 20
    for recipe in recipes:  # read, not built: distillation's teacher is a run folder the user names
        config = read_yaml(recipe)
        assert config["method"]["name"] == recipe.split("/")[1], recipe
        assert config["data"]["val_fraction"] > 0 and config["monitor"]["test_at_end"], recipe
        assert (config["monitor"]["knn_k"], config["monitor"]["knn_temperature"]) == (200, 0.1), recipe


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_of_a_subprocess_is_its_own_not_its_parents():
    # the benchmark runner starts `selfsup train` from a process holding gigabytes of features;
    # getrusage's ru_maxrss hands that peak to the child (Linux keeps it over exec)
    child = ("import numpy, selfsup.engine.throughput as t; before = t.peak_memory_mb()['cpu_rss_mb']; "
             "a = numpy.ones(2**28, dtype=numpy.uint8); print(before, t.peak_memory_mb()['cpu_rss_mb'])")
    parent = ("import subprocess, sys, numpy; b = numpy.ones(3 * 2**30, dtype=numpy.uint8); "
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True, "
              "check=True).stdout)")
    output = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True).stdout
    before, after = map(float, output.split())
    assert after - before == pytest.approx(256, abs=32)  # the child's own 256 MiB array shows
    assert after < 3 * 1024  # and the parent's 3 GiB do not
