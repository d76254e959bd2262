"""selfsup.nn: MLP heads, momentum updates, the MoCo queue and the distributed helpers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn import (
    MLP,
    MemoryBank,
    copy_frozen,
    cosine_momentum,
    ema_update,
    gather,
    gather_no_grad,
    rank,
    world_size,
)
from selfsup.nn.transformer import SHORT_SEQUENCE, attention


# ----------------------------------------------------------------------------------------- MLP
def _kinds(m: nn.Module) -> list[str]:
    return [type(layer).__name__ for layer in m]


def test_mlp_simclr_head() -> None:
    head = MLP([512, 2048, 128])
    assert (head.in_dim, head.out_dim) == (512, 128)
    assert _kinds(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head[0].bias is None  # followed by BN
    assert head[3].bias is not None  # last layer, no BN
    assert head(torch.randn(4, 512)).shape == (4, 128)


def test_mlp_simsiam_projector_last_bn_without_affine() -> None:
    proj = MLP([32, 64, 64, 16], last_batch_norm=True, last_bn_affine=False)
    assert _kinds(proj) == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"
    ]
    assert all(layer.bias is None for layer in proj if isinstance(layer, nn.Linear))
    assert proj[1].affine and not proj[-1].affine
    assert proj(torch.randn(5, 32)).shape == (5, 16)
    assert MLP([8, 4], last_batch_norm=True)[-1].affine


def test_mlp_options() -> None:
    plain = MLP([8, 16, 4], batch_norm=False, activation="gelu")
    assert _kinds(plain) == ["Linear", "GELU", "Linear"]
    assert plain[0].bias is not None
    forced = MLP([8, 16, 4], bias=True)
    assert all(layer.bias is not None for layer in forced if isinstance(layer, nn.Linear))
    single = MLP([8, 4])
    assert _kinds(single) == ["Linear"] and single.out_dim == 4
    for bad in ([8], [8, 0, 4]):
        with pytest.raises(ValueError, match="dims"):
            MLP(bad)
    with pytest.raises(ValueError, match="activation"):
        MLP([8, 4], activation="swish!")


# ------------------------------------------------------------------------------------ momentum
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


def test_copy_frozen() -> None:
    online = _Net()
    target = copy_frozen(online)
    assert all(p.requires_grad for p in online.parameters())
    assert not any(p.requires_grad for p in target.parameters())
    for p, q in zip(online.parameters(), target.parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()


def test_ema_update_exact_values_and_buffers_untouched() -> None:
    online, target = _Net(), _Net()
    with torch.no_grad():
        for i, (t, o) in enumerate(zip(target.parameters(), online.parameters())):
            t.copy_(torch.full_like(t, 2.0 + i))
            o.copy_(torch.full_like(o, -1.0 - i))
    target.bn.running_mean.fill_(5.0)
    online.bn.running_mean.fill_(-5.0)
    t_before = [p.clone() for p in target.parameters()]
    o_before = [p.clone() for p in online.parameters()]
    m = 0.75
    ema_update(target, online, m)
    for t, t0, o0, o in zip(target.parameters(), t_before, o_before, online.parameters()):
        torch.testing.assert_close(t, m * t0 + (1 - m) * o0)
        assert torch.equal(o, o0)  # online untouched
    assert torch.equal(target.bn.running_mean, torch.full((2,), 5.0))
    assert target.bn.num_batches_tracked == 0
    # m = 1 keeps the target, m = 0 copies the online network.
    ema_update(target, online, 1.0)
    ema_update(target, online, 0.0)
    for t, o in zip(target.parameters(), online.parameters()):
        assert torch.equal(t, o)


def test_ema_update_frozen_target_has_no_grad_history() -> None:
    online = nn.Linear(3, 2)
    target = copy_frozen(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    ema_update(target, online, 0.5)
    assert not any(p.requires_grad or p.grad_fn is not None for p in target.parameters())


def test_ema_update_mismatch_errors() -> None:
    with pytest.raises(ValueError, match="parameters"):
        ema_update(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), 0.9)
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(3, 2), nn.Linear(4, 2), 0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(nn.Linear(3, 2), nn.Linear(3, 2), 1.5)


def test_cosine_momentum() -> None:
    assert cosine_momentum(0.0, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(0.5, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(1.0, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(0.5, 0.9, final=0.99) == pytest.approx(0.945)
    # BYOL's formula at an arbitrary point; progress is clamped to [0, 1].
    p = 0.3
    assert cosine_momentum(p, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi * p) + 1) / 2)
    assert cosine_momentum(-1.0, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(2.0, 0.99) == pytest.approx(1.0)


# --------------------------------------------------------------------------------- MemoryBank
def test_memory_bank_init_is_normalised() -> None:
    bank = MemoryBank(16, 8)
    assert bank.bank.shape == (16, 8) and bank.ptr.dtype == torch.long and int(bank.ptr) == 0
    torch.testing.assert_close(bank.bank.norm(dim=1), torch.ones(16))
    feats = bank.features()
    assert not feats.requires_grad and feats.data_ptr() != bank.bank.data_ptr()


def test_memory_bank_enqueue_and_wrap_around() -> None:
    bank = MemoryBank(5, 2)
    init = bank.bank.clone()
    a = torch.arange(6.0).view(3, 2)
    bank.enqueue(a)
    assert int(bank.ptr) == 3
    torch.testing.assert_close(bank.bank[:3], a)
    torch.testing.assert_close(bank.bank[3:], init[3:])
    b = 10 + torch.arange(8.0).view(4, 2)  # rows go to 3, 4, 0, 1
    bank.enqueue(b)
    assert int(bank.ptr) == 2
    torch.testing.assert_close(bank.bank[[3, 4, 0, 1]], b)
    torch.testing.assert_close(bank.bank[2], a[2])
    bank.enqueue(torch.zeros(0, 2))
    assert int(bank.ptr) == 2


def test_memory_bank_oversize_batch_keeps_newest_like_sequential() -> None:
    keys = torch.randn(12, 3)
    big = MemoryBank(5, 3)
    big.ptr.fill_(3)
    big.enqueue(keys)
    one_by_one = MemoryBank(5, 3)
    one_by_one.ptr.fill_(3)
    for row in keys:
        one_by_one.enqueue(row[None])
    torch.testing.assert_close(big.bank, one_by_one.bank)
    assert int(big.ptr) == int(one_by_one.ptr) == (3 + 12) % 5
    assert sorted(map(tuple, big.bank.tolist())) == sorted(map(tuple, keys[-5:].tolist()))


def test_memory_bank_detaches_and_validates() -> None:
    bank = MemoryBank(4, 2)
    bank.enqueue(torch.ones(2, 2, requires_grad=True))
    assert not bank.bank.requires_grad
    with pytest.raises(ValueError, match="shape"):
        bank.enqueue(torch.ones(2, 3))
    for size, dim in ((0, 2), (2, 0)):
        with pytest.raises(ValueError):
            MemoryBank(size, dim)


def test_memory_bank_state_dict_round_trip() -> None:
    bank = MemoryBank(6, 3)
    bank.enqueue(torch.randn(4, 3))
    state = bank.state_dict()
    assert set(state) == {"bank", "ptr"}
    other = MemoryBank(6, 3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.bank, bank.bank)
    assert int(other.ptr) == 4
    other.enqueue(torch.randn(3, 3))  # continues where the saved one stopped
    assert int(other.ptr) == 1


# -------------------------------------------------------------------------------- distributed
def test_distributed_helpers_single_process() -> None:
    assert world_size() == 1 and rank() == 0
    x = torch.randn(3, 2, requires_grad=True)
    assert gather(x) is x
    y = gather_no_grad(x)
    assert torch.equal(y, x) and not y.requires_grad


def test_momentum_teacher_runs_copies_in_order_and_follows_the_online_modules():
    from selfsup.nn import MomentumTeacher

    torch.manual_seed(0)
    first, second = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    teacher = MomentumTeacher({"first": first, "second": second})
    assert list(teacher.state_dict()) == ["first.weight", "first.bias", "second.weight", "second.bias"]
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(5, 3)
    torch.testing.assert_close(teacher(x), second(first(x)))
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in list(first.parameters()) + list(second.parameters()):
            p.add_(1.0)
    teacher.momentum_update(0.9)
    online = list(first.parameters()) + list(second.parameters())
    for t0, o, t1 in zip(before, online, teacher.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o)


@pytest.mark.parametrize("mask_kind", [None, "bool", "additive"])
def test_attention_short_cpu_path_matches_the_fused_kernel(mask_kind) -> None:
    """The explicit CPU path for short sequences gives the fused kernel's values and gradients."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(7, 7, generator=g) > 0.3
        mask |= torch.eye(7, dtype=torch.bool)  # every query sees at least itself
    elif mask_kind == "additive":
        mask = torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64)
    ours = attention(q, k, v, attn_mask=mask)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(ours, fused, atol=1e-10)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    fused_grads = torch.autograd.grad(fused.square().sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, fused_grads))
    long = torch.randn(1, 1, SHORT_SEQUENCE + 1, 4, dtype=torch.float64)
    assert torch.allclose(attention(long, long, long), F.scaled_dot_product_attention(long, long, long), atol=1e-10)


def test_attention_under_bf16_autocast_stays_close_to_float32() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(4, 3, 50, 32, generator=g) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - exact).abs().max() < 0.05  # bf16 has 8 bits of mantissa
