"""NPID's non-parametric instance discrimination: a memory bank and NCE (or the exact softmax)."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.broadcast import broadcast_from_rank0
from selfsup.nn.distributed import gather_no_grad, is_distributed, world_size
from selfsup.nn.precision import at_least_fp32

__all__ = ["NPIDLoss"]

_EPS = 1e-7  # added to the NCE denominators, as in the official NCECriterion
_FULL_PRODUCT_RATIO = 16  # score against the whole bank when n <= this times K + 1 (see the class docstring)


class NPIDLoss(nn.Module):
    """Non-parametric softmax over a memory bank of one vector per training image, with NCE.

    Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", 2018, https://arxiv.org/abs/1805.01978, Eqs. 2-7; official code
    https://github.com/zhirongw/lemniscate.pytorch (``NCEAverage``, ``NCECriterion``,
    ``LinearAverage``). Image ``i``'s feature ``f_i`` (L2-normalised) should be recognised as
    instance ``i`` among all ``n`` memory entries ``v_j``: ``P(i | f) = exp(v_i . f / T) / Z``.

    **NCE** (``num_negatives = K > 0``, the paper's): ``K`` noise indices are drawn uniformly (with
    replacement, from this module's seeded ``generator``) for each sample, ``P_n = 1 / n``, and
    with ``P(j | f) = exp(v_j . f / T) / Z`` the loss (Eq. 6) is::

        -1/B sum_b [ log( P(i_b | f_b) / (P(i_b | f_b) + K P_n) ) + sum_k log( K P_n / (P(j_bk | f_b) + K P_n) ) ]

    ``Z`` is estimated once, on the first batch, as ``n`` times the mean of ``exp(v . f / T)`` over
    that batch's positive and noise entries (Eq. 7 with the official code's one-off estimate), and
    kept in the buffer ``z`` (-1 until set; averaged over processes).

    **Exact softmax** (``num_negatives = 0``, the official ``LinearAverage``): cross-entropy of
    ``f . memory^T / T`` with the sample's own index as the class.

    **Memory** (``memory`` buffer, ``(n, dim)``): starts uniform in ``[-s, s]``, ``s = 1 /
    sqrt(dim / 3)`` as in the official code (the paper, Sec. 3.1: "unit random vectors"), and after
    each optimizer step :meth:`update_memory` sets ``v_i <- normalise(m v_i + (1 - m) f_i)``
    (Sec. 3.3, ``m = 0.5``) for the batch's indices, gathering those of all processes so every rank
    holds the same bank. :meth:`fill_memory` instead sets every row at once (NPID's
    ``memory_init="features"`` fills it with the initial network's embeddings); the buffer
    ``memory_filled`` records that it happened, so a resumed run does not fill it again.

    With ``n <= 16 (K + 1)`` (CIFAR, Fashion-MNIST) the scores of the positive and noise entries are
    read from the product of the batch with the whole bank; otherwise (ImageNet) the ``B (K + 1)``
    rows are gathered first, as the official code does. Both give the same values: on a 2-core CPU
    (n = 54,000, K = 4,096, B = 256, dim 128) forward and backward took 0.40 s the first way and
    2.3 s the second.

    Args:
        num_samples: ``n``, the training-set size.
        dim: Feature width (128).
        temperature: ``T`` (0.07 in the paper's ImageNet runs; the official CIFAR script uses 0.1).
        num_negatives: ``K`` noise samples (4096); 0 for the exact softmax.
        momentum: ``m`` of the memory update (0.5).
        seed: Seed of the noise sampler.

    Raises:
        ValueError: A non-positive size, width or temperature, ``K < 0`` or ``m`` outside [0, 1].

    Example:
        >>> loss_fn = NPIDLoss(num_samples=100, dim=16, num_negatives=32)
        >>> loss = loss_fn(F.normalize(torch.randn(8, 16)), torch.arange(8))
    """

    memory: Tensor
    memory_filled: Tensor
    z: Tensor

    def __init__(
        self, num_samples: int, dim: int = 128, temperature: float = 0.07,
        num_negatives: int = 4096, momentum: float = 0.5, seed: int = 0,
    ) -> None:
        super().__init__()
        if num_samples < 1 or dim < 1:
            raise ValueError(f"NPIDLoss needs num_samples, dim >= 1, got {num_samples}, {dim}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"NPIDLoss temperature must be finite and > 0, got {temperature}")
        if num_negatives < 0:
            raise ValueError(f"NPIDLoss num_negatives must be >= 0, got {num_negatives}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"NPIDLoss momentum must be in [0, 1], got {momentum}")
        self.num_samples, self.dim = int(num_samples), int(dim)
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.num_negatives = int(num_negatives)
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory", torch.rand(num_samples, dim) * 2 * bound - bound)
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.bool))
        self.register_buffer("z", torch.tensor(-1.0))
        self.generator = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict[str, Tensor]:
        """The noise sampler's generator state, so checkpoints resume the same negatives."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def sample_negatives(self, batch_size: int) -> Tensor:
        """Draw ``(batch_size, K)`` noise indices uniformly from ``[0, n)`` with the seeded generator.

        Example:
            >>> NPIDLoss(num_samples=10, dim=4, num_negatives=3).sample_negatives(2).shape
            torch.Size([2, 3])
        """
        shape = (batch_size, self.num_negatives)
        return torch.randint(self.num_samples, shape, generator=self.generator).to(self.memory.device)

    def forward(self, features: Tensor, indices: Tensor, negatives: Tensor | None = None) -> Tensor:
        """Return the scalar loss of features ``(B, dim)`` of the images ``indices`` ``(B,)``.

        ``negatives`` ``(B, K)`` overrides the sampled noise indices (for tests).

        Example:
            >>> loss_fn = NPIDLoss(num_samples=20, dim=8, num_negatives=4)
            >>> loss_fn(torch.randn(2, 8), torch.tensor([3, 9]), torch.tensor([[0, 1, 2, 4]] * 2)).shape
            torch.Size([])
        """
        if features.dim() != 2 or features.shape[1] != self.dim or indices.shape != features.shape[:1]:
            raise ValueError(
                f"NPIDLoss expects features (B, {self.dim}) and indices (B,), got "
                f"{tuple(features.shape)} and {tuple(indices.shape)}"
            )
        with torch.autocast(features.device.type, enabled=False):
            f = F.normalize(at_least_fp32(features), dim=1)
            memory = self.memory.to(f.dtype)
            if self.num_negatives == 0:
                return F.cross_entropy(f @ memory.T / self.temperature, indices)
            if negatives is None:
                negatives = self.sample_negatives(f.shape[0])
            idx = torch.cat([indices[:, None], negatives.to(indices.device)], dim=1)  # (B, K+1)
            if self.num_samples <= _FULL_PRODUCT_RATIO * (self.num_negatives + 1):
                dots = (f @ memory.T).gather(1, idx)  # (B, K+1); update the memory after backward
            else:
                weights = memory[idx]  # (B, K+1, dim), a copy: the later memory update is safe
                dots = torch.einsum("bkd,bd->bk", weights, f)
            scores = torch.exp(dots / self.temperature)
            if float(self.z) < 0:
                self._estimate_z(scores.detach())
            probs = scores / self.z.to(scores.dtype)
            noise = self.num_negatives / self.num_samples  # K P_n
            log_model = torch.log(probs[:, 0] / (probs[:, 0] + noise + _EPS))
            log_noise = torch.log(noise / (probs[:, 1:] + noise + _EPS))
            return -(log_model.sum() + log_noise.sum()) / f.shape[0]

    @torch.no_grad()
    def _estimate_z(self, scores: Tensor) -> None:
        """Set ``Z = n * mean(scores)`` (Eq. 7, estimated once), averaged over processes."""
        z = scores.mean() * self.num_samples
        if is_distributed() and world_size() > 1:
            dist.all_reduce(z)
            z = z / world_size()
        self.z.fill_(float(z))

    @torch.no_grad()
    def fill_memory(self, embeddings: Tensor) -> None:
        """Set every memory row ``v_i`` to ``normalise(embeddings[i])`` and mark the memory filled.

        ``embeddings`` is ``(n, dim)``, row ``i`` for training image ``i``. With several processes
        every rank takes rank 0's rows (a collective call: every rank must make it), so the banks
        are equal even if the ranks computed slightly different embeddings. ``Z`` is estimated
        again on the next batch (it depends on the memory). Sets ``memory_filled``.

        Raises:
            ValueError: ``embeddings`` is not ``(num_samples, dim)`` or holds a non-finite value.

        Example:
            >>> loss_fn = NPIDLoss(num_samples=10, dim=4, num_negatives=3)
            >>> loss_fn.fill_memory(torch.randn(10, 4))
            >>> bool(loss_fn.memory_filled)
            True
        """
        if tuple(embeddings.shape) != (self.num_samples, self.dim):
            raise ValueError(
                f"NPIDLoss.fill_memory expects embeddings ({self.num_samples}, {self.dim}): one row per "
                f"training image, got {tuple(embeddings.shape)}"
            )
        values = F.normalize(embeddings.detach().to(self.memory), dim=1)
        if not bool(torch.isfinite(values).all()):
            raise ValueError("NPIDLoss.fill_memory got embeddings with NaN or infinite values")
        self.memory.copy_(broadcast_from_rank0(values))
        self.z.fill_(-1.0)
        self.memory_filled.fill_(True)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # checkpoints written before ``memory_filled`` existed hold a memory already in use: never refill it
        state_dict.setdefault(prefix + "memory_filled", torch.ones((), dtype=torch.bool))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update_memory(self, features: Tensor, indices: Tensor) -> None:
        """``v_i <- normalise(m v_i + (1 - m) f_i)`` for the given (normalised here) features.

        Example:
            >>> loss_fn = NPIDLoss(num_samples=10, dim=4, num_negatives=3)
            >>> loss_fn.update_memory(torch.randn(2, 4), torch.tensor([0, 5]))
        """
        f = F.normalize(features.detach().float(), dim=1)
        if is_distributed():
            f, indices = gather_no_grad(f), gather_no_grad(indices)
        updated = self.memory[indices] * self.momentum + f.to(self.memory) * (1 - self.momentum)
        self.memory.index_copy_(0, indices, F.normalize(updated, dim=1))

    def extra_repr(self) -> str:
        return (f"num_samples={self.num_samples}, dim={self.dim}, temperature={self.temperature}, "
                f"num_negatives={self.num_negatives}, momentum={self.momentum}")
