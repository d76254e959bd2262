"""``selfsup embed DATA PATH --out FILE``: export a trained backbone's embeddings of a data set or image folder.

The file format follows ``--out``'s ending (.npz, .npy with sibling label / name files, or
.parquet); see :mod:`selfsup.eval.export`. Existing files are kept unless ``--overwrite``.
"""
from __future__ import annotations

import argparse

import torch


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``embed`` to the ``selfsup`` commands."""
    cmd = commands.add_parser(
        "embed", help="export embeddings (with labels and file names) to .npz, .npy or .parquet",
        description=("Embed every image of DATA (a data set name, see `selfsup list`, or a folder of images) with "
                     "the backbone of PATH (a run folder, a .ckpt checkpoint or an exported .safetensors file) and "
                     "write embeddings, labels (-1: unknown) and names (file paths for folders, else "
                     "<data>/<split>/<index>). Images get the backbone's image size and its training normalisation (another data set: that data set's own)."))
    cmd.add_argument("data", help="data set name or folder of images")
    cmd.add_argument("path", help="run folder, .ckpt or .safetensors")
    cmd.add_argument("--out", required=True, help="FILE.npz, FILE.npy (+ FILE.labels.npy, FILE.names.txt) or "
                                                  "FILE.parquet (needs pyarrow)")
    cmd.add_argument("--root", help="data set folder (default: the training run's, for the data set trained on)")
    cmd.add_argument("--split", default="train", help="which split to embed (default: train)")
    cmd.add_argument("--overwrite", action="store_true", help="replace existing output files")
    cmd.add_argument("--batch-size", type=int, default=256)
    cmd.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    cmd.set_defaults(handler=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed the data and write the files; prints what was written."""
    from selfsup.checkpoints import load_backbone
    from selfsup.cli_data import eval_transform, open_data, resolve_data
    from selfsup.eval.export import output_files, sample_names, write_embeddings
    from selfsup.eval.features import extract_features

    output_files(args.out, overwrite=args.overwrite)  # refuse before the (slow) embedding
    backbone, info = load_backbone(args.path)
    name, root = resolve_data(args.data, args.root, info)
    dataset = open_data(name, root=root, split=args.split, info=info)
    transform = eval_transform(info, dataset, name)
    features, labels = extract_features(backbone.to(args.device), dataset, transform, batch_size=args.batch_size,
                                        device=args.device)
    files = write_embeddings(args.out, features, labels, sample_names(dataset, args.split), overwrite=args.overwrite)
    where = f"{name} {args.split}" if name != "folder" else str(root)
    print(f"{features.shape[0]} embeddings ({features.shape[1]}-d) of {where}:")
    for path in files:
        print(f"  {path}")
    return 0
