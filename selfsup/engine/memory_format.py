"""When channels-last memory format is safe for a network on the training device.

Channels-last makes convolutions faster (about 15-20% for a ``resnet_small`` step in fp32 on a
2-core AVX2 CPU, more with bf16), but the oneDNN build inside PyTorch 2.14 has a broken AVX2
kernel: on x86 CPUs without AVX-512, the weight gradient of a channels-last 1x1 convolution with
stride 2 and 2 to 7 input channels (a narrow ResNet's downsampling shortcut, e.g. ``resnet_tiny``
width 4) comes out wrong (relative errors up to 1.0) or corrupts the heap, which crashes or hangs
the process; the same layers in NCHW format, with 8 or more input channels, or with 3x3 kernels
were correct in every case tried (``tests/test_memory_format.py`` holds the check). Such a network
is trained in NCHW format instead, with a warning.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("selfsup")

__all__ = ["channels_last_hazard", "use_channels_last"]


def channels_last_hazard(model: nn.Module, device_type: str) -> str | None:
    """The first layer of ``model`` that channels-last would compute wrongly on this machine, or None.

    Example:
        >>> channels_last_hazard(nn.Conv2d(4, 8, 1, stride=2), "cuda") is None
        True
    """
    if device_type != "cpu" or torch.backends.cpu.get_cpu_capability() != "AVX2":
        return None
    for name, layer in model.named_modules():
        if (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride != (1, 1)
                and layer.groups == 1 and 1 < layer.in_channels < 8):
            return f"{name or type(layer).__name__} ({layer.in_channels} -> {layer.out_channels}, 1x1, stride {layer.stride[0]})"
    return None


def use_channels_last(wanted: bool, model: nn.Module, device_type: str) -> bool:
    """``wanted``, unless :func:`channels_last_hazard` finds a layer (then False, with a warning).

    Example:
        >>> use_channels_last(True, nn.Conv2d(16, 32, 1, stride=2), "cpu")
        True
    """
    if not wanted:
        return False
    layer = channels_last_hazard(model, device_type)
    if layer is None:
        return True
    log.warning("channels_last=true is switched off for this run: on this AVX2 CPU, PyTorch's oneDNN computes "
                "the weight gradient of %s wrongly in channels-last format (a known-bad kernel for 2-7 input "
                "channels); training runs in NCHW format, which is exact.", layer)
    return False
