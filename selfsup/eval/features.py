"""Compute an encoder's features for a whole data set, once, in evaluation mode."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset


@torch.no_grad()
def extract_features(
    encoder: Callable[[Tensor], Tensor],
    dataset: Dataset,
    transform: Callable[[Tensor], Tensor],
    *,
    indices: Sequence[int] | Tensor | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[Tensor, Tensor]:
    """Features (N, D) in float32 on the CPU and labels (N,) of ``dataset`` (or ``indices`` of it).

    Items are ``(uint8 image, label, index)`` as in :mod:`selfsup.data`; ``transform`` turns a
    uint8 batch on ``device`` into the encoder's input (e.g. :class:`selfsup.augment.EvalTransform`).
    An ``nn.Module`` encoder is put in eval mode for the pass and restored afterwards.

    Example:
        >>> test_set = selfsup.data.get("digits", split="test")
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4, in_channels=1)
        >>> transform = selfsup.augment.EvalTransform(8, test_set.mean, test_set.std)
        >>> feats, labels = extract_features(backbone, test_set, transform)
        >>> feats.shape, labels.shape  # (len(test_set), backbone.feature_dim), (len(test_set),)
        (torch.Size([450, 32]), torch.Size([450]))
    """
    device = torch.device(device)
    subset = dataset if indices is None else Subset(dataset, [int(i) for i in indices])
    # An own generator: the loader's worker seed is then not drawn from (and does not move) the global RNG.
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    was_training = isinstance(encoder, nn.Module) and encoder.training
    if isinstance(encoder, nn.Module):
        encoder.eval()
    features, labels = [], []
    try:
        for images, batch_labels, _ in loader:
            inputs = transform(images.to(device, non_blocking=True))
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                out = encoder(inputs)
            features.append(out.float().cpu())
            labels.append(torch.as_tensor(batch_labels).long())
    finally:
        if was_training:
            encoder.train()
    if not features:
        raise ValueError("extract_features got an empty data set")
    return torch.cat(features), torch.cat(labels)
