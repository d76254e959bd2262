"""Augmentation throughput (views per second): selfsup's batched views vs lightly's per-image
transforms vs kornia's batched augmentations, for the same recipe, side by side in one run.

Recipes (the same parameters in all three libraries):
  simclr     two SimCLR views (crop 0.08-1, flip, jitter 0.8/0.8/0.8/0.2 p 0.8, gray 0.2, blur 0.5)
  byol       BYOL's asymmetric pair (jitter 0.4/0.4/0.2/0.1, blur 1.0 / 0.1, solarize 0 / 0.2)
  multicrop  SwAV's 2 + 6 multi-crop (global size, scale 0.14-1; local 96/224 of it, scale 0.05-0.14)

  selfsup  uint8 batch (B, 3, px, px) in -> float views out: MultiView from selfsup.augment.RECIPES
           (on a GPU also "selfsup gathered": each random op gathering its chosen samples, as on the
           CPU, instead of running on the whole batch and masking, which needs no host sync)
  lightly  one PIL image in -> its views as tensors out, per image (SimCLRTransform, BYOLTransform,
           SwaVTransform); with N > 1 threads the images go through a DataLoader with N workers
           (default collate), as lightly's examples feed training
  kornia   float batch in [0, 1] in -> views out: kornia.augmentation RandomResizedCrop,
           RandomHorizontalFlip, ColorJitter, RandomGrayscale, RandomGaussianBlur, RandomSolarize,
           Normalize built from selfsup's ViewSpec of each view

Batch: 256 images at 32 px, 64 at larger sizes. "threads" is torch's intra-op thread count for
selfsup and kornia and the DataLoader worker count for lightly (1 = in the main process). Run with
the benchmarks' own environment (bash benchmarks/speed/setup.sh):

    benchmarks/speed/.venv/bin/python benchmarks/speed/augment_throughput.py
    benchmarks/speed/.venv/bin/python benchmarks/speed/augment_throughput.py --device cuda
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_rates, fmt_rate, fmt_ratio, machine_line, parse_threads, print_table, resolve_device  # noqa: E402

import selfsup.augment as augment  # noqa: E402
import selfsup.augment.op as augment_op  # noqa: E402
from selfsup.augment import ViewSpec  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RECIPES = ("simclr", "byol", "multicrop")


def selfsup_views(recipe: str, size: int) -> augment.MultiView:
    """The selfsup recipe at ``size`` px, normalised like lightly's defaults."""
    if recipe == "multicrop":
        return augment.get("multicrop", size=size, mean=MEAN, std=STD)
    return augment.get(recipe, size=size, mean=MEAN, std=STD)


def lightly_transform(recipe: str, size: int) -> Callable:
    """lightly's transform for the recipe, with the parameters of selfsup's."""
    import lightly.transforms as T

    if recipe == "simclr":
        return T.SimCLRTransform(input_size=size)
    if recipe == "byol":
        return T.BYOLTransform(
            view_1_transform=T.BYOLView1Transform(input_size=size),
            view_2_transform=T.BYOLView2Transform(input_size=size),
        )
    local = augment.recipes_multicrop.local_size_for(size, None)
    return T.SwaVTransform(crop_sizes=(size, local))


def kornia_pipelines(views: augment.MultiView) -> list[torch.nn.Module]:
    """One kornia pipeline per view, built from selfsup's ViewSpec of that view."""
    import kornia.augmentation as K

    def build(spec: ViewSpec) -> torch.nn.Module:
        b, c, s, h = spec.jitter
        ops: list[torch.nn.Module] = [
            K.RandomResizedCrop((spec.size, spec.size), scale=spec.scale, ratio=spec.ratio),
            K.RandomHorizontalFlip(p=spec.hflip_p),
            K.ColorJitter(b, c, s, h, p=spec.jitter_p),
            K.RandomGrayscale(p=spec.gray_p),
        ]
        if spec.blur_p > 0:
            k = spec.blur_kernel_size
            ops.append(K.RandomGaussianBlur((k, k), sigma=spec.blur_sigma, p=spec.blur_p))
        if spec.solarize_p > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=spec.solarize_p))
        ops.append(K.Normalize(mean=torch.tensor(spec.mean), std=torch.tensor(spec.std)))
        return torch.nn.Sequential(*ops)

    return [build(spec) for spec, n in zip(views.specs, views.counts) for _ in range(n)]


class _PILImages(torch.utils.data.Dataset):
    def __init__(self, images: list, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i])


def measure(recipe: str, size: int, threads: int, device: torch.device, repeats: int,
            libs: set[str], clock: str = "wall") -> dict[str, float]:
    """Views per second of each library for one recipe, size and thread count."""
    from PIL import Image

    torch.set_num_threads(threads)
    batch = 256 if size <= 64 else 64
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    uint8 = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device)
    floats = uint8.float() / 255
    views = selfsup_views(recipe, size)
    candidates: dict[str, Callable[[], int]] = {}
    loader = None

    if "selfsup" in libs:
        generator = torch.Generator().manual_seed(0)  # a CPU generator, as in training (ops draw on the device)

        def run_selfsup() -> int:
            return sum(v.shape[0] for v in views(uint8, generator))

        candidates["selfsup"] = run_selfsup
        if device.type != "cpu":
            def run_selfsup_gathered() -> int:  # the CPU's way: chosen samples gathered, a host sync per op
                saved = augment_op.GATHER_DEVICES
                augment_op.GATHER_DEVICES = (*saved, device.type)
                try:
                    return run_selfsup()
                finally:
                    augment_op.GATHER_DEVICES = saved

            candidates["selfsup gathered"] = run_selfsup_gathered
    if "lightly" in libs:
        transform = lightly_transform(recipe, size)
        pil = [Image.fromarray(a) for a in array]
        if threads == 1:
            def run_lightly() -> int:
                return sum(len(transform(image)) for image in pil)
        else:
            loader = torch.utils.data.DataLoader(
                _PILImages(pil, transform), batch_size=batch // threads, num_workers=threads,
                persistent_workers=True, prefetch_factor=2,
            )

            def run_lightly() -> int:
                return sum(len(item) * item[0].shape[0] for item in loader)

        candidates["lightly"] = run_lightly
    if "kornia" in libs:
        pipelines = [p.to(device) for p in kornia_pipelines(views)]

        def run_kornia() -> int:
            with torch.no_grad():
                return sum(p(floats).shape[0] for p in pipelines)

        candidates["kornia"] = run_kornia
    rates = best_rates(candidates, repeats, device, clock=clock)
    loader = None  # stops lightly's workers
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated, of " + ", ".join(RECIPES))
    parser.add_argument("--sizes", default="32,224", help="output sizes in px, comma-separated")
    parser.add_argument("--threads", default="1,all", help="thread counts, comma-separated ('all' = every core)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per candidate (best kept)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--libs", default="selfsup,lightly,kornia")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="wall: elapsed time; cpu: this process's CPU time (one thread only: per-thread "
                             "cost, steady while other jobs share the machine)")
    args = parser.parse_args()
    if args.clock == "cpu" and (args.threads != "1" or args.device != "cpu"):
        raise SystemExit("--clock cpu measures per-thread cost: use it with --threads 1 on the CPU")
    warnings.filterwarnings("ignore")  # lightly and kornia deprecation notices
    device = resolve_device(args.device)
    libs = set(args.libs.split(","))
    recipes = args.recipes.split(",")
    if unknown := set(recipes) - set(RECIPES):
        raise SystemExit(f"unknown recipe(s) {sorted(unknown)}; choose from {RECIPES}")
    print(f"Augmentation throughput, views / s (best of {args.repeats} rounds, {args.clock} clock); "
          f"{machine_line(device)}")
    if device.type == "cuda":
        print("selfsup and kornia run on the GPU; lightly's per-image PIL transforms always run on the CPU")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for recipe in recipes:
            for threads in parse_threads(args.threads):
                r = measure(recipe, size, threads, device, args.repeats, libs, args.clock)
                row = [recipe, size, threads, fmt_rate(r.get("selfsup")), fmt_rate(r.get("lightly")),
                       fmt_rate(r.get("kornia")), fmt_ratio(r.get("selfsup"), r.get("lightly")),
                       fmt_ratio(r.get("selfsup"), r.get("kornia"))]
                if device.type != "cpu":
                    row += [fmt_rate(r.get("selfsup gathered")), fmt_ratio(r.get("selfsup"), r.get("selfsup gathered"))]
                rows.append(row)
                print(f"  done: {recipe} {size} px, {threads} threads", file=sys.stderr, flush=True)
    header = ["recipe", "px", "threads", "selfsup", "lightly", "kornia", "selfsup / lightly", "selfsup / kornia"]
    if device.type != "cpu":
        header += ["selfsup gathered", "selfsup / gathered"]
    print_table(header, rows)


if __name__ == "__main__":
    main()
