"""Exact resume: a run stopped between checkpoints and resumed ends with the same weights and state.

A "kill" is simulated in-process by an exception raised after a training step that was not
followed by a checkpoint (everything the process held is lost, as with SIGKILL); the run is then
resumed from its last checkpoint, which was written in the middle of an epoch.
"""
from __future__ import annotations

import pytest
import torch

from method_sizes import ENGINE_RESNET, engine_args, stateful_methods
from selfsup.cli import main
from selfsup.engine.data_position import DataPosition

# half of digits' training split (673 images, 10 steps of 64 per epoch) keeps the 20 stateful methods'
# three runs each short; the kill at step 7 falls after the mid-epoch checkpoint at step 4, so the
# resumed run restarts inside epoch 0 and crosses the epoch boundary (k-means, queues, sampler reseeding)
BASE = ["--data", "digits", "data.val_fraction=0.5", "monitor.test_at_end=false", "--batch-size", "64",
        "--precision", "32-true", "augment.size=16", "progress_bar=false", "monitor.knn_every=0", "--epochs", "2",
        "checkpoint_every_steps=4", "optimizer.warmup_epochs=1"]


class Killed(Exception):
    pass


def run_straight_and_killed(tmp_path, monkeypatch, extra, kill_at_step=7):
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
    assert last["callbacks"] and any(v.get("batches_done") == 4 for v in last["callbacks"].values())
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


def test_kill_between_checkpoints_then_resume_is_exact(tmp_path, monkeypatch):
    """A method without state of its own (SimCLR): weights, optimizer state and data position."""
    extra = ["--method", "simclr", *ENGINE_RESNET, "method.proj_output_dim=16"]
    straight, resumed = run_straight_and_killed(tmp_path, monkeypatch, extra)
    assert straight["global_step"] == resumed["global_step"]
    assert_same_state(straight, resumed)


STATEFUL = stateful_methods()  # every method with state beyond its parameters, read from the built methods


def test_the_stateful_list_is_derived_and_covers_every_kind_of_state():
    """EMA teachers (BYOL, DINO, iBOT, DINOv2, I-JEPA, MSN), queues (MoCo), memories and k-means
    labels (NPID, DeepCluster, ODC), running statistics (TiCo); not the stateless SimCLR."""
    assert {"byol", "dino", "ibot", "dinov2", "ijepa", "msn", "pmsn", "mocov2", "npid", "deepcluster", "odc",
            "tico", "swav"} <= set(STATEFUL)
    assert not {"simclr", "barlowtwins", "mae", "rotation"} & set(STATEFUL)


@pytest.mark.parametrize("method", STATEFUL)
def test_every_stateful_method_resumes_exactly(tmp_path, monkeypatch, method):
    extra = ["--method", method, *engine_args(method)]
    straight, resumed = run_straight_and_killed(tmp_path, monkeypatch, extra)
    assert straight["global_step"] == resumed["global_step"]
    assert_same_state(straight, resumed)
