"""``selfsup eval pictures PATH``: the PNGs of :mod:`selfsup.eval.pictures` for a trained backbone.

Writes into ``<run>/eval/pictures/`` (or ``--out``) and prints each file's path:
``embedding_map.png`` (held-out split), ``neighbours.png`` (held-out queries, training-split
neighbours), ``training_curves.png`` (when the run folder has ``metrics.jsonl``) and, for
Vision Transformers, ``attention.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def add_parser(protocols: argparse._SubParsersAction) -> None:
    """Add ``pictures`` to the ``selfsup eval`` sub-commands."""
    cmd = protocols.add_parser(
        "pictures", help="PNG pictures: embedding map, nearest neighbours, training curves, ViT attention",
        description=("Write PNG pictures of a run folder, a .ckpt checkpoint or an exported .safetensors backbone: "
                     "a 2-D map of the held-out embeddings coloured by label, query images with their nearest "
                     "training neighbours, the run's training curves and, for ViTs, class-token attention maps."))
    cmd.add_argument("path")
    cmd.add_argument("--data", help="data set name or image folder (default: the one it was trained on)")
    cmd.add_argument("--root", help="data set folder (default: the training run's)")
    cmd.add_argument("--split", help="held-out split for the map and the queries (default: test; folders: train)")
    cmd.add_argument("--train-split", default="train", help="split the neighbours come from")
    cmd.add_argument("--out", help="folder for the PNGs (default: <run>/eval/pictures)")
    cmd.add_argument("--map", default="auto", choices=["auto", "umap", "pca", "tsne"],
                     help="2-D projection (auto: UMAP when umap-learn is installed, else PCA)")
    cmd.add_argument("--max-points", type=int, default=5000, help="held-out images on the map (seeded choice)")
    cmd.add_argument("--max-train", type=int, default=20000, help="training images searched for neighbours")
    cmd.add_argument("--queries", type=int, default=8)
    cmd.add_argument("--neighbours", type=int, default=8)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--batch-size", type=int, default=256)
    cmd.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    cmd.set_defaults(handler=cmd_eval_pictures)


def _choose(n: int, at_most: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[:at_most].sort().values


def cmd_eval_pictures(args: argparse.Namespace) -> int:
    """Write the pictures that apply to ``args.path`` and print their paths."""
    from selfsup.backbones.vit import VisionTransformer
    from selfsup.checkpoints import load_backbone
    from selfsup.cli_data import eval_transform, open_data, resolve_data, run_folder
    from selfsup.errors import ConfigError
    from selfsup.eval.features import extract_features
    from selfsup.eval.pictures import (attention_maps, cosine_neighbours, embedding_map, neighbour_grid,
                                       training_curves)

    for flag in ("max_points", "max_train", "queries", "neighbours", "batch_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}.")
    backbone, info = load_backbone(args.path)
    run = run_folder(args.path)
    out = Path(args.out) if args.out else run / "eval" / "pictures"
    name, root = resolve_data(args.data, args.root, info)
    split = args.split or ("train" if name == "folder" else "test")
    held_out = open_data(name, root=root, split=split, info=info)
    same = split == args.train_split
    train = held_out if same else open_data(name, root=root, split=args.train_split, info=info)
    transform = eval_transform(info, held_out, name)
    backbone = backbone.to(args.device)
    options = dict(batch_size=args.batch_size, device=args.device)
    generator = torch.Generator().manual_seed(args.seed)
    classes = list(held_out.classes) or None
    written = []

    shown = _choose(len(held_out), args.max_points, generator)
    features, labels = extract_features(backbone, held_out, transform, indices=shown, **options)
    written.append(embedding_map(features, labels, out / "embedding_map.png", method=args.map, class_names=classes,
                                 max_points=args.max_points, seed=args.seed))

    bank = _choose(len(train), args.max_train, generator)
    bank_x, bank_y = extract_features(backbone, train, transform, indices=bank, **options)
    picked = torch.randperm(len(shown), generator=generator)[: args.queries]
    queries = shown[picked]
    exclude = None
    if same:  # never show a query as its own neighbour
        where = {int(i): p for p, i in enumerate(bank)}
        exclude = torch.tensor([where.get(int(i), -1) for i in queries])
    k = min(args.neighbours, len(bank) - (1 if same else 0))
    if k >= 1:
        sims, near = cosine_neighbours(features[picked], bank_x, k, exclude=exclude)
        query_images = torch.stack([held_out[int(i)][0] for i in queries])
        near_images = torch.stack([torch.stack([train[int(bank[j])][0] for j in row]) for row in near])
        written.append(neighbour_grid(query_images, near_images, out / "neighbours.png", query_labels=labels[picked],
                                      neighbour_labels=bank_y[near], similarities=sims, class_names=classes))

    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        written.append(training_curves(metrics, out / "training_curves.png"))
    if isinstance(backbone, VisionTransformer):
        images = torch.stack([held_out[int(i)][0] for i in queries])
        written.append(attention_maps(backbone, images, out / "attention.png", transform=transform))
    for path in written:
        print(path)
    return 0
