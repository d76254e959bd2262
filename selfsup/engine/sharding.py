"""Fully sharded data parallel training (``strategy: fsdp``) for ViT backbones too large to copy per process.

PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``; Zhao et al., "PyTorch FSDP: Experiences on
Scaling Fully Sharded Data Parallel", 2023, arXiv 2304.11277) under Lightning's
``ModelParallelStrategy``. What is sharded and what is not:

- every Vision Transformer in the method (the student backbone and each EMA teacher copied from it) is
  sharded block by block, each block a unit gathered just before it runs and freed after, plus one
  unit for the rest (patch embedding, class token, registers, position table, final norm), gathered
  for ``forward``, ``forward_tokens``, ``feature_map`` and ``last_attention``. A teacher is sharded
  exactly as its student, so the EMA update pairs shards of the same rows and needs no communication;
- the heads, predictors, prototypes, queues and the online probe stay whole on every process: they
  are small next to a ViT-L, their gradients are averaged over the processes by
  :func:`average_replicated_gradients` (one all-reduce), as DDP would.

Gradient clipping (:func:`sharded_grad_norm`) measures the norm over the shards of all processes.
Checkpoints are written whole (gathered on rank 0, the file a one-process run writes), so a run
resumes, evaluates and exports in one process as any other run; the monitor, the final test and the
export gather an unsharded copy of the backbone (:func:`unsharded_copy`).

    >>> import torch, selfsup
    >>> is_sharded(selfsup.backbones.get("vit_tiny", image_size=16, patch_size=4))
    False
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import Tensor, nn

from selfsup.backbones.vit import VisionTransformer

#: ``strategy`` values: ``auto`` (DDP when there are several processes), ``ddp``, ``fsdp`` (this module)
STRATEGIES = ("auto", "ddp", "fsdp")

#: the ViT methods that run its parameters and so gather its root unit (``forward`` always does)
GATHERING_METHODS = ("forward_tokens", "feature_map", "last_attention")


class ShardedStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as selfsup uses it: FSDP over all ``processes`` (no tensor
    parallelism), checkpoints written whole by rank 0, and a resume that loads the model strictly but
    the optimizer state leniently: a parameter that never received a gradient (a ViT's mask token
    under DINO) has no optimizer state, exactly as in a one-process checkpoint.

    Example:
        >>> strategy = ShardedStrategy(processes=2)  # L.Trainer(strategy=strategy, devices=2, ...)
        >>> strategy._save_distributed_checkpoint  # one whole checkpoint file, not a folder of shards
        False
    """

    def __init__(self, processes: int) -> None:
        super().__init__(data_parallel_size=processes, tensor_parallel_size=1, save_distributed_checkpoint=False)

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        from lightning.fabric.strategies.model_parallel import (
            _load_raw_module_state,
            _rekey_optimizer_state_if_needed,
        )
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        path = Path(self.broadcast(checkpoint_path))
        # a checkpoint is data: never unpickle code from it, whatever the caller passed
        checkpoint = torch.load(path, mmap=True, map_location="cpu", weights_only=True)
        _load_raw_module_state(checkpoint.pop("state_dict"), self.model, world_size=self.world_size, strict=True)
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        names = {p: n for n, p in self.model.named_parameters()}
        for state, optimizer in zip(checkpoint["optimizer_states"], self.optimizers):
            if state.get("state"):
                state = _rekey_optimizer_state_if_needed(state, self.model)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=state, options=options)
            # loading first gives every parameter a state (a step at learning rate 0); one that had
            # none (no gradient yet: a frozen last layer, an unused mask token) must start fresh, as
            # in the uninterrupted run, or Adam's bias correction would count that step
            saved = set(state.get("state", {}))
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if names.get(param) not in saved:
                        optimizer.state.pop(param, None)
        return checkpoint


def _dtensor_type() -> type:
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is a shard (a ``DTensor`` made by ``fully_shard``)."""
    dtensor = _dtensor_type()
    return any(isinstance(p, dtensor) for p in module.parameters())


def shardable_backbones(method: nn.Module) -> list[VisionTransformer]:
    """The Vision Transformers in ``method`` (its backbone and the teachers copied from it)."""
    return [m for m in method.modules() if isinstance(m, VisionTransformer)]


def shard_method(method: nn.Module, mesh) -> int:
    """Shard every Vision Transformer in ``method`` over ``mesh`` (block by block, then the rest);
    everything else stays whole. Parameters and buffers are first made equal to rank 0's, so every
    process shards, and keeps whole, the same values. Returns the number of ViTs sharded."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for tensor in [*method.parameters(), *method.buffers()]:
        dist.broadcast(tensor.data, src=0)
    vits = shardable_backbones(method)
    for vit in vits:
        for block in vit.blocks:
            fully_shard(block, mesh=mesh)
        empty = {p for p in vit.parameters() if p.numel() == 0}  # no registers: a (1, 0, D) table
        fully_shard(vit, mesh=mesh, ignored_params=empty or None)
        for name in GATHERING_METHODS:
            register_fsdp_forward_method(vit, name)
    return len(vits)


def reshard(method: nn.Module) -> None:
    """Free every gathered unit of ``method``, so its parameters are shards again. FSDP keeps a root
    unit gathered after its forward (its backward would gather it again); a teacher has no backward,
    so before the EMA update pairs teacher and student shards its units are resharded here."""
    from torch.distributed.fsdp import FSDPModule

    for module in method.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def local_tensor(tensor: Tensor) -> Tensor:
    """This process's shard of a sharded tensor; any other tensor as it is."""
    return tensor.to_local() if isinstance(tensor, _dtensor_type()) else tensor


def true_on_every_process(flags: Tensor) -> Tensor:
    """Element-wise AND of boolean ``flags`` over the processes (a collective)."""
    as_int = flags.to(torch.int32)
    if dist.is_initialized():
        dist.all_reduce(as_int, op=dist.ReduceOp.MIN)
    return as_int.bool()


def replicated_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``modules`` that are not shards (the whole copies on every process)."""
    dtensor = _dtensor_type()
    return [p for m in modules for p in m.parameters() if not isinstance(p, dtensor)]


@torch.no_grad()
def average_replicated_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients of whole (unsharded) parameters over the processes, in one all-reduce
    of their concatenation (what DDP does for them; FSDP averages the shards' gradients itself)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def sharded_grad_norm(parameters: Iterable[nn.Parameter]) -> Tensor:
    """The global L2 norm of the gradients of ``parameters``, shards and whole ones together:
    each shard's squares summed over the processes, a whole parameter's counted once."""
    dtensor = _dtensor_type()
    shard_squares, whole_squares = None, None
    for p in parameters:
        if p.grad is None:
            continue
        if isinstance(p.grad, dtensor):
            value = p.grad.to_local().float().pow(2).sum()
            shard_squares = value if shard_squares is None else shard_squares + value
        else:
            value = p.grad.float().pow(2).sum()
            whole_squares = value if whole_squares is None else whole_squares + value
    total = torch.zeros(()) if shard_squares is None else shard_squares
    if shard_squares is not None and dist.is_initialized():
        dist.all_reduce(total)
    if whole_squares is not None:
        total = total.to(whole_squares.device) + whole_squares
    return total.sqrt()


@torch.no_grad()
def clip_sharded_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor:
    """Scale the gradients so their global norm (:func:`sharded_grad_norm`) is at most ``max_norm``;
    returns the norm before clipping (as ``torch.nn.utils.clip_grad_norm_`` does in one process)."""
    parameters = [p for p in parameters if p.grad is not None]
    norm = sharded_grad_norm(parameters)
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for p in parameters:
        p.grad.mul_(scale.to(p.grad.device))
    return norm


def full_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """``module``'s state with every shard gathered into a whole tensor (a collective: every process
    calls it; each gets the whole state)."""
    dtensor = _dtensor_type()
    return {k: v.full_tensor() if isinstance(v, dtensor) else v for k, v in module.state_dict().items()}


def unsharded_copy(backbone: nn.Module) -> nn.Module:
    """A whole copy of a sharded ViT ``backbone`` (same class and settings, the gathered weights), in
    ``backbone``'s training mode; a collective. An unsharded backbone is returned as it is."""
    if not is_sharded(backbone):
        return backbone
    state = full_state_dict(backbone)
    whole = _rebuild(backbone)
    whole.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    device = next(iter(state.values())).device
    return whole.to(device).train(backbone.training)


def _rebuild(backbone: nn.Module) -> nn.Module:
    """A new, unsharded backbone built as ``backbone`` was: its registry name and recorded settings
    (what an export records, so the pool a method chose comes along)."""
    from selfsup import backbones

    with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: draw nothing from the run's stream
        rebuilt = backbones.get(backbone.name, **backbone.config)
    rebuilt.pool_requested = backbone.pool_requested
    return rebuilt
