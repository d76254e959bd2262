"""strategy=fsdp: the ViT backbones sharded over two CPU processes (gloo) train to DDP's weights (with
gradient accumulation, clipping and activation checkpointing), resume exactly, and write checkpoints
and exports that load in one process."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from method_sizes import ENGINE_VIT, tiny_vit
from selfsup import backbones, methods
from selfsup.config import load
from selfsup.engine.sharding import sharded_grad_norm, unsharded_copy
from selfsup.errors import ConfigError
from selfsup.training import training_strategy

# DINO: an EMA teacher sharded like its student, multi-crop views, a replicated head and centre,
# gradient clipping (the norm over shards and whole parameters)
DINO = ["--method", "dino", *ENGINE_VIT, *methods.card("dino").overrides("small"), "optimizer.clip_grad_norm=0.5"]


def train(tmp_path, name: str, strategy: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "selfsup", "train", "--config", "defaults", "--output-dir", str(tmp_path),
               "--name", name, "--epochs", "2", "--devices", "2", "accelerator=cpu", "--data", "digits",
               "data.val_fraction=0.8", "--batch-size", "64", "--precision", "32-true", "augment.size=16",
               "progress_bar=false", "monitor.knn_k=20", "monitor.knn_every=1", "checkpoint_every=1",
               "micro_batches=2", f"strategy={strategy}", *DINO, *extra]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_fsdp_trains_to_ddps_weights_resumes_exactly_and_loads_in_one_process(tmp_path):
    train(tmp_path, "ddp", "ddp")
    # with each block's activations recomputed in the backward pass, as a ViT-L run would
    train(tmp_path, "fsdp", "fsdp", "backbone.activation_checkpointing=true")
    ddp, fsdp = (load_file(tmp_path / n / "backbone.safetensors") for n in ("ddp", "fsdp"))
    assert ddp.keys() == fsdp.keys()
    for key in ddp:  # the same computation, up to the order of the gradient sums
        torch.testing.assert_close(fsdp[key], ddp[key], rtol=0, atol=1e-5, msg=key)

    # the checkpoint is whole (rank 0 gathered it): the keys and shapes of DDP's, loadable in one process
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True) for n in ("ddp", "fsdp"))
    assert {k: v.shape for k, v in a["state_dict"].items()} == {k: v.shape for k, v in b["state_dict"].items()}
    teacher = [k for k in b["state_dict"] if k.startswith("method.teacher.backbone.")]
    assert teacher
    for key in teacher:  # the EMA teacher followed the sharded student as the whole one did
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=1e-5, msg=key)

    # killed after epoch 1 and resumed: the uninterrupted run's weights (optimizer state for
    # parameters that had none, e.g. the unused mask token, is not invented on load)
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "fsdp" / "checkpoints" / "epoch_0001.ckpt", tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    train(tmp_path, "resumed", "fsdp", "--resume", "backbone.activation_checkpointing=true")
    resumed = load_file(tmp_path / "resumed" / "backbone.safetensors")
    for key in fsdp:
        torch.testing.assert_close(resumed[key], fsdp[key], rtol=0, atol=0, msg=key)


def test_fsdp_is_refused_where_it_has_nothing_to_shard():
    config = load(overrides=["strategy=fsdp"])
    dino = methods.get("dino", backbone=tiny_vit(), **methods.card("dino").small)
    with pytest.raises(ConfigError, match="devices >= 2"):
        training_strategy(config, dino, processes=1)
    simclr = methods.get("simclr", backbone=backbones.get("resnet_tiny", width=4))
    with pytest.raises(ConfigError, match="is not one"):
        training_strategy(config, simclr, processes=2)
    with pytest.raises(ConfigError, match="strategy"):
        load(overrides=["strategy=zero3"])


def test_outside_a_process_group_the_helpers_are_the_one_process_operations():
    backbone = tiny_vit()
    assert unsharded_copy(backbone) is backbone  # nothing sharded: the backbone itself
    w = torch.nn.Parameter(torch.ones(4))
    w.grad = torch.full((4,), 3.0)
    assert float(sharded_grad_norm([w])) == pytest.approx(6.0)
