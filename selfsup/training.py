"""From a :class:`~selfsup.config.TrainConfig` to a finished run folder.

``train(config)`` builds the data sets, backbone, method, view recipe and engine, fits with
PyTorch Lightning, exports the backbone and evaluates it. The run folder ``<output_dir>/<name>/``
holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/last.ckpt`` and
``checkpoints/epoch_NNNN.ckpt``, ``backbone.safetensors`` and ``summary.json``.
"""
from __future__ import annotations

import json
import logging
import pickle
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
import torch
import yaml

from selfsup import data
from selfsup.augment import EvalTransform
from selfsup.backbones import Backbone, export_backbone
from selfsup.config import TrainConfig, to_dict
from selfsup.config.build import DataFacts, build, build_backbone, build_method, build_views  # noqa: F401 (public here too)
from selfsup.data.cache import default_cache_dir
from selfsup.data.device_decode import DeviceDecodeView, resolve_decode_on_device
from selfsup.engine.checkpoint import EpochCheckpoint
from selfsup.engine.compile import compile_backbone, training_device_type
from selfsup.engine.data_position import DataPosition
from selfsup.engine.loggers import build_loggers
from selfsup.engine.memory_format import use_channels_last
from selfsup.engine.module import SelfSupervisedModule
from selfsup.engine.sharding import unsharded_copy
from selfsup.engine.monitor import EvaluationMonitor
from selfsup.engine.precision import resolve_precision
from selfsup.engine.preemption import PreemptionHandler, requeued_by_slurm
from selfsup.engine.progress import RunProgressBar
from selfsup.engine import sharding
from selfsup.engine.resources import ResourceMonitor
from selfsup.engine.throughput import Throughput, peak_memory_mb
from selfsup.eval.features import extract_features
from selfsup.eval.protocol import knn_eval
from selfsup.errors import ConfigError, DataError, NonFiniteLossError, SelfSupError

log = logging.getLogger("selfsup")
DEFAULT_FOLDER_SIZE = 224  # decode size of an image folder when neither data.image_size nor augment.size is set
RUN_NAME_VARIABLE = "SELFSUP_RUN_NAME"  # tells DDP's extra processes the run folder of rank 0


@dataclass
class RunResult:
    """Where a finished run put its files, and its final held-out metrics."""

    run_dir: Path
    backbone_path: Path
    metrics: dict[str, float]
    wall_time_s: float
    is_main_process: bool = True


def build_datasets(config: TrainConfig) -> tuple[Any, Any | None]:
    """The training split and the held-out split (None when there is none).

    With ``data.val_fraction > 0`` the held-out images are a seeded, stratified part of the training
    split (and are left out of training), so hyper-parameters can be chosen without the test split.
    Folders have no splits: their held-out images come from ``data.eval_root``, another folder.
    With ``data.cache`` each folder is read from its decoded cache (built first when needed).
    """
    options = dict(download=config.data.download, image_size=config.data.image_size or folder_image_size(config),
                   skip_bad_images=config.data.skip_bad_images, channels=config.data.channels,
                   max_pixels=config.data.max_pixels, decoder=config.data.decoder)
    if config.data.name == "shards":
        return _shard_datasets(config, options)
    train_set = _dataset(config, config.data.name, config.data.root, config.data.train_split, options,
                         whole=trains_on_whole_images(config))
    if config.data.val_fraction > 0:  # hold out part of the training split (for tuning)
        return data.split_train_val(train_set, config.data.val_fraction, seed=config.seed)
    if config.data.name == "folder":
        if not config.data.eval_root:
            log.warning("No held-out folder (data.eval_root): the k-NN monitor and probe accuracy are off.")
            return train_set, None
        eval_set = _dataset(config, "folder", config.data.eval_root, "train", options)
        if eval_set.classes != train_set.classes:
            raise ConfigError(
                f"data.eval_root {config.data.eval_root} has classes {eval_set.classes} but data.root "
                f"{config.data.root} has {train_set.classes}; both folders need the same class sub-folders."
            )
        return train_set, eval_set
    if config.data.eval_split.lower() == "none":
        return train_set, None
    return train_set, data.get(config.data.name, root=config.data.root, split=config.data.eval_split, **options)


def _shard_datasets(config: TrainConfig, options: dict[str, Any]) -> tuple[data.ShardStream, Any | None]:
    """The training stream of ``data.root``'s training split, and its evaluation split read into memory."""
    decode = {key: options[key] for key in ("image_size", "channels", "max_pixels", "decoder")}
    if decode["image_size"] is None and data.shards_hold_files(config.data.root, config.data.train_split):
        decode["image_size"] = folder_image_size(replace(config, data=replace(config.data, name="folder")))
    train_set = data.ShardStream(
        config.data.root, split=config.data.train_split, batch_size=per_device_batch(config), seed=config.seed,
        world_size=config.devices * config.num_nodes, num_workers=config.data.num_workers, epochs=config.epochs,
        shuffle_buffer=config.data.shuffle_buffer, **decode)
    if config.data.eval_split.lower() == "none":
        return train_set, None
    return train_set, data.read_shards(config.data.root, split=config.data.eval_split, **decode)


def per_device_batch(config: TrainConfig) -> int:
    """``batch_size`` split over ``devices x num_nodes`` processes; refused when it does not divide."""
    processes = config.devices * config.num_nodes
    if config.batch_size % processes:
        raise ConfigError(f"batch_size={config.batch_size} must be divisible by the number of processes, devices x "
                          f"num_nodes = {config.devices} x {config.num_nodes} = {processes}")
    per_device = config.batch_size // processes
    if per_device % config.micro_batches:
        raise ConfigError(f"micro_batches={config.micro_batches} must divide each process's batch, batch_size / "
                          f"(devices x num_nodes) = {config.batch_size} / {processes} = {per_device}")
    return per_device


def folder_image_size(config: TrainConfig) -> int | None:
    """The decode size of a folder without ``data.image_size``: the view size ``augment.size``, else
    224 (said in the log); None for data sets with a size of their own."""
    if config.data.name != "folder" or config.data.image_size:
        return None
    size = int(config.augment.get("size") or DEFAULT_FOLDER_SIZE)
    log.info("data.image_size is not set: folder images are decoded at %d px (%s)", size,
             "augment.size" if config.augment.get("size") else f"the default, {DEFAULT_FOLDER_SIZE}")
    return size


def _dataset(config: TrainConfig, name: str, root: str | None, split: str, options: dict[str, Any],
             whole: bool = False) -> Any:
    """``data.get(...)``; with ``data.cache`` the folder is only scanned, then read through its decoded cache
    (and, with ``whole``, also through its whole-image cache, which the training loader reads)."""
    if not config.data.cache:
        return data.get(name, root=root, split=split, **options)
    folder = data.get(name, root=root, split=split, **{**options, "skip_bad_images": False})
    cache_dir = config.data.cache_dir or default_cache_dir(folder.root, config.output_dir)
    cached = data.cache_folder(folder, cache_dir, skip_bad_images=config.data.skip_bad_images,
                               num_workers=config.data.num_workers)
    if whole:  # the folder has its bad images left out by now, so both caches hold the same images
        cached.whole = data.cache_folder(folder, cache_dir, skip_bad_images=config.data.skip_bad_images,
                                         num_workers=config.data.num_workers, fit="full")
    return cached


def trains_on_whole_images(config: TrainConfig) -> bool:
    """Whether training crops come from whole folder images (``data.folder_crop: full``)."""
    return config.data.name == "folder" and config.data.folder_crop == "full"


def build_loader(config: TrainConfig, train_set: Any, sampler: Any, batch_size: int) -> torch.utils.data.DataLoader:
    """The training loader: persistent workers, ``data.prefetch_factor``, pinned memory when training on
    CUDA (Lightning then copies batches with ``non_blocking=True``), and with ``data.decode_on_device``
    plain JPEGs shipped as bytes for the module to decode (:mod:`selfsup.data.device_decode`)."""
    cuda = training_device_type(config.accelerator) == "cuda"
    workers = config.data.num_workers
    if isinstance(train_set, data.ShardStream):  # batches cut by the stream, by its own workers
        return train_set.loader(pin_memory=cuda, persistent_workers=workers > 0,
                                prefetch_factor=config.data.prefetch_factor if workers > 0 else None,
                                generator=torch.Generator().manual_seed(config.seed))
    loader_set, collate = train_set, None
    if trains_on_whole_images(config):  # crops from the whole image; evaluation reads train_set's centred squares
        loader_set = data.WholeImageView(train_set)
        collate = loader_set.collate()
    elif resolve_decode_on_device(config.data.decode_on_device, cuda=cuda, folder=config.data.name == "folder",
                                cache=config.data.cache):
        loader_set = DeviceDecodeView(train_set)
        collate = loader_set.collate()
    return torch.utils.data.DataLoader(
        loader_set, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
        prefetch_factor=config.data.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(config.seed),  # worker seeds without touching the global RNG
    )


def eval_size(config: TrainConfig, image_size: int) -> int:
    """Size the backbone sees at evaluation: the recipe's view size, else the data's."""
    return int(config.augment.get("size", image_size))


def run_name(config: TrainConfig) -> str:
    """``--name``, else ``<method>-<data>-<time>``. Processes on several machines must agree on it
    without talking: there ``--name`` is needed, or SLURM's job id names the run."""
    if config.name:
        return config.name
    if config.num_nodes > 1:
        if os.environ.get("SLURM_JOB_ID"):
            return f"{config.method['name']}-{config.data.name}-slurm{os.environ['SLURM_JOB_ID']}"
        raise ConfigError(f"num_nodes={config.num_nodes}: give the run a --name, so the processes on every machine "
                          "write into the same run folder (each would otherwise name it by its own clock).")
    return f"{config.method['name']}-{config.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def training_strategy(config: TrainConfig, method: Any, processes: int) -> Any:
    """Lightning's strategy for ``config.strategy``: one process as it is; ``auto`` / ``ddp``: DDP;
    ``fsdp``: ``ModelParallelStrategy`` (FSDP2 over all processes, whole checkpoints), the method's
    Vision Transformers sharded by :meth:`SelfSupervisedModule.configure_model`."""
    if config.strategy == "fsdp":
        if processes < 2:
            raise ConfigError("strategy=fsdp shards the backbone over the processes; with devices x num_nodes = 1 "
                              "there is nothing to shard over. Use devices >= 2, or strategy=auto.")
        if not sharding.shardable_backbones(method):
            raise ConfigError(f"strategy=fsdp shards Vision Transformer backbones; backbone "
                              f"{config.backbone['name']!r} is not one. Use strategy=ddp (or auto).")
        return sharding.ShardedStrategy(processes)
    if processes == 1:
        return "auto"
    # buffers (queues, memory banks, centres) are kept equal by the methods' own collectives;
    # DDP's default broadcast of every buffer at every step would only copy them again. Some
    # parameters are legitimately unused by a method (a ViT's mask token or registers).
    return DDPStrategy(broadcast_buffers=False, find_unused_parameters=True)


def run_summary(config: TrainConfig, train_set: Any, method: Any, steps_per_epoch: int, precision: str,
                device: Any, run_dir: Path) -> str:
    """What a run is about to do, in a few lines: method and data, parameters, steps, device, precision."""
    def millions(module: torch.nn.Module) -> str:
        return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"

    heads = sum(p.numel() for n, p in method.named_parameters() if not n.startswith("backbone."))
    size = train_set.image_size[0] if train_set.image_size else "?"
    nodes = f" on each of {config.num_nodes} nodes" if config.num_nodes > 1 else ""
    if config.data.name == "folder":  # what the crops see (data.folder_crop)
        fit = ("; crops from whole images, longer side " if trains_on_whole_images(config)
               else "; crops from the centred square, shorter side ")
        size = f"{size} px{fit}{size}" if isinstance(size, int) else size
    return "\n".join([
        f"Training {config.method['name']} on {config.data.name} ({len(train_set):,} images of {size} px, "
        f"{train_set.channels} channel{'s' if train_set.channels > 1 else ''})",
        f"  backbone {config.backbone['name']}: {millions(method.backbone)} parameters; "
        f"the method's heads {heads / 1e6:.2f} M",
        f"  {config.epochs} epoch{'s' if config.epochs > 1 else ''} x {steps_per_epoch:,} steps of {config.batch_size} "
        f"images on {config.devices} x {device}{nodes} in {precision}",
        f"  run folder {run_dir}",
    ])


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a run folder holds (``last.ckpt`` and ``epoch_NNNN.ckpt``), unread."""
    folder = run_dir / "checkpoints"
    return [*folder.glob("last.ckpt"), *folder.glob("epoch_*.ckpt")]


def resumable_run_name(config: TrainConfig) -> str:
    """For ``--resume`` without ``--name``: the run in ``output_dir`` trained with this very config
    (its ``config.yaml`` equal but for the name) that holds a checkpoint, the latest when several do.
    So re-running the command that was stopped, with ``--resume`` added, continues its run although
    the default name carries the time the run started.
    """
    wanted = {**to_dict(config), "name": None}
    found = []
    for saved in Path(config.output_dir).glob("*/config.yaml"):
        checkpoints = run_checkpoints(saved.parent)
        if not checkpoints:
            continue
        try:
            same = {**yaml.safe_load(saved.read_text()), "name": None} == wanted
        except (OSError, yaml.YAMLError, TypeError):
            continue
        if same:
            found.append((max(c.stat().st_mtime for c in checkpoints), saved.parent.name))
    if not found:
        runs = sorted(p.name for p in Path(config.output_dir).glob("*") if p.is_dir())
        raise SelfSupError(
            f"--resume without --name: no run in {config.output_dir} was trained with this config and holds a "
            f"checkpoint. Name the run to resume with --name (runs there: {', '.join(runs) or 'none'})."
        )
    name = max(found)[1]
    log.warning("--resume: continuing run %s (the latest in %s trained with this config).", name, config.output_dir)
    return name


def resumable_run(config: TrainConfig) -> str | None:
    """The run a repeated command continues: ``--name`` when that run holds a checkpoint, else (no
    name) the run :func:`resumable_run_name` finds; None when there is none."""
    if config.name:
        return config.name if run_checkpoints(Path(config.output_dir) / config.name) else None
    try:
        return resumable_run_name(config)
    except SelfSupError:
        return None


def prepare_run_dir(config: TrainConfig, resume: bool) -> Path:
    """Create (or, when resuming, find) the run folder; refuse to overwrite an existing run."""
    run_dir = Path(config.output_dir) / run_name(config)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not run_checkpoints(run_dir):
            raise SelfSupError(
                f"--resume: no checkpoint at {last}. Name the run to resume with --name "
                f"(runs in {config.output_dir}: {', '.join(sorted(p.name for p in Path(config.output_dir).glob('*'))) or 'none'})."
            )
        return run_dir
    if (run_dir / "checkpoints").exists() or (run_dir / "metrics.jsonl").exists():
        raise SelfSupError(
            f"Run folder {run_dir} already holds a run. Continue it with --resume, or choose another --name; "
            "nothing was overwritten."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / ".write_test"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SelfSupError(f"Run folder {run_dir} is not writable: {err}") from err
    return run_dir


def intact_checkpoint(checkpoint_dir: Path) -> Path:
    """The newest checkpoint that loads (``last.ckpt``, then ``epoch_NNNN.ckpt`` newest first).

    Unreadable ones (truncated, corrupt, or a pickle that would run code: nothing in them is
    executed) are passed over with a warning that names them.
    """
    candidates = [checkpoint_dir / "last.ckpt"] + sorted(
        checkpoint_dir.glob("epoch_*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    broken = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            broken.append(f"{path} (not loadable as plain tensors and data: corrupt, or a pickle that would run code)")
            continue
        except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
            broken.append(f"{path} ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
            continue
        if broken:
            log.warning("Unreadable checkpoint(s) passed over: %s. Resuming from %s.", "; ".join(broken), path)
        return path
    raise SelfSupError(f"--resume: no intact checkpoint in {checkpoint_dir}: {'; '.join(broken) or 'none found'}.")


def test_once(config: TrainConfig, backbone: Backbone, transform: EvalTransform, batch_size: int,
              module: SelfSupervisedModule, full_train: Any) -> dict[str, float]:
    """k-NN accuracy on the test split, once, after a run tuned on a validation part of the training split.

    The memory is ``full_train``, the whole labelled training split (validation images included),
    as in the usual k-NN protocol; features in fp32; the result is logged as ``test/knn_top1`` /
    ``test/knn_top5``.
    """
    options = dict(download=False, image_size=config.data.image_size, channels=config.data.channels,
                   max_pixels=config.data.max_pixels, skip_bad_images=config.data.skip_bad_images,
                   decoder=config.data.decoder)
    if config.data.name == "folder":  # folders have no splits: the test images are data.eval_root
        if not config.data.eval_root:
            log.warning("monitor.test_at_end: no test folder (data.eval_root), so no test measurement.")
            return {}
        test_set = _dataset(config, "folder", config.data.eval_root, "train", options)
    else:
        test_set = _dataset(config, config.data.name, config.data.root, config.data.eval_split, options)
    # in fp32 whatever the run trained in, so the figure is the one `selfsup eval knn` gives for the
    # export (bf16 features moved digits' k-NN by 0.7 points); the periodic monitor stays in the
    # training precision, for speed
    scores = knn_eval(backbone, full_train, test_set, transform, k=config.monitor.knn_k,
                      temperature=config.monitor.knn_temperature, batch_size=batch_size, device=module.device,
                      autocast_dtype=None, channels_last=module.channels_last)
    log.warning("test split %r, once at the end: k-NN top-1 %.2f%%", config.data.eval_split, scores["top1"])
    return {f"test/knn_{name}": value for name, value in scores.items()}


def train(config: TrainConfig, *, resume: bool = False) -> RunResult:
    """Pretrain as ``config`` says; returns the run folder, exported backbone and final metrics.

    Example:
        >>> import tempfile
        >>> config = selfsup.config.load("digits/simclr", flags={"epochs": 1, "output_dir": tempfile.mkdtemp()},
        ...                              overrides=["backbone.width=4", "progress_bar=false"])  # a short run
        >>> result = train(config)
        >>> result.backbone_path.relative_to(result.run_dir), 0 <= result.metrics["knn/top1"] <= 100
        (PosixPath('backbone.safetensors'), True)
    """
    started = time.time()
    for noisy in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Lightning's DDP launcher re-runs the command in each extra process, with our environment
    main_process = rank_zero_only.rank == 0
    if not resume and requeued_by_slurm():  # the same command, run again by SLURM after a requeue
        found = resumable_run(config)
        if found is not None:
            resume, config = True, replace(config, name=found)
            if main_process:
                log.warning("SLURM requeued this job (SLURM_RESTART_COUNT=%s): resuming run %s from its last "
                            "checkpoint.", os.environ["SLURM_RESTART_COUNT"], found)
    if main_process and resume and not config.name:
        config = replace(config, name=resumable_run_name(config))
    # Lightning's launcher tells the processes it starts the name; processes started by a cluster
    # (torchrun, srun) on other machines derive it as rank 0 does
    config = replace(config, name=run_name(config) if main_process else os.environ.get(RUN_NAME_VARIABLE) or run_name(config))
    os.environ[RUN_NAME_VARIABLE] = config.name
    if main_process:
        run_dir = prepare_run_dir(config, resume)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    else:
        run_dir = Path(config.output_dir) / config.name
    train_set, eval_set = build_datasets(config)
    global_batch = config.batch_size
    processes = config.devices * config.num_nodes
    per_device = per_device_batch(config)
    streamed = isinstance(train_set, data.ShardStream)
    if global_batch > len(train_set):
        raise DataError(
            f"batch_size={global_batch} is larger than the training set ({len(train_set)} images in "
            f"{config.data.name!r} split {config.data.train_split!r}); with the last incomplete batch dropped no "
            f"step would run. Use --batch-size {max(1, len(train_set) // 2)} or less."
        )
    image_size = train_set.image_size[0]
    transform = EvalTransform(eval_size(config, image_size), train_set.mean, train_set.std)
    L.seed_everything(config.seed, workers=True, verbose=False)  # the backbone's init depends only on the seed
    parts = build(config, DataFacts.of(train_set))  # the build validation runs too (selfsup.config.build)
    method, views = parts.method, parts.views
    if config.compile:  # in place: parameter names, checkpoints and the export stay as without it
        compile_backbone(method.backbone, training_device_type(config.accelerator))
    steps_per_epoch = train_set.steps if streamed else len(train_set) // global_batch
    if config.optimizer.warmup_epochs > config.epochs:
        log.warning("optimizer.warmup_epochs=%s is longer than the run (%d epochs): the learning rate warms up "
                    "over the whole run and never decays.", config.optimizer.warmup_epochs, config.epochs)
    num_classes = train_set.num_classes if config.monitor.probe else 0
    channels_last = use_channels_last(config.channels_last, method, training_device_type(config.accelerator))
    module = SelfSupervisedModule(
        method, views, config.optimizer, batch_size=global_batch, steps_per_epoch=steps_per_epoch,
        epochs=config.epochs, num_classes=num_classes, probe_lr=config.monitor.probe_lr,
        channels_last=channels_last, max_skipped_steps=config.max_skipped_steps, micro_batches=config.micro_batches,
        train_features=lambda: extract_features(
            method.backbone, train_set.in_order() if streamed else train_set, transform, batch_size=per_device, device=module.device,
            autocast_dtype=module.eval_autocast_dtype, channels_last=channels_last)[0],
    )
    callbacks: list[L.Callback] = []
    monitor = None
    if eval_set is not None and train_set.num_classes > 0:
        # a stream has no random access: the monitor's k-NN memory is its first shards, read into memory
        # (shards are written in a seeded random order, so they are a random sample of the data)
        memory = (data.read_shards(train_set.root, limit=config.monitor.knn_max_train, image_size=train_set.image_size[0],
                                   channels=train_set.channels, max_pixels=config.data.max_pixels,
                                   decoder=config.data.decoder) if streamed else train_set)
        monitor = EvaluationMonitor(config.monitor, memory, eval_set, transform, batch_size=per_device, seed=config.seed)
        callbacks.append(monitor)
    sampler = train_set if streamed else data.EpochShuffleSampler(len(train_set), config.seed)
    callbacks.append(DataPosition(sampler, per_device))  # before the checkpoint: it saves the position
    checkpoint = EpochCheckpoint(run_dir / "checkpoints", every=config.checkpoint_every,
                                 every_n_steps=config.checkpoint_every_steps)
    callbacks.append(checkpoint)
    callbacks.append(PreemptionHandler(checkpoint))  # after the checkpoint: the step is complete
    if config.monitor.resources_every > 0:
        callbacks.append(ResourceMonitor(config.monitor.resources_every))
    throughput = Throughput(views.num_views, every_n_steps=max(1, min(50, steps_per_epoch)))
    callbacks.append(throughput)
    if config.progress_bar:
        callbacks.append(RunProgressBar())
    precision = resolve_precision(config.precision, config.accelerator)
    if config.sync_batchnorm and processes > 1 and not (torch.cuda.is_available() and config.accelerator != "cpu"):
        raise ConfigError("sync_batchnorm=true needs several GPUs (PyTorch's SyncBatchNorm runs on CUDA only).")
    trainer = L.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=training_strategy(config, method, processes),
        precision=precision,
        sync_batchnorm=config.sync_batchnorm and processes > 1, logger=build_loggers(config.loggers, run_dir, to_dict(config)),
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=max(1, min(config.log_every_n_steps, steps_per_epoch)), num_sanity_val_steps=0,
        default_root_dir=str(run_dir), use_distributed_sampler=True,
    )
    loader = build_loader(config, train_set, sampler, per_device)
    log.info(run_summary(config, train_set, method, steps_per_epoch, precision, trainer.strategy.root_device, run_dir))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # inside Lightning, not ours
        warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")  # rank 0 only
        # a frozen teacher (distillation) evaluates on purpose: Method.train keeps it in eval mode
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
        if processes == 1 or streamed:  # DataPosition and EpochShuffleSampler / ShardStream resume the epoch's order
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
        # ShardStream deals its shards to the workers itself, so its length is exact
        warnings.filterwarnings("ignore", message=".*has `__len__` defined. In combination with multi-process.*")
        try:
            # weights_only: a checkpoint is data; loading must not run code from it
            ckpt_path = intact_checkpoint(checkpoint.dirpath) if resume else None
            trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
        except pickle.UnpicklingError as err:
            raise SelfSupError(
                f"Cannot resume from {checkpoint.last_path}: it holds objects other than tensors and plain "
                f"data, which selfsup does not load (a pickle could run code). {str(err).splitlines()[0]}"
            ) from None
        except NonFiniteLossError as err:
            kept = checkpoint.last_path if checkpoint.last_path.exists() else None
            raise NonFiniteLossError(
                f"{err} Last good checkpoint: {kept or 'none yet (the failure came in the first epoch)'}."
            ) from None

    backbone_path = run_dir / "backbone.safetensors"
    if module.sharded:  # every process gathers the shards; rank 0 tests and exports the whole backbone
        method.backbone = unsharded_copy(method.backbone)
    metrics = dict(monitor.last) if monitor else {}
    if trainer.is_global_zero and config.monitor.test_at_end and config.data.val_fraction > 0:
        # the split the run held its validation part out of (already read, and cached if asked)
        test_metrics = test_once(config, method.backbone, transform, per_device, module, train_set.dataset)
        # the last training step's index, the step the other lines count in (Lightning's global_step
        # counts optimizer steps: two a step when the online probe trains)
        last_step = config.epochs * steps_per_epoch - 1
        for logger in trainer.loggers:
            logger.log_metrics({**test_metrics, "epoch": float(config.epochs - 1)}, step=last_step)
            logger.save()
        metrics.update(test_metrics)
    result = RunResult(run_dir, backbone_path, metrics, time.time() - started, trainer.is_global_zero)
    if not trainer.is_global_zero:
        return result
    metadata = dict(image_size=eval_size(config, image_size), mean=list(train_set.mean), std=list(train_set.std),
                    channels=train_set.channels, method=config.method["name"], data=config.data.name)
    export_backbone(method.backbone, backbone_path, **metadata)
    summary = {"metrics": metrics, "wall_time_s": round(result.wall_time_s, 1), "epochs": config.epochs,
               "steps": steps_per_epoch * config.epochs, "precision": precision,
               "train_images_per_s": round(throughput.images_per_s, 1),
               "train_views_per_s": round(throughput.images_per_s * views.num_views, 1),
               "peak_memory_mb": {k: round(v, 1) for k, v in peak_memory_mb().items()},
               "skipped_images": [{"path": p, "reason": r} for p, r in getattr(train_set, "skipped", [])],
               "backbone": str(backbone_path)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return result
