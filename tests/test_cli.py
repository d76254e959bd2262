"""End to end through the command line: train, eval knn, resume, list, and the bad-input errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from selfsup.cli import main

TINY = ["--data", "digits", "--backbone", "resnet_tiny", "--batch-size", "64", "--precision", "32-true",
        "backbone.width=4", "augment.size=16", "progress_bar=false", "method.proj_output_dim=16"]


def train(tmp_path, *extra):
    return main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "1", *TINY, *extra])


def test_train_eval_resume(tmp_path, capsys):
    assert train(tmp_path) == 0
    run = tmp_path / "run"
    for name in ["config.yaml", "metrics.jsonl", "summary.json", "backbone.safetensors", "checkpoints/last.ckpt"]:
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in records) and any("knn/top1" in r for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["metrics"]["knn/top1"] <= 100

    capsys.readouterr()
    for target in [run, run / "backbone.safetensors", run / "checkpoints" / "last.ckpt"]:
        assert main(["eval", "knn", str(target), "--k", "20"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "top-1" in l]
    assert len(lines) == 3 and len({l.split("top-1")[1] for l in lines}) == 1  # same weights, same score

    # resume to two epochs: continues the same metrics file and ends at epoch 2
    n_before = len(records)
    assert main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", "--resume", *TINY]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) > n_before and max(r.get("epoch", 0) for r in records) == 1
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] > 0


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    assert train(tmp_path) == 0
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert train(tmp_path) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_exported_resnet_loads_into_torchvision(tmp_path):
    args = ["train", "--output-dir", str(tmp_path), "--name", "r18", "--epochs", "1", "--data", "digits",
            "--backbone", "resnet18", "--batch-size", "256", "--precision", "32-true", "augment.size=8",
            "progress_bar=false", "monitor.knn_every=0", "monitor.probe=false", "data.eval_split=none"]
    assert main(args) == 0
    from safetensors.torch import load_file

    from selfsup.backbones import adapt_stem, load_exported

    state = load_file(tmp_path / "r18" / "backbone.safetensors")
    model = adapt_stem(torchvision.models.resnet18(), in_channels=1, cifar_stem=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    net, meta = load_exported(tmp_path / "r18" / "backbone.safetensors")
    model.fc = torch.nn.Identity()
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model.eval()(x), net.eval()(x))
    assert meta["image_size"] == 8 and meta["channels"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "simclrr"], "Unknown method 'simclrr'. Did you mean: simclr"),
        (["--backbone", "resnet19"], "Unknown backbone 'resnet19'"),
        (["--data", "cifar11"], "Unknown data set 'cifar11'"),
        (["optimizer.lrr=1"], "Did you mean: lr"),
        (["--data", "cifar10"], "needs data.root=PATH"),
        (["--batch-size", "5000"], "larger than the training set"),
        (["method.temperature=0"], "temperature"),
    ],
)
def test_bad_input_gets_one_clear_error(tmp_path, capsys, args, message):
    code = main(["train", "--output-dir", str(tmp_path), "--name", "bad", "--epochs", "1", *TINY, *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_data_root_shows_layout_and_download_flag(tmp_path, capsys):
    code = main(["train", "--output-dir", str(tmp_path), *TINY, "--data", "cifar10", "--root", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "nowhere") in err and "data_batch_1" in err and "--download" in err


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    assert train(tmp_path) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    from selfsup.methods import SimCLR

    real_step, calls = SimCLR.training_step, []

    def nan_on_third_call(self, batch):
        out = real_step(self, batch)
        calls.append(1)
        if len(calls) == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", nan_on_third_call)
    code = main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "3", "--resume", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "became nan at optimizer step 23" in err and str(last) in err  # 21 steps/epoch
    assert last.read_bytes() == good


def test_folder_data_trains(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(12):
                pixels = (torch.rand(20, 24, 3, generator=g) * 255).byte().numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    code = main(["train", "--output-dir", str(tmp_path / "runs"), "--name", "f", "--epochs", "1", "--data", "folder",
                 "--root", str(tmp_path / "train"), "data.image_size=16", f"data.eval_root={tmp_path / 'val'}",
                 "--backbone", "resnet_tiny", "--batch-size", "8", "--precision", "32-true", "progress_bar=false"])
    assert code == 0
    summary = json.loads((tmp_path / "runs" / "f" / "summary.json").read_text())
    assert "knn/top1" in summary["metrics"]


def test_list_command_entry_point(capsys):
    # the entry point itself in a fresh process (--version imports only the CLI); `list` in-process,
    # where the registries it reads are already imported (10 s less)
    version = subprocess.run([sys.executable, "-m", "selfsup", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("selfsup ")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["simclr", "mocov2", "byol", "simsiam", "resnet18", "resnet_small", "digits", "fashion_mnist",
                 "folder", "cifar10/simclr"]:
        assert name in out


def _image_folder(root, broken=False):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray((torch.rand(12, 12, 3, generator=g) * 255).byte().numpy()).save(root / cls / f"{i}.png")
    if broken:
        (root / "a" / "broken.png").write_bytes(b"not an image")


def test_corrupt_image_in_a_worker_is_one_clear_error(tmp_path, capsys):
    _image_folder(tmp_path / "imgs", broken=True)
    args = ["train", "--output-dir", str(tmp_path / "runs"), "--epochs", "1", "--data", "folder", "--root",
            str(tmp_path / "imgs"), "data.image_size=8", "--backbone", "resnet_tiny", "--batch-size", "13",
            "--num-workers", "1", "--precision", "32-true", "progress_bar=false"]
    assert main([*args, "--name", "a"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "--skip-bad-images" in err and "Traceback" not in err
    assert main([*args, "--name", "b", "--skip-bad-images", "--batch-size", "4"]) == 0
    summary = json.loads((tmp_path / "runs" / "b" / "summary.json").read_text())
    assert [Path(s["path"]).name for s in summary["skipped_images"]] == ["broken.png"]


def test_same_seed_same_weights(tmp_path):
    from safetensors.torch import load_file

    for name in ("x", "y"):
        assert main(["train", "--output-dir", str(tmp_path), "--name", name, "--epochs", "1", *TINY,
                     "monitor.knn_every=0", "data.eval_split=none"]) == 0
    a, b = (load_file(tmp_path / n / "backbone.safetensors") for n in ("x", "y"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["train", "--output-dir", str(tmp_path), "--name", "z", "--epochs", "1", *TINY, "--seed", "1",
                 "monitor.knn_every=0", "data.eval_split=none"]) == 0
    c = load_file(tmp_path / "z" / "backbone.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_demo_runs_and_prints_the_three_rows(tmp_path, capsys):
    from selfsup.demo import run_demo

    rows = run_demo(output_dir=tmp_path, epochs=2)
    out = capsys.readouterr().out
    assert len(rows) == 3 and all(0 <= v <= 100 for v in rows.values())
    assert "raw pixels" in out and "random init" in out and "SimCLR-trained" in out
    assert rows["raw pixels"] > 90  # raw-pixel k-NN on the digits is a strong baseline (95.8% measured)


def test_two_process_ddp_run_on_cpu_resumes_exactly(tmp_path):
    """Lightning's DDP launcher re-runs the command per process, so this goes through subprocesses.
    Two processes train two epochs; a second run resumed from the first one's epoch-1 checkpoint
    ends with the same weights: each rank got its own view generator and global generator back."""
    from safetensors.torch import load_file

    common = [sys.executable, "-m", "selfsup", "train", "--output-dir", str(tmp_path), "--epochs", "2",
              "--devices", "2", "accelerator=cpu", *TINY, "--batch-size", "128", "checkpoint_every=1",
              "optimizer.warmup_epochs=1", "monitor.knn_every=0"]
    proc = subprocess.run([*common, "--name", "straight"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["straight"]  # both processes used one run folder
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["steps"] == 2 * (1347 // 128)
    assert proc.stdout.count("run folder:") == 1
    epoch_one = torch.load(tmp_path / "straight" / "checkpoints" / "epoch_0001.ckpt", weights_only=True)
    assert len(epoch_one["selfsup_ranks"]) == 2
    views = [rank["views"]["generator"] for rank in epoch_one["selfsup_ranks"]]
    assert not torch.equal(views[0], views[1])  # each rank draws its own views
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "straight" / "checkpoints" / "epoch_0001.ckpt", tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    proc = subprocess.run([*common, "--name", "resumed", "--resume"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (load_file(tmp_path / n / "backbone.safetensors") for n in ("straight", "resumed"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Model, optimizer, schedule, EMA target, view generator and data order all resume."""
    from safetensors.torch import load_file

    from selfsup.engine.checkpoint import EpochCheckpoint

    common = ["--output-dir", str(tmp_path), "--epochs", "2", *TINY, "--method", "byol",
              "method.proj_hidden_dim=32", "method.pred_hidden_dim=32", "optimizer.warmup_epochs=1"]
    assert main(["train", "--name", "straight", *common]) == 0

    save = EpochCheckpoint.on_train_epoch_end

    def crash_after_first_checkpoint(self, trainer, pl_module):
        save(self, trainer, pl_module)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", crash_after_first_checkpoint)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["train", "--name", "resumed", *common])
    monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", save)
    assert main(["train", "--name", "resumed", "--resume", *common]) == 0
    a, b = (load_file(tmp_path / n / "backbone.safetensors") for n in ("straight", "resumed"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    ta, tb = (torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
              for n in ("straight", "resumed"))
    for key in (k for k in ta if k.startswith("method.target.")):
        torch.testing.assert_close(ta[key], tb[key], rtol=0, atol=1e-6, msg=key)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    """A crafted pickle in last.ckpt must not execute, neither on --resume nor in eval knn."""
    import pickle

    assert train(tmp_path) == 0
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.write_bytes(pickle.dumps({"state_dict": Payload()}))
    assert main(["eval", "knn", str(last)]) == 2
    assert "Cannot read checkpoint" in capsys.readouterr().err
    code = main(["train", "--output-dir", str(tmp_path), "--name", "run", "--epochs", "2", "--resume", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "no intact checkpoint" in err and "would run code" in err
    assert not marker.exists()


def test_version_flag(capsys):
    import selfsup

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"selfsup {selfsup.__version__}"


@pytest.mark.parametrize("flag, hint", [
    (["--lr", "0.5"], "optimizer.lr=VALUE"),
    (["--weight-decay=1e-4"], "optimizer.weight_decay=1e-4"),
    (["--knn-evry=2"], "monitor.knn_every=2"),  # a near miss
])
def test_a_flag_train_lacks_names_the_override_that_sets_it(capsys, flag, hint):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *flag])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and hint in err, err


def test_an_unknown_flag_like_no_setting_gets_no_hint(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--zzz"])
    assert "overrides" not in capsys.readouterr().err


def test_exports_and_feature_caches_follow_the_umask(tmp_path):
    """safetensors writes 0600; a run's exports and feature caches must follow the umask like its
    other files (group-readable on a shared cluster)."""
    import os
    import stat

    from selfsup import backbones
    from selfsup.backbones.export import export_backbone
    from selfsup.eval.cache import cached_features

    images = torch.utils.data.TensorDataset(torch.rand(4, 3, 8, 8), torch.arange(4), torch.arange(4))  # image, label, index
    for mask, mode in [(0o027, 0o640), (0o022, 0o644)]:
        old = os.umask(mask)
        try:
            path = export_backbone(backbones.get("resnet_tiny", width=4), tmp_path / f"{mask:o}.safetensors")
            cached_features(torch.nn.Flatten(), images, lambda x: x, cache_dir=tmp_path / f"cache{mask:o}",
                            key={"case": mask})
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == mode
        [cache] = (tmp_path / f"cache{mask:o}").iterdir()
        assert stat.S_IMODE(cache.stat().st_mode) == mode


def test_resume_without_a_name_continues_the_run_of_the_same_command(tmp_path, capsys, caplog):
    """The default run name carries a time stamp; the stopped command plus --resume finds its run."""
    args = ["train", "--output-dir", str(tmp_path), "--data", "digits", "--backbone", "resnet_tiny", "backbone.width=4",
            "--batch-size", "128", "--epochs", "1", "--precision", "32-true", "progress_bar=false",
            "monitor.knn_every=0", "data.eval_split=none", "augment.size=16", "optimizer.warmup_epochs=0"]
    assert main(args) == 0
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    captured = capsys.readouterr()
    assert f"run folder: {run}" in captured.out and f"continuing run {run.name}" in caplog.text
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [run]  # no second run folder
    assert main([*args, "--seed", "1", "--resume"]) == 2  # another config: nothing to continue
    err = capsys.readouterr().err
    assert "no run in" in err and "trained with this config" in err and run.name in err


def test_data_may_name_a_folder_of_images(tmp_path, capsys):
    import yaml

    _image_folder(tmp_path / "imgs")
    common = ["train", "--output-dir", str(tmp_path / "runs"), "--epochs", "1", "augment.size=8", "--backbone",
              "resnet_tiny", "backbone.width=4", "--batch-size", "6", "--precision", "32-true", "progress_bar=false",
              "monitor.knn_every=0", "optimizer.warmup_epochs=0"]
    assert main([*common, "--data", str(tmp_path / "imgs"), "--name", "by-path"]) == 0
    saved = yaml.safe_load((tmp_path / "runs" / "by-path" / "config.yaml").read_text())
    assert saved["data"]["name"] == "folder" and saved["data"]["root"] == str(tmp_path / "imgs")
    from selfsup.backbones import read_metadata  # no data.image_size: the folder is decoded at the view size

    assert read_metadata(tmp_path / "runs" / "by-path" / "backbone.safetensors")["image_size"] == 8
    assert main([*common, "--data", str(tmp_path / "imgs"), "--root", str(tmp_path), "--name", "both"]) == 2
    assert "give the folder once" in capsys.readouterr().err
    assert main([*common, "--data", "fashion_mnst", "--name", "typo"]) == 2  # a name, not a path: its own error
    assert "fashion_mnist" in capsys.readouterr().err


def test_without_config_a_run_starts_from_the_recipe_for_its_data_and_says_what_it_will_do(tmp_path, caplog):
    """No --config: the packaged digits/simclr recipe applies (flags on top) and the log says so;
    --config defaults keeps the global defaults."""
    import yaml

    args = ["train", "--output-dir", str(tmp_path), "--data", "digits", "--backbone", "resnet_tiny", "backbone.width=4",
            "--batch-size", "256", "--epochs", "1", "--precision", "32-true", "progress_bar=false", "monitor.knn_every=0",
            "data.eval_split=none", "optimizer.warmup_epochs=0"]
    with caplog.at_level("INFO", logger="selfsup"):
        assert main([*args, "--name", "first"]) == 0
    assert "starting from the packaged recipe digits/simclr" in caplog.text
    assert "Training simclr on digits (1,347 images of 8 px, 1 channel)" in caplog.text
    assert "1 epoch x 5 steps of 256 images on 1 x cpu in 32-true" in caplog.text
    recipe = yaml.safe_load((tmp_path / "first" / "config.yaml").read_text())
    assert recipe["optimizer"]["name"] == "sgd" and recipe["method"]["temperature"] == 0.5  # the recipe's
    assert recipe["backbone"] == {"name": "resnet_tiny", "width": 4} and recipe["batch_size"] == 256  # the flags'

    caplog.clear()
    with caplog.at_level("INFO", logger="selfsup"):
        assert main([*args, "--config", "defaults", "--name", "plain"]) == 0
    assert "packaged recipe" not in caplog.text
    plain = yaml.safe_load((tmp_path / "plain" / "config.yaml").read_text())
    assert plain["method"] == {"name": "simclr"} and plain["augment"] != recipe["augment"]


def test_eval_of_a_labelled_folder_scores_its_held_out_folder(tmp_path, capsys):
    """A folder has no test split: eval refuses to score the training images by default, scores
    --test-data, records it, and refuses a held-out folder whose classes differ."""
    from PIL import Image

    from selfsup import backbones
    from selfsup.backbones import export_backbone

    g = torch.Generator().manual_seed(0)
    for split, count in (("train", 10), ("held-out", 4)):
        for cls, shade in (("cat", 40), ("dog", 200)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = (shade + torch.randn(16, 16, 3, generator=g) * 10).clamp(0, 255).byte().numpy()
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    weights = tmp_path / "backbone.safetensors"
    export_backbone(backbones.get("resnet_tiny", width=4), weights, image_size=16, data="folder")
    train, held_out = str(tmp_path / "train"), str(tmp_path / "held-out")
    assert main(["eval", "knn", str(weights), "--data", train, "--no-cache"]) == 2
    assert "no test split: pass --test-data FOLDER" in capsys.readouterr().err
    out = tmp_path / "eval"
    assert main(["eval", "knn", str(weights), "--data", train, "--test-data", held_out, "--k", "5", "--no-cache",
                 "--out", str(out)]) == 0
    result = json.loads(next(out.glob("knn*.json")).read_text())
    assert result["data"]["test_root"] == str(Path(held_out).resolve()) and result["data"]["test_size"] == 8
    assert result["data"]["train_size"] == 20
    shutil.move(str(tmp_path / "held-out" / "dog"), str(tmp_path / "held-out" / "wolf"))
    assert main(["eval", "knn", str(weights), "--data", train, "--test-data", held_out, "--no-cache"]) == 2
    assert "same class folders" in capsys.readouterr().err
