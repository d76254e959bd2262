"""Build a :class:`TrainConfig` from defaults, a YAML file, flags and ``key.sub=value`` overrides.

Every key is checked: unknown keys get the closest valid names, values are checked against the
field's type, and the ``method`` / ``backbone`` / ``augment`` options against the signature of the
registered factory they configure. YAML is read with a ``yaml.SafeLoader`` (no code runs).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from selfsup._registry import check_kwargs
from selfsup.config.schema import TrainConfig
from selfsup.engine.loggers import check_loggers
from selfsup.engine.optim import OPTIMIZERS
from selfsup.engine.precision import PRECISION_ALIASES, PRECISIONS
from selfsup.engine.schedule import SCALING_RULES
from selfsup.engine.sharding import STRATEGIES
from selfsup.errors import ConfigError, close_matches

class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` and ``1e30`` as floats (YAML 1.2 does; PyYAML's 1.1
    rules want a dot, so ``lr: 1e-4`` would otherwise be the string "1e-4")."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """Parse YAML without running code, reading exponent notation as floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


#: sections that name a registered factory, and the key holding the name
NAMED_SECTIONS = {"method": "name", "backbone": "name", "augment": "recipe"}


def packaged_recipes() -> list[str]:
    """Recipe names shipped in the package, like ``cifar10/simclr``."""
    root = resources.files("selfsup") / "configs"
    return sorted(
        f"{d.name}/{f.name[:-5]}"
        for d in root.iterdir() if d.is_dir()
        for f in d.iterdir() if f.name.endswith(".yaml")
    )


def read_yaml(source: str | Path) -> dict[str, Any]:
    """Read a config file, or a packaged recipe by name (``cifar10/simclr``)."""
    path = Path(source)
    if not path.exists() and not str(source).endswith((".yaml", ".yml")):
        packaged = resources.files("selfsup") / "configs" / f"{source}.yaml"
        if packaged.is_file():
            return _parse(packaged.read_text(), f"recipe {source}")
    if not path.is_file():
        raise ConfigError(
            f"Config file {source} not found.{close_matches(str(source), packaged_recipes())} "
            f"Give a path to a YAML file or a packaged recipe: {', '.join(packaged_recipes())}."
        )
    return _parse(path.read_text(), str(path))


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key.sub=value (e.g. optimizer.lr=0.5)")
    key, raw = text.split("=", 1)
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``.

    A new ``name`` (``recipe``) in a named section replaces that section: options of one method
    mean nothing to another.
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            name_key = NAMED_SECTIONS.get(key)
            if name_key and name_key in value and value[name_key] != out[key].get(name_key):
                out[key] = dict(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def set_path(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """Return ``data`` with ``value`` at the dotted ``path`` (as a merge)."""
    nested: Any = value
    for key in reversed(path):
        nested = {key: nested}
    return merge(data, nested)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain nested dict of a config (what ``config.yaml`` holds)."""
    return dataclasses.asdict(config)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and type-check a :class:`TrainConfig` from a (possibly partial) nested dict."""
    merged = merge(to_dict(TrainConfig()), data)
    return _build(TrainConfig, merged, "")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"section {prefix[:-1]!r}" if prefix else "the top level"
            raise ConfigError(
                f"Unknown config key {prefix + key!r}.{close_matches(key, fields)} "
                f"Valid keys in {where}: {', '.join(sorted(fields))}."
            )
    values = {}
    for name in fields:
        hint, value, key = hints[name], data[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key {key!r} must be a mapping, got {value!r}")
            values[name] = _build(hint, value, key + ".")
        else:
            values[name] = _coerce(value, hint, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise errors[0] if len(errors) == 1 else ConfigError(f"Config key {key!r}: {value!r} fits none of {hint}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"Config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key {key!r} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if hint is Any:
        return value
    raise ConfigError(f"Config key {key!r} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def load(
    config_file: str | Path | None = None,
    *,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainConfig:
    """Defaults, then the config file, then flags (dotted keys), then ``key=value`` overrides.

    Example:
        >>> cfg = load("cifar10/simclr", flags={"epochs": 1}, overrides=["optimizer.lr=0.5"])
        >>> cfg.optimizer.lr
        0.5
    """
    config = from_dict(settings(config_file, flags=flags, overrides=overrides))
    validate(config)
    return config


def settings(
    config_file: str | Path | None = None,
    *,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The nested settings that the config file, flags and overrides give, before the defaults fill
    in the rest and anything is checked (what :func:`load` builds its config from)."""
    data: dict[str, Any] = read_yaml(config_file) if config_file else {}
    for key, value in (flags or {}).items():
        if value is not None:
            data = set_path(data, key.split("."), value)
    for text in overrides:
        path, value = parse_override(text)
        data = set_path(data, path, value)
    return data


def packaged_recipe_for(data_name: str, method_name: str) -> str | None:
    """The packaged recipe written for this data set and method (``digits/simclr``), or None.

    Example:
        >>> packaged_recipe_for("digits", "simclr"), packaged_recipe_for("folder", "simclr")
        ('digits/simclr', None)
    """
    recipe = f"{data_name}/{method_name}"
    return recipe if recipe in packaged_recipes() else None


def one_of(values: tuple[str, ...]) -> str:
    """``"one of a, b, c"`` for an error message.

    Example:
        >>> one_of(("sgd", "lars"))
        'one of sgd, lars'
    """
    return f"one of {', '.join(values)}"


def _dry_build(config: TrainConfig) -> None:
    """Run training's build (:func:`selfsup.config.build.build`) on the meta device with stand-in
    data facts (no memory, no data), so what it rejects (temperature 0, momentum 1.5, a probability
    of 2, a method and view recipe that disagree on their global views) stops the run before any work
    starts, with the same error training would give."""
    from selfsup.config.build import DataFacts, build

    try:
        build(config, DataFacts.stand_in(config), meta=True)
    except (NotImplementedError, RuntimeError):
        pass  # a constructor that needs real data (not meta tensors); training's build checks it


def validate(config: TrainConfig) -> None:
    """Check names, factory options and value ranges before any work starts.

    The allowed values of the enumerated keys are read from where they are used (declared once):
    :data:`~selfsup.engine.optim.OPTIMIZERS`, :data:`~selfsup.engine.schedule.SCALING_RULES`,
    :data:`~selfsup.data.folder.DECODERS`, :data:`~selfsup.engine.precision.PRECISIONS`.
    """
    from selfsup import augment, backbones, data, methods
    from selfsup.data.decoding import FITS
    from selfsup.data.folder import DECODERS

    registries = {"method": methods.METHODS, "backbone": backbones.BACKBONES, "augment": augment.RECIPES}
    for section, name_key in NAMED_SECTIONS.items():
        options = dict(getattr(config, section))
        name = options.pop(name_key, None)
        if name is None:
            if section == "augment":
                continue  # the method's default recipe
            raise ConfigError(f"Config section {section!r} needs a {name_key!r} key")
        if section == "backbone":
            options.pop("weights", None)  # read by the build (build_backbone), not the backbone's constructor
            if str(name).startswith("timm:"):
                continue  # timm checks its own model names and options
        registry = registries[section]
        check_kwargs(registry.factory(str(name)), options, f"{registry.kind} {name!r} (config section {section!r})")
    data.DATASETS.factory(config.data.name)
    _dry_build(config)

    checks = [
        ("epochs", config.epochs >= 1, "an integer >= 1"),
        ("batch_size", config.batch_size >= 1, "an integer >= 1"),
        ("micro_batches", config.micro_batches >= 1, "an integer >= 1 (1: no gradient accumulation)"),
        ("devices", config.devices >= 1, "an integer >= 1"),
        ("num_nodes", config.num_nodes >= 1, "an integer >= 1"),
        ("checkpoint_every", config.checkpoint_every >= 0, ">= 0 (0: only 'last')"),
        ("checkpoint_every_steps", config.checkpoint_every_steps >= 0, ">= 0 (0: only at epoch ends)"),
        ("max_skipped_steps", config.max_skipped_steps >= 0, ">= 0"),
        ("optimizer.lr", config.optimizer.lr > 0, "> 0"),
        ("optimizer.momentum", 0 <= config.optimizer.momentum < 1, "in [0, 1)"),
        ("optimizer.weight_decay", config.optimizer.weight_decay >= 0, ">= 0"),
        ("optimizer.warmup_epochs", config.optimizer.warmup_epochs >= 0, ">= 0"),
        ("optimizer.final_lr_fraction", 0 <= config.optimizer.final_lr_fraction <= 1, "in [0, 1]"),
        ("optimizer.clip_grad_norm", config.optimizer.clip_grad_norm >= 0, ">= 0 (0: no clipping)"),
        ("optimizer.name", config.optimizer.name in OPTIMIZERS, one_of(OPTIMIZERS)),
        ("optimizer.lr_scaling", config.optimizer.lr_scaling in SCALING_RULES, one_of(SCALING_RULES)),
        ("monitor.knn_k", config.monitor.knn_k >= 1, ">= 1"),
        ("monitor.knn_temperature", config.monitor.knn_temperature > 0, "> 0"),
        ("monitor.knn_every", config.monitor.knn_every >= 0, ">= 0"),
        ("data.num_workers", config.data.num_workers >= 0, ">= 0"),
        ("data.val_fraction", 0 <= config.data.val_fraction < 1, "in [0, 1)"),
        ("data.channels", config.data.channels in (None, 1, 3), "1 or 3"),
        ("data.decoder", config.data.decoder in DECODERS, one_of(DECODERS)),
        ("data.decode_on_device", config.data.decode_on_device in (True, False, "auto"), "auto, true or false"),
        ("data.folder_crop", config.data.folder_crop in FITS, one_of(FITS)),
        ("data.prefetch_factor", config.data.prefetch_factor is None or config.data.prefetch_factor >= 1,
         "null (PyTorch's default) or an integer >= 1"),
        ("data.shuffle_buffer", config.data.shuffle_buffer >= 1, "an integer >= 1 (samples)"),
        ("strategy", config.strategy in STRATEGIES, one_of(STRATEGIES)),
        ("precision", config.precision in PRECISIONS or config.precision in PRECISION_ALIASES, one_of(PRECISIONS)),
    ]
    for key, ok, expected in checks:
        if not ok:
            value = config
            for part in key.split("."):
                value = getattr(value, part)
            raise ConfigError(f"Config key {key!r} must be {expected}; got {value!r}")
    _check_data_path(config)
    check_loggers(config.loggers)


def _check_data_path(config: TrainConfig) -> None:
    """Options of the folder data path that only make sense together."""
    data = config.data
    if data.prefetch_factor is not None and data.num_workers == 0:
        raise ConfigError(
            f"Config key 'data.prefetch_factor' ({data.prefetch_factor}) needs data.num_workers > 0: it is the "
            "number of batches each worker process loads ahead. Set data.num_workers or leave prefetch_factor null."
        )
    folder_only = [("data.cache", data.cache is True), ("data.decode_on_device", data.decode_on_device is True),
                   ("data.decoder", data.decoder != "auto")]
    if data.name == "shards":
        folder_only = folder_only[:2]  # shards of image files are decoded by the workers, as a folder's
        if data.val_fraction > 0:
            raise ConfigError(
                "Config key 'data.val_fraction' does not apply to shards: they are streamed, so a held-out part is "
                "written as its own split: `selfsup shard SOURCE OUT --val-fraction F` writes OUT/train and OUT/val; "
                "then train with data.root=OUT data.eval_split=val.")
        if not data.root:
            raise ConfigError("--data shards needs data.root=PATH_OR_URL: the folder `selfsup shard` wrote.")
    for key, is_set in folder_only:
        if is_set and data.name != "folder":
            raise ConfigError(
                f"Config key {key!r} only applies to 'folder' data (image files decoded by the workers); "
                f"data set {data.name!r} is read already decoded. Leave {key} at its default."
            )
    if data.name == "folder" and data.folder_crop == "full" and data.decode_on_device is True:
        raise ConfigError(
            "Config key 'data.decode_on_device=true' needs data.folder_crop=center: decoding on the device gives "
            "each image's centred square, and data.folder_crop=full (the default) crops from the whole image. "
            "Set data.folder_crop=center to decode on the device."
        )
    if data.cache and data.decode_on_device is True:
        raise ConfigError(
            "Config keys 'data.cache=true' and 'data.decode_on_device=true' contradict each other: the cache holds "
            "decoded images, so nothing is left to decode on the device. Choose one (decode_on_device=auto picks "
            "the cache when both are possible)."
        )
