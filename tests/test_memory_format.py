"""Channels-last is switched off where PyTorch's oneDNN computes a layer's gradient wrongly (see
``selfsup.engine.memory_format``), and the format the engine picks gives gradients as exact as fp32 allows."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from selfsup import backbones
from selfsup.engine import memory_format

SHORTCUT = "stages.1.0.downsample.0 (4 -> 8, 1x1, stride 2)"


@pytest.fixture(autouse=True)
def _no_onednn_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


def test_the_hazard_is_a_narrow_strided_1x1_convolution_on_an_avx2_cpu(monkeypatch):
    tiny = backbones.get("resnet_tiny", in_channels=1, width=4)  # shortcut 4 -> 8 channels, 1x1, stride 2
    small = backbones.get("resnet_small", in_channels=1, width=16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert SHORTCUT == memory_format.channels_last_hazard(tiny, "cpu")
    assert memory_format.channels_last_hazard(small, "cpu") is None
    assert memory_format.channels_last_hazard(tiny, "cuda") is None
    assert memory_format.use_channels_last(True, tiny, "cpu") is False
    assert memory_format.use_channels_last(True, small, "cpu") is True
    assert memory_format.use_channels_last(False, small, "cpu") is False
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert memory_format.channels_last_hazard(tiny, "cpu") is None


def test_an_avx512_cpu_whose_onednn_is_capped_at_avx2_has_the_hazard_too(monkeypatch):
    # ONEDNN_MAX_CPU_ISA=AVX2 on this AVX-512 machine ran the broken kernel: heap corruption, or relative
    # errors of 0.11-0.23 in 2 of 6 runs; PyTorch's CPU capability still says AVX512
    tiny = backbones.get("resnet_tiny", in_channels=1, width=4)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for variable, value in [("ONEDNN_MAX_CPU_ISA", "AVX2"), ("DNNL_MAX_CPU_ISA", "avx2_vnni")]:
        monkeypatch.setenv(variable, value)
        assert memory_format.channels_last_hazard(tiny, "cpu") == SHORTCUT
        assert memory_format.use_channels_last(True, tiny, "cpu") is False
        monkeypatch.delenv(variable)
    for value in ("AVX512_CORE", "SSE41"):  # AVX-512 and SSE4.1 code computed it correctly
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", value)
        assert memory_format.channels_last_hazard(tiny, "cpu") is None
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")  # no AVX2 code to cap to
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert memory_format.channels_last_hazard(tiny, "cpu") is None


CHECK = """
import sys, torch
from torch import nn
from selfsup import backbones
name, width, batch, size, fmt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fmt = getattr(torch, fmt)  # the format the engine picked, in the parent
torch.set_num_threads(1)  # one thread sums a whole channel: channels-last BatchNorm's largest error
torch.manual_seed(0)
model = backbones.get(name, in_channels=1, width=width)
reference = backbones.get(name, in_channels=1, width=width).double()
reference.load_state_dict(model.state_dict())
x = torch.randn(batch, 1, size, size)
projection = torch.randn(model.feature_dim, 16)
opened = []  # which ReLU inputs were positive in the fp32 run; the fp64 reference follows the same decisions
for layer in model.modules():
    if isinstance(layer, nn.ReLU):
        layer.register_forward_hook(lambda layer, args, out: opened.append(out.detach() > 0))
(model.to(memory_format=fmt)(x.contiguous(memory_format=fmt)) @ projection).square().mean().backward()
decisions = iter(opened)
for layer in reference.modules():
    if isinstance(layer, nn.ReLU):
        layer.inplace = False
        layer.register_forward_hook(lambda layer, args, out: args[0] * next(decisions).double())
(reference(x.double()) @ projection.double()).square().mean().backward()
errors = [((p.grad.double() - r.grad).abs().max() / r.grad.abs().max()).item()
          for p, r in zip(model.parameters(), reference.parameters())]
print(max(errors))
"""


@pytest.mark.parametrize("name, width, batch, size, environment", [
    ("resnet_tiny", 4, 128, 16, {}),  # the narrow shortcut of the broken AVX2 kernel
    ("resnet_tiny", 4, 128, 16, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),  # the same kernel on an AVX-512 CPU
    ("resnet_small", 16, 256, 28, {}),  # the CPU benchmark's backbone, batch and image size
])
def test_the_format_the_engine_picks_gives_fp32_exact_gradients(name, width, batch, size, environment, monkeypatch):
    """Gradients of a random projection of the features against an fp64 NCHW reference that takes the same
    ReLU decisions (compared plainly, a ReLU input within rounding of zero flips a whole term in some batches:
    1e-3 to 1e-1 relative errors in NCHW and channels-last alike). Measured this way on an AVX-512 CPU, one
    thread, seeds 0-2: fp32 NCHW is off by at most 4e-5 (2e-5 for resnet_tiny), with oneDNN's convolutions or
    PyTorch's own; channels-last by up to 6e-4 (2e-4), all of it from its BatchNorm, which sums a channel's
    batch * size * size values in fp32 where NCHW sums them in double. The worst-case error of such an fp32
    sum, (n - 1) * u relative to the sum of the terms' magnitudes (u = 2**-24; Higham, Accuracy and Stability
    of Numerical Algorithms, 2nd ed., 2002, section 4.2), is the tolerance: 1.2e-2 (2e-3), well above either
    format. Wrong paths land above it: the broken AVX2 kernel (0.11-0.23, or a crash), and oneDNN computing
    in bf16 (ONEDNN_DEFAULT_FPMATH_MODE=BF16: 5e-2, 3e-2)."""
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    picked = memory_format.use_channels_last(True, backbones.get(name, in_channels=1, width=width), "cpu")
    # in a child process: the broken kernel can corrupt the heap, which must not take pytest down
    arguments = [name, str(width), str(batch), str(size), "channels_last" if picked else "contiguous_format"]
    done = subprocess.run([sys.executable, "-c", CHECK, *arguments], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    terms = batch * size * size  # the longest reductions: the stem's BatchNorm and convolution weight gradient
    assert float(done.stdout.split()[-1]) < (terms - 1) * 2.0**-24
