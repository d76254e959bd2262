"""``selfsup eval knn | linear | finetune | semisup PATH``: the evaluation protocols on the command line.

Each command loads the backbone (run folder, ``.ckpt`` or ``.safetensors``), evaluates it on the
data set it was trained on or, with ``--data``, on another one (transfer; grey and colour images
are converted to the backbone's channel count), prints a short summary and writes a JSON result
(:func:`selfsup.eval.write_result`) into ``<run>/eval/`` (or ``--out``). Frozen features are cached
in ``<run>/eval/cache/`` per checkpoint, data split and preprocessing.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from selfsup.errors import ConfigError, DataError

KNN_SWEEP_KS = "10,20,50,100,200"


def add_parsers(protocols: argparse._SubParsersAction) -> None:
    """Add ``knn``, ``linear``, ``finetune`` and ``semisup`` to the ``selfsup eval`` sub-commands."""
    knn = protocols.add_parser("knn", help="weighted cosine k-NN (InstDisc)", description=(
        "Weighted cosine k-NN accuracy of a run folder, a .ckpt checkpoint or an exported .safetensors backbone."))
    _common(knn)
    knn.add_argument("--k", type=int, default=200)
    knn.add_argument("--temperature", type=float, default=0.1)
    knn.add_argument("--sweep-k", action="store_true",
                     help="also choose k on a validation part of the training split and score the test split at it")
    knn.add_argument("--ks", default=KNN_SWEEP_KS, metavar="K,K,...", help=f"values of --sweep-k (default {KNN_SWEEP_KS})")
    knn.set_defaults(handler=cmd_eval_knn)

    linear = protocols.add_parser("linear", help="linear probe on frozen, cached features", description=(
        "Linear probe: frozen features computed once and cached; weight decay (and learning rate) chosen on a "
        "validation part of the training split, then one score on the test split."))
    _common(linear)
    _probe_options(linear)
    linear.set_defaults(handler=cmd_eval_linear)

    finetune = protocols.add_parser("finetune", help="fine-tune the whole backbone with a new head", description=(
        "Fine-tune the backbone and a new linear head (AdamW, warm-up + cosine, layer-wise lr decay for ViTs); "
        "the test split is scored once with the final model."))
    _common(finetune)
    _finetune_options(finetune)
    finetune.set_defaults(handler=cmd_eval_finetune)

    semisup = protocols.add_parser("semisup", help="probe or fine-tune on 1%% or 10%% of the labels", description=(
        "Semi-supervised evaluation: a linear probe or fine-tuning on a class-balanced, seeded fraction of the "
        "training labels; the subset's indices are saved in the result (reuse them with --subset FILE)."))
    _common(semisup)
    semisup.add_argument("--fraction", type=float, default=0.1, help="share of the training labels (e.g. 0.01, 0.1)")
    semisup.add_argument("--mode", choices=["probe", "finetune"], default="probe")
    semisup.add_argument("--subset", metavar="FILE", help="reuse the subset of a previous semisup result (or a JSON list)")
    _probe_options(semisup)
    _finetune_options(semisup, epochs_flag=False)
    semisup.set_defaults(handler=cmd_eval_semisup)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="run folder, .ckpt checkpoint or .safetensors export")
    parser.add_argument("--data", help="data set name or image folder (default: the one it was trained on; another one "
                                       "is a transfer evaluation)")
    parser.add_argument("--root", help="data set folder (default: the training run's)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--split", default="test", help="split to score")
    parser.add_argument("--test-data", metavar="FOLDER",
                        help="a folder of held-out labelled images to score, for image-folder data (which has no "
                             "test split): the same class folders as --data's")
    parser.add_argument("--channels", type=int, choices=[1, 3],
                        help="convert the images to this many channels (default: the backbone's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of the training split held out to choose hyper-parameters")
    parser.add_argument("--out", help="folder for the result JSON (default: <run>/eval)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solver", choices=["lbfgs", "sgd"], default="lbfgs")
    parser.add_argument("--epochs", type=int, help="probe iterations (L-BFGS) or epochs (SGD); default 100")
    parser.add_argument("--weight-decays", metavar="WD,WD,...", help="weight decays to try (default 1e-2,...,1e-6)")
    parser.add_argument("--lrs", metavar="LR,LR,...", help="learning rates to try (default: 1 for L-BFGS, "
                                                            "0.03,0.1,0.3 for SGD)")


def _finetune_options(parser: argparse.ArgumentParser, epochs_flag: bool = True) -> None:
    if epochs_flag:
        parser.add_argument("--epochs", type=int, default=100)
    else:
        parser.add_argument("--finetune-epochs", type=int, default=100, help="epochs of --mode finetune")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 5e-4 * batch size / 256)")
    parser.add_argument("--layer-decay", type=float, help="layer-wise lr decay for ViTs (default 0.75; others 1)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--views", default="crop_flip", help="view recipe of the training images")
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed or auto")


@dataclass
class _Setup:
    """Everything a protocol needs, resolved once from the command line."""

    args: argparse.Namespace
    backbone: Any
    info: dict[str, Any]
    weights: Path
    weights_sha256: str
    name: str
    root: str | None
    test_root: str | None
    train_set: Any
    test_set: Any
    transform: Any
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    out: Path
    cache_dir: Path | None

    @property
    def scored(self) -> str:
        """What the scores are on, for the printed line: the held-out folder, or the data set's split."""
        return f"the held-out folder {self.test_root}" if self.test_root else f"{self.name} {self.args.split}"

    def labelled(self, dataset: Any, what: str) -> Tensor:
        idx = torch.nonzero(torch.as_tensor(dataset.labels) >= 0).flatten()
        if len(idx) == 0:
            raise DataError(f"{self.name} {what} has no labelled images; evaluation needs labels.")
        return idx

    def features(self, dataset: Any, split: str, indices: Tensor, root: str | None) -> tuple[Tensor, Tensor]:
        from selfsup.eval import cached_features

        key = {"weights_sha256": self.weights_sha256, "data": self.name,
               "root": str(Path(root).expanduser().resolve()) if root else None, "split": split,
               "transform": repr(self.transform)}
        return cached_features(self.backbone, dataset, self.transform, cache_dir=self.cache_dir, key=key,
                               indices=indices, device=self.args.device, batch_size=self.args.batch_size)

    def labelled_features(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Indices of the labelled images of both splits and their (cached) features and labels."""
        train_idx = self.labelled(self.train_set, self.args.train_split)
        test_idx = self.labelled(self.test_set, self.args.split)
        train_x, train_y = self.features(self.train_set, self.args.train_split, train_idx, self.root)
        test_x, test_y = self.features(self.test_set, self.args.split, test_idx, self.test_root or self.root)
        return train_idx, test_idx, train_x, train_y, test_x, test_y

    def num_classes(self, *labels: Tensor) -> int:
        found = max(int(y.max()) for y in labels) + 1
        return max(found, int(getattr(self.train_set, "num_classes", 0) or 0))

    def data_record(self, train_idx: Tensor, test_idx: Tensor) -> dict[str, Any]:
        from selfsup.eval import split_hash

        return {"name": self.name, "root": str(Path(self.root).expanduser().resolve()) if self.root else None,
                "train_split": self.args.train_split, "test_split": self.args.split,
                **({"test_root": str(Path(self.test_root).expanduser().resolve())} if self.test_root else {}),
                "train_hash": split_hash(self.train_set, train_idx), "test_hash": split_hash(self.test_set, test_idx),
                "train_size": len(train_idx), "test_size": len(test_idx),
                "pretrained_on": self.info.get("data"), "transfer": self.name != self.info.get("data"),
                "data_channels": int(self.train_set.channels)}

    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "channels": self.channels, "transform": repr(self.transform)}

    def write(self, protocol: str, scores: dict[str, Any], data: dict[str, Any], settings: dict[str, Any],
              extra: dict[str, Any] | None = None) -> Path:
        from selfsup.eval import write_result

        return write_result(self.out, protocol, scores, checkpoint=self.weights, data=data,
                            settings={**settings, "preprocessing": self.preprocessing()}, seed=self.args.seed,
                            extra=extra)


def _weights_file(path: Path) -> Path:
    """The file :func:`selfsup.checkpoints.load_backbone` reads for ``path`` (a run folder's export, else its last.ckpt)."""
    if path.is_dir():
        exported = path / "backbone.safetensors"
        return exported if exported.is_file() else path / "checkpoints" / "last.ckpt"
    return path


def _setup(args: argparse.Namespace) -> _Setup:
    from selfsup import data
    from selfsup.augment import EvalTransform
    from selfsup.checkpoints import load_backbone
    from selfsup.cli_data import resolve_data, run_folder
    from selfsup.eval import ChannelAdapter, file_sha256, match_stats

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    backbone, info = load_backbone(args.path)
    weights = _weights_file(Path(args.path))
    name, root = resolve_data(args.data, args.root, info)
    wanted = info.get("channels") or (getattr(backbone, "config", None) or {}).get("in_channels") or 3
    wanted = int(wanted)
    if args.channels is not None and args.channels != wanted:
        raise ConfigError(f"--channels {args.channels}: the backbone of {args.path} takes {wanted}-channel images.")
    size = int(info.get("image_size") or 0)
    folder = name == "folder"
    test_root = _test_folder(args, folder)
    sets = []
    for split, where in ((args.train_split, root), (args.split, test_root or root)):
        sets.append(data.get(name, root=where, split=split, image_size=(size or None) if folder else None,
                             channels=wanted if folder else None))
    train_set, test_set = sets
    if test_root and list(test_set.classes) != list(train_set.classes):
        raise DataError(
            f"--test-data {test_root} has the class folders {', '.join(test_set.classes) or '(none)'} but {root} has "
            f"{', '.join(train_set.classes) or '(none)'}: the held-out images need the same class folders (the same "
            "names: labels are the sorted folder names).")
    size = size or int(train_set.image_size[0])
    same_data = name == info.get("data")
    if same_data and info.get("mean") and info.get("std"):
        mean, std = tuple(info["mean"]), tuple(info["std"])
    else:
        mean, std = match_stats(train_set.mean, train_set.std, wanted)
    transform: Any = EvalTransform(size, mean, std)
    if train_set.channels != wanted:
        transform = ChannelAdapter(transform, wanted)
    run = run_folder(args.path)
    out = Path(args.out) if args.out else run / "eval"
    return _Setup(args=args, backbone=backbone.to(args.device), info=info, weights=weights,
                  weights_sha256=file_sha256(weights), name=name, root=root, test_root=test_root,
                  train_set=train_set, test_set=test_set,
                  transform=transform, channels=wanted, image_size=size, mean=tuple(mean), std=tuple(std), out=out,
                  cache_dir=None if args.no_cache else run / "eval" / "cache")


def _test_folder(args: argparse.Namespace, folder: bool) -> str | None:
    """The folder of held-out images (``--test-data``), checked against ``--data`` and ``--split``.

    An image folder has no test split: without ``--test-data`` its scores would come from the
    training images themselves, so the default split is refused with what to pass instead.
    """
    if args.test_data is None:
        if folder and args.split == "test":
            raise ConfigError(
                "An image folder has no test split: pass --test-data FOLDER (held-out labelled images with the same "
                "class folders), or --split all to score the training images themselves (not a held-out score).")
        return None
    if not folder:
        raise ConfigError(f"--test-data {args.test_data}: held-out folders go with image-folder data (--data FOLDER); "
                          "a named data set scores its own --split.")
    path = Path(args.test_data).expanduser()
    if not path.is_dir():
        raise DataError(f"--test-data {args.test_data}: not a folder of images.")
    if args.split == "test":
        args.split = "all"  # every image of the held-out folder
    return str(path)


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, got {text!r}.") from None
    if not values:
        raise ConfigError(f"{flag} needs at least one value, got {text!r}.")
    return values


def _result_line(path: Path) -> None:
    print(f"result: {path}")


def cmd_eval_knn(args: argparse.Namespace) -> int:
    """``selfsup eval knn``: weighted k-NN at ``--k`` (and, with ``--sweep-k``, at the k chosen on validation)."""
    from selfsup.eval import knn_accuracy, knn_sweep

    values = _floats(args.ks, "--ks") or ()
    if any(v < 1 or v != int(v) for v in values):
        raise ConfigError(f"--ks takes comma-separated whole numbers >= 1, got {args.ks!r}.")
    ks = tuple(int(v) for v in values)
    s = _setup(args)
    train_idx, test_idx, train_x, train_y, test_x, test_y = s.labelled_features()
    num_classes = s.num_classes(train_y, test_y)
    options = dict(num_classes=num_classes, temperature=args.temperature)
    scores: dict[str, Any] = {**knn_accuracy(train_x, train_y, test_x, test_y, k=args.k, **options), "k": args.k}
    settings: dict[str, Any] = {"k": args.k, "temperature": args.temperature}
    print(f"k-NN (k={args.k}, T={args.temperature}) of {args.path} on {s.scored}: "
          f"top-1 {scores['top1']:.2f}%  top-5 {scores['top5']:.2f}%")
    if args.sweep_k:
        sweep = knn_sweep(train_x, train_y, ks=ks, temperature=args.temperature, val_fraction=args.val_fraction,
                          seed=args.seed, num_classes=num_classes)
        chosen = knn_accuracy(train_x, train_y, test_x, test_y, k=sweep["k"], **options)
        scores["chosen_k"] = {"k": sweep["k"], "top1": chosen["top1"], "top5": chosen["top5"],
                              "val_top1": sweep["val_top1"]}
        settings.update(sweep_ks=list(ks), val_fraction=args.val_fraction, sweep=sweep["sweep"],
                        val_size=sweep["val_size"])
        print(f"k-NN (k={sweep['k']} chosen on {sweep['val_size']} validation images, T={args.temperature}) on "
              f"{s.scored}: top-1 {chosen['top1']:.2f}%  top-5 {chosen['top5']:.2f}%")
    _result_line(s.write("knn", scores, s.data_record(train_idx, test_idx), settings))
    return 0


def _probe(s: _Setup, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> tuple[dict, dict]:
    from selfsup.eval import linear_probe
    from selfsup.eval.linear import DEFAULT_WEIGHT_DECAYS

    args = s.args
    wds = _floats(args.weight_decays, "--weight-decays") or DEFAULT_WEIGHT_DECAYS
    lrs = _floats(args.lrs, "--lrs")
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=s.num_classes(train_y, test_y),
                          val_fraction=args.val_fraction, lrs=lrs, weight_decays=wds, solver=args.solver,
                          epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    scores = {key: result[key] for key in ("top1", "top5", "val_top1")}
    settings = {"solver": args.solver, "epochs": args.epochs, "weight_decays": list(wds),
                "lrs": None if lrs is None else list(lrs), "val_fraction": args.val_fraction,
                "chosen": result["chosen"], "sweep": result["sweep"], "val_size": result["val_size"]}
    return scores, settings


def _probe_line(what: str, s: _Setup, scores: dict, settings: dict) -> str:
    chosen = settings["chosen"]
    how = (f"weight decay {chosen['weight_decay']:g} chosen on {settings['val_size']} validation images"
           if settings["sweep"] else f"weight decay {chosen['weight_decay']:g}")
    return (f"{what} ({settings['solver']}, {how}) of {s.args.path} on {s.scored}: "
            f"top-1 {scores['top1']:.2f}%  top-5 {scores['top5']:.2f}%")


def cmd_eval_linear(args: argparse.Namespace) -> int:
    """``selfsup eval linear``: the linear probe on cached features."""
    s = _setup(args)
    train_idx, test_idx, train_x, train_y, test_x, test_y = s.labelled_features()
    scores, settings = _probe(s, train_x, train_y, test_x, test_y)
    print(_probe_line("linear probe", s, scores, settings))
    _result_line(s.write("linear", scores, s.data_record(train_idx, test_idx), settings))
    return 0


def _finetune(s: _Setup, train_set: Any, epochs: int) -> tuple[dict, dict]:
    from selfsup.eval import finetune

    args = s.args
    precision = args.precision
    if precision == "auto":
        from selfsup.training import resolve_precision

        precision = resolve_precision("auto", "cuda" if str(args.device).startswith("cuda") else "cpu")
    channels = s.channels if s.train_set.channels != s.channels else None
    result = finetune(s.backbone, train_set, s.test_set, epochs=epochs, lr=args.lr, batch_size=args.batch_size,
                      layer_decay=args.layer_decay, weight_decay=args.weight_decay, views=args.views,
                      image_size=s.image_size, mean=s.mean, std=s.std, channels=channels,
                      val_fraction=args.val_fraction, seed=args.seed, device=args.device, precision=precision)
    scores = {key: result[key] for key in ("top1", "top5", "val_top1", "val_top5", "train_loss")}
    settings = {"epochs": epochs, "lr": result["lr"], "layer_decay": result["layer_decay"],
                "weight_decay": args.weight_decay, "batch_size": args.batch_size, "views": args.views,
                "precision": precision, "val_fraction": args.val_fraction, "val_size": result["val_size"],
                "history": result["history"]}
    return scores, settings


def _finetune_line(what: str, s: _Setup, scores: dict, settings: dict) -> str:
    val = "" if scores["val_top1"] is None else f"  (validation top-1 {scores['val_top1']:.2f}%)"
    return (f"{what} ({settings['epochs']} epochs, lr {settings['lr']:g}, layer decay {settings['layer_decay']:g}) "
            f"of {s.args.path} on {s.scored}: top-1 {scores['top1']:.2f}%  top-5 {scores['top5']:.2f}%{val}")


def cmd_eval_finetune(args: argparse.Namespace) -> int:
    """``selfsup eval finetune``: the whole backbone with a new head, test scored once at the end."""
    s = _setup(args)
    train_idx, test_idx = s.labelled(s.train_set, args.train_split), s.labelled(s.test_set, args.split)
    scores, settings = _finetune(s, s.train_set, args.epochs)
    print(_finetune_line("fine-tuning", s, scores, settings))
    _result_line(s.write("finetune", scores, s.data_record(train_idx, test_idx), settings))
    return 0


def _subset(s: _Setup) -> tuple[Tensor, str | None]:
    from selfsup.eval import balanced_subset, read_subset

    args = s.args
    labels = torch.as_tensor(s.train_set.labels)
    if args.subset is None:
        return balanced_subset(labels, args.fraction, args.seed), None
    indices = torch.as_tensor(read_subset(args.subset), dtype=torch.long)
    bad = indices[(indices < 0) | (indices >= len(labels))]
    if len(bad):
        raise DataError(f"Subset file {args.subset} holds index {int(bad[0])}, outside {s.name} {args.train_split} "
                        f"(0..{len(labels) - 1}); was it saved for another data set or split?")
    if len(set(indices.tolist())) != len(indices) or bool((labels[indices] < 0).any()):
        raise DataError(f"Subset file {args.subset} repeats an index or names unlabelled images of {s.name} "
                        f"{args.train_split}.")
    return torch.sort(indices).values, str(Path(args.subset).resolve())


def cmd_eval_semisup(args: argparse.Namespace) -> int:
    """``selfsup eval semisup``: probe or fine-tune on a class-balanced fraction of the labels."""
    from selfsup.data import DataSubset
    from selfsup.eval import split_hash

    s = _setup(args)
    subset, source = _subset(s)
    test_idx = s.labelled(s.test_set, args.split)
    if args.mode == "probe":
        train_idx, _, train_x, train_y, test_x, test_y = s.labelled_features()  # shared with `eval linear`'s cache
        rows = torch.searchsorted(train_idx, subset)
        scores, settings = _probe(s, train_x[rows], train_y[rows], test_x, test_y)
        line = _probe_line(f"semi-supervised probe on {len(subset)} labels", s, scores, settings)
    else:
        scores, settings = _finetune(s, DataSubset(s.train_set, subset.tolist()), args.finetune_epochs)
        line = _finetune_line(f"semi-supervised fine-tuning on {len(subset)} labels", s, scores, settings)
    print(line)
    data = s.data_record(subset, test_idx)
    settings = {"mode": args.mode, "fraction": args.fraction if source is None else None, **settings}
    record = {"subset": {"fraction": args.fraction if source is None else None, "seed": args.seed,
                         "size": len(subset), "source": source, "hash": split_hash(s.train_set, subset),
                         "indices": subset.tolist()}}
    _result_line(s.write("semisup", scores, data, settings, extra=record))
    return 0
