"""Reusable building blocks for self-supervised methods (depends on torch only)."""
from selfsup.nn.distributed import gather, gather_no_grad, is_distributed, rank, world_size
from selfsup.nn.memory_bank import MemoryBank
from selfsup.nn.mlp import MLP
from selfsup.nn.precision import at_least_fp32
from selfsup.nn.momentum import copy_frozen, cosine_momentum, ema_update

__all__ = [
    "MLP",
    "MemoryBank",
    "at_least_fp32",
    "copy_frozen",
    "cosine_momentum",
    "ema_update",
    "gather",
    "gather_no_grad",
    "is_distributed",
    "rank",
    "world_size",
]
