"""Which methods carry state outside the gradient, read from a built method instead of a hand list.

A method's checkpoint must restore more than its trainable weights when it keeps state that the
optimizer does not own: an EMA teacher (frozen copies of parameters), a queue or memory bank,
centres, prototypes computed by k-means, step counters (all buffers), or a module's extra state.
Exact resume is tested for every method :func:`is_stateful` marks (``tests/test_resume.py``).

Normalisation statistics (BatchNorm's running mean and variance) are left out: nearly every head
has them, the forward pass updates them, and they are not state a method manages.

Example:
    >>> method = selfsup.methods.get("byol", backbone=selfsup.backbones.get("resnet_tiny"))
    >>> is_stateful(method), state_outside_gradient(method)[:1]
    (True, ['target.backbone.stem.0.weight'])
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase


def state_outside_gradient(method: nn.Module, skip: str = "backbone") -> list[str]:
    """Names of the state ``method`` keeps beyond its trainable parameters, outside ``skip``.

    Returns the qualified names of: persistent buffers (except normalisation statistics), frozen
    parameters (``requires_grad=False``: momentum copies), and modules that define their own
    ``get_extra_state`` (listed as ``<module>._extra_state``). The submodule named ``skip`` (the
    backbone, whose own buffers are the same for every method) is not searched.
    """
    names: list[str] = []
    for prefix, module in method.named_modules():
        if prefix == skip or prefix.startswith(skip + "."):
            continue
        dot = f"{prefix}." if prefix else ""
        if not isinstance(module, _NormBase):
            names += [f"{dot}{name}" for name, buffer in module._buffers.items()
                      if buffer is not None and name not in module._non_persistent_buffers_set]
        names += [f"{dot}{name}" for name, param in module._parameters.items()
                  if param is not None and not param.requires_grad]
        if type(module).get_extra_state is not nn.Module.get_extra_state:
            names.append(f"{dot}_extra_state")
    return names


def is_stateful(method: nn.Module) -> bool:
    """True when ``method`` has state outside the gradient (see :func:`state_outside_gradient`).

    Example:
        >>> is_stateful(selfsup.methods.get("simclr", backbone=selfsup.backbones.get("resnet_tiny")))
        False
    """
    return bool(state_outside_gradient(method))
