"""Where a training step's time goes: view making vs the model's forward + backward + step.

Times, side by side in one run, for one batch of uint8 images already in memory:
  views          the method's view recipe (batched, per-sample random parameters)
  step fp32      forward + backward + SGD step in float32
  step bf16+cl   the same under bf16 autocast with channels-last tensors
and prints images per second and the ratios. Usage:

    .venv/bin/python benchmarks/step_breakdown.py --method simclr --backbone resnet_small --size 28 --batch 256
"""
from __future__ import annotations

import argparse
import time

import torch

import selfsup.augment as augment
import selfsup.backbones as backbones
import selfsup.methods as methods
from selfsup.methods import ViewBatch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default="resnet_small")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, args.channels, args.size, args.size), dtype=torch.uint8, generator=g)
    labels, indices = torch.zeros(args.batch, dtype=torch.long), torch.arange(args.batch)
    stats = ((0.5,) * args.channels, (0.25,) * args.channels)
    backbone = backbones.get(args.backbone, in_channels=args.channels)
    method = methods.get(args.method, backbone=backbone)
    make_views = augment.get(method.default_views, size=args.size, mean=stats[0], std=stats[1])
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    views = make_views(images)

    def step(bf16: bool):
        def run():
            inputs = [v.contiguous(memory_format=torch.channels_last) for v in views] if bf16 else views
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = method.training_step(ViewBatch(inputs, labels, indices))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            method.end_step()
        return run

    t_views = timed(lambda: make_views(images), args.repeats)
    t_fp32 = timed(step(False), args.repeats)
    method.to(memory_format=torch.channels_last)
    t_bf16 = timed(step(True), args.repeats)
    n = args.batch
    print(f"{args.method} / {args.backbone}, {args.batch} x {args.channels}x{args.size}x{args.size}, "
          f"{make_views.num_views} views, {torch.get_num_threads()} threads")
    print(f"{'part':<16}{'ms / batch':>12}{'images / s':>12}{'vs step fp32':>14}")
    for name, t in [("views", t_views), ("step fp32", t_fp32), ("step bf16+cl", t_bf16)]:
        print(f"{name:<16}{1000 * t:>12.1f}{n / t:>12.0f}{t / t_fp32:>14.2f}")
    print(f"view making is {100 * t_views / (t_views + t_bf16):.0f}% of a bf16 step with views")


if __name__ == "__main__":
    main()
