"""What every backbone provides: pooled features of shape (B, feature_dim)."""
from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """An encoder that maps images (B, C, H, W) to pooled features (B, feature_dim).

    Subclasses set ``feature_dim`` and record the registry ``name`` and the keyword arguments they
    were built with in ``config`` so an exported state dict can be rebuilt
    (:func:`selfsup.backbones.load_exported`).

    Example:
        >>> net = selfsup.backbones.get("resnet_tiny", width=4)
        >>> net(torch.zeros(2, 3, 32, 32)).shape, net.feature_dim, net.name
        (torch.Size([2, 32]), 32, 'resnet_tiny')
        >>> net.config  # with the registry name, enough to rebuild it
        {'width': 4, 'blocks': [1, 1, 1, 1], 'in_channels': 3}
    """

    feature_dim: int
    name: str = ""
    config: dict

    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def feature_map(self, images: Tensor) -> Tensor:
        """The last spatial feature map (B, feature_dim, h, w), before pooling (dense methods)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose a spatial feature map")
