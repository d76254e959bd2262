"""Pictures (embedding map, neighbours, training curves, ViT attention), `selfsup eval pictures` and `selfsup embed`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup.backbones as backbones
from selfsup.augment import EvalTransform
from selfsup.backbones import export_backbone
from selfsup.cli import main
from selfsup.errors import ConfigError, DataError, SelfSupError
from selfsup.eval.attention import class_token_attention
from selfsup.eval.export import sample_names, write_embeddings
from selfsup.eval.pictures import (attention_maps, cosine_neighbours, embedding_map, neighbour_grid,
                                   training_curves)


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 0 and img.size[1] > 0
        img.load()


def test_embedding_map_methods(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(60, 16, generator=g)
    labels = torch.randint(-1, 3, (60,), generator=g)
    monkeypatch.setitem(sys.modules, "umap", None)  # as without the viz extra: auto falls back to PCA
    for method in ("auto", "pca", "tsne"):
        assert_png(embedding_map(features[:24], labels[:24], tmp_path / f"{method}.png", method=method,
                                 class_names=["a", "b", "c"]))
    many = torch.arange(60) % 30  # more classes than a legend holds: a colour bar; fewer points than rows
    assert_png(embedding_map(features.numpy(), many, tmp_path / "many.png", method="pca", max_points=40))
    assert_png(embedding_map(features[:, :1], None, tmp_path / "one_dim.png", method="pca"))
    with pytest.raises(SelfSupError, match=r"selfsup\[viz\]"):
        embedding_map(features, labels, tmp_path / "u.png", method="umap")
    with pytest.raises(ConfigError, match="Did you mean: tsne"):
        embedding_map(features, labels, tmp_path / "x.png", method="tsen")
    with pytest.raises(ConfigError, match="one label per row"):
        embedding_map(features, labels[:5], tmp_path / "x.png")
    with pytest.raises(ConfigError, match=".png"):
        embedding_map(features, labels, tmp_path / "x.jpg", method="pca")


def test_umap_map_keeps_separated_clusters_apart(tmp_path):
    """With the viz extra installed, ``auto`` uses UMAP, and two cosine-separated clusters land apart."""
    pytest.importorskip("umap")
    from selfsup.eval.pictures import _project

    g = torch.Generator().manual_seed(0)
    centres = torch.eye(16)[:2] * 5.0  # orthogonal directions: cosine distance 1 between the clusters
    x = torch.cat([centres[0] + 0.3 * torch.randn(40, 16, generator=g), centres[1] + 0.3 * torch.randn(40, 16, generator=g)])
    x = torch.nn.functional.normalize(x, dim=1).double().numpy()
    xy, how = _project(x, "umap", seed=0)
    assert how.startswith("UMAP") and xy.shape == (80, 2)
    a, b = xy[:40], xy[40:]
    spread = max(np.linalg.norm(a - a.mean(0), axis=1).max(), np.linalg.norm(b - b.mean(0), axis=1).max())
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 2 * spread  # the clusters do not overlap in the map
    assert_png(embedding_map(x, torch.arange(80) // 40, tmp_path / "umap.png", method="auto"))


def test_cosine_neighbours_match_brute_force():
    g = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(5, 6, generator=g), torch.randn(30, 6, generator=g)
    sims, idx = cosine_neighbours(queries, bank, 4)
    for q in range(5):
        cos = [float(queries[q] @ b / (queries[q].norm() * b.norm())) for b in bank]
        order = sorted(range(30), key=lambda j: -cos[j])[:4]
        assert idx[q].tolist() == order
        assert sims[q].tolist() == pytest.approx([cos[j] for j in order], abs=1e-6)
    same, near = cosine_neighbours(bank[:3], bank, 2, exclude=torch.tensor([0, -1, 2]))
    assert 0 not in near[0].tolist() and near[1, 0] == 1 and 2 not in near[2].tolist()
    with pytest.raises(ConfigError, match="k=31"):
        cosine_neighbours(queries, bank, 31)


def test_neighbour_grid(tmp_path):
    g = torch.Generator().manual_seed(2)
    queries = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8, generator=g)
    neighbours = torch.randint(0, 256, (3, 4, 3, 12, 12), dtype=torch.uint8, generator=g)
    labels = torch.tensor([[0, 1, 0, -1], [1, 1, 1, 1], [2, 0, 0, 0]])
    assert_png(neighbour_grid(queries, neighbours, tmp_path / "nn.png", query_labels=[0, 1, -1],
                              neighbour_labels=labels, similarities=torch.rand(3, 4), class_names=["x", "y", "z"]))
    grey = torch.rand(2, 1, 1, 8, 8)  # float images in [0, 1], one channel, unknown labels
    assert_png(neighbour_grid(grey[:, 0], grey, tmp_path / "grey.png", query_labels=None, neighbour_labels=None))
    with pytest.raises(ConfigError, match="labels must be"):
        neighbour_grid(queries, neighbours, tmp_path / "bad.png", query_labels=[0, 1], neighbour_labels=labels)


def test_training_curves(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "time": 0.0, "train/loss": 5.0 - s / 10, "train/lr_factor": 1.0, "epoch": 0}
             for s in range(10)]
    lines += [{"step": 9, "knn/top1": 40.0, "collapse/std": 0.1, "collapse/std_ideal": 0.125,
               "collapse/rankme": "nan", "epoch": 0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert_png(training_curves(metrics, tmp_path / "pictures" / "curves.png"))
    only_probe = tmp_path / "probe.jsonl"
    only_probe.write_text(json.dumps({"step": 1, "probe/val_top1": 50.0}) + "\n")
    assert_png(training_curves(only_probe, tmp_path / "probe.png"))

    with pytest.raises(DataError, match="No metrics file"):
        training_curves(tmp_path / "missing.jsonl", tmp_path / "x.png")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        training_curves(tmp_path / "empty.jsonl", tmp_path / "x.png")
    (tmp_path / "cut.jsonl").write_text(json.dumps(lines[0]) + "\n" + '{"step": 3, "train/lo')
    with pytest.raises(DataError, match="line 2 is not JSON"):
        training_curves(tmp_path / "cut.jsonl", tmp_path / "x.png")
    (tmp_path / "other.jsonl").write_text(json.dumps({"step": 1, "resources/rss_mb": 3.0}) + "\n")
    with pytest.raises(DataError, match="resources/rss_mb"):
        training_curves(tmp_path / "other.jsonl", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def tiny_vit():
    torch.manual_seed(0)
    return backbones.get("vit_tiny", image_size=8, patch_size=2, in_channels=1, depth=2)


def test_attention_maps(tmp_path):
    vit = tiny_vit()
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert_png(attention_maps(vit, images, tmp_path / "attention.png", transform=EvalTransform(8, [0.5], [0.5])))
    with pytest.raises(ConfigError, match="VisionTransformer"):
        attention_maps(backbones.get("resnet_tiny", width=4), images, tmp_path / "r.png")


def test_class_token_attention_picks_the_attended_patch():
    vit = backbones.get("vit_tiny", image_size=8, patch_size=2, in_channels=1, num_registers=1)
    grid, prefix = 4, 2  # 4 x 4 patches; class token and one register before them
    attention = torch.full((2, 3, prefix + 16, prefix + 16), 0.01)
    attention[:, :, 0, 1] = 5.0  # the register gets the most attention: it must not enter the map
    attention[0, 0, 0, prefix + 1 * grid + 2] = 1.0  # image 0, head 0: patch at row 1, column 2
    attention[1, :, 0, prefix + 3 * grid + 0] = 0.5  # image 1, all heads: row 3, column 0
    vit.last_attention = lambda inputs: attention  # a stand-in that knows the answer
    maps = class_token_attention(vit, torch.zeros(2, 1, 8, 8))
    assert maps.shape == (2, 8, 8) and float(maps.min()) == 0.0 and float(maps.max()) == pytest.approx(1.0)
    for image, (row, col) in enumerate([(1, 2), (3, 0)]):
        peak = divmod(int(maps[image].argmax()), 8)
        assert peak[0] // 2 == row and peak[1] // 2 == col


def export(tmp_path, backbone, name="backbone.safetensors"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return export_backbone(backbone, tmp_path / name, image_size=8, mean=[0.5], std=[0.25], channels=1,
                           data="digits", method="simclr")


def test_eval_pictures_command(tmp_path, capsys):
    vit = export(tmp_path / "vit", tiny_vit())
    small = ["--max-points", "80", "--max-train", "60", "--queries", "3", "--neighbours", "2", "--split", "test"]
    assert main(["eval", "pictures", str(vit), *small]) == 0
    printed = capsys.readouterr().out.split()
    folder = tmp_path / "vit" / "eval" / "pictures"
    assert printed == [str(folder / n) for n in ("embedding_map.png", "neighbours.png", "attention.png")]
    for name in printed:
        assert_png(Path(name))

    torch.manual_seed(0)
    run = tmp_path / "run"
    export(run, backbones.get("resnet_tiny", width=4, in_channels=1))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "train/loss": 4.0, "collapse/rankme": 3.0}) + "\n")
    out = tmp_path / "elsewhere"
    assert main(["eval", "pictures", str(run), "--out", str(out), "--split", "train", *small[:-2]]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / n) for n in ("embedding_map.png", "neighbours.png", "training_curves.png")]
    for name in ("embedding_map.png", "neighbours.png", "training_curves.png"):
        assert_png(out / name)


def test_embed_command_formats_and_overwrite(tmp_path, capsys):
    torch.manual_seed(0)
    net = backbones.get("resnet_tiny", width=4, in_channels=1)
    path = export(tmp_path, net)
    npz = tmp_path / "out" / "test.npz"
    assert main(["embed", "digits", str(path), "--split", "test", "--out", str(npz)]) == 0
    saved = np.load(npz)  # no pickle needed
    assert saved["embeddings"].shape == (450, 32) and saved["embeddings"].dtype == np.float32
    assert saved["labels"].shape == (450,) and set(saved["labels"].tolist()) == set(range(10))
    assert saved["names"][0] == "digits/test/0" and saved["names"][449] == "digits/test/449"
    from selfsup.data import get

    test_set = get("digits", split="test")
    images = torch.stack([test_set[i][0] for i in (0, 7)])
    expected = net.eval()(EvalTransform(8, [0.5], [0.25])(images))  # the recorded normalisation
    np.testing.assert_allclose(saved["embeddings"][[0, 7]], expected.detach().numpy(), rtol=1e-4, atol=1e-5)

    before = npz.read_bytes()
    assert main(["embed", "digits", str(path), "--split", "all", "--out", str(npz)]) == 2
    assert "already exists" in capsys.readouterr().err and npz.read_bytes() == before
    net.load_state_dict({k: v + 0.01 if v.is_floating_point() else v for k, v in net.state_dict().items()})
    export(tmp_path, net)
    assert main(["embed", "digits", str(path), "--split", "test", "--out", str(npz), "--overwrite"]) == 0
    assert np.load(npz)["embeddings"].shape == (450, 32) and npz.read_bytes() != before

    npy = tmp_path / "emb.npy"
    assert main(["embed", "digits", str(path), "--split", "test", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (450, 32) and np.load(tmp_path / "emb.labels.npy").shape == (450,)
    assert (tmp_path / "emb.names.txt").read_text().splitlines()[:2] == ["digits/test/0", "digits/test/1"]
    (tmp_path / "emb.npy").unlink()  # a sibling left behind still blocks a new write
    assert main(["embed", "digits", str(path), "--split", "test", "--out", str(npy)]) == 2
    assert "emb.labels.npy already exists" in capsys.readouterr().err

    assert main(["embed", "digits", str(path), "--out", str(tmp_path / "e.csv")]) == 2
    assert ".npy, .npz, .parquet" in capsys.readouterr().err
    assert main(["embed", "digitz", str(path), "--out", str(tmp_path / "e.npz")]) == 2
    assert "Did you mean: digits" in capsys.readouterr().err


def test_embed_an_image_folder(tmp_path, capsys):
    for cls in ("cat", "dog"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((10, 14, 3), 40 * i + (100 if cls == "dog" else 0), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / cls / f"{i}.png")
    path = export(tmp_path / "model", backbones.get("resnet_tiny", width=4, in_channels=1))
    out = tmp_path / "photos.npz"
    assert main(["embed", str(tmp_path / "photos"), str(path), "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved["embeddings"].shape == (6, 32) and saved["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert [n.split("/")[-2:] for n in saved["names"].tolist()] == [[c, f"{i}.png"] for c in ("cat", "dog")
                                                                    for i in range(3)]
    assert main(["embed", str(tmp_path / "nowhere"), str(path), "--out", str(tmp_path / "n.npz")]) == 2
    assert "neither a data set name" in capsys.readouterr().err

    # pictures of a folder: queries and neighbours come from the same 6 images; a query is left out of its own
    # neighbours, so 9 asked for are clipped to the 5 others (cosine_neighbours refuses k above that)
    capsys.readouterr()
    args = ["eval", "pictures", str(path), "--data", str(tmp_path / "photos"), "--queries", "6", "--neighbours", "9"]
    assert main(args) == 0
    assert [Path(p).name for p in capsys.readouterr().out.split()] == ["embedding_map.png", "neighbours.png"]
    assert_png(tmp_path / "model" / "eval" / "pictures" / "neighbours.png")


def test_write_embeddings_parquet_and_names(tmp_path, monkeypatch):
    z, y, names = torch.randn(3, 4), [0, 1, -1], ["a.png", "b.png", "c d.png"]
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as when pyarrow is not installed
    with pytest.raises(SelfSupError, match="pip install pyarrow"):
        write_embeddings(tmp_path / "e.parquet", z, y, names)
    monkeypatch.undo()
    pq = pytest.importorskip("pyarrow.parquet")
    write_embeddings(tmp_path / "e.parquet", z, y, names)
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column("name").to_pylist() == names and table.column("label").to_pylist() == y
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()), z.numpy())


def test_write_embeddings_checks(tmp_path):
    with pytest.raises(ConfigError, match="N names"):
        write_embeddings(tmp_path / "e.npz", torch.randn(3, 4), [0, 1, 2], ["a", "b"])
    with pytest.raises(DataError, match="line break"):
        write_embeddings(tmp_path / "e.npy", torch.randn(2, 4), [0, 1], ["a", "b\nc"])
    assert not list(tmp_path.iterdir())  # nothing written when a check fails
    from selfsup.data import DataSubset, get

    assert sample_names(DataSubset(get("digits", split="test"), [4, 2]), "test") == ["digits/test/4", "digits/test/2"]


def test_neighbour_grid_title_clears_the_column_headers_and_similarities_show_three_decimals(tmp_path, monkeypatch):
    import selfsup.eval.pictures as pictures

    drawn = []
    real_save = pictures.save
    monkeypatch.setattr(pictures, "save", lambda fig, path: drawn.append(fig) or real_save(fig, path))
    g = torch.Generator().manual_seed(3)
    for q in (6, 2, 1):  # the title's room must not shrink with the number of rows (6 rows overprinted)
        neighbour_grid(torch.rand(q, 1, 8, 8, generator=g), torch.rand(q, 5, 1, 8, 8, generator=g), tmp_path / "n.png",
                       query_labels=None, neighbour_labels=None, similarities=torch.full((q, 5), 0.9984))
        fig = drawn[-1]
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        first_row = fig.axes[0].title.get_window_extent(renderer)
        assert title.y0 >= first_row.y1, (q, title, first_row)  # display y grows upwards
        assert fig.axes[1].get_xlabel().endswith("0.998"), fig.axes[1].get_xlabel()


def test_speed_and_momentum_get_panels_of_their_own():
    from selfsup.eval.curves import curve_panels

    panels = {title: keys for title, _, keys in curve_panels(
        ["train/loss", "train/images_per_s", "train/views_per_s", "train/momentum", "train/koleo", "train/lr_factor"])}
    assert panels["training loss"] == ["train/loss"]
    assert panels["training speed"] == ["train/images_per_s", "train/views_per_s"]
    assert panels["momentum of the EMA teacher"] == ["train/momentum"]
    assert panels["loss terms"] == ["train/koleo"]
