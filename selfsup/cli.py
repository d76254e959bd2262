"""The ``selfsup`` command: ``train``, ``eval knn|linear|finetune|semisup|pictures``, ``embed``, ``list``, ``demo``.

Errors caused by input (unknown names, bad config values, missing data, corrupt images) are
printed as one paragraph without a traceback and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from selfsup import __version__, cli_embed, cli_eval, cli_export, cli_pictures, cli_shard
from selfsup.errors import SelfSupError, user_message

if TYPE_CHECKING:
    from selfsup.methods.card import MethodCard

TRAIN_FLAGS = {  # flag -> config key
    "method": "method.name", "backbone": "backbone.name", "data": "data.name", "root": "data.root",
    "epochs": "epochs", "batch_size": "batch_size", "devices": "devices", "num_nodes": "num_nodes",
    "precision": "precision",
    "name": "name", "output_dir": "output_dir", "num_workers": "data.num_workers", "seed": "seed",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfsup", description="Self-supervised visual representation learning.")
    parser.add_argument("--version", action="version", version=f"selfsup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="pretrain an encoder", description=(
        "Pretrain an encoder. Settings come from the defaults, then --config, then the flags, then "
        "key.sub=value overrides (e.g. optimizer.lr=0.5 method.temperature=0.2)."))
    train.add_argument("--config", help=(
        "YAML file or packaged recipe (e.g. cifar10/simclr; see `selfsup list`); without it the packaged "
        f"<data>/<method> recipe when there is one; '{NO_RECIPE}' for the global defaults"))
    train.add_argument("--method")
    train.add_argument("--backbone")
    train.add_argument("--data", help="data set name (see `selfsup list`) or a folder of images (class sub-folders)")
    train.add_argument("--root", help="data set folder")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="global batch size")
    train.add_argument("--devices", type=int, help="processes (GPUs) per machine")
    train.add_argument("--num-nodes", type=int, help="machines (each with --devices processes; e.g. SLURM's --nodes)")
    train.add_argument("--precision", help="auto, 32-true, bf16-mixed or 16-mixed")
    train.add_argument("--num-workers", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--name", help="run name (folder under --output-dir)")
    train.add_argument("--output-dir")
    train.add_argument("--resume", action="store_true", help=(
        "continue a run from its last checkpoint: run --name, or without --name the latest run in --output-dir "
        "trained with the same settings (the stopped command with --resume added)"))
    train.add_argument("--download", action="store_true", help="download a torchvision data set into --root")
    train.add_argument("--skip-bad-images", action="store_true", help="skip and count unreadable images")
    train.add_argument("overrides", nargs="*", metavar="key.sub=value",
                       help="config overrides, anywhere on the line (e.g. optimizer.lr=0.5)")

    evaluate = commands.add_parser("eval", help="evaluate a trained encoder")
    protocols = evaluate.add_subparsers(dest="protocol", required=True)
    cli_eval.add_parsers(protocols)
    cli_pictures.add_parser(protocols)
    cli_embed.add_parser(commands)
    cli_export.add_parser(commands)
    cli_shard.add_parser(commands)

    listing = commands.add_parser("list", help="list methods, backbones, data sets, view recipes and packaged recipes")
    listing.add_argument("--long", action="store_true", help="print every field of each method's card")

    demo = commands.add_parser("demo", help="train SimCLR on the built-in data set and compare k-NN accuracies")
    demo.add_argument("--epochs", type=int)
    demo.add_argument("--output-dir", default="runs")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from selfsup.config import load
    from selfsup.training import train

    flags = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items()}
    if args.data is not None and looks_like_a_folder(args.data):  # --data ~/images: a folder of images
        if args.root is not None:
            raise SelfSupError(f"--data {args.data} names a folder and --root {args.root} another; give the folder "
                               "once: --data PATH, or --data folder --root PATH.")
        flags["data.name"], flags["data.root"] = "folder", args.data
    if args.download:
        flags["data.download"] = True
    if args.skip_bad_images:
        flags["data.skip_bad_images"] = True
    config = load(choose_config(args.config, flags, args.overrides), flags=flags, overrides=args.overrides)
    result = train(config, resume=args.resume)
    if not result.is_main_process:
        return 0
    print(f"run folder: {result.run_dir}")
    print(f"backbone:   {result.backbone_path}")
    for key, value in result.metrics.items():
        print(f"{key}: {value:.4g}" if key.startswith("collapse/") else f"{key}: {value:.2f}")
    return 0


#: ``--config defaults``: no recipe, the global defaults (what the built-in settings give)
NO_RECIPE = "defaults"


def choose_config(config: str | None, flags: dict[str, Any], overrides: Sequence[str]) -> str | None:
    """The config ``train`` starts from: ``--config`` when given (``defaults``: none), else the
    packaged ``<data>/<method>`` recipe when one is written for the data set and method the flags
    and overrides name (said in the log), else none (the global defaults)."""
    from selfsup.config import TrainConfig
    from selfsup.config.load import packaged_recipe_for, settings

    if config == NO_RECIPE:
        return None
    if config is not None:
        return config
    given = settings(flags=flags, overrides=overrides)
    defaults = TrainConfig()
    data_name = section(given, "data").get("name", defaults.data.name)
    method_name = section(given, "method").get("name", defaults.method["name"])
    recipe = packaged_recipe_for(str(data_name), str(method_name))
    if recipe is not None:
        logging.getLogger("selfsup").info(
            "No --config: starting from the packaged recipe %s, written for %s with %s (flags and overrides "
            "apply on top; --config %s for the global defaults instead).", recipe, data_name, method_name, NO_RECIPE)
    return recipe


def section(settings: dict[str, Any], name: str) -> dict[str, Any]:
    """One section of the settings as given (empty when absent or not a mapping)."""
    value = settings.get(name)
    return value if isinstance(value, dict) else {}


def looks_like_a_folder(value: str) -> bool:
    """Whether ``--data value`` means a folder of images rather than a data set name: it is not a
    registered name and holds a path separator or names an existing folder."""
    import os
    from pathlib import Path

    from selfsup import data

    if value in data.names():
        return False
    return os.sep in value or (os.altsep or os.sep) in value or value.startswith("~") or Path(value).is_dir()


def cmd_list(args: argparse.Namespace) -> int:
    from selfsup import augment, backbones, data, methods
    from selfsup.config import packaged_recipes

    if args.long:  # each method's whole card in place of its one line
        print("methods:")
        print_method_cards(methods.METHODS.cards())
        print()
    sections = [
        *([] if args.long else [("methods (family, year, paper; --long for the whole card)",
                                 method_lines(methods.METHODS.cards()))]),
        ("backbones", {**backbones.BACKBONES.describe(),
                       "timm:<model>": 'any timm model by name, e.g. timm:convnext_tiny (pip install "selfsup[timm]")'}),
        ("data sets", data.describe()),
        ("view recipes", augment.RECIPES.describe()),
        ("packaged configs (--config NAME)", {name: "" for name in packaged_recipes()}),
    ]
    for title, entries in sections:
        print(f"{title}:")
        width = max(map(len, entries), default=0)
        for name, line in entries.items():
            print(f"  {name:<{width}}  {line}".rstrip())
        print()
    return 0


def method_lines(cards: Mapping[str, MethodCard]) -> dict[str, str]:
    """Name -> ``family  year  paper title`` of each method card, the columns aligned."""
    width = max((len(card.family) for card in cards.values()), default=0)
    return {name: f"{card.family:<{width}}  {card.year}  {card.title}" for name, card in cards.items()}


def print_method_cards(cards: Mapping[str, MethodCard]) -> None:
    """Every field of every method card, one ``field: value`` line each."""
    for name, card in cards.items():
        print(f"  {name}:")
        for field, value in card.as_dict().items():
            print(f"    {field}: {value}")


def cmd_demo(args: argparse.Namespace) -> int:
    from selfsup.demo import run_demo

    run_demo(output_dir=args.output_dir, epochs=args.epochs)
    return 0


def config_keys() -> list[str]:
    """Every dotted key of :class:`~selfsup.config.schema.TrainConfig` with a fixed place (the
    sections ``method``, ``backbone`` and ``augment`` take their own options)."""
    import dataclasses

    from selfsup.config.schema import TrainConfig

    def keys(cls: type, prefix: str) -> list[str]:
        found = []
        for item in dataclasses.fields(cls):
            inner = item.default_factory if item.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(inner):
                found += keys(inner, f"{prefix}{item.name}.")
            else:
                found.append(f"{prefix}{item.name}")
        return found

    return keys(TrainConfig, "")


def override_hint(token: str) -> str:
    """For a flag ``train`` does not have (``--lr``, ``--weight-decay=0.1``), the override that sets
    it (``optimizer.lr=...``), or ``""`` when no config key is named like it."""
    import difflib

    if not token.startswith("-"):
        return ""
    name, _, value = token.lstrip("-").partition("=")
    name = name.replace("-", "_")
    keys = config_keys()
    exact = [key for key in keys if key.rsplit(".", 1)[-1] == name]
    leaves = {key.rsplit(".", 1)[-1]: key for key in keys}
    close = [leaves[leaf] for leaf in difflib.get_close_matches(name, leaves, n=2, cutoff=0.75)]
    found = exact or close
    if not found:
        return ""
    return "settings without a flag are overrides: " + " or ".join(f"{key}={value or 'VALUE'}" for key in found)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``selfsup`` command."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:  # overrides may sit between flags; argparse leaves those for us
        stray = [token for token in rest if token.startswith("-") or "=" not in token]
        if stray or args.command != "train":
            hints = [hint for hint in map(override_hint, stray) if hint] if args.command == "train" else []
            parser.error(f"unrecognized arguments: {' '.join(stray or rest)}" + "".join(f"; {h}" for h in hints))
        args.overrides = [*args.overrides, *rest]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("selfsup").setLevel(logging.INFO)  # selfsup's own summary lines; other libraries: warnings
    handlers = {"train": cmd_train, "list": cmd_list, "demo": cmd_demo}
    handler = getattr(args, "handler", None) or handlers[args.command]
    try:
        return handler(args)
    except SelfSupError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
