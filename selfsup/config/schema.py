"""The typed configuration of a training run.

A run is described by one :class:`TrainConfig`. Sections with a fixed shape are dataclasses;
``method``, ``backbone`` and ``augment`` are dictionaries whose ``name`` (``recipe`` for
``augment``) picks a registered factory and whose other keys are that factory's keyword
arguments, so each method's hyper-parameters are declared once, in its ``__init__``, and checked
against it (:func:`selfsup.config.load.validate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selfsup.engine.monitor import MonitorConfig
from selfsup.engine.optim import OptimizerConfig
from selfsup.errors import ConfigError


@dataclass
class DataConfig:
    """Where the images come from.

    Attributes:
        name: a registered data set (``selfsup list``), e.g. ``digits``, ``cifar10``, ``folder``,
            ``shards`` (tar shards written by ``selfsup shard``, streamed).
        root: its local folder (not needed by ``digits``); for ``shards`` a path or fsspec URL.
        download: let torchvision download the data set into ``root`` when it is missing.
        image_size: size images are loaded at (required for ``folder``: shorter side resized and
            centre-cropped in the workers).
        train_split: split to pretrain on.
        eval_split: held-out split for the k-NN monitor, the online probe's accuracy and the final
            evaluation (``none`` to skip).
        eval_root: for ``folder`` data, a second folder of held-out images (same layout).
        max_pixels: ``folder`` images larger than this (width x height) are refused without being
            decoded (an image bomb must not take the machine's memory); null for PIL's own limit.
        val_fraction: when > 0, hold out this seeded, stratified share of the training split as the
            evaluation set instead of ``eval_split`` (for tuning without touching the test split).
        num_workers: data loader worker processes (they only decode).
        skip_bad_images: skip unreadable images (counted and reported) instead of stopping.
        channels: 1 or 3, for folders (default 3; other data sets have their own).
        decoder: for folders, who decodes plain JPEGs: ``auto`` (torchvision, or PIL for JPEGs at
            least twice ``image_size``, which PIL decodes at a reduced scale), ``torchvision`` or
            ``pil``. Other formats always go through PIL.
        folder_crop: for folders, what training crops are drawn from: ``full`` (the default) the
            whole image, its longer side fitted to ``image_size`` (as ImageNet pipelines crop the
            decoded photo), or ``center`` its centred square (the shorter side fitted). Evaluation
            always reads the centred square.
        decode_on_device: for folders, ``auto`` / ``true`` / ``false``: workers ship plain JPEGs as
            bytes and the training device decodes them (nvjpeg; ``auto``: on CUDA without ``cache``,
            with ``folder_crop: center``).
        cache: for folders, decode every image once into a memory-mapped uint8 cache (rebuilt when
            the folder or the decode settings change) and read it at every epoch.
        cache_dir: where the cache lives (null: ``<root>/.selfsup-cache`` if the folder is
            writable, else ``<output_dir>/.selfsup-cache``).
        prefetch_factor: batches each worker loads ahead (null: PyTorch's default, 2); needs
            ``num_workers > 0``.
        shuffle_buffer: for ``shards``, samples each loader worker mixes before cutting batches
            (held as undecoded bytes; :mod:`selfsup.data.shards`).
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False
    image_size: int | None = None
    train_split: str = "train"
    eval_split: str = "test"
    eval_root: str | None = None
    val_fraction: float = 0.0
    max_pixels: int | None = 89_478_485
    num_workers: int = 0
    skip_bad_images: bool = False
    channels: int | None = None
    decoder: str = "auto"
    folder_crop: str = "full"
    decode_on_device: bool | str = "auto"
    cache: bool = False
    cache_dir: str | None = None
    prefetch_factor: int | None = None
    shuffle_buffer: int = 1000


CUSTOM_RECIPE = "custom"
"""The view recipe made from ``augment.views`` (op lists): :func:`selfsup.augment.recipes_custom.custom`."""


def augment_section(section: dict[str, Any]) -> dict[str, Any]:
    """The ``augment`` section with ``recipe: custom`` filled in when it lists its own ``views``.

    ``augment.recipe`` names a recipe (its other keys are the recipe's options); ``augment.views``
    instead lists the views as op lists (``[{ops: [...], count: n}, ...]``, see
    :mod:`selfsup.augment.recipes_custom`), which only the ``custom`` recipe takes.

    Example:
        >>> augment_section({"views": [{"ops": ["random_resized_crop"]}]})["recipe"]
        'custom'
    """
    if "views" not in section:
        return section
    recipe = section.get("recipe", CUSTOM_RECIPE)
    if recipe != CUSTOM_RECIPE:
        raise ConfigError(
            f"Config keys 'augment.views' and 'augment.recipe' ({recipe!r}) contradict each other: augment.views "
            f"lists the views as op lists and replaces the named recipe. Leave augment.recipe out (or set it to "
            f"{CUSTOM_RECIPE!r}), or drop augment.views to use {recipe!r}."
        )
    return {**section, "recipe": CUSTOM_RECIPE}


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.yaml`` in the run folder.

    Example:
        >>> cfg = selfsup.config.load(overrides=["method.name=byol", "epochs=5"])
        >>> cfg.method, cfg.epochs
        ({'name': 'byol'}, 5)
    """

    method: dict[str, Any] = field(default_factory=lambda: {"name": "simclr"})
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "resnet18", "cifar_stem": True})
    augment: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    epochs: int = 100
    batch_size: int = 256
    # gradient accumulation: each process's batch is split into this many micro-batches, trained one
    # after the other (activation memory of one micro-batch) before one optimizer step
    micro_batches: int = 1
    devices: int = 1
    num_nodes: int = 1  # machines, each running `devices` processes; the global batch is split over all
    # auto / ddp: each process holds the whole model (DDP when there are several); fsdp: the ViT
    # backbones are sharded over the processes (selfsup.engine.sharding)
    strategy: str = "auto"
    accelerator: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the backbone's forward in place (parameter names unchanged)
    sync_batchnorm: bool = False
    seed: int = 0
    name: str | None = None
    output_dir: str = "runs"
    checkpoint_every: int = 10
    checkpoint_every_steps: int = 0
    max_skipped_steps: int = 0
    log_every_n_steps: int = 10
    progress_bar: bool = True
    loggers: list[str] = field(default_factory=list)  # besides metrics.jsonl: csv, tensorboard, wandb, mlflow

    def __post_init__(self) -> None:
        self.augment = augment_section(self.augment)
