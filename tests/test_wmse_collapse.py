"""W-MSE collapse: singular whitening sub-batches are counted, and a run where they persist stops.

The official code (github.com/htdt/self-supervised) stops at the first singular covariance with a
Cholesky error; selfsup shrinks an isolated one a little further and counts it, and stops the run
with a message naming the step and what to change once singular sub-batches reach
``method.collapse_share`` of the last ``method.collapse_window`` steps.
"""
from __future__ import annotations

import pytest
import torch

import selfsup.methods as methods
from selfsup.cli import main
from selfsup.errors import SelfSupError
from selfsup.losses.wmse import WMSELoss
from selfsup.methods import ViewBatch
from selfsup.nn.whitening import cholesky_whiten, cholesky_whiten_shrunk, singular_to_precision


def _batch(n: int = 16, seed: int = 1) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 3, 16, 16, generator=g) for _ in range(2)]
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def test_persistent_singular_sub_batches_stop_the_run(tiny_backbone) -> None:
    """A 1-wide hidden layer before an 8-d output: every sub-batch's covariance has rank <= 1 of 8
    (a collapsed projector). The first steps run (shrunk, counted, logged); the step that fills
    the window raises an error naming the step and the settings to change."""
    method = methods.get("wmse", backbone=tiny_backbone, proj_hidden_dim=1, proj_output_dim=8, w_size=16,
                         collapse_window=3, collapse_share=0.5)
    method.configure_training(epochs=2, steps_per_epoch=2)
    for step in range(2):
        method.begin_step(step)
        out = method.training_step(_batch(seed=step))
        assert out.logs["whiten_shrunk"] == 1.0 and out.logs["whiten_shrunk_window"] == 1.0
        assert torch.isfinite(out.loss)
        method.end_step()
    method.begin_step(2)
    with pytest.raises(SelfSupError, match=r"W-MSE collapsed at optimizer step 2 \(epoch 1\)") as err:
        method.training_step(_batch(seed=2))
    message = str(err.value)
    assert "6 of the 6 whitening sub-batches of the last 3 steps" in message
    for setting in ("method.proj_output_dim (now 8", "optimizer.lr", "method.w_size (now 16", "precision=32-true",
                    "method.collapse_window=0"):
        assert setting in message


def test_a_covariance_beyond_float32_precision_counts_as_singular() -> None:
    """One direction with 1e-9 of the others' variance: float32's Cholesky may still succeed (no
    jitter), but the condition number (1e9) is beyond 1 / eps, so the sub-batch is counted; the
    same batch in float64 is not singular to float64 precision, and a well-conditioned one is not."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 1.0, 3e-5], dtype=torch.float64)
    result = cholesky_whiten_shrunk(x.float())
    assert result.condition > 1e8 and singular_to_precision(result, torch.float32)
    assert not singular_to_precision(cholesky_whiten_shrunk(x), torch.float64)
    assert not singular_to_precision(cholesky_whiten_shrunk(x[:, :3].float()), torch.float32)
    loss_fn = WMSELoss(w_size=32)
    loss_fn([x.float(), x.float().flip(0)])
    assert loss_fn.shrunk_count == 4 and loss_fn.shrunk_fraction == 1.0 and loss_fn.max_condition > 1e8


def test_shrinkage_does_not_hide_a_collapse() -> None:
    """With the official w_eps the factorised covariance is well conditioned, but the embeddings'
    own covariance is what is counted: shrinkage rewards letting directions die (in a resumed
    Fashion-MNIST run w_eps=0.1 drove the condition number past 1e6 within 50 steps), so it must
    not silence the check."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 4, generator=g) * torch.tensor([1.0, 1.0, 1.0, 3e-5])
    loss_fn = WMSELoss(w_size=32, eps=0.1)
    loss_fn([x, x.flip(0)])
    assert loss_fn.shrunk_count == 4 and loss_fn.max_condition > 1e8
    loss_fn = WMSELoss(w_size=4, eps=0.1)  # w_size <= d: always singular, so not counted
    assert loss_fn([x, x.flip(0)]).isfinite() and loss_fn.shrunk_count == 0


def test_rare_singular_sub_batches_are_counted_not_fatal(tiny_backbone) -> None:
    """The threshold: the share over a full window, compared with collapse_share."""
    method = methods.get("wmse", backbone=tiny_backbone, proj_hidden_dim=32, proj_output_dim=4, w_size=8,
                         collapse_window=4, collapse_share=0.5)

    def step(singular: int, total: int = 4) -> float:
        method.criterion.shrunk_count, method.criterion.whitening_count = singular, total
        return method.count_singular()

    assert [step(s) for s in (4, 0, 0, 0, 0, 1)] == [1.0, 0.5, 4 / 12, 0.25, 0.0, 1 / 16]  # one bad step passes
    assert method.singular_total == 5
    assert step(4) == 5 / 16 and step(2) == 7 / 16  # 7 of 16: below 0.5
    with pytest.raises(SelfSupError, match="8 of the 16 whitening sub-batches"):
        step(1)  # 1 + 4 + 2 + 1 = 8 of 16 reach 0.5
    off = methods.get("wmse", backbone=tiny_backbone, proj_hidden_dim=32, proj_output_dim=4, w_size=8,
                      collapse_window=0)
    off.criterion.shrunk_count, off.criterion.whitening_count = 4, 4
    assert [off.count_singular() for _ in range(50)] == [1.0] * 50  # the check turned off


def test_a_collapse_stops_the_engine_with_a_clear_message(tmp_path, capsys) -> None:
    """Through the command line: exit code 2 and one 'error:' paragraph, no traceback."""
    args = ["train", "--output-dir", str(tmp_path), "--name", "wmse", "--epochs", "1", "--method", "wmse",
            "--data", "digits", "--backbone", "resnet_tiny", "backbone.width=4", "--batch-size", "64",
            "--precision", "32-true", "augment.size=16", "progress_bar=false", "method.proj_hidden_dim=4",
            "method.proj_output_dim=8", "method.w_size=32", "method.collapse_window=3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: W-MSE collapsed at optimizer step 2 (epoch 0)" in err and "Traceback" not in err


def test_w_size_not_above_the_embedding_width_is_refused(tiny_backbone) -> None:
    with pytest.raises(ValueError, match="make method.w_size larger than method.proj_output_dim"):
        methods.get("wmse", backbone=tiny_backbone, proj_hidden_dim=32, proj_output_dim=8, w_size=8)
    methods.get("wmse", backbone=tiny_backbone, proj_hidden_dim=32, proj_output_dim=8, w_size=8, w_eps=0.1)
    with pytest.raises(ValueError, match="collapse_share"):
        methods.get("wmse", backbone=tiny_backbone, proj_hidden_dim=32, proj_output_dim=4, w_size=8,
                    collapse_share=0.0)


def test_non_finite_embeddings_give_a_nan_loss_for_the_engine_guard() -> None:
    """NaN embeddings make the loss NaN (the engine then skips the step or stops with its
    non-finite report), instead of an exception from inside the whitening."""
    x = torch.randn(16, 4, dtype=torch.float64)
    x[3, 1] = float("nan")
    assert torch.isnan(cholesky_whiten(x)).all()
    views = [torch.randn(16, 4, requires_grad=True) for _ in range(2)]
    loss_fn = WMSELoss(w_size=8)
    loss = loss_fn([views[0] * float("inf"), views[1]])
    assert torch.isnan(loss)
    assert loss_fn.shrunk_count == 0  # not counted as a collapse: the NaN loss is the engine's to report
    loss.backward()  # still part of the graph



def test_the_head_runs_in_float32_under_autocast(tiny_backbone) -> None:
    """The whitening scales up the rounding error of the embeddings in their weakest directions,
    so the head is computed in float32 even when the backbone runs in bf16."""
    method = methods.get("wmse", backbone=tiny_backbone, proj_hidden_dim=32, proj_output_dim=4, w_size=8)
    seen = []
    method.projector.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.training_step(_batch(n=16))
    assert seen == [torch.float32] and out.features.dtype == torch.bfloat16  # the backbone still in bf16
    assert torch.isfinite(out.loss)
