"""Channels-last is switched off where PyTorch's oneDNN computes a layer's gradient wrongly (see
``selfsup.engine.memory_format``), and the format the engine picks gives exact gradients."""
from __future__ import annotations

import subprocess
import sys

import torch

from selfsup import backbones
from selfsup.engine import memory_format


def test_the_hazard_is_a_narrow_strided_1x1_convolution_on_an_avx2_cpu(monkeypatch):
    tiny = backbones.get("resnet_tiny", in_channels=1, width=4)  # shortcut 4 -> 8 channels, 1x1, stride 2
    small = backbones.get("resnet_small", in_channels=1, width=16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert "stages.1.0.downsample.0 (4 -> 8, 1x1, stride 2)" == memory_format.channels_last_hazard(tiny, "cpu")
    assert memory_format.channels_last_hazard(small, "cpu") is None
    assert memory_format.channels_last_hazard(tiny, "cuda") is None
    assert memory_format.use_channels_last(True, tiny, "cpu") is False
    assert memory_format.use_channels_last(True, small, "cpu") is True
    assert memory_format.use_channels_last(False, small, "cpu") is False
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert memory_format.channels_last_hazard(tiny, "cpu") is None


CHECK = """
import torch, torch.nn.functional as F
from selfsup import backbones
from selfsup.engine.memory_format import use_channels_last
torch.manual_seed(0)
model = backbones.get("resnet_tiny", in_channels=1, width=4)
fmt = torch.channels_last if use_channels_last(True, model, "cpu") else torch.contiguous_format
x = torch.randn(128, 1, 16, 16)
reference = backbones.get("resnet_tiny", in_channels=1, width=4).double()
reference.load_state_dict(model.state_dict())
model.to(memory_format=fmt)(x.contiguous(memory_format=fmt)).square().sum().backward()
reference(x.double()).square().sum().backward()
errors = [((p.grad.double() - r.grad).abs().max() / r.grad.abs().max()).item()
          for p, r in zip(model.parameters(), reference.parameters())]
print(max(errors))
"""


def test_a_narrow_resnet_gets_exact_gradients_in_the_format_the_engine_picks():
    # in a child process: the broken kernel can corrupt the heap, which must not take pytest down
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-4
