"""Engine-driven shared state (issue 16): the training progress, the momentum-teacher part, and
options that subclasses pass on to their parent.

The engine (or a hand-written loop) tells a method where training stands with ``begin_step(step)``;
a method keeps no step counter, so a method told step ``k`` behaves as at step ``k`` whatever ran
before (which is what makes resume exact). Momentum teachers own their schedule, range check and
logged value, and the base class moves them along after every step.
"""
from __future__ import annotations

import json
import math
import re
import textwrap

import pytest
import torch
from torch import nn

import selfsup
from selfsup import methods
from selfsup._registry import Registry, accepted_kwargs, option_signature
from selfsup.cli import main
from selfsup.config import load
from selfsup.errors import ConfigError
from selfsup.methods import ViewBatch
from selfsup.methods.base import Method, StepOutput, TrainingProgress
from selfsup.nn import MomentumTeacher, cosine_momentum, warmup_temperature


def small(name: str) -> dict:
    """The method's test sizes, from its card."""
    return dict(methods.METHODS.factory(name).card.small)


def batch_of(views: list[torch.Tensor]) -> ViewBatch:
    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


# ------------------------------------------------------------------------------ TrainingProgress


def test_progress_gives_step_epoch_and_fraction():
    progress = TrainingProgress(step=250, steps_per_epoch=100, total_steps=1000)
    assert (progress.step, progress.epoch, progress.fraction) == (250, 2, 0.25)
    assert TrainingProgress(0, 7, 21).fraction == 0.0  # 0 during the first step, as BYOL's k / K
    assert TrainingProgress(20, 7, 21).fraction == pytest.approx(20 / 21)
    assert TrainingProgress(30, 7, 21).fraction == 1.0  # past the planned run: clamped
    with pytest.raises(ValueError, match=r"step >= 0.*step=-1"):
        TrainingProgress(-1, 10, 100)
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        TrainingProgress(0, 0, 100)
    with pytest.raises(TypeError, match=r"TrainingProgress\.step must be an int, got 0\.5"):
        TrainingProgress(0.5, 10, 100)


def test_begin_step_uses_the_configured_lengths(tiny_backbone):
    method = methods.get("simclr", backbone=tiny_backbone, **small("simclr"))
    assert method.progress == TrainingProgress(0, 1, 1)  # before anything is configured
    method.configure_training(epochs=3, steps_per_epoch=5)
    progress = method.begin_step(11)
    assert progress == method.progress == TrainingProgress(11, 5, 15)
    assert (progress.epoch, progress.fraction) == (2, 11 / 15)


# ------------------------------------------------------------------------------ the teacher part


def test_teacher_schedules_cosine_linear_horizon_and_constant():
    online = {"layer": nn.Linear(3, 2)}
    cosine = MomentumTeacher(online, base_momentum=0.9, final_momentum=1.0)
    for p in (0.0, 0.3, 1.0, 1.5):
        assert cosine.momentum_at(p) == pytest.approx(cosine_momentum(p, 0.9, 1.0))
    linear = MomentumTeacher(online, base_momentum=0.996, final_momentum=1.0, schedule="linear")
    assert [linear.momentum_at(p) for p in (0.0, 0.5, 2.0)] == pytest.approx([0.996, 0.998, 1.0])
    msn = MomentumTeacher(online, base_momentum=0.996, schedule="linear", horizon=1.25)
    assert msn.momentum_at(1.0) == pytest.approx(0.9992)  # ends before 1 (MSN's 1.25 runs)
    constant = MomentumTeacher(online, base_momentum=0.999, final_momentum=None)
    assert {constant.momentum_at(p) for p in (0.0, 0.5, 1.0)} == {0.999}
    assert cosine.momentum == 0.9 and cosine.logs() == {"momentum": 0.9}
    assert cosine.set_fraction(0.5) == pytest.approx(0.95) and cosine.logs() == {"momentum": pytest.approx(0.95)}


def test_teacher_update_uses_the_current_step_momentum():
    torch.manual_seed(0)
    online = nn.Linear(3, 2)
    teacher = MomentumTeacher({"layer": online}, base_momentum=0.5, final_momentum=1.0)
    before = teacher["layer"].weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    teacher.set_fraction(0.5)  # cosine: 0.75
    teacher.momentum_update()
    torch.testing.assert_close(teacher["layer"].weight, 0.75 * before + 0.25 * online.weight.detach())


@pytest.mark.parametrize("options, message", [
    (dict(base_momentum=0.99, final_momentum=0.9),
     "BYOL needs 0 <= base_momentum <= final_momentum <= 1, got base_momentum=0.99, final_momentum=0.9"),
    (dict(base_momentum=1.5, final_momentum=None), "BYOL momentum must be in [0, 1], got 1.5"),
    (dict(schedule="step"), "BYOL: the momentum schedule must be one of ('cosine', 'linear'), got 'step'"),
    (dict(horizon=0.0), "BYOL needs momentum_horizon > 0, got 0.0"),
])
def test_teacher_checks_name_the_method_and_values(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MomentumTeacher({"layer": nn.Linear(3, 2)}, owner="BYOL", **options)


@pytest.mark.parametrize("name, options, message", [
    ("byol", {"base_momentum": 1.5}, "BYOL needs 0 <= base_momentum <= final_momentum <= 1"),
    ("mocov2", {"momentum": 1.5}, "MoCo momentum must be in [0, 1], got 1.5"),
    ("densecl", {"momentum": -0.1}, "DenseCL momentum must be in [0, 1], got -0.1"),
    ("ressl", {"base_momentum": 0.999, "final_momentum": 0.99}, "ReSSL needs 0 <= base_momentum"),
])
def test_methods_get_the_teacher_check(tiny_backbone, name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        methods.get(name, backbone=tiny_backbone, **{**small(name), **options})


class ToyEMA(Method):
    """A method defined here only: a linear head and its EMA target, and no hook of its own."""

    def __init__(self, backbone: nn.Module, *, base_momentum: float = 0.5) -> None:
        super().__init__(backbone)
        self.head = nn.Linear(self.feature_dim, 4)
        self.target = MomentumTeacher({"backbone": self.backbone, "head": self.head}, base_momentum=base_momentum,
                                      owner="ToyEMA")

    def training_step(self, batch: ViewBatch) -> StepOutput:
        features = self.backbone(batch.views[0])
        loss = (self.head(features) - self.target(batch.views[1])).pow(2).mean()
        return StepOutput(loss=loss, features=features)


def test_base_class_moves_every_teacher_without_a_method_hook(tiny_backbone, two_views):
    method = ToyEMA(tiny_backbone)
    assert method.momentum_teachers() == [method.target]
    method.configure_training(epochs=2, steps_per_epoch=2)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    for step in range(4):
        method.begin_step(step)
        want = cosine_momentum(step / 4, 0.5, 1.0)
        assert method.state_logs() == {"momentum": pytest.approx(want)}  # logged with this step
        out = method.training_step(batch_of(two_views))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        before = [p.detach().clone() for p in method.target.parameters()]
        online = [p.detach().clone() for p in method.target.online().parameters()]
        method.end_step()
        for t0, o, t1 in zip(before, online, method.target.parameters()):
            torch.testing.assert_close(t1, want * t0 + (1 - want) * o, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ no step counters


@pytest.mark.parametrize("name", ["dino", "swav", "densecl", "ibot", "dinov2", "odc"])
def test_no_method_keeps_a_step_counter(name):
    backbone = (selfsup.backbones.get("vit_tiny", image_size=16, patch_size=4, depth=1) if name in ("ibot", "dinov2")
                else selfsup.backbones.get("resnet_tiny", width=4))
    options = {**small(name), **({"num_samples": 32} if name == "odc" else {})}
    method = methods.get(name, backbone=backbone, **options)
    counters = [key for key in method.state_dict() if re.search(r"(^|\.)(steps_done|step|step_index)$", key)]
    assert counters == [] and not hasattr(method, "steps_done") and not hasattr(method, "step_index")


def test_dino_reads_epoch_from_the_step_it_is_told(tiny_backbone):
    """Temperature warm-up and last-layer freezing follow ``begin_step``; nothing counts calls."""
    method = methods.get("dino", backbone=tiny_backbone, warmup_teacher_temp_epochs=3, **small("dino"))
    method.configure_training(epochs=10, steps_per_epoch=4)
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]
    for step, epoch in [(9, 2), (1, 0), (5, 1)]:  # any order: the state is the step, not a count
        progress = method.begin_step(step)
        out = method.training_step(batch_of(views))
        assert out.logs["teacher_temp"] == pytest.approx(warmup_temperature(epoch, 0.04, 0.07, 3))
        out.loss.backward()
        method.on_after_backward(progress)
        frozen = method.head.last_layer.weight_v.grad is None
        assert frozen == (epoch < 1), step
        method.zero_grad()


def test_swav_freezing_and_queue_follow_the_step(tiny_backbone):
    method = methods.get("swav", backbone=tiny_backbone, **{**small("swav"), "freeze_prototypes_iters": 3,
                                                            "queue_size": 8, "epoch_queue_starts": 2})
    method.configure_training(epochs=4, steps_per_epoch=2)
    assert [method.begin_step(s) and method.queue_active for s in range(8)] == [False] * 4 + [True] * 4
    for step, frozen in [(2, True), (3, False), (0, True)]:
        progress = method.begin_step(step)
        method.prototypes.weight.grad = torch.ones_like(method.prototypes.weight)
        method.on_after_backward(progress)
        assert (method.prototypes.weight.grad is None) == frozen


def test_densecl_lambda_follows_the_step(tiny_backbone):
    method = methods.get("densecl", backbone=tiny_backbone, **{**small("densecl"), "lambda_warmup_steps": 3})
    method.configure_training(epochs=1, steps_per_epoch=10)
    assert [method.begin_step(s) and method.current_lambda() for s in range(5)] == [0.0, 0.0, 0.0, 0.5, 0.5]


# ------------------------------------------------------------------------------ the loops


def test_base_module_docstring_loop_runs_as_written():
    """The hand-written loop in ``selfsup/methods/base.py``'s docstring, executed as it stands on
    random uint8 images (two steps); the EMA target follows and the progress is the last step's."""
    doc = selfsup.methods.base.__doc__
    code = textwrap.dedent(doc.split("::\n", 1)[1].split('"""')[0])
    g = torch.Generator().manual_seed(0)
    loader = [(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(4, dtype=torch.long),
               torch.arange(4) + 4 * i) for i in range(2)]
    namespace = {"selfsup": selfsup, "torch": torch, "ViewBatch": ViewBatch, "loader": loader, "epochs": 1}
    torch.manual_seed(0)
    exec(compile(code, "selfsup/methods/base.py", "exec"), namespace)
    method = namespace["method"]
    assert method.progress == TrainingProgress(1, 2, 2)
    assert method.target.momentum == pytest.approx(cosine_momentum(0.5, 0.99))
    online = dict(method.backbone.named_parameters())
    assert any(not torch.equal(p, online[k]) for k, p in method.target["backbone"].named_parameters())


def test_engine_logs_the_teacher_momentum_of_each_step(tmp_path):
    args = ["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", "--data", "digits",
            "--method", "byol", "--backbone", "resnet_tiny", "--batch-size", "128", "--precision", "32-true",
            "backbone.width=4", "augment.size=16", "progress_bar=false", "monitor.knn_every=0",
            "data.eval_split=none", "log_every_n_steps=1", "method.base_momentum=0.9",
            "method.proj_hidden_dim=32", "method.pred_hidden_dim=32", "method.proj_output_dim=16"]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/momentum"] for r in records if "train/momentum" in r]
    assert len(logged) > 3
    total = len(logged)  # one record per step of the single epoch
    assert logged == pytest.approx([cosine_momentum(k / total, 0.9) for k in range(total)])


# ------------------------------------------------------------------------------ options passed on


class _Parent:
    def __init__(self, backbone: object, *, width: int = 8, temperature: float = 0.1) -> None:
        self.width, self.temperature = width, temperature


class _Child(_Parent):
    def __init__(self, backbone: object, *, width: int = 16, extra: float = 1.0, **options: object) -> None:
        super().__init__(backbone, width=width, **options)
        self.extra = extra


def test_options_passed_on_follow_the_parent_signature():
    signature = option_signature(_Child)
    assert list(signature.parameters) == ["backbone", "width", "extra", "temperature"]
    assert {k: p.default for k, p in signature.parameters.items() if k != "backbone"} == {
        "width": 16, "extra": 1.0, "temperature": 0.1}  # the child's defaults win
    registry = Registry("thing")
    registry.register("child", "a subclass passing **options on")(_Child)
    assert registry.get("child", backbone=None, temperature=0.5).temperature == 0.5
    with pytest.raises(ConfigError, match=re.escape(
            "thing 'child' has no option 'temprature'. Did you mean: temperature? Its options (with defaults) are: "
            "backbone, width=16, extra=1.0, temperature=0.1.")):
        registry.get("child", backbone=None, temprature=0.5)


def test_dinov2_and_dclw_take_their_parents_options_with_the_config_check():
    dinov2 = accepted_kwargs(methods.METHODS.factory("dinov2"))
    ibot = accepted_kwargs(methods.METHODS.factory("ibot"))
    assert set(dinov2) == set(ibot)  # iBOT's options, none repeated in dinov2.py
    assert dinov2["out_dim"].default == 65536 and dinov2["base_momentum"].default == 0.992
    assert dinov2["cls_loss_weight"].default == ibot["cls_loss_weight"].default == 1.0
    vit = ["backbone.name=vit_tiny", "backbone.patch_size=4"]
    config = load(overrides=[*vit, "method.name=dinov2", "method.patch_loss_weight=0.5", "method.mask_probability=0.4"])
    assert config.method["patch_loss_weight"] == 0.5
    with pytest.raises(ConfigError, match=r"'dinov2'.*no option 'cls_los_weight'\. Did you mean: cls_loss_weight"
                                          r".*out_dim=65536.*patch_loss_weight=1\.0"):
        load(overrides=[*vit, "method.name=dinov2", "method.cls_los_weight=2"])
    with pytest.raises(ConfigError, match=r"'dclw'.*no option 'temprature'\. Did you mean: temperature.*sigma=0\.5"):
        load(overrides=["method.name=dclw", "method.temprature=0.2"])
    assert set(accepted_kwargs(methods.METHODS.factory("dcl"))) == set(accepted_kwargs(methods.METHODS.factory("simclr")))


def test_dinov2_defaults_are_ibots_with_its_own(tiny_backbone):
    vit = selfsup.backbones.get("vit_tiny", image_size=16, patch_size=4, depth=1)
    method = methods.get("dinov2", backbone=vit, **small("dinov2"))
    assert method.teacher.base_momentum == 0.992 and method.koleo_weight == 0.1
    assert method.patch_criterion.center_masked_only and method.temps == (0.04, 0.07, 0.04, 0.07)
    tied = methods.get("dinov2", backbone=vit, **{**small("dinov2"), "teacher_temp": 0.05})
    assert tied.temps == (0.04, 0.05, 0.04, 0.05)  # the patch temperature follows the class token's
    ibot = methods.get("ibot", backbone=vit, **small("ibot"))
    assert ibot.koleo is None and not ibot.patch_criterion.center_masked_only
    assert math.isclose(ibot.teacher.base_momentum, 0.996)
