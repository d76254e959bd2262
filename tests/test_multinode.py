"""Two "machines" on this one: `scripts/torchrun.sh` started twice (node ranks 0 and 1, one process
each), joined by gloo over localhost, trains one run from shards."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.data.shards import ShardStream


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_one_process_each_train_one_run_from_shards(tmp_path):
    """NNCLR with two micro-batches per step: under DDP each micro-batch's backward all-reduces its
    share, and the support set receives every micro-batch of both processes."""
    shards = tmp_path / "shards"
    assert main(["shard", "digits", str(shards), "--shard-size", "100", "--val-fraction", "0.2"]) == 0
    port = free_port()
    train = ["--data", "shards", "--root", str(shards), "data.eval_split=val", "accelerator=cpu", "--output-dir", str(tmp_path / "runs"), "--name", "two-nodes",
             "--backbone", "resnet_tiny", "backbone.width=4", "augment.size=16", "--batch-size", "64",
             "--precision", "32-true", "--epochs", "1", "optimizer.warmup_epochs=0",
             "progress_bar=false", "monitor.knn_every=1", "micro_batches=2",
             "--method", "nnclr", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.pred_hidden_dim=32",
             "method.queue_size=300"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHON=sys.executable, NNODES="2", NPROC="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    script = Path(__file__).parent.parent / "scripts" / "torchrun.sh"
    nodes = [subprocess.Popen(["bash", str(script), *train], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "NODE_RANK": str(rank)}) for rank in (0, 1)]
    outputs = [node.communicate(timeout=400) for node in nodes]
    for node, (out, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["two-nodes"]
    assert sum(out.count("run folder:") for out, _ in outputs) == 1  # rank 0 reports, on node 0
    summary = json.loads((tmp_path / "runs" / "two-nodes" / "summary.json").read_text())
    # 1078 training samples in 11 shards dealt to 2 ranks: each takes the batches of 32 its 5 shards fill
    assert summary["steps"] == ShardStream(shards, batch_size=32, world_size=2).steps
    assert summary["metrics"]["knn/top1"] > 10
    checkpoint = torch.load(tmp_path / "runs" / "two-nodes" / "checkpoints" / "last.ckpt", weights_only=True)
    ranks = checkpoint["selfsup_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["views"]["generator"], ranks[1]["views"]["generator"])
    last = checkpoint["state_dict"]
    keys = summary["steps"] * 2 * 2 * 16  # steps x processes x micro-batches x 16 samples each
    assert int(last["method.support_set.queue.ptr"]) == keys % 300 != (keys // 2) % 300


def test_several_nodes_need_a_run_name_unless_slurm_gives_one(monkeypatch):
    from selfsup.config import load
    from selfsup.errors import ConfigError
    from selfsup.training import run_name

    config = load(overrides=["num_nodes=2"])
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError, match="give the run a --name"):
        run_name(config)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert run_name(config) == "simclr-digits-slurm4242"
