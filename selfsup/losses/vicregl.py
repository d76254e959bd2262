"""VICRegL's loss: VICReg on the pooled embeddings plus VICReg between matched feature-map cells."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.vicreg import VICRegLoss
from selfsup.nn.distributed import gather
from selfsup.nn.precision import at_least_fp32

__all__ = ["VICRegLLoss", "nearest_matches"]


def nearest_matches(inputs: torch.Tensor, candidates: torch.Tensor, distances: torch.Tensor,
                    num_matches: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair each cell of ``inputs`` with its nearest cell of ``candidates`` and keep the
    ``num_matches`` pairs with the smallest distances (all when None or larger than the map).

    ``inputs`` ``(B, L1, c)``, ``candidates`` ``(B, L2, c)``, ``distances`` ``(B, L1, L2)``. The
    kept cells stay in their index order, as in the official code, so slot ``m`` of every sample is
    its ``m``-th kept cell. Returns the kept cells and their matches, both ``(B, k, c)``.

    Example:
        >>> a, b = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
        >>> kept, matched = nearest_matches(a, b, torch.cdist(a, b), 2)
        >>> kept.shape, matched.shape
        (torch.Size([2, 2, 3]), torch.Size([2, 2, 3]))
    """
    nearest_distance, nearest = distances.min(dim=2)  # (B, L1)
    k = inputs.shape[1] if num_matches is None else min(int(num_matches), inputs.shape[1])
    keep = nearest_distance.topk(k, dim=1, largest=False).indices.sort(dim=1).values  # (B, k)
    width = inputs.shape[-1]
    kept = inputs.gather(1, keep.unsqueeze(-1).expand(-1, -1, width))
    matched = candidates.gather(1, nearest.gather(1, keep).unsqueeze(-1).expand(-1, -1, width))
    return kept, matched


class VICRegLLoss(nn.Module):
    """VICRegL's criterion: ``alpha * global + (1 - alpha) * local``.

    Bardes, Ponce, LeCun, "VICRegL: Self-Supervised Learning of Local Visual Features", NeurIPS
    2022, https://arxiv.org/abs/2210.01571, Sec. 3 and the official code
    (https://github.com/facebookresearch/VICRegL, ``main_vicregl.py``), whose choices this follows:

    * global: VICReg on the pooled embeddings; the invariance ``sim_weight * MSE(e_i, e_j)`` is
      averaged over the ordered pairs ``(i, j)``, ``i`` one of the first two views, ``j != i``; the
      variance hinge and the covariance penalty (``sum_{a != b} Cov_ab^2 / d``) are averaged over
      all views (so with two views the covariance is half of :class:`VICRegLoss`'s, which sums);
    * local, for each such pair of maps (``(B, L, c)`` cell embeddings): every cell of one map is
      paired with its nearest cell of the other, once by distance in embedding space (all pairs
      kept, the official ``l2_all_matches=1``) and once by distance between the cells' source
      positions (the ``num_matches[0]`` closest pairs from map ``i``, ``num_matches[1]`` from map
      ``j``; the official 20 and 4 on 7 x 7 maps); each of the four matchings gives a VICReg
      loss whose variance and covariance are taken per kept slot over the batch, and each pair's
      local terms are the averages of the two directions, summed over the two kinds of matching;
      the local terms are averaged over the pairs.

    Variance and covariance use the embeddings of all processes when ``gather_distributed``.
    ``num_matches`` larger than a map keeps all its cells (the official code would fail).

    Example:
        >>> loss_fn = VICRegLLoss(num_matches=(4, 2))
        >>> e = [torch.randn(8, 16) for _ in range(2)]
        >>> maps = [torch.randn(8, 9, 16) for _ in range(2)]
        >>> where = [torch.rand(8, 9, 2) * 32 for _ in range(2)]
        >>> loss, terms = loss_fn(e, maps, where)
        >>> sorted(terms)
        ['global_cov', 'global_inv', 'global_var', 'local_cov', 'local_inv', 'local_var']
    """

    def __init__(self, alpha: float = 0.75, sim_weight: float = 25.0, var_weight: float = 25.0,
                 cov_weight: float = 1.0, num_matches: Sequence[int] = (20, 4), l2_all_matches: bool = True,
                 gamma: float = 1.0, eps: float = 1e-4, gather_distributed: bool = True) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"VICRegLLoss alpha must be in [0, 1], got {alpha}")
        if len(num_matches) != 2 or min(num_matches) < 1:
            raise ValueError(f"VICRegLLoss num_matches must be two integers >= 1, got {num_matches!r}")
        self.alpha = float(alpha)
        self.num_matches = (int(num_matches[0]), int(num_matches[1]))
        self.l2_all_matches = bool(l2_all_matches)
        self.vicreg = VICRegLoss(sim_weight, var_weight, cov_weight, gamma, eps, gather_distributed)

    def forward(self, embeddings: Sequence[torch.Tensor], maps: Sequence[torch.Tensor],
                locations: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and its six weighted terms, for per-view ``embeddings`` ``(B, d)``, cell
        embeddings ``maps`` ``(B, L_v, c)`` and the cells' source ``locations`` ``(B, L_v, 2)``."""
        if len(embeddings) < 2 or len(maps) != len(embeddings) or len(locations) != len(embeddings):
            raise ValueError(f"VICRegLLoss needs at least two views and one map and location grid per view; got "
                             f"{len(embeddings)} embeddings, {len(maps)} maps, {len(locations)} location grids")
        device = embeddings[0].device
        with torch.autocast(device.type, enabled=False):
            zero = torch.zeros((), device=device)
            terms = {f"{part}_{term}": zero for part in ("global", "local") for term in ("inv", "var", "cov")}
            if self.alpha > 0:
                terms.update(zip(("global_inv", "global_var", "global_cov"),
                                 self.global_terms([at_least_fp32(e) for e in embeddings])))
            if self.alpha < 1:
                terms.update(zip(("local_inv", "local_var", "local_cov"),
                                 self.local_terms([at_least_fp32(m) for m in maps], locations)))
            loss = (self.alpha * (terms["global_inv"] + terms["global_var"] + terms["global_cov"])
                    + (1 - self.alpha) * (terms["local_inv"] + terms["local_var"] + terms["local_cov"]))
        return loss, terms

    def _pairs(self, num_views: int) -> list[tuple[int, int]]:
        return [(i, j) for i in range(2) for j in range(num_views) if j != i]

    def _gathered(self, z: torch.Tensor) -> torch.Tensor:
        return gather(z) if self.vicreg.gather_distributed else z

    def global_terms(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Weighted invariance, variance and covariance of the pooled embeddings."""
        v = self.vicreg
        pairs = self._pairs(len(embeddings))
        invariance = sum(F.mse_loss(embeddings[i], embeddings[j]) for i, j in pairs) / len(pairs)
        gathered = [self._gathered(e) for e in embeddings]
        variance = sum(v.variance(z) for z in gathered) / len(gathered)
        covariance = sum(v.covariance(z) for z in gathered) / len(gathered)
        return v.sim_weight * invariance, v.var_weight * variance, v.cov_weight * covariance

    def local_terms(self, maps: Sequence[torch.Tensor], locations: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Weighted invariance, variance and covariance of the matched cells, averaged over pairs."""
        totals = [torch.zeros((), device=maps[0].device) for _ in range(3)]
        pairs = self._pairs(len(maps))
        for i, j in pairs:
            with torch.no_grad():
                by_embedding = torch.cdist(maps[i].detach(), maps[j].detach())
                by_location = torch.cdist(locations[i], locations[j])
            l2_matches = (None, None) if self.l2_all_matches else self.num_matches
            for distances, counts in ((by_embedding, l2_matches), (by_location, self.num_matches)):
                forward = self.matched_terms(*nearest_matches(maps[i], maps[j], distances, counts[0]))
                backward = self.matched_terms(*nearest_matches(maps[j], maps[i], distances.transpose(1, 2), counts[1]))
                for k in range(3):
                    totals[k] = totals[k] + (forward[k] + backward[k]) / 2
        return tuple(total / len(pairs) for total in totals)

    def matched_terms(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """VICReg between matched cells ``(B, k, c)``: MSE, and variance and covariance of each slot
        over the (gathered) batch, averaged over the slots and the two sides."""
        v = self.vicreg
        invariance = F.mse_loss(x, y)
        x, y = self._gathered(x), self._gathered(y)
        variance = (v.variance(x) + v.variance(y)) / 2  # the hinge averages over slots and channels alike
        covariance = (self._slot_covariance(x) + self._slot_covariance(y)) / 2
        return v.sim_weight * invariance, v.var_weight * variance, v.cov_weight * covariance

    @staticmethod
    def _slot_covariance(z: torch.Tensor) -> torch.Tensor:
        n, _, c = z.shape
        z = z - z.mean(dim=0)
        cov = torch.einsum("nkc,nkd->kcd", z, z) / (n - 1)  # (k, c, c)
        off_diagonal = cov.pow(2).sum(dim=(1, 2)) - torch.diagonal(cov, dim1=1, dim2=2).pow(2).sum(dim=1)
        return (off_diagonal / c).mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, num_matches={self.num_matches}, l2_all_matches={self.l2_all_matches}"
