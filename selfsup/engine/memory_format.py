"""When channels-last memory format is safe for a network on the training device.

Channels-last makes convolutions faster (a ``resnet_small`` step takes about 15-20% less time in
fp32 on a 2-core AVX2 CPU, 20-25% less in fp32 and in bf16 on an AVX-512 CPU with AMX), but the
oneDNN build inside PyTorch 2.14 has a broken AVX2 kernel: when oneDNN runs its AVX2 code (x86
CPUs without AVX-512, or any CPU with ``ONEDNN_MAX_CPU_ISA=AVX2`` or ``AVX2_VNNI`` set), the weight
gradient of a channels-last 1x1 convolution with stride 2 and 2 to 7 input channels (a narrow ResNet's
downsampling shortcut, e.g. ``resnet_tiny`` width 4) comes out wrong (relative errors up to 1.0)
or corrupts the heap, which crashes or hangs the process; the same layers in NCHW format, with 8
or more input channels, or with 3x3 kernels were correct in every case tried, and so were
oneDNN's SSE4.1, AVX and AVX-512 code (``tests/test_memory_format.py`` holds the check). Such a
network is trained in NCHW format instead, with a warning.

Channels-last is otherwise exact to fp32 accuracy, though not to the last bits NCHW gives:
PyTorch's CPU BatchNorm sums a channel's ``batch * height * width`` values (statistics in the
forward, ``sum(dy)`` and ``sum(dy * x)`` in the backward) in double precision for NCHW tensors but
sequentially in fp32, per thread, for channels-last ones. At ``resnet_small``'s stem (256 x 16 x
28 x 28, one thread) that makes the batch variance about 4.5e-5 too small (relative, always
low: small terms are lost against the large running sum) and the layer's outputs and gradients
off by about 3e-5, against 1e-7 in NCHW; through the network the parameter gradients differ from an
fp64 reference by up to about 6e-4 (relative), against 4e-5 for NCHW, when both are compared on the
same ReLU decisions. Compared plainly, both formats show errors of 1e-3 to 1e-1 in some batches: a
ReLU input within rounding of zero takes the other side in fp32 (0-3 of 15.5 million inputs in
NCHW, 18-39 in channels-last), and each such flip moves a sum by a whole term. Neither is a wrong
result: the channels-last error is within the bound of an fp32 sum of that length, and bf16
autocast (what ``precision: auto`` trains with on CPUs with bf16 units) puts a 4e-2 to 1e-1 error
on the same gradients, measured the same way, in either format; so channels-last stays on.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger("selfsup")

__all__ = ["channels_last_hazard", "onednn_runs_avx2", "use_channels_last"]

# oneDNN's names for its AVX2 code (values of ONEDNN_MAX_CPU_ISA; older builds read DNNL_MAX_CPU_ISA)
_AVX2_ISAS = ("AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def onednn_runs_avx2() -> bool:
    """Whether PyTorch's oneDNN runs its AVX2 kernels: an AVX2 CPU, or a larger one capped by the environment.

    PyTorch's own CPU capability (``torch.backends.cpu.get_cpu_capability()``) does not see
    ``ONEDNN_MAX_CPU_ISA``, which caps only oneDNN, so both are read; the cap matters only on an
    AVX-512 CPU (elsewhere oneDNN has no AVX2 code to fall back to, or runs it anyway).

    Example:
        >>> onednn_runs_avx2()  # False on an AVX-512 CPU, True there under ONEDNN_MAX_CPU_ISA=AVX2
        False
    """
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    capability = torch.backends.cpu.get_cpu_capability()
    return capability == "AVX2" or (capability == "AVX512" and capped.strip().upper() in _AVX2_ISAS)


def channels_last_hazard(model: nn.Module, device_type: str) -> str | None:
    """The first layer of ``model`` that channels-last would compute wrongly on this machine, or None.

    Example:
        >>> channels_last_hazard(nn.Conv2d(4, 8, 1, stride=2), "cuda") is None
        True
    """
    if device_type != "cpu" or not onednn_runs_avx2():
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
    log.warning("channels_last=true is switched off for this run: with its AVX2 code, PyTorch's oneDNN computes "
                "the weight gradient of %s wrongly in channels-last format (a known-bad kernel for 2-7 input "
                "channels); training runs in NCHW format, which is exact.", layer)
    return False
