"""DCL / DCLW, SupCon and NPID: losses vs slow float64 references, state updates, smoke runs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.dcl import DCLLoss, DCLWLoss, VonMisesFisherWeight
from selfsup.losses.npid import NPIDLoss
from selfsup.losses.supcon import SupConLoss
from distributed import run_distributed

# selfsup.methods / augment / config are imported inside the method tests only: the two-process
# test's children import this module, and on a loaded CPU those imports cost seconds each.


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# DCL / DCLW (Yeh et al. 2021, arXiv 2110.06848, Eq. 6 and the vMF weight of DCLW)
# ----------------------------------------------------------------------------------------------


def ref_vmf_weights(z0: torch.Tensor, z1: torch.Tensor, sigma: float) -> list[float]:
    """w_i = 2 - exp(<z_i^1, z_i^2>/sigma) / ((1/N) sum_j exp(<z_j^1, z_j^2>/sigma)), loops."""
    a, b = _unit(z0.detach().double()), _unit(z1.detach().double())
    n = a.shape[0]
    e = [math.exp(float(a[i] @ b[i]) / sigma) for i in range(n)]
    mean = sum(e) / n
    return [2.0 - e[i] / mean for i in range(n)]


def ref_dcl(z0: torch.Tensor, z1: torch.Tensor, t: float, sigma: float | None = None) -> torch.Tensor:
    """Mean over the 2N anchors of -w_i <z_i^1, z_i^2>/T + log sum_{l, j != i} exp(<z_i^k, z_j^l>/T)."""
    z = [_unit(z0.double()), _unit(z1.double())]
    n = z0.shape[0]
    w = ref_vmf_weights(z0, z1, sigma) if sigma is not None else [1.0] * n
    total = torch.zeros((), dtype=torch.float64)
    for k in range(2):
        for i in range(n):
            pos = w[i] * (z[0][i] @ z[1][i]) / t
            neg = sum(torch.exp(z[k][i] @ z[m][j] / t) for m in range(2) for j in range(n) if j != i)
            total = total - pos + torch.log(neg)
    return total / (2 * n)


@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("sigma", [None, 0.5])
def test_dcl_matches_reference(n: int, temperature: float, sigma: float | None) -> None:
    g = torch.Generator().manual_seed(100 * n + int(10 * temperature))
    z0 = torch.randn(n, 8, generator=g)
    z1 = z0 + 0.7 * torch.randn(n, 8, generator=g)
    loss_fn = DCLLoss(temperature) if sigma is None else DCLWLoss(temperature, sigma=sigma)
    got = loss_fn(z0, z1)
    assert got.shape == ()
    assert float(got) == pytest.approx(float(ref_dcl(z0, z1, temperature, sigma)), abs=1e-5, rel=1e-5)


def test_dcl_differs_from_ntxent_by_the_positive_in_the_denominator() -> None:
    # InfoNCE = DCL + mean log(1 + exp(pos)/neg) > DCL, so the two must differ on the same inputs.
    from selfsup.losses import NTXentLoss

    g = torch.Generator().manual_seed(4)
    z0, z1 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert float(NTXentLoss(0.2)(z0, z1)) > float(DCLLoss(0.2)(z0, z1)) + 1e-3


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_dcl_gradients_match_reference(sigma: float | None) -> None:
    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    z1 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    (DCLLoss(0.3) if sigma is None else DCLWLoss(0.3, sigma=sigma))(z0, z1).backward()
    r0 = z0.detach().clone().requires_grad_(True)
    r1 = z1.detach().clone().requires_grad_(True)
    ref_dcl(r0, r1, 0.3, sigma).backward()  # the reference's weights are floats: no gradient
    assert z0.grad is not None and z0.grad.abs().sum() > 0
    torch.testing.assert_close(z0.grad, r0.grad, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(z1.grad, r1.grad, atol=1e-10, rtol=1e-8)


def test_vmf_weights_average_to_one_and_favour_hard_pairs() -> None:
    g = torch.Generator().manual_seed(6)
    z0 = _unit(torch.randn(7, 5, generator=g))
    z1 = _unit(z0 + torch.randn(7, 5, generator=g))
    w = VonMisesFisherWeight(0.5)(z0, z1)
    want = torch.tensor(ref_vmf_weights(z0, z1, 0.5), dtype=torch.float64)
    torch.testing.assert_close(w.double(), want, atol=1e-5, rtol=1e-5)
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-6)
    sim = (z0 * z1).sum(1)
    assert int(w.argmax()) == int(sim.argmin()) and int(w.argmin()) == int(sim.argmax())


def test_dcl_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="temperature"):
        DCLLoss(0.0)
    with pytest.raises(ValueError, match="sigma"):
        DCLWLoss(0.1, sigma=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        DCLLoss(0.1)(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same shape"):
        DCLLoss(0.1)(torch.randn(3, 4), torch.randn(2, 4))


# ----------------------------------------------------------------------------------------------
# Two processes. Rank r computes L_r, the mean over its own 2n anchors against the gathered
# (global) negatives; the one-process loss on the concatenated batch is L = (1/W) sum_r L_r.
# gather's backward sums over ranks the gradients every rank's loss sends to rank r's rows, so
# rank r's input gradient is sum_s dL_s/dz_r = W dL/dz_r; DDP averages parameter gradients over
# ranks, (1/W) sum_r W dL/dz_r dz_r/dtheta = dL/dtheta. Hence: mean of the per-rank losses = L and
# rank r's input gradients / W = the one-process gradients of its rows. For DCLW the weight's
# expectation is over the global batch too (and carries no gradient). SupCon scales each rank's
# anchor sum by W / (global number of anchors with a positive), so the same argument holds.
# ----------------------------------------------------------------------------------------------

_N_PER_RANK = 3


def _dist_inputs(world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(321)
    x0 = torch.randn(world * _N_PER_RANK, 6, generator=g, dtype=torch.float64)
    x1 = torch.randn(world * _N_PER_RANK, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, -1, 1, 2, 0] * world)[: world * _N_PER_RANK]
    return x0, x1, labels


def _losses() -> dict[str, torch.nn.Module]:
    return {"dcl": DCLLoss(0.2, gather_distributed=True),
            "dclw": DCLWLoss(0.2, sigma=0.5, gather_distributed=True),
            "supcon": SupConLoss(0.2, gather_distributed=True)}


def _call(name: str, loss_fn: torch.nn.Module, a, b, labels) -> torch.Tensor:
    return loss_fn([a, b], labels) if name == "supcon" else loss_fn(a, b)


def _contrastive_worker(rank: int, world: int) -> dict:
    x0, x1, labels = _dist_inputs(world)
    rows = slice(rank * _N_PER_RANK, (rank + 1) * _N_PER_RANK)
    out = {}
    for name, loss_fn in _losses().items():
        a = x0[rows].clone().requires_grad_(True)
        b = x1[rows].clone().requires_grad_(True)
        loss = _call(name, loss_fn, a, b, labels[rows])
        loss.backward()
        out.update({f"{name}_loss": loss.detach(), f"{name}_a": a.grad, f"{name}_b": b.grad})
    return out


def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    world = 2
    res = run_distributed(_contrastive_worker, tmp_path, world=world)
    x0, x1, labels = _dist_inputs(world)
    for name, loss_fn in _losses().items():
        a, b = x0.clone().requires_grad_(True), x1.clone().requires_grad_(True)
        loss = _call(name, loss_fn, a, b, labels)
        loss.backward()
        torch.testing.assert_close(sum(r[f"{name}_loss"] for r in res) / world, loss.detach())
        for r in range(world):
            rows = slice(r * _N_PER_RANK, (r + 1) * _N_PER_RANK)
            torch.testing.assert_close(res[r][f"{name}_a"] / world, a.grad[rows])
            torch.testing.assert_close(res[r][f"{name}_b"] / world, b.grad[rows])


# ----------------------------------------------------------------------------------------------
# SupCon (Khosla et al. 2020, arXiv 2004.11362, Eq. 2, L_out)
# ----------------------------------------------------------------------------------------------


def ref_supcon(views: list[torch.Tensor], labels: list[int], t: float) -> float:
    """Loop over anchors (view v, sample i); label -1 = own class; anchors without positives skipped."""
    z = [_unit(v.double()) for v in views]
    n = len(labels)
    items = [(v, i) for v in range(len(views)) for i in range(n)]
    total, count = 0.0, 0
    for v, i in items:
        others = [(u, j) for u, j in items if (u, j) != (v, i)]
        pos = [(u, j) for u, j in others if j == i or (labels[i] >= 0 and labels[j] == labels[i])]
        if not pos:
            continue
        den = sum(math.exp(float(z[v][i] @ z[u][j]) / t) for u, j in others)
        total += -sum(math.log(math.exp(float(z[v][i] @ z[u][j]) / t) / den) for u, j in pos) / len(pos)
        count += 1
    return total / count


@pytest.mark.parametrize("num_views", [1, 2, 3])
def test_supcon_matches_reference_with_repeated_and_unknown_labels(num_views: int) -> None:
    g = torch.Generator().manual_seed(num_views)
    labels = [0, 1, 0, 2, -1, 1, 0, -1]
    views = [torch.randn(8, 5, generator=g) for _ in range(num_views)]
    got = SupConLoss(0.1)(views, torch.tensor(labels))
    assert float(got) == pytest.approx(ref_supcon(views, labels, 0.1), abs=1e-5, rel=1e-5)


def test_supcon_without_labels_is_simclr() -> None:
    from selfsup.losses import NTXentLoss

    g = torch.Generator().manual_seed(9)
    z0, z1 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    got = SupConLoss(0.3)([z0, z1], torch.full((5,), -1))
    assert float(got) == pytest.approx(float(NTXentLoss(0.3)(z0, z1)), abs=1e-5)


def test_supcon_no_positive_gives_zero_with_gradient_path() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    loss = SupConLoss(0.1)([z], torch.full((4,), -1))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert z.grad is not None


# ----------------------------------------------------------------------------------------------
# NPID (Wu et al. 2018, arXiv 1805.01978, Eqs. 2-7; official NCEAverage / NCECriterion)
# ----------------------------------------------------------------------------------------------


def ref_npid_nce(f, indices, negatives, memory, t, z, n_data) -> float:
    """-1/B sum_b [log h(i_b) + sum_k log(1 - h(j_bk))], h = P / (P + K/n), P = exp(v.f/T)/Z."""
    f = _unit(f.double())
    memory = memory.double()
    k = negatives.shape[1]
    noise = k / n_data
    total = 0.0
    for b in range(f.shape[0]):
        p_pos = math.exp(float(memory[indices[b]] @ f[b]) / t) / z
        total += math.log(p_pos / (p_pos + noise + 1e-7))
        for j in negatives[b].tolist():
            p = math.exp(float(memory[j] @ f[b]) / t) / z
            total += math.log(noise / (p + noise + 1e-7))
    return -total / f.shape[0]


def test_npid_nce_matches_reference_and_estimates_z_once() -> None:
    n_data, dim, k, t = 40, 6, 5, 0.07
    loss_fn = NPIDLoss(num_samples=n_data, dim=dim, temperature=t, num_negatives=k, seed=3)
    g = torch.Generator().manual_seed(8)
    loss_fn.memory.copy_(_unit(torch.randn(n_data, dim, generator=g)))
    f, idx = torch.randn(4, dim, generator=g), torch.tensor([3, 17, 0, 39])
    negatives = torch.randint(n_data, (4, k), generator=g)
    got = loss_fn(f, idx, negatives)
    # Z: n times the mean of exp(v . f / T) over the first batch's positive and noise entries
    fu, mem = _unit(f.double()), loss_fn.memory.double()
    entries = [(b, j) for b in range(4) for j in [int(idx[b])] + negatives[b].tolist()]
    z_want = n_data * sum(math.exp(float(mem[j] @ fu[b]) / t) for b, j in entries) / len(entries)
    assert float(loss_fn.z) == pytest.approx(z_want, rel=1e-5)
    want = ref_npid_nce(f, idx, negatives, mem, t, z_want, n_data)
    assert float(got) == pytest.approx(want, abs=1e-5, rel=1e-5)
    # the second batch reuses Z
    f2, neg2 = torch.randn(4, dim, generator=g), torch.randint(n_data, (4, k), generator=g)
    got2 = loss_fn(f2, idx, neg2)
    assert float(loss_fn.z) == pytest.approx(z_want, rel=1e-5)
    want2 = ref_npid_nce(f2, idx, neg2, mem, t, z_want, n_data)
    assert float(got2) == pytest.approx(want2, abs=1e-5, rel=1e-5)


def test_npid_exact_softmax_matches_reference() -> None:
    n_data, dim, t = 12, 4, 0.1
    loss_fn = NPIDLoss(num_samples=n_data, dim=dim, temperature=t, num_negatives=0)
    f, idx = torch.randn(3, dim), torch.tensor([2, 11, 5])
    fu, mem = _unit(f.double()), loss_fn.memory.double()
    want = 0.0
    for b in range(3):
        den = sum(math.exp(float(mem[j] @ fu[b]) / t) for j in range(n_data))
        want -= math.log(math.exp(float(mem[idx[b]] @ fu[b]) / t) / den) / 3
    assert float(loss_fn(f, idx)) == pytest.approx(want, abs=1e-5, rel=1e-5)


def test_npid_sampling_is_seeded_and_memory_starts_as_official() -> None:
    a = NPIDLoss(num_samples=50, dim=12, num_negatives=7, seed=1)
    b = NPIDLoss(num_samples=50, dim=12, num_negatives=7, seed=1)
    s = a.sample_negatives(4)
    assert s.shape == (4, 7) and int(s.min()) >= 0 and int(s.max()) < 50
    assert torch.equal(s, b.sample_negatives(4))
    assert not torch.equal(a.sample_negatives(4), s)  # the generator advances
    bound = 1 / math.sqrt(12 / 3)
    assert float(a.memory.abs().max()) <= bound and float(a.z) == -1.0
    assert {"memory", "z"} <= set(a.state_dict())


def test_npid_memory_update_is_exact() -> None:
    loss_fn = NPIDLoss(num_samples=10, dim=4, num_negatives=3, momentum=0.3)  # m != 1 - m
    before = loss_fn.memory.clone()
    f, idx = torch.randn(3, 4), torch.tensor([7, 0, 4])
    loss_fn.update_memory(f, idx)
    expected = before.clone()
    for row, i in enumerate(idx.tolist()):
        v = 0.3 * before[i] + 0.7 * _unit(f)[row]
        expected[i] = v / v.norm()
    torch.testing.assert_close(loss_fn.memory, expected)
    assert torch.allclose(loss_fn.memory[idx].norm(dim=1), torch.ones(3))


# ----------------------------------------------------------------------------------------------
# Methods: SupCon's loss, NPID state, recipes (the smoke run is tests/test_methods.py's, over every method)
# ----------------------------------------------------------------------------------------------

NAMES = ["dcl", "dclw", "npid", "supcon"]


def small(name: str, **options: object) -> dict:
    """The test sizes of ``name``'s method card plus ``options`` (imported here: see the top)."""
    import selfsup.methods

    return {**selfsup.methods.card(name).small, **options}


def _views(num: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 3, 16, 16, generator=g) for _ in range(num)]


def _batch(views: list[torch.Tensor], step: int = 0):
    from selfsup.methods import ViewBatch

    return ViewBatch(views=views, labels=torch.arange(8) % 3, indices=torch.arange(8) + 8 * step)


def test_supcon_method_takes_three_views_and_uses_labels(tiny_backbone) -> None:
    import selfsup.methods as methods

    method = methods.get("supcon", backbone=tiny_backbone, **small("supcon")).eval()
    views = _views(3)
    out = method.training_step(_batch(views))
    z = [method.projector(method.backbone(v)).detach() for v in views]
    assert float(out.loss.detach()) == pytest.approx(ref_supcon(z, (torch.arange(8) % 3).tolist(), 0.1), abs=1e-4)


def test_npid_method_updates_memory_after_the_step(tiny_backbone) -> None:
    import selfsup.methods as methods

    # the official random start (memory_init='features' needs on_epoch_start first: tests/test_npid_memory_init.py)
    method = methods.get("npid", backbone=tiny_backbone, memory_momentum=0.5, memory_init="random", **small("npid", num_samples=32))
    memory0 = method.criterion.memory.clone()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    batch = _batch(_views(1), step=1)  # indices 8..15
    out = method.training_step(batch)
    f = F.normalize(method.projector(method.backbone(batch.views[0])), dim=1).detach()  # same weights
    torch.testing.assert_close(method.criterion.memory, memory0)  # nothing changes before the step
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    method.end_step()
    memory = method.criterion.memory
    want = F.normalize(0.5 * memory0[8:16] + 0.5 * f, dim=1)
    torch.testing.assert_close(memory[8:16], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory[:8], memory0[:8])
    torch.testing.assert_close(memory[16:], memory0[16:])
    assert float(method.criterion.z) > 0  # Z estimated on the first batch


def test_npid_needs_num_samples_and_recipe_has_one_view(tiny_backbone) -> None:
    import selfsup.augment as augment
    import selfsup.methods as methods

    with pytest.raises(Exception, match="num_samples"):
        methods.get("npid", backbone=tiny_backbone)
    recipe = augment.get("npid", size=16)
    assert recipe.num_views == 1
    spec = recipe.specs[0]
    assert spec.scale == (0.2, 1.0) and spec.jitter == (0.4, 0.4, 0.4, 0.4) and spec.jitter_p == 1.0


@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
@pytest.mark.parametrize("name", NAMES)
def test_recipes_load(dataset: str, name: str) -> None:
    import selfsup.config

    config = selfsup.config.load(f"{dataset}/{name}")
    assert config.method["name"] == name
