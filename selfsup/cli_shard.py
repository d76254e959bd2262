"""``selfsup shard SOURCE OUT``: write a data set or an image folder as tar shards for streaming.

See :mod:`selfsup.data.shards` for the format and what training from shards guarantees.

Example:
    >>> import tempfile
    >>> from selfsup.cli import main
    >>> main(["shard", "digits", tempfile.mkdtemp() + "/digit-shards", "--val-fraction", "0.1"])
    /.../digit-shards/train: 1212 samples in 2 shards
    /.../digit-shards/val: 135 samples in 1 shards
    0
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("selfsup")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``shard`` to the ``selfsup`` commands."""
    cmd = commands.add_parser(
        "shard", help="write a data set or a folder of images as tar shards (WebDataset layout) for streaming",
        description=("Write SOURCE (a data set name, or a folder of images with class sub-folders) into OUT/<split>/ "
                     "as tar shards plus a manifest, shards.json. Image files are stored as they are; the images of "
                     "the other data sets as lossless PNGs. Train from them with --data shards --root OUT (OUT may "
                     "then also be any fsspec URL the shards were copied to)."))
    cmd.add_argument("source", help="data set name (see `selfsup list`) or a folder of images")
    cmd.add_argument("out", help="folder to write (OUT/<split>/ must not exist yet or be empty)")
    cmd.add_argument("--root", help="the data set's folder (for a data set given by name)")
    cmd.add_argument("--split", default="train", help="split of the data set to write (default: train)")
    cmd.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    cmd.add_argument("--val-fraction", type=float, default=0.0, help=(
        "hold out this seeded, stratified share as OUT/val (as data.val_fraction would); the rest is OUT/<split>"))
    cmd.add_argument("--seed", type=int, default=0, help="seed of the sample order (and of the held-out part)")
    cmd.add_argument("--skip-bad-images", action="store_true", help="leave unreadable images of a folder out (listed)")
    cmd.set_defaults(handler=cmd_shard)


def cmd_shard(args: argparse.Namespace) -> int:
    from selfsup import data
    from selfsup.errors import ConfigError, DataError

    if not 0 <= args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}.")
    if args.source in data.names():
        dataset = data.get(args.source, root=args.root, split=args.split)
        source = f"{args.source} ({args.split})"
    elif Path(args.source).expanduser().is_dir():
        if args.root is not None:
            raise DataError(f"{args.source} is a folder of images; --root applies only to a data set given by name.")
        # the files are stored as they are; the size only matters for the readability check
        dataset = data.ImageFolder(args.source, 64, skip_bad_images=args.skip_bad_images)
        source = str(Path(args.source).expanduser().resolve())
    else:
        raise DataError(f"{args.source!r} is neither a data set name ({', '.join(data.names())}) nor a folder of images.")
    out = Path(args.out)
    parts = {args.split: None}
    if args.val_fraction > 0:
        train, val = data.split_train_val(dataset, args.val_fraction, seed=args.seed)
        parts = {args.split: train.indices, "val": val.indices}
    for split, indices in parts.items():
        manifest = data.write_shards(dataset, out / split, shard_size=args.shard_size, seed=args.seed, indices=indices,
                                     source=source)
        print(f"{out / split}: {manifest['count']} samples in {len(manifest['shards'])} shards")
    skipped = getattr(dataset, "skipped", [])
    if skipped:
        print(f"left out: {len(skipped)} file(s) or folder(s), e.g. {skipped[0][0]} ({skipped[0][1]})")
    return 0
