"""NPID's memory start: filled once with the initial network's embeddings, or random as the official code.

Wu et al. 2018 (arXiv 1805.01978) define memory row ``v_i`` as the network's feature of image ``i``;
the official code (lemniscate.pytorch, ``NCEAverage``) starts it uniform random. With
``memory_init="features"`` the first ``on_epoch_start`` sets ``v_i = normalise(projector(h_i))``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.npid import NPIDLoss
from distributed import run_distributed

N, K = 24, 8  # training images, noise samples


def _npid(backbone, **options):
    import selfsup.methods as methods

    return methods.get("npid", backbone=backbone, proj_output_dim=16, num_samples=N, num_negatives=K, **options)


def _features(method, seed: int = 5) -> torch.Tensor:
    return torch.randn(N, method.feature_dim, generator=torch.Generator().manual_seed(seed))


def _expected_memory(method, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(method.projector(features), dim=1)


def _batch(step: int = 0):
    from selfsup.methods import ViewBatch

    g = torch.Generator().manual_seed(10 + step)
    return ViewBatch(views=[torch.randn(8, 3, 16, 16, generator=g)], labels=torch.full((8,), -1),
                     indices=torch.arange(8) + 8 * step)


def _train_step(method, step: int = 0) -> torch.Tensor:
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    method.begin_step(step)
    out = method.training_step(_batch(step))
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    method.end_step()
    return out.loss.detach()


def test_first_epoch_start_fills_every_row_with_the_initial_projection(tiny_backbone) -> None:
    method = _npid(tiny_backbone)
    feats = _features(method)
    want = _expected_memory(method, feats)
    method.on_epoch_start(0, lambda: feats)
    torch.testing.assert_close(method.criterion.memory, want, rtol=1e-6, atol=1e-6)
    assert bool(method.criterion.memory_filled)
    assert torch.allclose(method.criterion.memory.norm(dim=1), torch.ones(N))


def test_fill_calibrates_batch_norm_for_the_pass_and_leaves_the_network_unchanged(tiny_backbone) -> None:
    method = _npid(tiny_backbone)
    images = torch.randn(N, 3, 16, 16, generator=torch.Generator().manual_seed(3))

    def train_features() -> torch.Tensor:  # as the engine's pass: eval mode, index order, batches of 8
        method.backbone.eval()
        try:
            return torch.cat([method.backbone(x) for x in images.split(8)])
        finally:
            method.backbone.train()

    reference = copy.deepcopy(method.backbone)  # PyTorch's own estimate: momentum=None, train mode
    for bn in reference.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
    with torch.no_grad():
        for x in images.split(8):
            reference(x)
        want = _expected_memory(method, reference.eval()(images))
        plain = _expected_memory(method, method.backbone.eval()(images))  # the initial (0, 1) estimates
    method.train()
    before = copy.deepcopy(method.backbone.state_dict())
    method.on_epoch_start(0, train_features)
    torch.testing.assert_close(method.criterion.memory, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(method.criterion.memory, plain, atol=1e-2)
    after = method.backbone.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert method.backbone.training


def test_memory_is_filled_once_not_at_later_epochs(tiny_backbone) -> None:
    method = _npid(tiny_backbone)
    feats = _features(method)
    method.on_epoch_start(0, lambda: feats)
    filled = method.criterion.memory.clone()
    torch.testing.assert_close(filled, _expected_memory(method, feats), rtol=1e-6, atol=1e-6)
    _train_step(method)  # rows 0..7 move towards the step's features
    after_step = method.criterion.memory.clone()
    assert not torch.allclose(after_step[:8], filled[:8]) and torch.equal(after_step[8:], filled[8:])
    method.on_epoch_start(1, lambda: pytest.fail("the memory is filled only once"))
    torch.testing.assert_close(method.criterion.memory, after_step, rtol=0, atol=0)


def test_resumed_state_keeps_its_memory(tiny_backbone) -> None:
    import selfsup.backbones

    method = _npid(tiny_backbone)
    method.on_epoch_start(0, lambda: _features(method))
    _train_step(method)
    state = method.state_dict()
    assert bool(state["criterion.memory_filled"])
    torch.manual_seed(1)
    resumed = _npid(selfsup.backbones.get("resnet_tiny", width=4))
    resumed.load_state_dict(state)
    resumed.on_epoch_start(1, lambda: pytest.fail("a resumed run must not refill the memory"))
    torch.testing.assert_close(resumed.criterion.memory, method.criterion.memory, rtol=0, atol=0)


def test_checkpoint_from_before_the_flag_loads_as_filled() -> None:
    loss_fn = NPIDLoss(num_samples=N, dim=4, num_negatives=K)
    old = {k: v for k, v in loss_fn.state_dict().items() if k != "memory_filled"}
    fresh = NPIDLoss(num_samples=N, dim=4, num_negatives=K)
    fresh.load_state_dict(old)
    assert bool(fresh.memory_filled)


def _ref_nce(f, indices, negatives, memory, t, n_data) -> float:
    """float64 NCE (Eqs. 5-7) with Z estimated on this, the first, batch: n * mean exp(v . f / T)."""
    f, memory = F.normalize(f.double(), dim=1), memory.double()
    rows = torch.cat([indices[:, None], negatives], dim=1)
    z = n_data * float(torch.exp(torch.einsum("bkd,bd->bk", memory[rows], f) / t).mean())
    noise, total = negatives.shape[1] / n_data, 0.0
    for b in range(f.shape[0]):
        p = [math.exp(float(memory[j] @ f[b]) / t) / z for j in rows[b].tolist()]
        total += math.log(p[0] / (p[0] + noise + 1e-7)) + sum(math.log(noise / (q + noise + 1e-7)) for q in p[1:])
    return -total / f.shape[0]


def test_step_zero_loss_is_scored_against_the_filled_bank(tiny_backbone) -> None:
    method = _npid(tiny_backbone, temperature=0.1).eval()  # eval: the backbone is deterministic here
    batch = _batch()
    with torch.no_grad():  # the batch's own images fill rows 0..7: their positives score exp(1 / T)
        own = method.backbone(batch.views[0])
    feats = torch.cat([own, _features(method)[8:]])
    method.on_epoch_start(0, lambda: feats)
    memory = _expected_memory(method, feats)
    negatives = NPIDLoss(num_samples=N, dim=16, num_negatives=K, seed=0).sample_negatives(8)  # the method's draw
    loss = method.training_step(batch).loss
    f = F.normalize(method.projector(own), dim=1).detach()
    assert float(loss.detach()) == pytest.approx(_ref_nce(f, batch.indices, negatives, memory, 0.1, N), rel=1e-4)


def test_hand_written_loop_fills_from_chunks_and_checks_sizes(tiny_backbone) -> None:
    method = _npid(tiny_backbone)
    feats = _features(method)
    method.fill_memory(iter(feats.split(5)))  # a loader's batches, in index order
    torch.testing.assert_close(method.criterion.memory, _expected_memory(method, feats), rtol=1e-6, atol=1e-6)
    other = _npid(tiny_backbone)
    with pytest.raises(ValueError, match="num_samples=24"):
        other.fill_memory(feats[:-1])
    with pytest.raises(ValueError, match="backbone features"):
        other.fill_memory(torch.randn(N, method.feature_dim + 1))
    assert not bool(other.criterion.memory_filled)


def test_training_before_the_fill_says_what_to_do_and_random_keeps_the_official_start(tiny_backbone) -> None:
    method = _npid(tiny_backbone)
    with pytest.raises(RuntimeError, match="fill_memory.*memory_init='random'"):
        method.training_step(_batch())
    official = _npid(tiny_backbone, memory_init="random")
    start = official.criterion.memory.clone()
    official.on_epoch_start(0, lambda: pytest.fail("memory_init='random' does not read the data set"))
    assert torch.equal(official.criterion.memory, start)
    assert float(start.abs().max()) <= 1 / math.sqrt(16 / 3)  # uniform in [-s, s], NCEAverage's start
    assert torch.isfinite(_train_step(official))
    with pytest.raises(ValueError, match="memory_init"):
        _npid(tiny_backbone, memory_init="zeros")


def test_whole_bank_product_equals_gathered_rows(monkeypatch) -> None:
    import selfsup.losses.npid as npid_module

    g = torch.Generator().manual_seed(2)
    memory, f = F.normalize(torch.randn(N, 6, generator=g), dim=1), torch.randn(5, 6, generator=g)
    idx, negatives = torch.tensor([0, 3, 9, 23, 4]), torch.randint(N, (5, K), generator=g)
    results = []
    for ratio in (npid_module._FULL_PRODUCT_RATIO, 0):  # N <= 16 (K + 1): whole bank; ratio 0: gathered rows
        monkeypatch.setattr(npid_module, "_FULL_PRODUCT_RATIO", ratio)
        loss_fn = NPIDLoss(num_samples=N, dim=6, temperature=0.1, num_negatives=K)
        loss_fn.memory.copy_(memory)
        x = f.clone().requires_grad_(True)
        loss = loss_fn(x, idx, negatives)
        loss.backward()
        results.append((loss.detach(), x.grad, loss_fn.z.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _fill_worker(rank: int, world: int) -> dict:
    def embeddings(of_rank: int) -> torch.Tensor:  # the ranks computed different embeddings
        return torch.randn(6, 3, generator=torch.Generator().manual_seed(100 + of_rank))

    loss_fn = NPIDLoss(num_samples=6, dim=3, num_negatives=2)
    loss_fn.fill_memory(embeddings(rank))
    return {"memory": loss_fn.memory, "rank0": F.normalize(embeddings(0), dim=1)}


def test_every_process_holds_rank_zeros_filled_bank(tmp_path) -> None:
    results = run_distributed(_fill_worker, tmp_path, world=2)
    for res in results:
        torch.testing.assert_close(res["memory"], res["rank0"], rtol=0, atol=0)
