"""Every tutorial script under examples/ runs end to end at its tiny budget, as a user runs it."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def run(script: Path, tmp_path: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, str(script), "--tiny", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_every_example_has_a_tutorial_page():
    assert EXAMPLES
    for script in EXAMPLES:
        page = ROOT / "docs" / "tutorials" / f"{script.stem}.md"
        assert page.is_file(), f"{script.name} has no page {page.relative_to(ROOT)}"
        assert f"examples/{script.name}" in page.read_text(), f"{page.name} does not show {script.name}"


def test_blocks_in_your_loop(tmp_path):
    out = run(ROOT / "examples" / "blocks_in_your_loop.py", tmp_path)
    knn, linear = (float(v) for v in re.search(r"trained: k-NN \(k=20\) ([\d.]+)%, linear probe ([\d.]+)%", out).groups())
    assert 10 < knn <= 100 and 10 < linear <= 100  # scored on the 450 held-out digits, 10 classes


def test_custom_augmentation(tmp_path):
    out = run(ROOT / "examples" / "custom_augmentation.py", tmp_path, "--out", str(tmp_path / "out"))
    assert (tmp_path / "out" / "views.png").stat().st_size > 1000
    assert re.search(r"with-noise: k-NN top-1 [\d.]+%", out) and re.search(r"without-noise: k-NN top-1 [\d.]+%", out)
    saved = (tmp_path / "out" / "with-noise" / "config.yaml").read_text()
    assert "gaussian_noise" in saved and "max_sigma: 0.3" in saved  # the user's op went through the recipe


def test_clothing_simclr(tmp_path):
    out = run(ROOT / "examples" / "clothing_simclr.py", tmp_path, "--out", str(tmp_path / "runs"))
    assert re.search(r"k-NN top-1: [\d.]+% on the held-out 10% of the training split, [\d.]+% on the test split", out)
    pictures = tmp_path / "runs" / "clothing-simclr" / "eval" / "pictures"
    for name in ("embedding_map.png", "neighbours.png", "training_curves.png"):
        assert (pictures / name).stat().st_size > 1000, name


def test_timm_backbones(tmp_path):
    pytest.importorskip("timm", reason="the timm tutorial needs timm (a dev extra)")
    out = run(ROOT / "examples" / "timm_backbones.py", tmp_path, "--out", str(tmp_path / "runs"))
    assert re.search(r"untrained: k-NN [\d.]+%, linear probe [\d.]+%", out)
    assert re.search(r"after 1 epoch\(s\) of SimCLR: k-NN [\d.]+%, linear probe [\d.]+%", out)
    difference = float(re.search(r"features differ by at most ([\d.e+-]+)", out).group(1))
    assert difference < 1e-4  # timm's own model with the exported weights computes selfsup's features
    assert (tmp_path / "runs" / "timm-simclr" / "backbone.timm.safetensors").is_file()


def test_finetune_folder(tmp_path):
    out = run(ROOT / "examples" / "finetune_folder.py", tmp_path, "--out", str(tmp_path / "runs"))
    assert "wrote 1347 training and 450 held-out PNGs" in out
    linear, finetuned = (float(v) for v in re.search(r"held-out top-1: linear probe ([\d.]+)%, fine-tuned ([\d.]+)%", out).groups())
    assert 10 < linear <= 100 and 0 <= finetuned <= 100  # 450 held-out digits, 10 classes; one fine-tuning epoch
    results = sorted(p.name for p in (tmp_path / "runs" / "folder-simclr" / "eval").glob("*.json"))
    assert results == ["finetune-folder-all.json", "linear-folder-all.json"]


def test_detection_transfer(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # on a busy 2-core CPU two threads made this run 3-4x slower
    out = run(ROOT / "examples" / "detection_transfer.py", tmp_path, "--out", str(tmp_path / "runs"))
    loaded = re.search(r"backbone\.pth -> Faster R-CNN body: (\d+) tensors, missing keys \[(.*)\], unexpected keys", out)
    assert loaded and int(loaded.group(1)) > 100 and loaded.group(2) == ""  # no body tensor left random
    for name in ("pretrained backbone", "random init"):
        score = float(re.search(rf"^{name}: mAP@0\.5 ([\d.]+)%", out, re.MULTILINE).group(1))
        assert 0 <= score <= 100, name
    runs = tmp_path / "runs"
    assert (runs / "canvas-simclr" / "backbone.pth").is_file() and (runs / "detections.png").stat().st_size > 1000
    assert len(list((runs / "canvases" / "train").glob("*.png"))) == 16


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_explains_itself(script):
    """Its docstring (its --help) says what it teaches, the full run's command and the tiny budget."""
    doc = ast.get_docstring(ast.parse(script.read_text()))
    assert doc and doc.startswith("Tutorial:") and f"python examples/{script.name}" in doc and "--tiny" in doc


def test_encoder_in_15_minutes(tmp_path):
    out = run(ROOT / "examples" / "encoder_in_15_minutes.py", tmp_path, "--out", str(tmp_path / "runs"))
    pixels = float(re.search(r"raw pixels: k-NN top-1 ([\d.]+)% on the test split", out).group(1))
    val, test = (float(v) for v in re.search(
        r"k-NN top-1 ([\d.]+)% on the held-out 10% of the training split, ([\d.]+)% on the test split", out).groups())
    linear = float(re.search(r"linear probe: top-1 ([\d.]+)% on the test split", out).group(1))
    assert all(0 <= v <= 100 for v in (pixels, val, test, linear))  # a generated stand-in: values mean nothing
    assert (tmp_path / "runs" / "encoder-15min" / "eval" / "linear-fashion_mnist-test.json").is_file()


def test_moco_cifar10(tmp_path):
    out = run(ROOT / "examples" / "moco_cifar10.py", tmp_path, "--out", str(tmp_path / "runs"))
    assert "NOTE: not CIFAR-10" in out  # --tiny trains on the generated stand-in and says so
    untrained, trained = (float(v) for v in re.search(
        r"k-NN \(k=20\) top-1 on the test split of the generated stand-in: untrained ([\d.]+)%, after MoCo v2 ([\d.]+)%",
        out).groups())
    assert 0 <= untrained <= 100 and 0 <= trained <= 100
    assert "$ selfsup train --config cifar10/mocov2" in out
    stand_in = tmp_path / "runs" / "cifar10-stand-in" / "cifar-10-batches-py"
    assert sorted(p.name for p in stand_in.iterdir()) == ["batches.meta", *(f"data_batch_{i}" for i in range(1, 6)),
                                                          "test_batch"]
    pictures = tmp_path / "runs" / "moco-cifar10" / "eval" / "pictures"
    for name in ("embedding_map.png", "neighbours.png", "training_curves.png"):
        assert (pictures / name).stat().st_size > 1000, name


def test_satellite_simsiam(tmp_path):
    out = run(ROOT / "examples" / "satellite_simsiam.py", tmp_path, "--out", str(tmp_path / "runs"))
    assert "wrote 120 training and 60 held-out 32x32 tiles of 6 classes" in out
    untrained, trained = (float(v) for v in re.search(
        r"held-out tiles, k-NN \(k=20\) top-1: untrained ([\d.]+)%, after 1 epoch\(s\) of SimSiam ([\d.]+)%", out).groups())
    assert 0 <= untrained <= 100 and 0 <= trained <= 100
    saved = (tmp_path / "runs" / "satellite-simsiam" / "config.yaml").read_text()
    assert "vertical_flip" in saved and "rotate90" in saved  # the views went through the recipe into the run
    for split, count in (("train", 20), ("test", 10)):
        assert len(list((tmp_path / "runs" / "satellite-tiles" / split / "forest").glob("*.png"))) == count
    pictures = tmp_path / "runs" / "satellite-simsiam" / "eval" / "pictures"
    for name in ("embedding_map.png", "neighbours.png", "training_curves.png"):
        assert (pictures / name).stat().st_size > 1000, name
