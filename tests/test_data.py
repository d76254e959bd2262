"""Tests of selfsup.data: built-in digits, in-memory arrays, torchvision-format readers, image folders,
the registry and train/validation splits. Everything runs offline on tiny files made in tmp_path."""
from __future__ import annotations

import gzip
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from selfsup.data import (
    DATASETS,
    ArrayDataset,
    DataSubset,
    ImageDataset,
    ImageFolder,
    describe,
    get,
    names,
    split_train_val,
)
from selfsup.data.arrays import channel_stats
from selfsup.data.builtin import _digits_split_indices
from selfsup.errors import ConfigError, DataError, UnknownNameError

REAL_FASHION_MNIST = Path("/work/shared/data/fashion-mnist")
ATTRIBUTES = ("name", "channels", "num_classes", "classes", "mean", "std", "image_size", "labels")


def check_protocol(ds) -> None:
    """Attributes and item format every data set must have."""
    assert isinstance(ds, ImageDataset)
    for attr in ATTRIBUTES:
        assert hasattr(ds, attr), attr
    assert ds.labels.dtype == torch.long and ds.labels.shape == (len(ds),)
    assert len(ds.mean) == len(ds.std) == ds.channels
    assert ds.num_classes == len(ds.classes)
    image, label, index = ds[len(ds) - 1]
    assert image.dtype == torch.uint8 and image.shape[0] == ds.channels
    if ds.image_size is not None:
        assert tuple(image.shape[1:]) == ds.image_size
    assert isinstance(label, int) and label == int(ds.labels[-1])
    assert index == len(ds) - 1


# --- digits ------------------------------------------------------------------------------------


def test_digits_splits_shapes_and_values():
    train, test, full = get("digits"), get("digits", split="test"), get("digits", split="all")
    assert (len(train), len(test), len(full)) == (1347, 450, 1797)
    for ds in (train, test, full):
        check_protocol(ds)
        assert ds.images.shape[1:] == (1, 8, 8) and ds.images.dtype == torch.uint8
        assert ds.num_classes == 10 and ds.classes == [str(d) for d in range(10)]
        assert ds.image_size == (8, 8) and ds.channels == 1
        assert ds.mean == train.mean and ds.std == train.std  # train statistics for every split
    allowed = {round(k * 255 / 16) for k in range(17)}
    assert set(full.images.unique().tolist()) <= allowed
    assert int(full.images.min()) == 0 and int(full.images.max()) == 255
    assert full.labels.bincount().sum() == 1797 and (full.labels.bincount() >= 170).all()
    assert 0.2 < train.mean[0] < 0.4 and 0.3 < train.std[0] < 0.45


def test_digits_split_is_stratified_disjoint_and_deterministic():
    idx = _digits_split_indices()
    train, test = set(idx["train"].tolist()), set(idx["test"].tolist())
    assert not train & test and len(train | test) == 1797
    full, test_ds = get("digits", split="all"), get("digits", split="test")
    per_class = full.labels.bincount(minlength=10).double()
    test_per_class = test_ds.labels.bincount(minlength=10).double()
    assert ((test_per_class - 0.25 * per_class).abs() <= 1).all()
    assert torch.equal(test_ds.images, full.images[idx["test"]])
    again = get("digits", split="test")
    assert torch.equal(again.images, test_ds.images) and torch.equal(again.labels, test_ds.labels)


# --- ArrayDataset ------------------------------------------------------------------------------


def small_arrays(n: int = 6, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.arange(n * c * 4 * 5, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, c, 4, 5)
    return images, torch.tensor([0, 1, 2, 0, -1, 1][:n])


def test_array_dataset_items_and_getitems():
    images, labels = small_arrays()
    ds = ArrayDataset(images, labels, name="toy", classes=["a", "b", "c"])
    check_protocol(ds)
    assert len(ds) == 6 and ds.image_size == (4, 5) and ds.channels == 3 and ds.num_classes == 3
    image, label, index = ds[2]
    assert torch.equal(image, images[2]) and (label, index) == (2, 2)
    assert ds[-1][2] == 5 and ds[-1][1] == 1
    with pytest.raises(IndexError):
        ds[6]
    batch = ds.__getitems__([4, 0, -1])
    assert [b[2] for b in batch] == [4, 0, 5] and [b[1] for b in batch] == [-1, 0, 1]
    assert all(torch.equal(b[0], images[b[2]]) for b in batch)
    loader = DataLoader(ds, batch_size=4, shuffle=False)
    x, y, i = next(iter(loader))
    assert x.shape == (4, 3, 4, 5) and x.dtype == torch.uint8
    assert y.tolist() == [0, 1, 2, 0] and i.tolist() == [0, 1, 2, 3]


def test_array_dataset_statistics():
    images, labels = small_arrays()
    ds = ArrayDataset(images, labels, name="toy", classes=["a", "b", "c"])
    x = images.double() / 255
    assert ds.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert ds.std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)
    given = ArrayDataset(images, labels, name="toy", classes=["a", "b", "c"], mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    assert given.mean == (0.1, 0.2, 0.3) and given.std == (1.0, 1.0, 1.0)
    assert channel_stats(torch.full((3, 1, 2, 2), 7, dtype=torch.uint8)) == ((7 / 255,), (1.0,))


@pytest.mark.parametrize(
    ("images", "labels", "classes", "fragment"),
    [
        (torch.zeros(2, 3, 4, 4), [0, 0], ["a"], "uint8"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), [0, 0], ["a"], "(N, C, H, W)"),
        (torch.zeros(2, 2, 4, 4, dtype=torch.uint8), [0, 0], ["a"], "C = 1 or 3"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [0, 0, 0], ["a"], "shape (2,)"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [0, 1], ["a"], "[-1, 0]"),
        (torch.zeros(0, 1, 4, 4, dtype=torch.uint8), [], ["a"], "no images"),
    ],
)
def test_array_dataset_validation(images, labels, classes, fragment):
    with pytest.raises(DataError, match="toy") as info:
        ArrayDataset(images, torch.tensor(labels, dtype=torch.long), name="toy", classes=classes)
    assert fragment in str(info.value)


# --- torchvision-format files --------------------------------------------------------------------


def random_images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """5 train batches of 4 images (20 in all) and a test batch of 3, in cifar-10-batches-py format."""
    images, labels = random_images(23, 3, 32, 32), torch.arange(23) % 10
    for b in range(5):
        part = slice(4 * b, 4 * b + 4)
        batch = {"data": images[part].reshape(4, -1).numpy(), "labels": labels[part].tolist()}
        write_pickle(folder / f"data_batch_{b + 1}", batch)
    write_pickle(folder / "test_batch", {"data": images[20:].reshape(3, -1).numpy(), "labels": labels[20:].tolist()})
    write_pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return images, labels


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        Path(str(path) + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist_like(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, tuple]:
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = random_images(n, 1, 28, 28, seed=n).squeeze(1).numpy()
        labels = (np.arange(n) * 3 % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        out[split] = (images, labels)
    return out


def test_cifar10_round_trip_and_root_variants(tmp_path):
    images, labels = write_cifar10(tmp_path / "cifar-10-batches-py")
    train = get("cifar10", root=tmp_path)
    check_protocol(train)
    assert len(train) == 20 and train.image_size == (32, 32) and train.channels == 3
    assert torch.equal(train.images, images[:20]) and torch.equal(train.labels, labels[:20])
    assert train.classes[3] == "class3" and train.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    test = get("cifar10", root=tmp_path, split="test")
    assert torch.equal(test.images, images[20:]) and test.labels.tolist() == labels[20:].tolist()
    # root pointing at the folder itself, or one level above the expected root
    assert torch.equal(get("cifar10", root=tmp_path / "cifar-10-batches-py", split="test").images, images[20:])
    nested = tmp_path / "outer"
    write_cifar10(nested / "cifar10" / "cifar-10-batches-py")
    assert len(get("cifar10", root=nested)) == 20


def test_cifar100_round_trip(tmp_path):
    folder = tmp_path / "cifar-100-python"
    images, fine = random_images(7, 3, 32, 32), torch.tensor([0, 99, 5, 5, 42, 1, 2])
    for name, part in (("train", slice(0, 5)), ("test", slice(5, 7))):
        batch = {"data": images[part].reshape(-1, 3072).numpy(), "fine_labels": fine[part].tolist()}
        write_pickle(folder / name, batch)
    train = get("cifar100", root=tmp_path)
    check_protocol(train)
    assert train.num_classes == 100 and train.classes[99] == "99"  # no meta file: numbered classes
    assert torch.equal(train.images, images[:5]) and torch.equal(train.labels, fine[:5])
    assert len(get("cifar100", root=tmp_path, split="test")) == 2


def test_stl10_splits_and_column_major_layout(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    train, test, unlabeled = (random_images(n, 3, 96, 96, seed=n) for n in (3, 2, 4))
    for name, x in (("train", train), ("test", test), ("unlabeled", unlabeled)):
        (folder / f"{name}_X.bin").write_bytes(x.permute(0, 1, 3, 2).contiguous().numpy().tobytes())
    (folder / "train_y.bin").write_bytes(bytes([1, 10, 3]))
    (folder / "test_y.bin").write_bytes(bytes([2, 2]))
    ds = get("stl10", root=tmp_path)
    check_protocol(ds)
    assert torch.equal(ds.images, train) and ds.labels.tolist() == [0, 9, 2] and ds.classes[7] == "monkey"
    assert get("stl10", root=tmp_path, split="test").labels.tolist() == [1, 1]
    unl = get("stl10", root=tmp_path, split="unlabeled")
    assert torch.equal(unl.images, unlabeled) and unl.labels.tolist() == [-1] * 4 and unl.num_classes == 0
    both = get("stl10", root=tmp_path, split="train+unlabeled")
    assert len(both) == 7 and both.num_classes == 10 and both.labels.tolist() == [0, 9, 2, -1, -1, -1, -1]
    (folder / "test_X.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="test_X.bin"):
        get("stl10", root=tmp_path, split="test")


@pytest.mark.parametrize(
    ("name", "layout", "gz"),
    [
        ("mnist", "MNIST/raw", True),  # torchvision's layout, gzipped
        ("mnist", "MNIST/raw", False),  # torchvision's layout after extraction
        ("fashion_mnist", "", True),  # root holds the four .gz files directly
        ("fashion_mnist", "FashionMNIST/raw", False),
    ],
)
def test_idx_round_trip(tmp_path, name, layout, gz):
    written = write_mnist_like(tmp_path / layout if layout else tmp_path, gz)
    for split in ("train", "test"):
        ds = get(name, root=tmp_path, split=split)
        check_protocol(ds)
        images, labels = written[split]
        assert ds.images.shape == (len(images), 1, 28, 28) and ds.image_size == (28, 28)
        assert np.array_equal(ds.images.squeeze(1).numpy(), images)
        assert ds.labels.tolist() == labels.tolist() and ds.num_classes == 10


def test_idx_root_one_level_too_deep(tmp_path):
    written = write_mnist_like(tmp_path / "FashionMNIST" / "raw", gz=True)
    ds = get("fashion_mnist", root=tmp_path / "FashionMNIST", split="test")
    assert ds.labels.tolist() == written["test"][1].tolist() and ds.classes[0] == "T-shirt/top"


def test_corrupt_idx_file(tmp_path):
    write_mnist_like(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*truncated"):
        get("mnist", root=tmp_path, split="test")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", ["cifar-10-batches-py", "data_batch_1", "data_batch_5"]),
        ("cifar100", ["cifar-100-python", "train"]),
        ("stl10", ["stl10_binary", "train_X.bin", "train_y.bin"]),
        ("mnist", ["MNIST/raw", "train-images-idx3-ubyte", ".gz"]),
        ("fashion_mnist", ["FashionMNIST/raw", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]),
    ],
)
def test_missing_files_error_names_root_layout_and_download(tmp_path, name, expected):
    root = tmp_path / "empty root"
    root.mkdir()
    with pytest.raises(DataError) as info:
        get(name, root=root)
    message = str(info.value)
    assert str(root) in message and "--download" in message and "data.download=true" in message
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message
    with pytest.raises(DataError, match="does not exist"):
        get(name, root=tmp_path / "nowhere")


def test_partial_download_lists_missing_files(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="lacks: data_batch_4"):
        get("cifar10", root=tmp_path)


def test_download_fetches_missing_files_once(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_mnist(root, train, download):
        calls.append((root, train, download))
        write_mnist_like(Path(root) / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    assert len(get("mnist", root=tmp_path, download=True)) == 12
    assert len(get("mnist", root=tmp_path, download=True, split="test")) == 5
    assert calls == [(str(tmp_path), False, True)]  # the second call found the files

    def failing(*args, **kwargs):
        raise RuntimeError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", failing)
    with pytest.raises(DataError, match="Downloading CIFAR-10 into .* failed: network is unreachable"):
        get("cifar10", root=tmp_path, download=True)


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="real Fashion-MNIST not present")
def test_real_fashion_mnist():
    train = get("fashion_mnist", root=REAL_FASHION_MNIST)
    test = get("fashion_mnist", root=REAL_FASHION_MNIST, split="test")
    assert (len(train), len(test)) == (60000, 10000)
    for ds in (train, test):
        check_protocol(ds)
        assert ds.images.shape[1:] == (1, 28, 28) and ds.num_classes == 10
        assert ds.labels.bincount().tolist() == [len(ds) // 10] * 10
    mean, std = channel_stats(train.images)
    assert train.mean == pytest.approx(mean, abs=1e-4) and train.std == pytest.approx(std, abs=1e-4)


# --- ImageFolder -------------------------------------------------------------------------------


def save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def rgb(color: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_folder_labelled_recursive(tmp_path):
    save(tmp_path / "dogs" / "a.png", rgb((255, 0, 0)))
    save(tmp_path / "dogs" / "deep" / "er" / "b.JPG", rgb((0, 255, 0)))
    save(tmp_path / "cats" / "c.bmp", rgb((0, 0, 255)))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    save(tmp_path / ".hidden" / "d.png", rgb((1, 2, 3)))
    ds = ImageFolder(tmp_path, 16)
    check_protocol(ds)
    assert ds.classes == ["cats", "dogs"] and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 1, 1] and len(ds) == 3
    assert ds.image_size == (16, 16) and ds.channels == 3
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    image, label, index = ds[2]
    assert image.shape == (3, 16, 16) and (label, index) == (1, 2)
    assert image[1].min() > 200 and image[0].max() < 50  # the green JPEG from dogs/deep/er


def test_folder_flat_is_unlabelled_and_includes_subfolders(tmp_path):
    save(tmp_path / "top.png", rgb((9, 9, 9)))
    save(tmp_path / "sub" / "inner.gif", rgb((9, 9, 9)).convert("P"))
    ds = ImageFolder(tmp_path, 8)
    assert len(ds) == 2 and ds.num_classes == 0 and ds.classes == []
    assert ds.labels.tolist() == [-1, -1] and ds[0][1] == -1


def test_folder_resizes_shorter_side_and_center_crops(tmp_path):
    wide = Image.new("RGB", (90, 30))
    for x0, color in ((0, (255, 0, 0)), (30, (0, 255, 0)), (60, (0, 0, 255))):
        wide.paste(Image.new("RGB", (30, 30), color), (x0, 0))
    save(tmp_path / "wide.png", wide)
    save(tmp_path / "tall.png", rgb((10, 20, 30), size=(7, 40)))
    ds = ImageFolder(tmp_path, 12)
    tall, _, _ = ds[0]
    wide_out, _, _ = ds[1]
    assert tall.shape == wide_out.shape == (3, 12, 12)
    inner = wide_out[:, :, 1:-1]  # the edge columns blend with the neighbours, as resize-then-crop does
    assert inner[1].min() == 255 and inner[0].max() == 0 and inner[2].max() == 0  # only the middle third
    assert wide_out[1].min() > 200
    assert tall[:, 6, 6].tolist() == [10, 20, 30]


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_modes_and_file_names(tmp_path, channels):
    red = rgb((255, 0, 0))
    save(tmp_path / "été photo ü.png", red)  # non-ASCII name with spaces
    save(tmp_path / "gray.png", Image.new("L", (10, 10), 128))
    save(tmp_path / "palette.png", red.convert("P"))
    rgba = Image.new("RGBA", (10, 10), (0, 0, 255, 255))
    rgba.paste(Image.new("RGBA", (10, 5), (0, 0, 0, 0)), (0, 0))  # top half fully transparent
    save(tmp_path / "rgba.png", rgba)
    pal_t = Image.new("P", (10, 10), 0)
    pal_t.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    save(tmp_path / "palette_transparent.png", pal_t, transparency=0)
    save(tmp_path / "photo.webp", red)
    save(tmp_path / "scan.tif", Image.new("I;16", (10, 10), 65535))
    ds = ImageFolder(tmp_path, 6, channels=channels)
    assert ds.channels == channels and len(ds) == 7
    images = {Path(path).name: ds[i][0] for i, (path, _) in enumerate(ds.samples)}
    for name, image in images.items():
        assert image.shape == (channels, 6, 6) and image.dtype == torch.uint8, name
    assert int(images["gray.png"].float().mean()) == 128
    assert int(images["scan.tif"].min()) == 255  # 16-bit white stays white
    assert images["palette_transparent.png"].min() == 255  # transparent pixels become white
    if channels == 3:
        assert images["été photo ü.png"][:, 0, 0].tolist() == [255, 0, 0]
        assert images["palette.png"][:, 0, 0].tolist() == [255, 0, 0]
        assert images["rgba.png"][:, 0, 0].tolist() == [255, 255, 255]  # transparent over white
        assert images["rgba.png"][:, 5, 0].tolist() == [0, 0, 255]
        assert ds.mean == (0.485, 0.456, 0.406)
    else:
        assert ds.mean == (0.5,) and ds.std == (0.5,)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 8)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file"):
        ImageFolder(tmp_path / "file.png", 8)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(DataError) as info:
        ImageFolder(empty, 8)
    assert str(empty) in str(info.value) and ".jpg" in str(info.value) and ".webp" in str(info.value)
    with pytest.raises(ConfigError):
        ImageFolder(tmp_path, 0)
    with pytest.raises(ConfigError):
        ImageFolder(tmp_path, 8, channels=2)


def make_folder_with_bad_image(root: Path) -> Path:
    save(root / "good1.png", rgb((1, 2, 3)))
    save(root / "good2.jpg", rgb((4, 5, 6)))
    bad = root / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg at all" * 10)
    return bad


def test_folder_corrupt_image_raises_naming_file(tmp_path):
    bad = make_folder_with_bad_image(tmp_path)
    ds = ImageFolder(tmp_path, 8)
    assert len(ds) == 3 and ds.skipped == []
    position = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(DataError) as info:
        ds[position]
    assert str(bad) in str(info.value) and "--skip-bad-images" in str(info.value)


def test_folder_skip_bad_images(tmp_path, caplog):
    bad = make_folder_with_bad_image(tmp_path)
    with caplog.at_level(logging.WARNING, logger="selfsup.data.folder"):
        ds = ImageFolder(tmp_path, 8, skip_bad_images=True)
    assert len(ds) == 2 and [p for p, _ in ds.skipped] == [str(bad)] and ds.skipped[0][1]
    assert str(bad) not in [p for p, _ in ds.samples]
    assert "Skipped 1 of 3 images" in caplog.text
    assert all(ds[i][0].shape == (3, 8, 8) for i in range(len(ds)))
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="None of the 1 images"):
        ImageFolder(only_bad, 8, skip_bad_images=True)


def test_folder_dataloader_stacks_batches(tmp_path):
    for i in range(5):
        save(tmp_path / ("a" if i % 2 else "b") / f"{i}.png", rgb((i, i, i), size=(10 + i, 17)))
    ds = get("folder", root=tmp_path, image_size=9)
    images, labels, indices = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert images.shape == (4, 3, 9, 9) and images.dtype == torch.uint8
    assert labels.tolist() == ds.labels[:4].tolist() and indices.tolist() == [0, 1, 2, 3]


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_and_descriptions():
    expected = {"digits", "cifar10", "cifar100", "stl10", "mnist", "fashion_mnist", "folder", "shards"}
    assert set(names()) == expected == set(DATASETS.names())
    lines = describe()
    assert set(lines) == expected and all(line and "\n" not in line for line in lines.values())


def test_registry_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean: cifar10"):
        get("cifar1")
    with pytest.raises(DataError, match="--data cifar10 needs data.root=PATH"):
        get("cifar10")
    with pytest.raises(DataError, match="--data folder needs data.root=PATH"):
        get("folder", image_size=8)
    save(tmp_path / "x.png", rgb((0, 0, 0)))
    with pytest.raises(ConfigError, match="data.image_size"):
        get("folder", root=tmp_path)
    with pytest.raises(ConfigError, match="no 'test' split"):
        get("folder", root=tmp_path, image_size=8, split="test")
    with pytest.raises(ConfigError, match="Did you mean: test"):
        get("digits", split="tset")
    with pytest.raises(ConfigError, match="8x8"):
        get("digits", image_size=32)
    with pytest.raises(ConfigError, match="1-channel"):
        get("digits", channels=3)
    assert len(get("digits", image_size=8, channels=1, download=True, root="ignored")) == 1347
    assert get("folder", root=tmp_path, image_size=8, channels=1).channels == 1


# --- splits ------------------------------------------------------------------------------------


def test_split_train_val_stratified_and_deterministic():
    ds = get("digits")
    train, val = split_train_val(ds, 0.2, seed=3)
    assert isinstance(train, DataSubset) and len(val) == round(0.2 * len(ds)) and len(train) + len(val) == len(ds)
    assert not set(train.indices) & set(val.indices)
    check_protocol(val)
    assert val.num_classes == 10 and val.mean == ds.mean
    expected = 0.2 * ds.labels.bincount(minlength=10).double()
    assert ((val.labels.bincount(minlength=10).double() - expected).abs() < 1).all()
    image, label, index = val[7]
    assert index == 7 and torch.equal(image, ds[val.indices[7]][0]) and label == int(val.labels[7])
    again, other = split_train_val(ds, 0.2, seed=3)[1], split_train_val(ds, 0.2, seed=4)[1]
    assert again.indices == val.indices and other.indices != val.indices
    x, y, i = next(iter(DataLoader(val, batch_size=5)))
    assert x.shape == (5, 1, 8, 8) and i.tolist() == [0, 1, 2, 3, 4] and y.tolist() == val.labels[:5].tolist()


def test_split_train_val_partly_labelled_and_errors():
    images, labels = small_arrays()
    ds = ArrayDataset(images, labels, name="toy", classes=["a", "b", "c"])
    train, val = split_train_val(ds, 0.5, seed=0)
    assert len(train) == len(val) == 3 and sorted(train.indices + val.indices) == list(range(6))
    for bad in (0.0, 1.0, -0.1, 0.01):
        with pytest.raises(ConfigError, match="val_fraction"):
            split_train_val(ds, bad)
