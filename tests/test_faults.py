"""Faults a long run must survive: SIGKILL, SIGTERM / SIGUSR1 preemption, a failed checkpoint write,
a corrupt checkpoint, non-finite losses and gradients."""
from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from selfsup.cli import main
from selfsup.engine.preemption import PREEMPTED_EXIT_CODE

BASE = ["--data", "digits", "--backbone", "resnet_tiny", "--batch-size", "64", "--precision", "32-true",
        "backbone.width=4", "augment.size=16", "progress_bar=false", "monitor.knn_every=0",
        "data.eval_split=none", "method.proj_output_dim=16", "checkpoint_every_steps=5"]


def start(tmp_path: Path, name: str, epochs: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "selfsup", "train", "--output-dir", str(tmp_path), "--name", name,
           "--epochs", str(epochs), *BASE]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_sigkill_between_checkpoints_then_resume_matches_the_straight_run(tmp_path):
    epochs = 4
    assert main(["train", "--output-dir", str(tmp_path), "--name", "straight", "--epochs", str(epochs), *BASE]) == 0
    proc = start(tmp_path, "killed", epochs)
    wait_for(tmp_path / "killed" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "summary.json").exists()  # killed before the end
    assert main(["train", "--output-dir", str(tmp_path), "--name", "killed", "--epochs", str(epochs), "--resume",
                 *BASE]) == 0
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
            for n in ("straight", "killed"))
    for key in a:
        torch.testing.assert_close(a[key].double(), b[key].double(), rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_saves_at_the_next_step_and_exits_with_its_own_status(tmp_path, sig):
    proc = start(tmp_path, "run", epochs=50)
    wait_for(tmp_path / "run" / "checkpoints" / "last.ckpt", proc)
    first = (tmp_path / "run" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-2000:]
    assert f"Received {signal.Signals(sig).name}" in err and "--resume" in err and "Traceback" not in err
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.stat().st_mtime_ns > first  # a fresh checkpoint at the signal
    assert not list(last.parent.glob("*.tmp"))
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", "--resume", *BASE]) == 0


def test_failed_checkpoint_write_stops_and_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    real_save, calls = L.Trainer.save_checkpoint, []

    def disk_full_on_third(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"partial")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", disk_full_on_third)
    code = main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", *BASE])
    err = capsys.readouterr().err
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert code == 2 and "No space left on device" in err and str(last) in err
    assert torch.load(last, weights_only=True)["state_dict"]  # the previous one, intact
    assert not list(last.parent.glob("*.tmp"))


def test_resume_falls_back_from_a_corrupt_last_checkpoint(tmp_path, capsys, caplog):
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", "checkpoint_every=1",
                 *BASE]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])  # truncated
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "3", "--resume", *BASE]) == 0
    assert "epoch_0002.ckpt" in caplog.text and "last.ckpt" in caplog.text
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", *BASE]) == 0
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"garbage")
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", "--resume", *BASE]) == 2
    err = capsys.readouterr().err
    assert "last.ckpt" in err and "no intact checkpoint" in err


def _nan_after(monkeypatch, calls_before_nan: int, times: int, where: str):
    from selfsup.methods import SimCLR

    real_step, calls = SimCLR.training_step, []

    def step(self, batch):
        out = real_step(self, batch)
        calls.append(1)
        if calls_before_nan < len(calls) <= calls_before_nan + times:
            if where == "loss":
                out.loss = out.loss * float("nan")
            else:  # a finite loss whose gradient is not finite
                out.loss = _InfGrad.apply(out.loss)
        return out

    monkeypatch.setattr(SimCLR, "training_step", step)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_step_stops_with_step_and_terms(tmp_path, monkeypatch, capsys, where):
    _nan_after(monkeypatch, calls_before_nan=4, times=1, where=where)
    code = main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", *BASE])
    err = capsys.readouterr().err
    assert code == 2 and "optimizer step 4" in err and where in err and "checkpoint" in err


def test_non_finite_steps_are_skipped_up_to_the_limit(tmp_path, monkeypatch, capsys):
    from selfsup.engine.logger import read_metrics

    _nan_after(monkeypatch, calls_before_nan=4, times=2, where="loss")
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", "max_skipped_steps=2",
                 "log_every_n_steps=1", *BASE]) == 0
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert max(r.get("train/skipped_steps", 0) for r in records) == 2
    _nan_after(monkeypatch, calls_before_nan=4, times=3, where="loss")
    code = main(["train", "--output-dir", str(tmp_path), "--name", "run2", "--epochs", "1", "max_skipped_steps=2",
                 *BASE])
    assert code == 2 and "more than max_skipped_steps=2" in capsys.readouterr().err


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_unwritable_run_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    real_write = Path.write_text

    def read_only_filesystem(self, *args, **kwargs):
        if self.name == ".write_test":
            raise OSError(errno.EROFS, "Read-only file system")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only_filesystem)
    code = main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", *BASE])
    err = capsys.readouterr().err
    assert code == 2 and "is not writable" in err and "Read-only file system" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training


def test_failed_metrics_write_stops_with_a_clear_message(tmp_path, monkeypatch, capsys):
    real_open, calls = Path.open, []

    def disk_full_on_metrics(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and "a" in mode:
            calls.append(1)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", disk_full_on_metrics)
    code = main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", "log_every_n_steps=1",
                 *BASE])
    err = capsys.readouterr().err
    assert code == 2 and "metrics.jsonl" in err and "No space left on device" in err


def test_sigusr1_is_passed_on_to_the_handler_installed_before_after_the_checkpoint(tmp_path, monkeypatch, capsys):
    """Under SLURM, Lightning installs its auto-requeue handler for SIGUSR1; selfsup's handler chains it."""
    from selfsup.methods import SimCLR

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    calls = []

    def requeue(signum, frame):  # stands in for Lightning's SLURM requeue handler
        calls.append((signum, last.is_file()))

    real_step, steps = SimCLR.training_step, []

    def step_then_signal(self, batch):
        steps.append(1)
        if len(steps) == 3:
            import os
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_step(self, batch)

    monkeypatch.setattr(SimCLR, "training_step", step_then_signal)
    previous = signal.signal(signal.SIGUSR1, requeue)
    try:
        code = main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "5",
                     *[a for a in BASE if not a.startswith("checkpoint_every_steps")]])
        assert signal.getsignal(signal.SIGUSR1) is requeue  # put back after the run
    finally:
        signal.signal(signal.SIGUSR1, previous)
    err = capsys.readouterr().err
    assert code == PREEMPTED_EXIT_CODE and calls == [(signal.SIGUSR1, True)]  # once, after last.ckpt was written
    assert "after step 3 and passed SIGUSR1 on to the handler installed before" in err and "requeue" in err


def test_a_job_slurm_requeued_resumes_without_the_flag(tmp_path, monkeypatch, caplog):
    args = ["train", "--output-dir", str(tmp_path), "--name", "run", *BASE]
    assert main([*args, "--epochs", "1"]) == 0
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert main([*args, "--epochs", "2"]) == 0  # the same command, run again by SLURM
    assert "SLURM requeued this job (SLURM_RESTART_COUNT=1): resuming run run" in caplog.text
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a first start is not a resume: the run folder is kept
    assert main([*args, "--epochs", "3"]) == 2


def test_num_nodes_reaches_the_trainer_and_splits_the_batch(tmp_path, monkeypatch, capsys):
    import selfsup.training as training

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(training.L, "Trainer", fake_trainer)
    with pytest.raises(Stop):
        main(["train", "--output-dir", str(tmp_path), "--name", "a", "--epochs", "1", "--num-nodes", "2",
              "--devices", "2", *BASE])
    assert seen["num_nodes"] == 2 and seen["devices"] == 2 and type(seen["strategy"]).__name__ == "DDPStrategy"
    assert main(["train", "--output-dir", str(tmp_path), "--name", "b", "--epochs", "1", "--num-nodes", "3",
                 *BASE]) == 2
    assert "divisible by the number of processes, devices x num_nodes = 1 x 3 = 3" in capsys.readouterr().err
