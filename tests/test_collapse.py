"""Collapse monitors (SimSiam's embedding std, RankMe) against slow formulas, known answers, and in a run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.eval.collapse import collapse_metrics, embedding_std, rankme


def slow_std(z: np.ndarray) -> float:
    """Per-dimension unbiased std of the L2-normalised rows, averaged over dimensions, by explicit loops."""
    n, d = z.shape
    rows = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in z.tolist()]
    stds = []
    for j in range(d):
        column = [r[j] for r in rows]
        mean = sum(column) / n
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in column) / (n - 1)))
    return sum(stds) / d


def slow_rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    """Garrido et al. 2023, Eq. 1, with numpy's SVD."""
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = s / np.abs(s).sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("shape", [(7, 3), (40, 16), (12, 30)])
def test_against_slow_formulas(shape):
    g = torch.Generator().manual_seed(sum(shape))
    z = torch.randn(*shape, generator=g) * torch.rand(shape[1], generator=g) + torch.randn(shape[1], generator=g)
    assert float(embedding_std(z)) == pytest.approx(slow_std(z.double().numpy()), rel=1e-5)
    assert float(rankme(z)) == pytest.approx(slow_rankme(z.numpy()), rel=1e-6)
    assert float(rankme(z, eps=0.0)) == pytest.approx(slow_rankme(z.numpy(), eps=0.0), rel=1e-6)


def test_known_answers():
    d = 12
    same = torch.randn(1, d).expand(50, d)  # every image mapped to one point
    assert float(embedding_std(same)) == pytest.approx(0.0, abs=1e-6)
    assert float(rankme(same)) == pytest.approx(1.0, abs=1e-3)
    assert float(rankme(torch.zeros(10, d))) == pytest.approx(1.0, abs=1e-3)

    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert float(rankme(q)) == pytest.approx(d, rel=1e-4)  # orthonormal rows: all singular values equal
    # the rows of the identity: each column holds one 1 among d, whose unbiased std is exactly 1/sqrt(d)
    assert float(embedding_std(torch.eye(d))) == pytest.approx(1 / math.sqrt(d), rel=1e-6)

    g = torch.Generator().manual_seed(2)
    low = torch.randn(200, 3, dtype=torch.float64, generator=g) @ torch.randn(3, d, dtype=torch.float64, generator=g)
    s = np.linalg.svd(low.numpy(), compute_uv=False)  # rank 3: three non-zero singular values
    p = s[:3] / s.sum() + 1e-7
    expected = math.exp(-(p * np.log(p)).sum())  # the d - 3 zero values add eps log eps ~ 1e-6 each
    assert float(rankme(low)) == pytest.approx(expected, abs=1e-4)
    assert float(rankme(low)) < 3.0 + 1e-3

    spread = torch.randn(4000, 16, generator=torch.Generator().manual_seed(1))
    assert float(embedding_std(spread)) == pytest.approx(1 / math.sqrt(16), rel=0.03)
    assert float(rankme(spread)) > 15.5


def test_invariances():
    z = torch.randn(30, 8, generator=torch.Generator().manual_seed(2))
    scale = torch.rand(30, 1) + 0.5
    assert float(embedding_std(z * scale)) == pytest.approx(float(embedding_std(z)), rel=1e-5)  # per-row scale
    assert float(rankme(3.0 * z)) == pytest.approx(float(rankme(z)), rel=1e-9)


def test_bad_input_is_a_clear_error():
    for bad in (torch.randn(5), torch.randn(1, 4), torch.randn(2, 3, 4)):
        with pytest.raises(ConfigError, match=r"\(N, D\)"):
            embedding_std(bad)
        with pytest.raises(ConfigError, match=r"\(N, D\)"):
            rankme(bad)
    nan = torch.randn(4, 3)
    nan[1, 2] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        rankme(nan)
    with pytest.raises(ConfigError, match="eps"):
        rankme(torch.randn(4, 3), eps=-1.0)


def test_collapse_metrics_keys_and_nan():
    out = collapse_metrics(torch.randn(64, 25))
    assert set(out) == {"collapse/std", "collapse/std_ideal", "collapse/rankme"}
    assert out["collapse/std_ideal"] == pytest.approx(0.2)
    nan = torch.randn(6, 4)
    nan[0, 0] = float("inf")
    out = collapse_metrics(nan)  # a monitor reports, it does not stop the run
    assert math.isnan(out["collapse/std"]) and math.isnan(out["collapse/rankme"]) and out["collapse/std_ideal"] == 0.5


def test_monitor_logs_collapse_keys_in_a_tiny_run(tmp_path):
    from selfsup.cli import main
    from selfsup.engine import read_metrics

    args = ["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", "--data", "digits",
            "--backbone", "resnet_tiny", "--batch-size", "64", "--precision", "32-true", "backbone.width=4",
            "augment.size=8", "progress_bar=false", "monitor.resources_every=0", "data.val_fraction=0.85"]
    assert main(args) == 0
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "collapse/rankme" in r]
    assert len(records) == 1
    record = records[0]
    dim = 4 * 8  # resnet_tiny: 8 x width features
    assert record["collapse/std_ideal"] == pytest.approx(1 / math.sqrt(dim))
    assert 0 < record["collapse/std"] < 1 and 1 <= record["collapse/rankme"] <= dim
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["collapse/rankme"] == pytest.approx(record["collapse/rankme"])
