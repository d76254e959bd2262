"""Shared fixtures: tiny backbones and views so every test runs in well under a second."""
from __future__ import annotations

import pytest
import torch

import selfsup.backbones


@pytest.fixture
def tiny_backbone():
    torch.manual_seed(0)
    return selfsup.backbones.get("resnet_tiny", width=4)


@pytest.fixture
def two_views():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 16, 16, generator=g)]
