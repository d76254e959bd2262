"""End-to-end fine-tuning of a pretrained backbone with a new linear head.

The recipe follows MAE's fine-tuning protocol (He et al. 2021, "Masked Autoencoders Are Scalable
Vision Learners", arXiv 2111.06377, Appendix A.1, Table 9; official code
github.com/facebookresearch/mae, ``main_finetune.py`` / ``util/lr_decay.py``): AdamW, weight decay
0.05 (none on biases, norms, class token and position embedding), learning rate ``5e-4 * batch / 256``
with a linear warm-up over the first 5% of the epochs and a cosine decay, label smoothing 0.1, and
for ViTs layer-wise learning-rate decay (BEiT, Bao et al. 2021, arXiv 2106.08254). Mixup, CutMix and
RandAugment of the paper are left out: views come from a named recipe (``crop_flip`` by default).
Test accuracy is measured once, with the final model: never the best epoch.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.errors import ConfigError
from selfsup.eval.features import extract_features
from selfsup.eval.inputs import ChannelAdapter, match_stats
from selfsup.eval.metrics import topk_accuracy
from selfsup.eval.splits import stratified_holdout

_VIT_EMBEDDINGS = ("patch_embed", "cls_token", "registers", "mask_token", "pos_embed")
_NO_DECAY_NAMES = ("cls_token", "registers", "mask_token", "pos_embed")
_PRECISIONS = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _is_vit(backbone: nn.Module) -> bool:
    from selfsup.backbones.vit import VisionTransformer

    return isinstance(backbone, VisionTransformer)


def layer_decay_groups(
    backbone: nn.Module, head: nn.Module, *, weight_decay: float, layer_decay: float = 1.0
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with a per-group ``lr_scale`` (layer-wise lr decay) and weight decay.

    For a :class:`~selfsup.backbones.vit.VisionTransformer` of depth ``L``: block ``i`` (``blocks.i``)
    gets ``lr_scale = layer_decay ** (L - i)``, the patch embedding, class token, registers, mask
    token and position embedding (the deepest "layer") ``layer_decay ** (L + 1)``, the final norm
    and the head 1, as in BEiT / MAE's ``param_groups_lrd``. Parameters with fewer than two
    dimensions and the tokens / position embedding get no weight decay. Frozen parameters are left
    out. Other backbones accept only ``layer_decay=1`` (every scale 1).

    Example:
        >>> vit = selfsup.backbones.get("vit_tiny", image_size=32, patch_size=8, depth=2)
        >>> groups = layer_decay_groups(vit, nn.Linear(192, 10),
        ...                             weight_decay=0.05, layer_decay=0.75)
        >>> max(g["lr_scale"] for g in groups)
        1.0
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ConfigError(f"layer_decay must lie in (0, 1], got {layer_decay!r}.")
    vit = _is_vit(backbone)
    if layer_decay != 1.0 and not vit:
        raise ConfigError(
            f"layer_decay={layer_decay} applies to ViT backbones (vit_*) only; {type(backbone).__name__} has no "
            "transformer blocks. Use layer_decay=1."
        )
    depth = len(backbone.blocks) if vit else 0  # type: ignore[arg-type]
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    named = [(f"backbone.{n}", n, p) for n, p in backbone.named_parameters()]
    named += [(f"head.{n}", None, p) for n, p in head.named_parameters()]
    for full_name, backbone_name, param in named:
        if not param.requires_grad:
            continue
        layer = depth + 1
        if vit and backbone_name is not None:
            if backbone_name.startswith(_VIT_EMBEDDINGS):
                layer = 0
            elif backbone_name.startswith("blocks."):
                layer = int(backbone_name.split(".")[1]) + 1
        no_decay = param.ndim < 2 or (backbone_name or "").split(".")[0] in _NO_DECAY_NAMES
        group = groups.setdefault((layer, no_decay), {
            "name": f"layer{layer}_{'no_decay' if no_decay else 'decay'}", "params": [], "param_names": [],
            "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": layer_decay ** (depth + 1 - layer),
        })
        group["params"].append(param)
        group["param_names"].append(full_name)
    return [groups[key] for key in sorted(groups)]


def _warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def finetune(
    backbone: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    *,
    epochs: int = 100,
    lr: float | None = None,
    batch_size: int = 256,
    layer_decay: float | None = None,
    weight_decay: float = 0.05,
    label_smoothing: float = 0.1,
    warmup_epochs: float | None = None,
    views: str | Callable[..., Any] = "crop_flip",
    eval_transform: Callable[[Tensor], Tensor] | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "32-true",
    num_classes: int | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of ``backbone`` plus a new linear head on ``train_set``; score ``test_set`` once.

    A seeded stratified ``val_fraction`` of the labelled training samples is held out (0: none) and
    scored at the end next to the test split; unlabelled samples (-1) are dropped. Training views
    come from ``views`` (a recipe name from :mod:`selfsup.augment`, built at ``image_size`` with
    ``mean`` / ``std`` and ``seed``, or a callable taking a uint8 batch); scoring uses
    ``eval_transform`` (default ``EvalTransform(image_size, mean, std)``). ``image_size``, ``mean``
    and ``std`` default to the training set's (converted with :func:`~selfsup.eval.match_stats` when
    ``channels`` is given). ``channels`` converts images to that many channels first (transfer
    between grey and colour data). ``layer_decay`` defaults to 0.75 for ViTs and 1
    (none) otherwise; ``lr`` to ``5e-4 * batch_size / 256``; ``warmup_epochs`` to 5% of ``epochs``.
    ``precision``: ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"``. Dropout / stochastic depth
    draw from torch's generator, seeded with ``seed`` inside a forked RNG state, so a seed repeats a
    run and the caller's random state is left alone. The caller's ``backbone`` is not modified.

    Returns:
        ``{"top1", "top5"}`` (test, final model), ``"val_top1"``, ``"val_top5"`` (None without a
        validation part), ``"train_loss"`` (mean of the last epoch), ``"history"`` (mean loss per
        epoch), ``"lr"``, ``"layer_decay"``, ``"train_size"``, ``"val_size"``.

    Example:
        >>> train_set, test_set = selfsup.data.get("digits", split="train"), selfsup.data.get("digits", split="test")
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4, in_channels=1)
        >>> scores = finetune(backbone, train_set, test_set, epochs=2)
        >>> scores["train_size"], scores["val_size"], 0 <= scores["top1"] <= scores["top5"] <= 100
        (1212, 135, True)
    """
    from selfsup import augment

    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"finetune needs epochs >= 1 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}.")
    if precision not in _PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r} for fine-tuning; expected one of {', '.join(_PRECISIONS)}.")
    device = torch.device(device)
    labels = torch.as_tensor(train_set.labels).long()  # type: ignore[attr-defined]
    labelled = torch.nonzero(labels >= 0).flatten()
    if len(labelled) < 2:
        raise ConfigError(f"Fine-tuning needs at least 2 labelled training images, found {len(labelled)}.")
    val_idx: Tensor | None = None
    if val_fraction > 0:
        fit_pos, val_pos = stratified_holdout(labels[labelled], val_fraction, seed)
        fit_idx, val_idx = labelled[fit_pos], labelled[val_pos]
    else:
        fit_idx = labelled
    test_labels = torch.as_tensor(test_set.labels).long()  # type: ignore[attr-defined]
    test_idx = torch.nonzero(test_labels >= 0).flatten()
    if len(test_idx) == 0:
        raise ConfigError("Fine-tuning needs labelled test images; this test split has none.")
    if num_classes is None:
        num_classes = int(getattr(train_set, "num_classes", 0) or 0) or int(max(labels.max(), test_labels.max())) + 1

    size = int(image_size or train_set.image_size[0])  # type: ignore[attr-defined]
    if mean is None or std is None:  # the data's own statistics, for the channel count the backbone sees
        mean, std = match_stats(train_set.mean, train_set.std, channels or train_set.channels)  # type: ignore[attr-defined]
    mean, std = tuple(mean), tuple(std)
    make_views = augment.get(views, size=size, mean=mean, std=std, seed=seed) if isinstance(views, str) else views
    evaluate = eval_transform or augment.EvalTransform(size, mean, std)
    if channels is not None:
        make_views, evaluate = ChannelAdapter(make_views, channels), ChannelAdapter(evaluate, channels)

    model = copy.deepcopy(backbone).to(device)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init draws from the global generator
        head = nn.Linear(int(model.feature_dim), num_classes).to(device)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    layer_decay = (0.75 if _is_vit(model) else 1.0) if layer_decay is None else float(layer_decay)
    lr = 5e-4 * batch_size / 256 if lr is None else float(lr)
    groups = layer_decay_groups(model, head, weight_decay=weight_decay, layer_decay=layer_decay)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "param_names"} for g in groups], lr=lr,
                                  betas=(0.9, 0.999))
    autocast = _PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)

    train_data = Subset(train_set, fit_idx.tolist())
    drop_last = len(train_data) > batch_size and len(train_data) % batch_size == 1  # a batch of 1 breaks BatchNorm
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop_last,
                        num_workers=num_workers)
    total = epochs * len(loader)
    warmup = round((0.05 * epochs if warmup_epochs is None else warmup_epochs) * len(loader))
    history: list[float] = []
    step = 0
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(int(seed))
        model.train()
        head.train()
        for _ in range(epochs):
            losses = []
            for images, batch_labels, _ in loader:
                factor = _warmup_cosine(step, total, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"] * factor
                images = images.to(device, non_blocking=True)
                target = torch.as_tensor(batch_labels).to(device)
                inputs = make_views(images)
                inputs = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
                with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                    logits = head(model(inputs))
                loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
                if not torch.isfinite(loss):
                    raise ConfigError(f"Fine-tuning loss became {float(loss.detach())} at step {step}; lower the learning rate "
                                      f"(lr={lr}) or use precision 32-true.")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                step += 1
            history.append(sum(losses) / len(losses))

    classifier = nn.Sequential(model, head)
    options = dict(device=device, batch_size=batch_size, autocast_dtype=autocast, num_workers=num_workers)
    val = None
    if val_idx is not None and len(val_idx):
        val_logits, val_labels = extract_features(classifier, train_set, evaluate, indices=val_idx, **options)
        val = topk_accuracy(val_logits, val_labels, (1, 5))
    test_logits, test_y = extract_features(classifier, test_set, evaluate, indices=test_idx, **options)
    test = topk_accuracy(test_logits, test_y, (1, 5))  # once, with the final model
    return {"top1": test["top1"], "top5": test["top5"], "val_top1": None if val is None else val["top1"],
            "val_top5": None if val is None else val["top5"], "train_loss": history[-1], "history": history,
            "lr": lr, "layer_decay": layer_decay, "train_size": len(fit_idx),
            "val_size": 0 if val_idx is None else len(val_idx)}
