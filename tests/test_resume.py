"""Exact resume: a run stopped between checkpoints and resumed ends with the same weights and state.

A "kill" is simulated in-process by an exception raised after a training step that was not
followed by a checkpoint (everything the process held is lost, as with SIGKILL); the run is then
resumed from its last checkpoint, which was written in the middle of an epoch.
"""
from __future__ import annotations

import pytest
import torch

from selfsup.cli import main
from selfsup.engine.data_position import DataPosition

BASE = ["--data", "digits", "--backbone", "resnet_tiny", "--batch-size", "64", "--precision", "32-true",
        "backbone.width=4", "augment.size=16", "progress_bar=false", "monitor.knn_every=0",
        "data.eval_split=none", "--epochs", "2", "checkpoint_every_steps=7", "optimizer.warmup_epochs=1"]


class Killed(Exception):
    pass


def run_straight_and_killed(tmp_path, monkeypatch, extra, kill_at_step=17):
    common = ["--output-dir", str(tmp_path), *BASE, *extra]
    assert main(["train", "--name", "straight", *common]) == 0
    original = DataPosition.on_train_batch_end

    def kill(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch * pl_module.steps_per_epoch + batch_idx + 1 == kill_at_step:
            raise Killed
        original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(DataPosition, "on_train_batch_end", kill)
    with pytest.raises(Killed):
        main(["train", "--name", "killed", *common])
    monkeypatch.setattr(DataPosition, "on_train_batch_end", original)
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["callbacks"] and any(v.get("batches_done") == 14 for v in last["callbacks"].values())
    assert main(["train", "--name", "killed", "--resume", *common]) == 0
    return [torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True) for n in ("straight", "killed")]


def assert_same_state(a, b):
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    for key in sa:
        a_values, b_values = (v.values() if isinstance(v, dict) else [v] for v in (sa[key], sb[key]))  # extra state
        for va, vb in zip(a_values, b_values):
            if va.is_floating_point():
                torch.testing.assert_close(va, vb, rtol=0, atol=1e-6, msg=key)
            else:
                assert torch.equal(va, vb), key
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        for (ka, va), (kb, vb) in zip(sorted(oa["state"].items()), sorted(ob["state"].items())):
            for name in va:
                torch.testing.assert_close(va[name], vb[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method, options", [
    ("simclr", ["method.proj_output_dim=16"]),
    ("mocov2", ["method.proj_output_dim=16", "method.queue_size=100"]),
    ("byol", ["method.proj_hidden_dim=32", "method.pred_hidden_dim=32", "method.proj_output_dim=16"]),
])
def test_kill_between_checkpoints_then_resume_is_exact(tmp_path, monkeypatch, method, options):
    straight, resumed = run_straight_and_killed(tmp_path, monkeypatch, ["--method", method, *options])
    assert straight["global_step"] == resumed["global_step"]
    assert_same_state(straight, resumed)


STATEFUL = {  # every method with state beyond its parameters, shrunk for the test
    "mocov1": ["method.proj_output_dim=16", "method.queue_size=100"],
    "mocov2plus": ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.queue_size=100"],
    "mocov3": ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.pred_hidden_dim=32"],
    "nnclr": ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.pred_hidden_dim=32",
              "method.queue_size=100"],
    "npid": ["method.proj_output_dim=16", "method.num_negatives=32"],
    "dino": ["method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16"],
    "ressl": ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.queue_size=100"],
    "swav": ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.num_prototypes=20",
             "method.freeze_prototypes_iters=5", "method.queue_size=64", "method.epoch_queue_starts=1"],
    "tico": ["method.proj_hidden_dim=32", "method.proj_output_dim=16"],
    "deepcluster": ["method.num_clusters=20", "method.pca_dim=8", "method.kmeans_iterations=3"],
    "deepclusterv2": ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.num_prototypes=[20, 20]",
                      "method.kmeans_iterations=3"],
    "odc": ["method.neck_hidden_dim=32", "method.neck_output_dim=16", "method.num_clusters=20",
            "method.min_cluster_size=2", "method.kmeans_iterations=3"],
    "densecl": ["method.proj_output_dim=16", "method.queue_size=100", "method.lambda_warmup_steps=5"],
    "relativeloc": ["method.hidden_dim=32"],
    "wmse": ["method.proj_hidden_dim=32", "method.proj_output_dim=8", "method.w_size=32"],
}


@pytest.mark.parametrize("method", sorted(STATEFUL))
def test_every_stateful_method_resumes_exactly(tmp_path, monkeypatch, method):
    straight, resumed = run_straight_and_killed(tmp_path, monkeypatch, ["--method", method, *STATEFUL[method]])
    assert_same_state(straight, resumed)
