"""MSN's loss: cross-entropy from sharpened target predictions to anchor predictions over
prototypes, plus a prior-matching regulariser on the mean anchor prediction (MSN, PMSN)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.distributed import gather, world_size
from selfsup.nn.precision import at_least_fp32
from selfsup.nn.sinkhorn import sinkhorn

__all__ = ["MSNLoss", "power_law_prior"]

PRIORS = ("uniform", "power_law")


def power_law_prior(num_prototypes: int, exponent: float = 0.25, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """``pi_k = k^(-exponent) / sum_j j^(-exponent)`` for ``k = 1..K``.

    The power-law cluster prior of PMSN: Assran et al. 2022, "The Hidden Uniform Cluster Prior in
    Self-Supervised Learning", arXiv 2210.07277 (https://arxiv.org/abs/2210.07277), Sec. 6, with
    exponent ``tau = 0.25``; official code https://github.com/facebookresearch/msn. Exponent 0
    gives the uniform prior.

    Example:
        >>> power_law_prior(4, 0.0)
        tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """
    if num_prototypes < 1 or exponent < 0:
        raise ValueError(f"power_law_prior needs num_prototypes >= 1 and exponent >= 0, got {num_prototypes}, {exponent}")
    weights = torch.arange(1, num_prototypes + 1, dtype=torch.float64).pow(-float(exponent))
    return (weights / weights.sum()).to(device=device, dtype=dtype)


class MSNLoss(nn.Module):
    """``mean_{a,i} H(p+_i, p_{a,i}) + lambda * KL(mean_{a,i} p_{a,i} || prior)``.

    Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning", arXiv 2204.07141
    (https://arxiv.org/abs/2204.07141), Eq. 1-2; official code
    https://github.com/facebookresearch/msn (``src/losses.py``). With cosine similarities
    ``s = cos(z, q_k)`` of a representation to the prototypes, the anchor prediction is
    ``p = softmax(s / tau)`` and the target ``p+ = sharpen(softmax(s+ / tau), T)``, i.e.
    ``softmax(s+ / (tau T))``, followed (official configs ``use_sinkhorn: true``) by
    ``sinkhorn_iterations`` Sinkhorn-Knopp steps started from those probabilities; targets carry no
    gradient and each target serves every anchor view of the same image. The cross-entropy is
    averaged over all anchor rows. The regulariser compares the mean anchor prediction ``p_bar``
    (over the global batch and all anchor views) with a prior: ``"uniform"`` gives MSN's
    mean-entropy maximisation ``KL(p_bar || U) = log K - H(p_bar)`` (the paper's ``-H(p_bar)`` up
    to a constant, as in the official code); ``"power_law"`` gives PMSN's ``KL(p_bar || pi)``
    with ``pi_k`` proportional to ``k^(-power_law_exponent)`` (Assran et al. 2022, "The Hidden
    Uniform Cluster Prior in Self-Supervised Learning", arXiv 2210.07277,
    https://arxiv.org/abs/2210.07277), which reduces to MSN's term for a uniform prior (lightly's
    ``PMSNLoss`` computes the reverse direction ``KL(pi || p_bar)``). Computed in at least fp32.

    Args:
        temperature: ``tau`` of the anchor predictions (0.1).
        sharpen_temperature: ``T`` (0.25), so the targets' temperature is ``tau T = 0.025``.
        sinkhorn_iterations: Sinkhorn-Knopp steps on the targets; 0 turns it off.
        regularization_weight: ``lambda`` (1).
        prior: ``"uniform"`` (MSN) or ``"power_law"`` (PMSN).
        power_law_exponent: the power law's exponent (0.25 in PMSN).
        gather_distributed: average ``p_bar`` and run Sinkhorn over all processes.

    Example:
        >>> loss_fn = MSNLoss()
        >>> loss_fn(torch.rand(3, 8, 16) * 2 - 1, torch.rand(8, 16) * 2 - 1).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sharpen_temperature: float = 0.25,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1.0,
        prior: str = "uniform",
        power_law_exponent: float = 0.25,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0 or sharpen_temperature <= 0 or sinkhorn_iterations < 0 or regularization_weight < 0:
            raise ValueError(
                "MSNLoss needs temperature > 0, sharpen_temperature > 0, sinkhorn_iterations >= 0 and "
                f"regularization_weight >= 0, got {temperature}, {sharpen_temperature}, {sinkhorn_iterations}, "
                f"{regularization_weight}"
            )
        if prior not in PRIORS or power_law_exponent < 0:
            raise ValueError(f"MSNLoss prior must be one of {PRIORS} and power_law_exponent >= 0, got {prior!r}, "
                             f"{power_law_exponent}")
        self.temperature, self.sharpen_temperature = temperature, sharpen_temperature
        self.sinkhorn_iterations, self.regularization_weight = sinkhorn_iterations, regularization_weight
        self.prior, self.power_law_exponent = prior, power_law_exponent
        self.gather_distributed = gather_distributed

    def prior_distribution(self, num_prototypes: int, like: Tensor) -> Tensor:
        """The prior ``(K,)`` the mean anchor prediction is pulled towards."""
        exponent = 0.0 if self.prior == "uniform" else self.power_law_exponent
        return power_law_prior(num_prototypes, exponent, dtype=like.dtype, device=like.device)

    @torch.no_grad()
    def targets(self, target_scores: Tensor) -> Tensor:
        """Sharpened (and Sinkhorn-balanced) target probabilities ``(B, K)`` from cosine scores."""
        eps = self.temperature * self.sharpen_temperature
        sharp_log = F.log_softmax(at_least_fp32(target_scores) / eps, dim=-1)
        if self.sinkhorn_iterations == 0:
            return sharp_log.exp()
        # exp(scores / eps) are then exactly the sharpened probabilities Sinkhorn starts from
        return sinkhorn(eps * sharp_log, epsilon=eps, iterations=self.sinkhorn_iterations,
                        gather_distributed=self.gather_distributed)

    def terms(self, anchor_scores: Tensor, target_scores: Tensor) -> dict[str, Tensor]:
        """``{"loss", "cross_entropy", "regularizer"}`` for anchor scores ``(A, B, K)`` (``A`` anchor
        views of the same ``B`` images) and target scores ``(B, K)``, cosine similarities."""
        if anchor_scores.dim() == 2:
            anchor_scores = anchor_scores.unsqueeze(0)
        if anchor_scores.dim() != 3 or target_scores.dim() != 2 or anchor_scores.shape[1:] != target_scores.shape:
            raise ValueError(
                "MSNLoss expects anchor scores (A, B, K) and target scores (B, K), got "
                f"{tuple(anchor_scores.shape)} and {tuple(target_scores.shape)}"
            )
        with torch.autocast(anchor_scores.device.type, enabled=False):
            targets = self.targets(target_scores.detach())
            log_probs = F.log_softmax(at_least_fp32(anchor_scores) / self.temperature, dim=-1)  # (A, B, K)
            cross_entropy = -(targets.unsqueeze(0) * log_probs).sum(dim=-1).mean()
            mean_probs = log_probs.exp().mean(dim=(0, 1))
            if self.gather_distributed and world_size() > 1:
                mean_probs = gather(mean_probs.unsqueeze(0)).mean(dim=0)
            prior = self.prior_distribution(mean_probs.shape[0], mean_probs)
            regularizer = (torch.xlogy(mean_probs, mean_probs) - mean_probs * prior.log()).sum()
            loss = cross_entropy + self.regularization_weight * regularizer
        return {"loss": loss, "cross_entropy": cross_entropy, "regularizer": regularizer}

    def forward(self, anchor_scores: Tensor, target_scores: Tensor) -> Tensor:
        """The scalar loss; see :meth:`terms`."""
        return self.terms(anchor_scores, target_scores)["loss"]

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, sharpen_temperature={self.sharpen_temperature}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}, regularization_weight={self.regularization_weight}, "
                f"prior={self.prior!r}" + (f", power_law_exponent={self.power_law_exponent}" if self.prior != "uniform" else ""))

