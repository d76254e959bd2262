"""Evaluation protocols: known answers, split hygiene, subsets, the feature cache, result files, the CLI."""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from torch import nn

import selfsup
import selfsup.backbones as backbones
import selfsup.eval.linear as linear_module
from selfsup.augment import EvalTransform
from selfsup.cli import main
from selfsup.data import ArrayDataset, DataSubset, get
from selfsup.errors import ConfigError, DataError
from selfsup.eval import (balanced_subset, cached_features, finetune, knn_accuracy, knn_sweep, layer_decay_groups,
                          linear_probe, match_channels, read_subset, split_hash, stratified_holdout, write_result)


@pytest.fixture(autouse=True)
def one_thread():
    """The probes are many tiny ops; on a shared 2-core machine one thread is much faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clusters(n_per_class: int, classes: int, dim: int, seed: int, spread: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = 4.0 * torch.eye(classes, dim)[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


# --- linear probe -------------------------------------------------------------------------------


def test_linearly_separable_features_give_a_perfect_probe():
    train_x, train_y = clusters(40, 5, 12, seed=0)
    test_x, test_y = clusters(20, 5, 12, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=5, weight_decays=(1e-2, 1e-4))
    assert result["top1"] == 100.0 and result["val_top1"] == 100.0
    assert result["val_size"] == 20 and len(result["sweep"]) == 2
    assert result["chosen"]["weight_decay"] == 1e-2  # a tie goes to the first (stronger) weight decay


def test_shuffled_labels_give_chance():
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(500, 32, generator=g), torch.randn(1000, 32, generator=g)
    train_y, test_y = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=10, weight_decays=(1e-2, 1e-5))
    assert 4.0 < result["top1"] < 16.0  # chance is 10%; one binomial std on 1000 samples is ~1%


def test_probe_sgd_solver_separates_clusters():
    train_x, train_y = clusters(30, 3, 8, seed=2)
    test_x, test_y = clusters(10, 3, 8, seed=3)
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=3, solver="sgd", lrs=(0.1,),
                          weight_decays=(1e-4,), epochs=5, batch_size=16)
    assert result["top1"] == 100.0 and result["val_top1"] is None and result["sweep"] == []


def test_probe_folds_standardisation_and_warm_starts_from_its_own_output():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(200, 6, generator=g) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0, 5.0]) + 4.0
    y = (x[:, 0] + 0.1 * x[:, 1] > 5.0).long()
    probe = linear_module.train_linear(x, y, num_classes=2, weight_decay=1e-3)
    # Standardised inside: rescaled and shifted features give the same classifier on raw inputs.
    scale, shift = torch.tensor([3.0, 0.1, 20.0, 1.0, 0.5, 2.0]), torch.tensor([-1.0, 5.0, 0.0, 2.0, 9.0, -3.0])
    moved = linear_module.train_linear(x * scale + shift, y, num_classes=2, weight_decay=1e-3)
    torch.testing.assert_close(moved(x * scale + shift), probe(x), rtol=1e-3, atol=1e-3)
    # Started at its own optimum, one more iteration leaves the classifier where it was.
    again = linear_module.train_linear(x, y, num_classes=2, weight_decay=1e-3, init=probe, epochs=1)
    torch.testing.assert_close(again(x), probe(x), rtol=1e-3, atol=1e-3)
    cold = linear_module.train_linear(x, y, num_classes=2, weight_decay=1e-3, epochs=1)
    assert not torch.allclose(cold(x), probe(x), rtol=1e-3, atol=1e-3)


def test_probe_sweep_never_sees_the_test_split(monkeypatch):
    train_x, train_y = clusters(30, 4, 10, seed=4, spread=2.0)  # overlapping: the weight decay matters
    test_x, test_y = clusters(15, 4, 10, seed=5, spread=2.0)
    sentinel = 1e6
    marked = test_x.clone()
    marked[:, 0] = sentinel  # any training call that saw a test row would see this value
    seen = []
    real = linear_module.train_linear

    def spy(x, y, **kw):
        seen.append((x.shape[0], bool((x == sentinel).any())))
        return real(x, y, **kw)

    monkeypatch.setattr(linear_module, "train_linear", spy)
    wds = (1e-1, 1e-3, 1e-5)
    linear_probe(train_x, train_y, marked, test_y, num_classes=4, weight_decays=wds)
    fit, val = stratified_holdout(train_y, 0.1, 0)
    assert seen == [(len(fit), False)] * 3 + [(120, False)]  # sweep on the carve, then once on all training rows
    # Other test data changes the test score but neither the sweep nor the choice.
    first = linear_probe(train_x, train_y, test_x, test_y, num_classes=4, weight_decays=wds)
    wrong = (test_y + 1) % 4
    other = linear_probe(train_x, train_y, test_x, wrong, num_classes=4, weight_decays=wds)
    assert other["sweep"] == first["sweep"] and other["chosen"] == first["chosen"]
    assert first["top1"] > 50.0 > other["top1"]


def test_probe_rejects_unlabelled_rows():
    x, y = clusters(5, 2, 4, seed=0)
    y[0] = -1
    with pytest.raises(ConfigError, match="unlabelled"):
        linear_probe(x, y, x, y.clamp(min=0), num_classes=2)


# --- k-NN sweep ---------------------------------------------------------------------------------


def test_knn_sweep_chooses_k_on_training_features_only(monkeypatch):
    import selfsup.eval.knn as knn_module

    train_x, train_y = clusters(40, 4, 8, seed=6, spread=3.0)
    queries = []
    real = knn_module.knn_accuracy

    def spy(memory_x, memory_y, query_x, query_y, **kw):
        queries.append(query_x)
        return real(memory_x, memory_y, query_x, query_y, **kw)

    monkeypatch.setattr(knn_module, "knn_accuracy", spy)
    ks = (1, 5, 25, 100)
    result = knn_sweep(train_x, train_y, ks=ks, temperature=0.1, val_fraction=0.2, seed=3)
    fit, val = stratified_holdout(train_y, 0.2, 3)
    assert len(queries) == len(ks) and all(torch.equal(q, train_x[val]) for q in queries)
    expected = [real(train_x[fit], train_y[fit], train_x[val], train_y[val], num_classes=4, k=k)["top1"] for k in ks]
    best = max(range(len(ks)), key=lambda i: (expected[i], -ks[i]))
    assert result["k"] == ks[best] and [e["val_top1"] for e in result["sweep"]] == expected
    assert result["val_size"] == len(val) == 32


# --- splits -------------------------------------------------------------------------------------


def test_stratified_holdout_is_disjoint_stratified_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [-1] * 10)
    train, val = stratified_holdout(labels, 0.2, seed=1)
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert [int((labels[val] == c).sum()) for c in (0, 1, 2, -1)] == [10, 6, 4, 2]
    assert torch.equal(val, stratified_holdout(labels, 0.2, seed=1)[1])
    assert not torch.equal(val, stratified_holdout(labels, 0.2, seed=2)[1])
    # Every class keeps a training sample; a carve that leaves nothing to validate on is an error.
    tiny = torch.tensor([0, 1, 2, 2])
    train, val = stratified_holdout(tiny, 0.5, seed=0)
    assert set(tiny[train].tolist()) == {0, 1, 2}
    with pytest.raises(ConfigError, match="no validation sample"):
        stratified_holdout(torch.tensor([0, 1, 2]), 0.5, seed=0)


def test_balanced_subset_is_class_balanced_and_reproducible():
    labels = torch.tensor([0] * 100 + [1] * 300 + [2] * 7 + [-1] * 50)
    subset = balanced_subset(labels, 0.1, seed=0)
    counts = [int((labels[subset] == c).sum()) for c in (0, 1, 2, -1)]
    assert counts == [10, 30, 1, 0]  # round(0.7) = 1; unlabelled never chosen
    assert len(set(subset.tolist())) == len(subset) and torch.equal(subset, subset.sort().values)
    assert torch.equal(subset, balanced_subset(labels, 0.1, seed=0))
    assert not torch.equal(subset, balanced_subset(labels, 0.1, seed=1))
    assert [int((labels[balanced_subset(labels, 0.01, seed=0)] == c).sum()) for c in (0, 1, 2)] == [1, 3, 1]


def test_split_hash_follows_content():
    images = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    ds = ArrayDataset(images, labels, name="t", classes=["a", "b"])
    base = split_hash(ds, [0, 2, 3])
    assert base == split_hash(ArrayDataset(images.clone(), labels, name="u", classes=["a", "b"]), [0, 2, 3])
    assert base == split_hash(DataSubset(ds, [0, 2, 3, 5]), [0, 1, 2])  # subsets hash their parent's samples
    assert base != split_hash(ds, [0, 2, 4])
    changed = images.clone()
    changed[2, 0, 1, 1] ^= 1
    assert base != split_hash(ArrayDataset(changed, labels, name="t", classes=["a", "b"]), [0, 2, 3])
    assert base != split_hash(ArrayDataset(images, 1 - labels, name="t", classes=["a", "b"]), [0, 2, 3])


def test_split_hash_of_an_image_folder_reads_the_files(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (5, 5), (i * 40, 10, 10)).save(tmp_path / cls / f"{i}.png")
    ds = get("folder", root=tmp_path, image_size=4)
    before = split_hash(ds)
    Image.new("RGB", (5, 5), (200, 10, 10)).save(tmp_path / "b" / "1.png")
    assert split_hash(get("folder", root=tmp_path, image_size=4)) != before


# --- feature cache ------------------------------------------------------------------------------


class CountingEncoder(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.calls, self.scale = 0, scale

    def forward(self, x):
        self.calls += 1
        return self.scale * x.flatten(1)[:, :5]


def test_feature_cache_hits_and_misses(tmp_path):
    ds = get("digits", split="test")
    transform = EvalTransform(8, ds.mean, ds.std)
    key = {"weights": "abc", "data": "digits", "split": "test", "transform": repr(transform)}
    enc = CountingEncoder()
    x1, y1 = cached_features(enc, ds, transform, cache_dir=tmp_path, key=key, batch_size=200)
    assert enc.calls == 3 and len(list(tmp_path.iterdir())) == 1
    x2, y2 = cached_features(enc, ds, transform, cache_dir=tmp_path, key=key, batch_size=200)
    assert enc.calls == 3 and torch.equal(x1, x2) and torch.equal(y1, y2)  # hit: the encoder did not run
    other = CountingEncoder(scale=2.0)
    x3, _ = cached_features(other, ds, transform, cache_dir=tmp_path, key={**key, "weights": "def"}, batch_size=200)
    assert other.calls == 3 and torch.allclose(x3, 2 * x1)  # another key: computed again
    x4, y4 = cached_features(enc, ds, transform, cache_dir=tmp_path, key=key, indices=[3, 1], batch_size=200)
    assert enc.calls == 4 and torch.equal(x4, x1[[3, 1]]) and torch.equal(y4, y1[[3, 1]])
    for file in tmp_path.iterdir():  # a damaged file is recomputed, not trusted
        file.write_bytes(b"garbage")
    x5, _ = cached_features(enc, ds, transform, cache_dir=tmp_path, key=key, batch_size=200)
    assert enc.calls == 7 and torch.equal(x5, x1)


# --- result files -------------------------------------------------------------------------------


def test_result_file_records_everything_and_never_overwrites(tmp_path):
    ckpt = tmp_path / "backbone.safetensors"
    ckpt.write_bytes(b"weights")
    data = {"name": "digits", "root": None, "train_split": "train", "test_split": "test", "train_hash": "a",
            "test_hash": "b"}
    first = write_result(tmp_path / "eval", "linear", {"top1": 90.0}, checkpoint=ckpt, data=data,
                         settings={"solver": "lbfgs"}, seed=3)
    second = write_result(tmp_path / "eval", "linear", {"top1": 91.0}, checkpoint=ckpt, data=data, settings={}, seed=3)
    assert first.name == "linear-digits-test.json" and second.name == "linear-digits-test-1.json"
    record = json.loads(first.read_text())
    assert record["scores"] == {"top1": 90.0} and record["protocol"] == "linear" and record["seed"] == 3
    assert record["checkpoint"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["data"] == data and record["settings"] == {"solver": "lbfgs"}
    assert record["selfsup_version"] == selfsup.__version__ and record["created"]
    with pytest.raises(DataError, match="never overwritten"):
        write_result(first, "linear", {}, checkpoint=ckpt, data=data, settings={}, seed=0)
    with pytest.raises(ConfigError, match="test_hash"):
        write_result(tmp_path, "linear", {}, checkpoint=ckpt, data={"name": "x"}, settings={}, seed=0)


# --- fine-tuning --------------------------------------------------------------------------------


def test_finetune_on_digits_learns_and_leaves_the_backbone_alone():
    train_set, test_set = get("digits"), get("digits", split="test")
    torch.manual_seed(0)
    net = backbones.get("resnet_tiny", width=4, in_channels=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = finetune(net, train_set, test_set, epochs=2, lr=1e-2, batch_size=64, seed=0)
    assert 25.0 < result["top1"] <= result["top5"] <= 100.0  # chance is 10%
    assert result["val_top1"] is not None and result["val_size"] == 135 and result["train_size"] == 1212
    assert len(result["history"]) == 2 and all(math.isfinite(v) for v in result["history"])
    assert result["layer_decay"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    state = torch.get_rng_state()
    again = finetune(net, train_set, test_set, epochs=2, lr=1e-2, batch_size=64, seed=0)
    assert again["history"] == result["history"] and again["top1"] == result["top1"]  # a seed repeats a run
    assert torch.equal(torch.get_rng_state(), state)  # and leaves the caller's random state alone


def test_layer_decay_gives_the_expected_per_block_learning_rates():
    vit = backbones.get("vit_tiny", image_size=16, patch_size=8, in_channels=1)
    head = nn.Linear(vit.feature_dim, 10)
    groups = layer_decay_groups(vit, head, weight_decay=0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for name in g["param_names"]}
    decay = {name: g["weight_decay"] for g in groups for name in g["param_names"]}
    depth = len(vit.blocks)
    assert depth == 12
    for i in range(depth):
        assert scale[f"backbone.blocks.{i}.qkv.weight"] == 0.5 ** (depth - i)
    for name in ("patch_embed.weight", "cls_token", "mask_token"):
        assert scale[f"backbone.{name}"] == 0.5 ** (depth + 1)
    assert scale["backbone.norm.weight"] == scale["head.weight"] == 1.0
    assert "backbone.pos_embed" not in scale  # fixed sin-cos table: not trained
    assert decay["backbone.blocks.3.qkv.weight"] == decay["head.weight"] == 0.05
    assert decay["backbone.cls_token"] == decay["backbone.blocks.3.norm1.weight"] == decay["head.bias"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in [*vit.parameters(), *head.parameters()])
    with pytest.raises(ConfigError, match="ViT"):
        layer_decay_groups(backbones.get("resnet_tiny", width=4), head, weight_decay=0.0, layer_decay=0.5)


def test_finetune_a_small_vit_with_layer_decay():
    train_set = DataSubset(get("digits"), list(range(0, 1347, 10)))
    vit = backbones.get("vit_tiny", image_size=8, patch_size=4, in_channels=1, depth=2)
    result = finetune(vit, train_set, get("digits", split="test"), epochs=1, batch_size=32, val_fraction=0.0)
    assert result["layer_decay"] == 0.75 and result["val_top1"] is None and 0.0 <= result["top1"] <= 100.0


def test_match_channels():
    grey = torch.tensor([[[[0, 128], [255, 7]]]], dtype=torch.uint8)
    assert torch.equal(match_channels(grey, 3), grey.expand(1, 3, 2, 2))
    rgb = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    rgb[0, :, 0, 0] = torch.tensor([255, 0, 100])
    assert match_channels(rgb, 1).item() == round(0.299 * 255 + 0.114 * 100)


# --- command line -------------------------------------------------------------------------------


def exported_run(tmp_path, *, channels=1, data="digits", image_size=8):
    """A run folder with a random (untrained) backbone: enough to exercise every command cheaply."""
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    net = backbones.get("resnet_tiny", width=4, in_channels=channels)
    mean, std = ([0.3] * channels, [0.37] * channels)
    backbones.export_backbone(net, run / "backbone.safetensors", image_size=image_size, mean=mean, std=std,
                              channels=channels, data=data, method="simclr")
    return run


def test_cli_knn_linear_and_cache(tmp_path, capsys):
    run = exported_run(tmp_path)
    assert main(["eval", "knn", str(run), "--k", "20", "--device", "cpu"]) == 0
    assert main(["eval", "knn", str(run), "--k", "20", "--sweep-k", "--ks", "5,20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "top-1" in line]
    assert len(lines) == 3 and lines[0] == lines[1]  # same k, same score; the third is the chosen k
    first, second = json.loads((run / "eval" / "knn-digits-test.json").read_text()), json.loads(
        (run / "eval" / "knn-digits-test-1.json").read_text())
    assert first["scores"]["top1"] == second["scores"]["top1"] and second["scores"]["chosen_k"]["k"] in (5, 20)
    assert first["data"]["train_size"] == 1347 and first["data"]["test_size"] == 450
    assert first["data"]["test_hash"] == split_hash(get("digits", split="test"))
    assert len(list((run / "eval" / "cache").iterdir())) == 2  # one file per split, shared by both calls

    assert main(["eval", "linear", str(run), "--weight-decays", "1e-2,1e-4", "--seed", "1", "--device", "cpu"]) == 0
    record = json.loads((run / "eval" / "linear-digits-test.json").read_text())
    assert record["seed"] == 1 and len(record["settings"]["sweep"]) == 2 and record["data"]["transfer"] is False
    assert 10.0 < record["scores"]["top1"] <= 100.0
    assert "linear probe (lbfgs" in capsys.readouterr().out


def test_cli_finetune_and_semisup(tmp_path, capsys):
    run = exported_run(tmp_path)
    common = ["--device", "cpu", "--batch-size", "64", "--out", str(tmp_path / "results")]
    assert main(["eval", "finetune", str(run), "--epochs", "1", "--lr", "0.01", *common]) == 0
    record = json.loads((tmp_path / "results" / "finetune-digits-test.json").read_text())
    assert record["settings"]["epochs"] == 1 and len(record["settings"]["history"]) == 1
    assert record["scores"]["val_top1"] is not None

    assert main(["eval", "semisup", str(run), "--fraction", "0.1", "--seed", "2", *common]) == 0
    saved = tmp_path / "results" / "semisup-digits-test.json"
    subset = json.loads(saved.read_text())["subset"]
    assert subset["size"] == len(subset["indices"]) and subset["seed"] == 2
    assert subset["indices"] == balanced_subset(get("digits").labels, 0.1, seed=2).tolist()
    assert main(["eval", "semisup", str(run), "--subset", str(saved), "--mode", "finetune", "--finetune-epochs", "1",
                 *common]) == 0
    again = json.loads((tmp_path / "results" / "semisup-digits-test-1.json").read_text())
    assert again["subset"]["indices"] == subset["indices"] and again["subset"]["source"] == str(saved.resolve())
    assert again["data"]["train_hash"] == json.loads(saved.read_text())["data"]["train_hash"]
    assert read_subset(saved) == subset["indices"]
    assert "semi-supervised" in capsys.readouterr().out


def test_cli_transfer_converts_channels_and_records_both_data_sets(tmp_path, capsys):
    run = exported_run(tmp_path, channels=3, data="cifar10", image_size=16)  # as if pretrained on CIFAR-10
    assert main(["eval", "linear", str(run), "--data", "digits", "--weight-decays", "1e-3", "--device", "cpu"]) == 0
    record = json.loads((run / "eval" / "linear-digits-test.json").read_text())
    assert record["data"]["pretrained_on"] == "cifar10" and record["data"]["transfer"] is True
    assert record["settings"]["preprocessing"]["channels"] == 3 and record["data"]["data_channels"] == 1
    assert record["settings"]["preprocessing"]["image_size"] == 16
    assert main(["eval", "finetune", str(run), "--data", "digits", "--epochs", "1", "--batch-size", "128",
                 "--device", "cpu"]) == 0
    record = json.loads((run / "eval" / "finetune-digits-test.json").read_text())
    assert record["data"]["transfer"] is True and 0.0 <= record["scores"]["top1"] <= 100.0
    code = main(["eval", "knn", str(run), "--data", "digits", "--channels", "1"])
    assert code == 2 and "takes 3-channel images" in capsys.readouterr().err


def test_cli_bad_subset_file_is_a_clear_error(tmp_path, capsys):
    run = exported_run(tmp_path)
    bad = tmp_path / "subset.json"
    bad.write_text(json.dumps([0, 99999]))
    assert main(["eval", "semisup", str(run), "--subset", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "99999" in err and "Traceback" not in err
