"""CAPI: the positionwise Sinkhorn, the clustering and prediction losses against slow float64
references of the official formulas, the masks, the predictor's independence of other queries,
the optimizer groups, the distributed balance, and the optional comparison with lightly."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import selfsup
from distributed import run_distributed
from selfsup.engine.optim import OptimizerConfig, build_optimizer
from selfsup.losses.capi import OnlineClustering, capi_prediction_loss, positionwise_sinkhorn
from selfsup.methods import METHODS
from selfsup.nn.capi_predictor import CAPIPredictor, inverse_block_masks


def reference_sinkhorn(logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """The official loop, written out per position and per entry in float64."""
    b, n, k = logits.shape
    out = torch.zeros(b, n, k, dtype=torch.float64)
    for pos in range(n):
        top = [max(float(logits[i, pos, c].detach()) for i in range(b)) for c in range(k)]  # official stable_exp
        m = [[math.exp(float(logits[i, pos, c].detach()) - top[c] + 50) for c in range(k)] for i in range(b)]
        for _ in range(iterations):
            cols = [sum(m[i][c] for i in range(b)) for c in range(k)]
            m = [[m[i][c] / (cols[c] + 1e-8) for c in range(k)] for i in range(b)]
            rows = [sum(m[i]) for i in range(b)]
            m = [[m[i][c] / (rows[i] + 1e-8) for c in range(k)] for i in range(b)]
        out[:, pos] = torch.tensor(m, dtype=torch.float64)
    return out


def test_positionwise_sinkhorn_equals_the_official_loop_and_balances_each_position():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 5, generator=g, dtype=torch.float64) * 3
    torch.testing.assert_close(positionwise_sinkhorn(logits, iterations=3), reference_sinkhorn(logits, 3),
                               rtol=1e-10, atol=1e-12)
    balanced = positionwise_sinkhorn(logits, iterations=200)
    torch.testing.assert_close(balanced.sum(-1), torch.ones(6, 3, dtype=torch.float64))
    torch.testing.assert_close(balanced.sum(0), torch.full((3, 5), 6 / 5, dtype=torch.float64), atol=1e-6, rtol=0)


def test_clustering_and_prediction_losses_equal_their_formulas():
    g = torch.Generator().manual_seed(1)
    head = OnlineClustering(8, 5, target_temp=0.06, pred_temp=0.12).double()
    tokens = torch.randn(4, 3, 8, generator=g, dtype=torch.float64)
    targets, loss = head(tokens)
    x = tokens / tokens.norm(dim=-1, keepdim=True)
    logits = x @ head.layer.weight.T + head.layer.bias
    want_targets = reference_sinkhorn(logits / 0.06, 3)
    log_p = logits / 0.12 - torch.logsumexp(logits / 0.12, dim=-1, keepdim=True)
    torch.testing.assert_close(targets, want_targets, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, -(want_targets * log_p).sum(-1).mean(), rtol=1e-10, atol=1e-12)
    loss.backward()  # the targets are constants: d loss / d logits = (softmax(logits / T) - targets) / (T B N)
    grad = (torch.softmax(logits / 0.12, -1) - want_targets) / 0.12 / 12
    torch.testing.assert_close(head.layer.bias.grad, grad.sum((0, 1)), rtol=1e-6, atol=1e-8)

    student = torch.randn(4, 2, 5, generator=g, dtype=torch.float64)
    picked = targets[:, :2]
    want = -(picked * F.log_softmax(student / 0.12, dim=-1)).sum(-1).mean()
    torch.testing.assert_close(capi_prediction_loss(student, picked, 0.12), want, rtol=1e-10, atol=1e-12)


def test_inverse_block_masks_keep_one_rolled_block_and_predict_masked_patches():
    torch.manual_seed(0)
    grid, seen = 7, torch.zeros(49)
    for _ in range(50):
        visible, predict = inverse_block_masks(4, grid, grid, mask_ratio=0.65, prediction_share=0.25)
        assert visible.shape == (4, 49 - 31) and predict.shape == (4, 7)  # int(49 * 0.65) = 31 masked
        for v, p in zip(visible, predict):
            assert len(set(v.tolist())) == 18 and not set(v.tolist()) & set(p.tolist())
            rows, cols = {int(i) // grid for i in v}, {int(i) // grid for i in v}
            # one block of at most 3 x 6 or 6 x 3 cells (aspect 1/2 .. 2), possibly wrapped around the edges
            assert len(rows) * len({int(i) % grid for i in v}) <= 36 and len(cols) <= 6
            seen[v] += 1
    assert (seen > 0).all()  # the roll moves the block everywhere


def test_each_prediction_depends_only_on_its_own_position():
    """Queries attend to the encoder's tokens, never to each other (official decoder)."""
    torch.manual_seed(0)
    predictor = CAPIPredictor(context_dim=24, dim=16, depth=2, num_heads=2).eval()
    tokens, visible = torch.randn(1, 1 + 4, 24), torch.tensor([[0, 1, 2, 3]])
    a = predictor(tokens, visible, torch.tensor([[5, 9]]), 4, 4, 1)
    b = predictor(tokens, visible, torch.tensor([[5, 12]]), 4, 4, 1)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1], b[:, 1])  # another position, another prediction


def test_the_clustering_head_and_patch_embedding_have_their_own_learning_rates():
    vit = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=1, in_channels=1)
    method = METHODS.factory("capi")(vit, **METHODS.card("capi").small)
    optimizer = build_optimizer(method.parameter_groups(0.05), OptimizerConfig(name="adamw", lr=1e-3,
                                lr_scaling="none", weight_decay=0.05, exclude_bias_and_norm=False), 256)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["decay"]["peak_lr"] == pytest.approx(1e-3) and groups["decay"]["weight_decay"] == 0.05
    assert groups["clustering"]["peak_lr"] == pytest.approx(5e-4) and groups["clustering"]["weight_decay"] == 0.01
    assert groups["patch_embed_decay"]["peak_lr"] == pytest.approx(2e-4)
    clustering = {id(p) for p in method.clustering.parameters()}
    assert {id(p) for p in groups["clustering"]["params"]} == clustering
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(
        [p for p in method.parameters() if p.requires_grad])


def _sinkhorn_worker(rank: int, world: int, logits: torch.Tensor) -> dict:
    half = len(logits) // world
    return {"part": positionwise_sinkhorn(logits[rank * half:(rank + 1) * half], iterations=3)}


def test_two_processes_balance_over_the_whole_batch(tmp_path):
    logits = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(4)) * 2
    parts = run_distributed(_sinkhorn_worker, tmp_path, logits)
    torch.testing.assert_close(torch.cat([p["part"] for p in parts]), positionwise_sinkhorn(logits, 3),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Optional comparison with lightly (installed by benchmarks/parity/setup.sh)
# ---------------------------------------------------------------------------------------------


def test_capi_losses_equal_lightlys():
    """lightly 1.6's CAPILoss: Sinkhorn over (batch, position, cluster) logits, then the targets
    gathered at the predicted positions; used with the teacher's logits as the student's, it is the
    clustering loss."""
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is not installed (bash benchmarks/parity/setup.sh)")
    capi = lightly_loss.CAPILoss(teacher_temperature=0.06, student_temperature=0.12)
    g = torch.Generator().manual_seed(3)
    teacher_logits = torch.randn(6, 9, 16, generator=g) * 2
    student_logits = torch.randn(6, 4, 16, generator=g)
    index = torch.stack([torch.randperm(9, generator=g)[:4] for _ in range(6)])
    targets = positionwise_sinkhorn(teacher_logits / 0.06, 3)
    picked = torch.gather(targets, 1, index.unsqueeze(-1).expand(-1, -1, 16))
    torch.testing.assert_close(capi_prediction_loss(student_logits, picked, 0.12),
                               capi(teacher_logits, student_logits, index), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(capi_prediction_loss(teacher_logits, targets, 0.12),
                               capi(teacher_logits, teacher_logits), rtol=1e-5, atol=1e-6)
