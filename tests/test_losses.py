"""Losses vs slow float64 references written from the papers' formulas."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.losses import NegativeCosineSimilarity, NTXentLoss
from selfsup.nn import MemoryBank


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()


def ref_ntxent(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR Eq. 1 averaged over all 2N anchors, with explicit loops (float64, differentiable)."""
    z = _unit(torch.cat([z0, z1]).double())
    n2 = z.shape[0]
    n = n2 // 2
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n2):
        pos = (i + n) % n2
        num = torch.exp(_dot(z[i], z[pos]) / t)
        den = sum(torch.exp(_dot(z[i], z[j]) / t) for j in range(n2) if j != i)
        total = total - torch.log(num / den)
    return total / n2


def ref_moco(q: torch.Tensor, k: torch.Tensor, bank: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo Eq. 1: positive q.k+, negatives only the queued keys; mean over queries."""
    q, k, bank = _unit(q.double()), _unit(k.double()), bank.double()
    total = torch.zeros((), dtype=torch.float64)
    for i in range(q.shape[0]):
        pos = torch.exp(_dot(q[i], k[i]) / t)
        neg = sum(torch.exp(_dot(q[i], bank[j]) / t) for j in range(bank.shape[0]))
        total = total - torch.log(pos / (pos + neg))
    return total / q.shape[0]


@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 0.5, 1.0])
def test_ntxent_matches_reference(n: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(1000 * n + int(100 * temperature))
    z0 = torch.randn(n, 16, generator=g)
    z1 = z0 + 0.5 * torch.randn(n, 16, generator=g)
    got = NTXentLoss(temperature)(z0, z1)
    want = ref_ntxent(z0, z1, temperature)
    assert got.shape == ()
    assert got.item() == pytest.approx(float(want), abs=1e-5, rel=1e-5)


def test_ntxent_batch_of_one_is_zero() -> None:
    # With N = 1 each anchor has its positive and no negative: -log(1) = 0.
    z = torch.randn(1, 8)
    assert float(NTXentLoss(0.1)(z, torch.randn(1, 8))) == pytest.approx(0.0, abs=1e-6)


def test_ntxent_gradients_match_reference() -> None:
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    z1 = torch.randn(5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    NTXentLoss(0.3)(z0, z1).backward()
    r0 = z0.detach().clone().requires_grad_(True)
    r1 = z1.detach().clone().requires_grad_(True)
    ref_ntxent(r0, r1, 0.3).backward()
    assert z0.grad is not None and z1.grad is not None
    assert z0.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0
    torch.testing.assert_close(z0.grad, r0.grad, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(z1.grad, r1.grad, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_ntxent_rejects_bad_temperature(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(bad)


def test_ntxent_rejects_bad_memory_bank_args_and_shapes() -> None:
    with pytest.raises(ValueError, match="memory_bank_dim"):
        NTXentLoss(0.1, memory_bank_size=8)
    with pytest.raises(ValueError, match="memory_bank_size"):
        NTXentLoss(0.1, memory_bank_dim=8)
    with pytest.raises(ValueError, match="memory_bank_size"):
        NTXentLoss(0.1, memory_bank_size=-1)
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss(0.1)(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="memory_bank_dim"):
        NTXentLoss(0.1, memory_bank_size=8, memory_bank_dim=4)(torch.randn(2, 8), torch.randn(2, 8))


def test_ntxent_memory_bank_matches_reference_and_enqueues() -> None:
    size, dim, n, t = 10, 6, 4, 0.2
    g = torch.Generator().manual_seed(7)
    loss_fn = NTXentLoss(t, memory_bank_size=size, memory_bank_dim=dim)
    bank0 = _unit(torch.randn(size, dim, generator=g))
    loss_fn.memory_bank.bank.copy_(bank0)
    loss_fn.memory_bank.ptr.fill_(8)  # 4 keys from 8 wrap around: rows 8, 9, 0, 1

    q = torch.randn(n, dim, generator=g, requires_grad=True)
    k = torch.randn(n, dim, generator=g, requires_grad=True)
    loss = loss_fn(q, k)
    want = ref_moco(q.detach(), k.detach(), bank0, t).item()
    assert loss.item() == pytest.approx(want, abs=1e-5, rel=1e-5)

    expected = bank0.clone()
    expected[[8, 9, 0, 1]] = _unit(k.detach())
    torch.testing.assert_close(loss_fn.memory_bank.bank, expected)
    assert int(loss_fn.memory_bank.ptr) == 2

    loss.backward()  # the in-place enqueue must not break the graph
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is not None and k.grad.abs().sum() > 0

    # The next step sees the updated queue.
    q2, k2 = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    loss2 = loss_fn(q2, k2)
    assert float(loss2) == pytest.approx(float(ref_moco(q2, k2, expected, t)), abs=1e-5, rel=1e-5)
    expected[[2, 3, 4, 5]] = _unit(k2)
    torch.testing.assert_close(loss_fn.memory_bank.bank, expected)
    assert int(loss_fn.memory_bank.ptr) == 6


def test_ntxent_memory_bank_eval_mode_does_not_enqueue_and_state_dict() -> None:
    loss_fn = NTXentLoss(0.1, memory_bank_size=8, memory_bank_dim=4)
    assert set(loss_fn.state_dict()) == {"memory_bank.bank", "memory_bank.ptr"}
    before = loss_fn.memory_bank.bank.clone()
    loss_fn.eval()
    loss_fn(torch.randn(3, 4), torch.randn(3, 4))
    torch.testing.assert_close(loss_fn.memory_bank.bank, before)
    assert int(loss_fn.memory_bank.ptr) == 0

    loss_fn.train()
    loss_fn(torch.randn(3, 4), torch.randn(3, 4))
    other = NTXentLoss(0.1, memory_bank_size=8, memory_bank_dim=4)
    other.load_state_dict(loss_fn.state_dict())
    torch.testing.assert_close(other.memory_bank.bank, loss_fn.memory_bank.bank)
    assert int(other.memory_bank.ptr) == 3


def test_negative_cosine_matches_reference() -> None:
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(6, 9, generator=g, requires_grad=True)
    x1 = torch.randn(6, 9, generator=g)
    got = NegativeCosineSimilarity()(x0, x1)
    a, b = x0.detach().double(), x1.double()
    want = -sum(
        float(_dot(a[i], b[i]) / (a[i].norm() * b[i].norm())) for i in range(a.shape[0])
    ) / a.shape[0]
    assert got.item() == pytest.approx(want, abs=1e-5)
    got.backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    # dim=0 compares columns instead of rows.
    want_cols = -sum(
        float(_dot(a[:, j], b[:, j]) / (a[:, j].norm() * b[:, j].norm())) for j in range(a.shape[1])
    ) / a.shape[1]
    got_cols = NegativeCosineSimilarity(dim=0)(x0.detach(), x1)
    assert float(got_cols) == pytest.approx(want_cols, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Two-process test of gather_distributed.
#
# Single process: L = mean over all 2WN rows = (1/W) sum_r L_r, where L_r is the mean over rank r's
# 2N rows, each against the global batch (W = 2 ranks, N rows per rank). So the mean of the
# per-rank losses must equal L.
#
# Gradients: rank r backpropagates only L_r, but gather's backward sums over ranks the gradient
# every rank's loss sends to rank r's rows, so rank r's input gradient is sum_s dL_s/dz_r
# = W * dL/dz_r. DDP then averages parameter gradients over ranks:
# (1/W) sum_r sum_s dL_s/dz_r dz_r/dtheta = dL/dtheta. Hence we check
#   (a) input grads on rank r, divided by W, equal the single-process grads of rank r's rows;
#   (b) the rank average of a shared Linear layer's weight gradient (what DDP produces) equals
#       the single-process weight gradient.
# ---------------------------------------------------------------------------------------------

_WORLD = 2
_N_PER_RANK = 3
_TEMPERATURE = 0.3


def _dist_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    g = torch.Generator().manual_seed(123)
    x0 = torch.randn(_WORLD * _N_PER_RANK, 5, generator=g, dtype=torch.float64)
    x1 = torch.randn(_WORLD * _N_PER_RANK, 5, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 8).double()
    return x0, x1, layer


def _dist_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=_WORLD
    )
    try:
        x0, x1, layer = _dist_inputs()
        rows = slice(rank * _N_PER_RANK, (rank + 1) * _N_PER_RANK)
        a = x0[rows].clone().requires_grad_(True)
        b = x1[rows].clone().requires_grad_(True)
        loss = NTXentLoss(_TEMPERATURE, gather_distributed=True)(layer(a), layer(b))
        loss.backward()
        # A MoCo queue shared by all ranks: each rank enqueues its own rows, all ranks get all.
        bank = MemoryBank(2 * _WORLD * _N_PER_RANK, 5, gather_distributed=True)
        bank.enqueue(x0[rows])
        torch.save(
            {"loss": loss.detach(), "a": a.grad, "b": b.grad, "w": layer.weight.grad,
             "bank": bank.bank.clone(), "ptr": int(bank.ptr)},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_ntxent_gather_distributed_two_processes(tmp_path: Path) -> None:
    mp.spawn(_dist_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=_WORLD)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(_WORLD)]

    x0, x1, layer = _dist_inputs()
    a = x0.clone().requires_grad_(True)
    b = x1.clone().requires_grad_(True)
    loss = NTXentLoss(_TEMPERATURE)(layer(a), layer(b))
    loss.backward()

    mean_loss = sum(r["loss"] for r in res) / _WORLD
    torch.testing.assert_close(mean_loss, loss.detach())
    with torch.no_grad():
        want = ref_ntxent(layer(x0), layer(x1), _TEMPERATURE)
    torch.testing.assert_close(loss.detach(), want)
    for r in range(_WORLD):
        rows = slice(r * _N_PER_RANK, (r + 1) * _N_PER_RANK)
        torch.testing.assert_close(res[r]["a"] / _WORLD, a.grad[rows])
        torch.testing.assert_close(res[r]["b"] / _WORLD, b.grad[rows])
    ddp_weight_grad = sum(r["w"] for r in res) / _WORLD
    torch.testing.assert_close(ddp_weight_grad, layer.weight.grad)
    for r in res:  # every rank's queue holds the keys of all ranks, in rank order
        torch.testing.assert_close(r["bank"][: _WORLD * _N_PER_RANK], x0.float())
        assert r["ptr"] == _WORLD * _N_PER_RANK
