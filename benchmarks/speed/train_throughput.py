"""SimCLR training throughput (images / s, forward + backward + optimizer step), same model, same
batch, same precision, two (on a GPU three) data paths side by side in one run:

  selfsup      uint8 ArrayDataset -> DataLoader -> MultiView on the training device (batched,
               per-sample random) -> SimCLR step
  torchvision  the hand-written loop of lightly's examples: DataLoader(num_workers=N) over PIL images
               with per-image torchvision.transforms (v1) RandomResizedCrop, RandomHorizontalFlip,
               RandomApply(ColorJitter), RandomGrayscale, ToTensor, Normalize, two views per image
               -> the same SimCLR step
  pre-augmented (GPU only) one batch of views already in GPU memory, stepped on repeatedly: the
               compute-only upper bound

The recipe is SimCLR's CIFAR one (crop 0.08-1, flip, jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale
0.2, no blur). Precision: bf16 autocast + channels-last on a GPU and on CPUs with bf16 units, fp32
otherwise. Data: 50,000 random 32 px RGB images by default, or Fashion-MNIST / CIFAR-10 read with
selfsup.data from --root. Each path runs warm-up steps (filling its loader's prefetch queue) before
its timed steps; --epoch times one whole epoch per path instead, loader start included.
With --device cuda the table also gives the GPU's time inside the step (CUDA events around the
augmentation + step) as a share of wall time. --clock cpu (CPU only) runs one epoch per path and
counts CPU time instead of elapsed time: the main process's plus its DataLoader workers' (reaped when
the epoch's loader shuts down), i.e. the CPU cost of an image, which stays steady while other jobs
share the machine; use it with --threads 1 (spinning OpenMP threads would count as work).

    .venv/bin/python benchmarks/speed/train_throughput.py                       # CPU, resnet_small
    .venv/bin/python benchmarks/speed/train_throughput.py --device cuda --backbone resnet18 --epoch --workers 8
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import itertools
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_has_bf16, fmt_rate, fmt_ratio, machine_line, print_table, resolve_device, synchronize  # noqa: E402

import selfsup.augment as augment  # noqa: E402
import selfsup.backbones as backbones  # noqa: E402
import selfsup.data as data  # noqa: E402
import selfsup.methods as methods  # noqa: E402
from selfsup.data import ArrayDataset  # noqa: E402
from selfsup.methods import ViewBatch  # noqa: E402


def load_images(args: argparse.Namespace) -> tuple[torch.Tensor, tuple[float, ...], tuple[float, ...]]:
    """uint8 (N, C, H, W) training images with their per-channel mean and std."""
    if args.dataset == "synthetic":
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8, generator=g)
        return images, (0.5,) * 3, (0.25,) * 3
    if args.root is None:
        raise SystemExit(f"--dataset {args.dataset} needs --root (the folder holding its files)")
    dataset = data.get(args.dataset, root=args.root, split="train")
    images = torch.stack([dataset[i][0] for i in range(min(len(dataset), args.images))])
    return images, tuple(dataset.mean), tuple(dataset.std)


class PILDataset(torch.utils.data.Dataset):
    """The same uint8 images as PIL images, each turned into two views by a torchvision transform."""

    def __init__(self, images: torch.Tensor, transform: Callable) -> None:
        self.arrays = images.permute(0, 2, 3, 1).numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        from PIL import Image

        array = self.arrays[i]
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return self.transform(image), self.transform(image), -1, i


def torchvision_transform(spec: augment.ViewSpec) -> Callable:
    """torchvision.transforms v1 with the parameters of selfsup's SimCLR ViewSpec."""
    import torchvision.transforms as T

    b, c, s, h = spec.jitter
    return T.Compose([
        T.RandomResizedCrop(spec.size, scale=spec.scale, ratio=spec.ratio),
        T.RandomHorizontalFlip(spec.hflip_p),
        T.RandomApply([T.ColorJitter(b, c, s, h)], p=spec.jitter_p),
        T.RandomGrayscale(spec.gray_p),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])


class DataPath:
    """One data path: an endless batch iterator and a step that consumes one batch."""

    def __init__(self, name: str, make_loader: Callable[[], torch.utils.data.DataLoader],
                 step: Callable[[object], None], batches_per_epoch: int, workers: int) -> None:
        self.name, self.make_loader, self.step = name, make_loader, step
        self.batches_per_epoch, self.workers = batches_per_epoch, workers

    def run_steps(self, warmup: int, steps: int, device: torch.device, gpu_time: list) -> float:
        """Seconds for ``steps`` steps after ``warmup`` untimed ones (a fresh loader each call)."""
        batches = self._endless()
        for batch in itertools.islice(batches, warmup):
            self.step(batch)
        synchronize(device)
        gpu_time.clear()
        start = time.perf_counter()
        for batch in itertools.islice(batches, steps):
            self.step(batch)
        synchronize(device)
        elapsed = time.perf_counter() - start
        del batches
        return elapsed

    def run_epoch(self, device: torch.device, gpu_time: list, clock: str = "wall") -> tuple[float, int]:
        """Seconds for one whole epoch, loader start included, and its number of steps. With
        ``clock="cpu"``: CPU seconds of this process and of the loader's workers (which exit, and are
        reaped, when the epoch ends)."""
        synchronize(device)
        gpu_time.clear()
        start = _cpu_seconds() if clock == "cpu" else time.perf_counter()
        n = 0
        loader = self.make_loader()
        for batch in loader:
            self.step(batch)
            n += 1
        synchronize(device)
        if clock == "cpu":
            del loader
            gc.collect()
            return _cpu_seconds() - start, n
        return time.perf_counter() - start, n

    def _endless(self) -> Iterator[object]:
        while True:
            yield from self.make_loader()


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its reaped children (DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet_small", help="resnet_small (width 32) or resnet18 (CIFAR stem)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32, help="image side of the synthetic data")
    parser.add_argument("--images", type=int, default=50_000, help="number of training images")
    parser.add_argument("--dataset", default="synthetic", choices=["synthetic", "cifar10", "fashion_mnist"])
    parser.add_argument("--root", default=None, help="data folder for --dataset cifar10 / fashion_mnist")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the torchvision path (default: all cores on the CPU, 8 with CUDA)")
    parser.add_argument("--selfsup-workers", type=int, default=None,
                        help="DataLoader workers of the selfsup path, which only gathers uint8 images "
                             "(default: 0 on the CPU, 4 with CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process (default: all)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 x workers + 2)")
    parser.add_argument("--epoch", action="store_true", help="time one full epoch per path instead of --steps")
    parser.add_argument("--paths", default="selfsup,torchvision,preaugmented")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast / channels-last")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="cpu: one epoch per path, CPU seconds of the process and its workers (CPU only)")
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        raise SystemExit("--clock cpu is for the CPU; on a GPU the elapsed time is the measure")
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = args.workers if args.workers is not None else (8 if cuda else os.cpu_count() or 1)
    selfsup_workers = args.selfsup_workers if args.selfsup_workers is not None else (4 if cuda else 0)
    bf16 = not args.fp32 and (cuda or cpu_has_bf16())
    wanted = set(args.paths.split(","))
    if not cuda:
        wanted.discard("preaugmented")

    images, mean, std = load_images(args)
    channels, size = images.shape[1], images.shape[-1]
    views = augment.simclr(size=size, strength=0.5, blur_p=0.0, mean=mean, std=std, seed=0)
    backbone_options = {"cifar_stem": True} if args.backbone.startswith("resnet") and args.backbone[6:].isdigit() else {}
    torch.manual_seed(0)
    backbone = backbones.get(args.backbone, in_channels=channels, **backbone_options)
    method = methods.get("simclr", backbone=backbone, temperature=0.5).to(device)
    memory = torch.channels_last if bf16 else torch.contiguous_format
    method = method.to(memory_format=memory)
    initial_state = copy.deepcopy(method.state_dict())
    optimizer = torch.optim.SGD(method.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    gpu_time: list = []  # (start, end) CUDA event pairs of the timed steps

    def train_step(view_list: list[torch.Tensor], labels: torch.Tensor, indices: torch.Tensor) -> None:
        """Forward + backward + SGD step on already-made views (on ``device``)."""
        inputs = [v.contiguous(memory_format=memory) for v in view_list]
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            out = method.training_step(ViewBatch(inputs, labels, indices))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    def gpu_timed(fn: Callable[[], None]) -> None:
        """Run ``fn``; on CUDA bracket its GPU work with events (read after the timed steps)."""
        if not cuda:
            fn()
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        gpu_time.append((start, end))

    labels = torch.full((len(images),), -1, dtype=torch.long)
    per_epoch = len(images) // args.batch
    paths: list[DataPath] = []
    if "selfsup" in wanted:
        dataset = ArrayDataset(images, labels, name="benchmark", classes=[], mean=mean, std=std)

        def selfsup_loader() -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(
                dataset, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=selfsup_workers,
                pin_memory=cuda, prefetch_factor=2 if selfsup_workers else None)

        def selfsup_step(batch) -> None:
            x, y, i = (t.to(device, non_blocking=True) for t in batch)
            gpu_timed(lambda: train_step(views(x), y, i))

        paths.append(DataPath("selfsup", selfsup_loader, selfsup_step, per_epoch, selfsup_workers))
    if "torchvision" in wanted:
        pil_set = PILDataset(images, torchvision_transform(views.specs[0]))

        def torchvision_loader() -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(
                pil_set, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=workers,
                pin_memory=cuda, prefetch_factor=2 if workers else None)

        def torchvision_step(batch) -> None:
            v0, v1, y, i = (t.to(device, non_blocking=True) for t in batch)
            gpu_timed(lambda: train_step([v0, v1], y, i))

        paths.append(DataPath("torchvision", torchvision_loader, torchvision_step, per_epoch, workers))
    if "preaugmented" in wanted:
        x = images[: args.batch].to(device)
        fixed_views = [v.contiguous(memory_format=memory) for v in views(x)]
        y, i = labels[: args.batch].to(device), torch.arange(args.batch, device=device)

        def fixed_loader():
            return itertools.repeat(None, per_epoch)

        def preaugmented_step(_) -> None:
            gpu_timed(lambda: train_step(fixed_views, y, i))

        paths.append(DataPath("pre-augmented", fixed_loader, preaugmented_step, per_epoch, 0))

    precision = "bf16 autocast + channels-last" if bf16 else "fp32"
    print(f"SimCLR training throughput: {args.backbone}, batch {args.batch}, {len(images):,} images "
          f"{channels}x{size}x{size} ({args.dataset}), {precision}, torchvision workers {workers}, selfsup "
          f"workers {selfsup_workers}, {torch.get_num_threads()} torch threads; {machine_line(device)}")
    rows, rates = [], {}
    for path in paths:
        method.load_state_dict(initial_state)
        if args.epoch or args.clock == "cpu":
            seconds, steps = path.run_epoch(device, gpu_time, args.clock)
        else:
            warmup = args.warmup if args.warmup is not None else 2 * path.workers + 2
            steps = args.steps
            seconds = path.run_steps(warmup, steps, device, gpu_time)
        rates[path.name] = steps * args.batch / seconds
        busy = f"{100 * sum(a.elapsed_time(b) for a, b in gpu_time) / 1000 / seconds:.0f}%" if cuda else "-"
        rows.append([path.name, steps, f"{seconds:.1f}", fmt_rate(rates[path.name]), busy])
        print(f"  done: {path.name}", file=sys.stderr, flush=True)
    base = rates.get("torchvision")
    for row in rows:
        row.append(fmt_ratio(rates[row[0]], base))
    unit = "CPU seconds" if args.clock == "cpu" else "seconds"
    speed = "images / CPU-second" if args.clock == "cpu" else "images / s"
    print_table(["data path", "steps", unit, speed, "GPU busy in step", "vs torchvision"], rows)


if __name__ == "__main__":
    main()
