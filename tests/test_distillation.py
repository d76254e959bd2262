"""Distillation from a frozen teacher: the feature-map loss against a slow reference (bilinear resize
written out), the teacher frozen and in evaluation mode, the student moving towards it, each way of
naming a teacher (a selfsup export, a backbone with a weights file), the errors, and a run whose
teacher is an earlier selfsup run.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from selfsup import backbones, methods
from selfsup.backbones.export import export_backbone
from selfsup.losses import FeatureMapMSELoss
from selfsup.methods import ViewBatch


def ref_bilinear(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize of ``m`` (``(c, hs, ws)``) to ``(h, w)``, half-pixel centres (align_corners=False)."""
    c, hs, ws = m.shape
    out = torch.zeros(c, h, w, dtype=torch.float64)
    for i in range(h):
        y = max((i + 0.5) * hs / h - 0.5, 0.0)
        y0 = min(int(math.floor(y)), hs - 1)
        y1, wy = min(y0 + 1, hs - 1), y - y0
        for j in range(w):
            x = max((j + 0.5) * ws / w - 0.5, 0.0)
            x0 = min(int(math.floor(x)), ws - 1)
            x1, wx = min(x0 + 1, ws - 1), x - x0
            for k in range(c):
                top = (1 - wx) * float(m[k, y0, x0]) + wx * float(m[k, y0, x1])
                bottom = (1 - wx) * float(m[k, y1, x0]) + wx * float(m[k, y1, x1])
                out[k, i, j] = (1 - wy) * top + wy * bottom
    return out


@pytest.mark.parametrize("student_grid", [(7, 7), (4, 4), (2, 3)])
def test_feature_map_loss_matches_reference(student_grid: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(student_grid))
    student, teacher = torch.randn(2, 3, *student_grid, generator=g), torch.randn(2, 3, 7, 7, generator=g)
    expected = sum(float(((ref_bilinear(student[b].double(), 7, 7) - teacher[b].double()) ** 2).sum())
                   for b in range(2)) / teacher.numel()
    assert float(FeatureMapMSELoss()(student, teacher)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="same B and D"):
        FeatureMapMSELoss()(torch.randn(2, 4, 3, 3), teacher)


def _method(**options):
    torch.manual_seed(0)
    options = {**methods.card("distillation").small, **options}
    with pytest.warns(UserWarning, match="randomly initialised") if options.get("teacher_weights") is None \
            and options.get("teacher") is None else _no_warning():
        return methods.get("distillation", backbone=backbones.get("resnet_tiny", width=4), **options)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _batch(seed: int = 0) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    return ViewBatch(views=[torch.randn(16, 3, 16, 16, generator=g)], labels=torch.zeros(16, dtype=torch.long),
                     indices=torch.arange(16))


def test_the_teacher_stays_frozen_in_eval_mode_while_the_student_moves_towards_it() -> None:
    method = _method(mixup=False).train()
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    groups = method.parameter_groups(0.0)
    trained = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in trained for p in method.teacher.parameters())
    optimizer = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.5)
    losses = []
    for step in range(8):
        method.begin_step(step)
        out = method.training_step(_batch())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.end_step()
        losses.append(float(out.loss.detach()))
    assert not method.teacher.training and method.backbone.training
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # weights and BatchNorm statistics
    assert losses[-1] < 0.7 * losses[0]
    assert out.features is not None and out.features.shape == (16, method.feature_dim)


def test_mixup_is_drawn_from_the_step() -> None:
    method = _method()
    x = _batch().views[0]
    method.begin_step(3)
    a, b = method.mix(x), method.mix(x)
    method.begin_step(4)
    c = method.mix(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert method.training_step(_batch()).features is None  # no probe on mixed images


def test_teachers_from_an_export_and_from_a_weights_file(tmp_path) -> None:
    source = backbones.get("resnet_tiny", width=8, in_channels=3)
    exported = export_backbone(source, tmp_path / "teacher.safetensors", image_size=16)
    from_export = _method(teacher=str(exported), teacher_backbone=None)
    torch.save(source.state_dict(), tmp_path / "teacher.pt")
    from_file = _method(teacher_backbone={"name": "resnet_tiny", "width": 8}, teacher_weights=str(tmp_path / "teacher.pt"))
    for method in (from_export, from_file):
        assert method.teacher.feature_dim == source.feature_dim and method.head.out_channels == source.feature_dim
        for k, v in source.state_dict().items():
            assert torch.equal(method.teacher.state_dict()[k], v), k


def test_the_config_check_on_the_meta_device_reads_only_the_teachers_header(tmp_path, monkeypatch) -> None:
    """selfsup checks a config by building it on the meta device first; the teacher's weights are
    read once, by the real build."""
    import selfsup.backbones.export as export

    exported = export_backbone(backbones.get("resnet_tiny", width=8), tmp_path / "teacher.safetensors", image_size=16)
    reads = []
    real = export.load_file
    monkeypatch.setattr(export, "load_file", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    with torch.device("meta"):
        checked = _method(teacher=str(exported), teacher_backbone=None)
    assert reads == [] and checked.teacher.feature_dim == 64
    _method(teacher=str(exported), teacher_backbone=None)
    assert reads == [str(exported)]


def test_a_teacher_must_be_named_once_and_exist(tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one of method.teacher"):
        methods.get("distillation", backbone=backbones.get("resnet_tiny", width=4))
    with pytest.raises(ValueError, match="exactly one of method.teacher"):
        _method(teacher="runs/x")
    with pytest.raises(ValueError, match="teacher_weights goes with"):
        _method(teacher="runs/x", teacher_backbone=None, teacher_weights="w.pt")
    with pytest.raises(ValueError, match="no such file"):
        _method(teacher_weights=str(tmp_path / "missing.pt"))


def test_distil_an_earlier_run_into_a_new_backbone(tmp_path) -> None:
    """The user path: train a teacher, then ``selfsup train --method distillation method.teacher=<run>``."""
    from selfsup.cli import main

    common = ["--data", "digits", "--epochs", "1", "--batch-size", "256", "--precision", "32-true", "augment.size=8",
              "progress_bar=false", "monitor.knn_every=0", "monitor.probe=false", "data.eval_split=none",
              "--output-dir", str(tmp_path)]
    assert main(["train", "--method", "simclr", "--backbone", "resnet_tiny", "backbone.width=8", "--name", "teacher",
                 "method.proj_output_dim=16", *common]) == 0
    assert main(["train", "--method", "distillation", "--backbone", "resnet_tiny", "backbone.width=4",
                 "--name", "student", f"method.teacher={tmp_path / 'teacher'}", "optimizer.clip_grad_norm=1.0",
                 *common]) == 0
    summary = json.loads((tmp_path / "student" / "summary.json").read_text())
    assert summary["steps"] == 1347 // 256
    records = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/grad_norm"] for r in records if "train/grad_norm" in r]  # LightlyTrain clips at 1.0: logged
    student, _ = backbones.load_exported(tmp_path / "student" / "backbone.safetensors")
    assert student.feature_dim == backbones.get("resnet_tiny", width=4).feature_dim  # the student, not the teacher
