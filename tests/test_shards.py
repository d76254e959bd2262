"""Tar shards: written by `selfsup shard`, read back exactly, streamed with equal steps per process,
resumed exactly, read from fsspec URLs, and readable by the webdataset library."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from method_sizes import ENGINE_RESNET
from selfsup import data
from selfsup.cli import main
from selfsup.config import load
from selfsup.data.shards import MANIFEST, ShardStream, read_shards, write_shards
from selfsup.errors import ConfigError, DataError
from test_resume import assert_same_state, run_straight_and_killed


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    """digits' training split (1347 images) in shards of 100, written once for the module."""
    out = tmp_path_factory.mktemp("shards") / "digits"
    write_shards(data.get("digits"), out / "train", shard_size=100, seed=3)
    return out


def seeded_order(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def test_data_set_shards_read_back_bit_for_bit_in_the_seeded_order(digit_shards):
    source = data.get("digits")
    read = read_shards(digit_shards)  # the train split is found under OUT/train
    order = seeded_order(len(source), 3)
    assert torch.equal(read.images, source.images[order])
    assert torch.equal(read.labels, source.labels[order])
    assert (read.mean, read.std, read.classes) == (source.mean, source.std, source.classes)
    with tarfile.open(digit_shards / "train" / "shard-000001.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("000000100.json").read())
    assert names[:3] == ["000000100.png", "000000100.cls", "000000100.json"]
    assert meta == {"index": 100, "source": int(order[100])}


def make_folder(root, sizes=((20, 30), (41, 17), (33, 33), (64, 40), (25, 50), (18, 18))):
    """Two classes of images of several sizes, PNG and JPEG."""
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.{'png' if i % 3 else 'jpg'}")
    return root


def test_folder_to_shards_to_training_batches_shows_the_folders_images(tmp_path):
    """The round trip a user makes: folder -> `selfsup shard` -> the training loader (two workers) sees
    every image once per epoch, decoded exactly as the folder path decodes it."""
    folder = make_folder(tmp_path / "photos", sizes=[(20 + 3 * i, 30 - i) for i in range(12)])
    assert main(["shard", str(folder), str(tmp_path / "out"), "--shard-size", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir())[-1] == MANIFEST
    from selfsup.training import build_datasets, build_loader

    config = load(overrides=["data.name=shards", f"data.root={tmp_path / 'out'}", "data.image_size=16",
                             "data.eval_split=none", "data.num_workers=2", "batch_size=2", "epochs=1"])
    stream, eval_set = build_datasets(config)
    assert eval_set is None and len(stream) == 12 and stream.steps == 6  # 4 shards of 3 -> 2 x 3 batches of 2
    reference = data.ImageFolder(folder, 16)
    order = seeded_order(len(reference), 0)
    seen = []
    for images, labels, indices in build_loader(config, stream, stream, 2):
        for image, label, index in zip(images, labels, indices.tolist()):
            expected, expected_label, _ = reference[int(order[index])]
            assert torch.equal(image, expected) and label == expected_label
            seen.append(index)
    assert sorted(seen) == list(range(12))


def epoch_batches(stream, workers, loader=None):
    assert stream.num_workers == workers
    return [(images, indices) for images, _, indices in (loader or stream.loader())]


def test_every_process_takes_the_same_number_of_batches_and_no_sample_is_seen_twice(digit_shards):
    everything = read_shards(digit_shards)
    streams = [ShardStream(digit_shards, batch_size=32, world_size=2, rank=r, num_workers=2, epochs=3, seed=1)
               for r in range(2)]
    seen = {}
    for epoch in range(2):
        indices = []
        for stream in streams:
            stream.set_epoch(epoch)
            batches = epoch_batches(stream, workers=2)
            assert len(batches) == stream.steps  # equal on both ranks: DDP needs it
            for images, batch_indices in batches:
                assert torch.equal(images, everything.images[batch_indices])
                indices += batch_indices.tolist()
        assert len(indices) == len(set(indices)) == streams[0].samples_per_epoch
        seen[epoch] = indices
    assert seen[0] != seen[1]  # the shards are dealt anew each epoch


def test_a_spawned_worker_reads_its_processs_shards(digit_shards, monkeypatch):
    """A worker started by spawn holds no process group: the rank is fixed by ``loader()`` in the
    main process, so rank 1's spawned worker reads rank 1's shards, not rank 0's."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    spawned = ShardStream(digit_shards, batch_size=32, world_size=2, num_workers=1, seed=3)
    batches = epoch_batches(spawned, 1, spawned.loader(multiprocessing_context="spawn"))
    assert spawned.rank == 1
    planned = ShardStream(digit_shards, batch_size=32, world_size=2, rank=1, num_workers=1, seed=3)
    expected = epoch_batches(planned, 1)
    assert [i.tolist() for _, i in batches] == [i.tolist() for _, i in expected]


def test_a_resumed_epoch_continues_with_exactly_the_next_batch(digit_shards):
    """With two workers the loader alternates between them, a worker that runs out is passed over;
    the stream predicts this order, so skipping k batches gives the uninterrupted run's tail."""
    stream = ShardStream(digit_shards, batch_size=64, num_workers=2, epochs=2, seed=5, shuffle_buffer=50)
    stream.set_epoch(1)
    straight = epoch_batches(stream, workers=2)
    for k in (1, 7, len(straight) - 1):
        stream.resume_at(k * 64)
        resumed = epoch_batches(stream, workers=2)
        assert len(resumed) == len(straight) - k
        for (a, ia), (b, ib) in zip(straight[k:], resumed):
            assert torch.equal(ia, ib) and torch.equal(a, b)
    stream.resume_at(0)
    assert [torch.equal(a, b) for (_, a), (_, b) in zip(epoch_batches(stream, workers=2), straight)] == [True] * len(straight)
    # persistent workers (as training uses them) see the epoch and the position change between epochs
    loader = stream.loader(persistent_workers=True)
    stream.set_epoch(0)
    epoch_zero = epoch_batches(stream, 2, loader)
    stream.set_epoch(1)
    stream.resume_at(7 * 64)
    assert [torch.equal(a, b) for (_, a), (_, b) in zip(epoch_batches(stream, 2, loader), straight[7:])] == [True] * (len(straight) - 7)
    stream.resume_at(0)
    assert not torch.equal(epoch_zero[0][1], straight[0][1])
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(epoch_batches(stream, 2, loader), straight))


def test_shards_are_read_from_fsspec_urls(digit_shards):
    import fsspec

    memory = fsspec.filesystem("memory")
    for file in (digit_shards / "train").iterdir():
        memory.pipe(f"/copied/train/{file.name}", file.read_bytes())
    local = read_shards(digit_shards)
    for url in ("memory://copied", f"file://{digit_shards}"):
        assert torch.equal(read_shards(url).images, local.images)
    stream = ShardStream("memory://copied", batch_size=100)
    assert sum(len(i) for _, i in epoch_batches(stream, workers=0)) == stream.samples_per_epoch


def test_the_webdataset_library_reads_selfsups_shards(digit_shards):
    webdataset = pytest.importorskip("webdataset", reason="the webdataset library is not installed")
    urls = sorted(str(p) for p in (digit_shards / "train").glob("*.tar"))
    samples = list(webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))
    ours = read_shards(digit_shards)
    assert len(samples) == len(ours)
    for sample, image, label in zip(samples[::97], ours.images[::97], ours.labels[::97]):
        assert torch.equal(torch.from_numpy(np.array(Image.open(__import__("io").BytesIO(sample["png"]))))[None], image)
        assert int(sample["cls"]) == int(label)


def test_bad_shards_and_bad_settings_get_clear_errors(digit_shards, tmp_path):
    with pytest.raises(DataError, match="already exists and is not an empty folder"):
        write_shards(data.get("digits"), digit_shards / "train")
    with pytest.raises(DataError, match="No shards for split 'test'.*selfsup shard"):
        read_shards(digit_shards, split="test")
    broken = tmp_path / "broken" / "train"
    write_shards(data.get("digits", split="test"), broken, shard_size=200)
    shard = broken / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[: 20_000])
    with pytest.raises(DataError, match=f"Shard {shard}.*(cannot be read|holds)"):
        read_shards(broken.parent)
    (broken / MANIFEST).unlink()  # as when writing was interrupted
    with pytest.raises(DataError, match="No shards for split 'train'"):
        read_shards(broken.parent)
    with pytest.raises(ConfigError, match="hold 8x8 images; leave data.image_size unset"):
        read_shards(digit_shards, image_size=16)
    with pytest.raises(ConfigError, match="data.val_fraction.*--val-fraction"):
        load(overrides=["data.name=shards", "data.root=x", "data.val_fraction=0.1"])
    with pytest.raises(ConfigError, match="data.cache"):
        load(overrides=["data.name=shards", "data.root=x", "data.cache=true"])
    with pytest.raises(DataError, match="cannot fill one batch"):
        ShardStream(digit_shards, batch_size=700, world_size=2)


def test_train_from_shards_and_resume_mid_epoch_exactly(tmp_path, monkeypatch):
    """`selfsup shard` with a held-out part, then training that is killed and resumed in the middle
    of an epoch with two loader workers ends with the uninterrupted run's weights; NPID's memory
    bank is indexed by the shards' global sample ids."""
    out = tmp_path / "shards"
    assert main(["shard", "digits", str(out), "--val-fraction", "0.5", "--shard-size", "100"]) == 0
    import test_resume

    base = ["--data", "shards", "--root", str(out), "data.eval_split=val", "data.num_workers=2",
            *[a for a in test_resume.BASE if not a.startswith(("data.val_fraction", "monitor.test_at_end"))
              and a not in ("--data", "digits")]]
    monkeypatch.setattr(test_resume, "BASE", base)
    extra = ["--method", "npid", *ENGINE_RESNET, "method.proj_output_dim=16"]
    straight, resumed = run_straight_and_killed(tmp_path / "runs", monkeypatch, extra)
    assert straight["global_step"] == resumed["global_step"]
    assert_same_state(straight, resumed)  # (the two-node test checks the monitor on a shard split)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_tar_reader_reads_what_tarfile_writes(tmp_path, fmt):
    """Long names (GNU `L` records, pax `path` records, ustar prefixes), empty files, directories and
    links: the fast reader gives the regular files tarfile gives, in order; a damaged header is refused."""
    import io

    from selfsup.data.tar_stream import TarFormatError, tar_files

    rng = np.random.default_rng(0)
    files = {"a/" + "x" * 120 + ".png": rng.bytes(1000), "short.cls": b"3", "empty.json": b"",
             "d" * 90 + "/" + "e" * 60 + ".jpg": rng.bytes(513), "ü-name.txt": rng.bytes(512)}
    if fmt == tarfile.USTAR_FORMAT:  # ustar holds names up to 255 bytes split at a slash, and ASCII only
        files = {k: v for k, v in files.items() if not k.startswith("a/") and k.isascii()}
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "short.cls"
        tar.addfile(link)
    with tarfile.open(path) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with open(path, "rb") as f:
        assert list(tar_files(f)) == expected == list(files.items())
    damaged = bytearray(path.read_bytes())
    damaged[600] ^= 0xFF  # inside the second header
    with pytest.raises(TarFormatError, match="damaged"):
        list(tar_files(io.BytesIO(bytes(damaged))))
    with pytest.raises(TarFormatError, match="ends inside"):
        list(tar_files(io.BytesIO(path.read_bytes()[:1500])))
