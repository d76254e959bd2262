"""The representation a method is evaluated on (k-NN, probes, exports: ``backbone(images)``) is
the one its loss trains.

For every registered method on a small ViT: which final tokens the backbone's pooled output reads
(the class token, or the patch tokens) is found from the gradient of ``backbone(images)``, and the
method's loss must send gradient to those tokens (after the final LayerNorm). Masked-image methods
whose loss reaches only the patch tokens (SimMIM, MaskFeat, CAE, I-JEPA, AIM, A2MIM; DenseCL's
global branch pools the patch map) must therefore be evaluated on the mean patch token.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from method_sizes import small
from selfsup import augment, backbones, methods
from selfsup._registry import accepted_kwargs
from selfsup.backbones.vit import VisionTransformer
from selfsup.methods.base import ViewBatch

PATCH_TRAINED = {"a2mim", "aim", "cae", "capi", "densecl", "distillation", "ijepa", "inpainting", "maskfeat", "simmim",
                 "vicregl"}
MEAN, STD, BATCH = (0.5,) * 3, (0.25,) * 3, 16


def tiny_vit(**options) -> VisionTransformer:
    return backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2, **options)


def build(name: str, vit: VisionTransformer):
    return methods.get(name, backbone=vit, **small(name, num_samples=BATCH))


def one_step(name: str, images: torch.Tensor):
    """Build ``name`` on a fresh tiny ViT, run one training step on ``images`` (uint8) with its
    own view recipe, and return the method, its output and every final-norm output of each ViT in
    it (student and teachers), in call order."""
    torch.manual_seed(0)
    vit = tiny_vit()
    method = build(name, vit)
    recipe = method.default_views
    view_options = {"size": 16, "mean": MEAN, "std": STD, "seed": 0, **methods.card(name).small_views}
    accepted = accepted_kwargs(augment.RECIPES.factory(recipe))
    make_views = augment.get(recipe, **{k: v for k, v in view_options.items() if k in accepted})
    method.configure_training(1, 1)
    evaluation = augment.EvalTransform(16, MEAN, STD)
    method.on_epoch_start(0, lambda: torch.no_grad()(vit)(evaluation(images)))
    captured: dict[int, list[torch.Tensor]] = {}

    def keep(module, inputs, output, key):
        if output.requires_grad:
            output.retain_grad()
        captured.setdefault(key, []).append(output)

    handles = [m.norm.register_forward_hook(lambda mod, i, o, key=id(m): keep(mod, i, o, key))
               for m in method.modules() if isinstance(m, VisionTransformer)]
    method.train()
    out = method.training_step(ViewBatch(make_views(images), torch.arange(BATCH) % 4, torch.arange(BATCH)))
    for handle in handles:
        handle.remove()
    return method, out, captured


def pooled_positions(vit: VisionTransformer, images: torch.Tensor) -> tuple[bool, bool]:
    """(reads the class token, reads patch tokens): where ``vit(images)`` has gradient w.r.t. the
    final-norm outputs, whatever the pooling's implementation."""
    tokens = []

    def keep(module, inputs, output) -> None:
        output.retain_grad()
        tokens.append(output)

    handle = vit.norm.register_forward_hook(keep)
    vit.eval()
    vit(images).sum().backward()
    handle.remove()
    reads = tokens[0].grad.abs().sum(dim=(0, 2)) > 0
    return bool(reads[0]), bool(reads[vit.num_prefix:].any())


def images() -> torch.Tensor:
    return torch.randint(0, 256, (BATCH, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.mark.parametrize("name", methods.names())
def test_the_evaluated_representation_receives_gradient_from_the_loss(name):
    batch = images()
    method, out, captured = one_step(name, batch)
    vit = method.backbone
    reads_cls, reads_patches = pooled_positions(vit, augment.EvalTransform(16, MEAN, STD)(batch))
    out.loss.backward()
    student = [t for t in captured[id(vit)] if t.grad is not None]
    assert student, f"{name}: the loss does not reach the backbone's final norm"
    cls_grad = sum(float(t.grad[:, 0].abs().sum()) for t in student)
    patch_grad = sum(float(t.grad[:, vit.num_prefix:].abs().sum()) for t in student)
    if reads_cls:
        assert cls_grad > 0, f"{name} is evaluated on the class token, which its loss never trains"
    if reads_patches:
        assert patch_grad > 0, f"{name} is evaluated on the patch tokens, which its loss never trains"
    assert (name in PATCH_TRAINED) == (reads_patches and not reads_cls)


@pytest.mark.parametrize("name", methods.names())
def test_online_probe_features_are_pooled_as_evaluation_pools(name):
    """StepOutput.features (the online probe's input) pool the tokens as ``backbone(images)`` does."""
    batch = images()
    method, out, captured = one_step(name, batch)
    if out.features is None:
        pytest.skip(f"{name} does not feed the online probe")
    n = len(out.features)
    vit = method.backbone
    reads_cls, _ = pooled_positions(vit, augment.EvalTransform(16, MEAN, STD)(batch))
    candidates = [t[:n].detach() for outputs in captured.values() for t in outputs if t.shape[0] >= n]
    pooled = [t[:, 0] if reads_cls else t[:, vit.num_prefix:].mean(1) for t in candidates]
    assert any(torch.allclose(out.features.detach(), p, atol=1e-5) for p in pooled), name


@pytest.mark.parametrize("name", ["simmim", "maskfeat", "cae", "ijepa", "aim", "a2mim"])
def test_masked_image_methods_say_they_train_the_mean_patch_token(name):
    vit = tiny_vit()
    method = build(name, vit)
    assert type(method).representation == "avg" and vit.pool == "avg" and vit.config["pool"] == "avg"
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(method.embed(x), vit.forward_tokens(x)[:, vit.num_prefix:].mean(1))


def test_an_explicit_pooling_the_method_does_not_train_is_refused():
    with pytest.raises(ValueError, match=r"backbone.pool='cls'.*set backbone.pool=avg"):
        build("simmim", tiny_vit(pool="cls"))
    with pytest.raises(ValueError, match=r"backbone.pool='avg'.*set backbone.pool=cls"):
        build("dino", tiny_vit(pool="avg"))
    assert build("simmim", tiny_vit(pool="avg")).backbone.pool == "avg"  # agreeing is fine
    with pytest.raises(ValueError, match="pool must be one of"):
        tiny_vit(pool="mean")


def test_an_exported_avg_pooled_vit_loads_back_with_the_same_features(tmp_path):
    torch.manual_seed(0)
    vit = tiny_vit(num_registers=1)
    build("simmim", vit)
    path = backbones.export_backbone(vit, tmp_path / "backbone.safetensors", image_size=16)
    loaded, meta = backbones.load_exported(path)
    assert loaded.pool == "avg" and meta["backbone_config"]["pool"] == "avg"
    x = torch.randn(3, 3, 16, 16)
    vit.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), vit(x))
    torch.testing.assert_close(loaded(x), vit.forward_tokens(x)[:, 2:].mean(1))  # registers left out


def test_a_checkpoint_rebuilds_the_methods_pooling(tmp_path):
    """``load_backbone`` on a run's ``last.ckpt`` rebuilds the backbone from config.yaml, where the
    method (not the backbone section) decides the pooling."""
    from selfsup.checkpoints import load_backbone

    torch.manual_seed(0)
    vit = backbones.get("vit_tiny", image_size=8, patch_size=4, depth=1, in_channels=1)
    build("simmim", vit)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config = {"method": {"name": "simmim", "mask_patch_size": 4},
              "backbone": {"name": "vit_tiny", "image_size": 8, "patch_size": 4, "depth": 1},
              "data": {"name": "digits"}, "augment": {"size": 8}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    state = {f"method.backbone.{k}": v for k, v in vit.state_dict().items()}
    torch.save({"state_dict": state}, run / "checkpoints" / "last.ckpt")
    loaded, info = load_backbone(run / "checkpoints" / "last.ckpt")
    assert loaded.pool == "avg" and info["image_size"] == 8
    x = torch.randn(2, 1, 8, 8)
    vit.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), vit(x))
