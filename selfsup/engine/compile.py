"""``compile: true``: torch.compile the backbone in place, after checking that the compiler can run."""
from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from selfsup.errors import ConfigError


def compile_backbone(backbone: nn.Module, device_type: str) -> nn.Module:
    """Compile ``backbone``'s forward with ``torch.compile`` in place (``nn.Module.compile``).

    In place, not wrapped: ``torch.compile(module)`` returns a wrapper whose state dict names
    every parameter ``_orig_mod.<name>``, which checkpoints and ``export_backbone`` would then
    carry; ``module.compile()`` compiles the module's ``__call__`` and leaves names, checkpoints
    and exports exactly as without it. Only calls through ``backbone(x)`` are compiled (a
    method's ``forward_tokens`` / ``feature_map`` calls and momentum copies made earlier are not).
    The first step pays the compilation (minutes for a ResNet-50; about 80 s for ``resnet_tiny``
    on this project's 2-core CPU, so the test suite only checks the set-up).

    The inductor backend needs Triton on CUDA and a C++ compiler on the CPU; when one is missing
    this raises at once with what to install, instead of failing inside the first training step.

    Args:
        backbone: the module to compile.
        device_type: ``"cuda"`` or ``"cpu"``, where training runs.

    Raises:
        ConfigError: the compiler the backend needs is missing.

    Example:
        >>> backbone = compile_backbone(selfsup.backbones.get("resnet_tiny", width=4), "cpu")  # compiled at the first call
        >>> list(backbone.state_dict())[0]  # the names stay those of the plain module
        'stem.0.weight'
    """
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError(
                "compile=true on a GPU needs Triton (torch.compile's inductor backend generates Triton kernels); "
                "install the 'triton' package that matches your torch, or set compile=false."
            )
    elif device_type == "cpu":
        compiler = os.environ.get("CXX") or "g++"
        if shutil.which(compiler) is None:
            raise ConfigError(
                f"compile=true on the CPU needs a C++ compiler ({compiler!r}, from $CXX or the default g++, was not "
                "found on PATH): torch.compile's inductor backend builds C++ kernels. Install one (e.g. apt-get "
                "install g++) or set compile=false."
            )
    else:
        raise ConfigError(f"compile=true supports CUDA and CPU training, not {device_type!r}; set compile=false.")
    backbone.compile()
    return backbone


def training_device_type(accelerator: str) -> str:
    """The device type training will use for ``accelerator`` (``auto`` picks CUDA when present).

    Example:
        >>> training_device_type("cpu")
        'cpu'
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu" if accelerator in ("auto", "cpu", "gpu", "cuda") else accelerator
