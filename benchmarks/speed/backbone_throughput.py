"""Training-step throughput of the small backbones the CPU benchmark protocol can use, side by side.

Forward + backward + SGD step of each backbone on a batch of 28 px one-channel views (random data,
a stand-in loss), in bf16 autocast with channels-last, as ``selfsup train`` runs on a CPU with bf16
matrix units. Prints views per second and the ratio to ``resnet_small`` width 16, the protocol's CNN;
this is how ``benchmarks/protocols.py`` sized its ViT (``vit_nano``, 4 blocks, 4 px patches).

    .venv/bin/python benchmarks/speed/backbone_throughput.py --seconds 6
"""
from __future__ import annotations

import argparse
import time

import torch

import selfsup.backbones as backbones

CANDIDATES = {
    "resnet_small w16": ("resnet_small", {"width": 16}),
    "vit_nano d4 p4": ("vit_nano", {"image_size": 28, "patch_size": 4, "depth": 4}),
    "vit_nano d6 p4": ("vit_nano", {"image_size": 28, "patch_size": 4, "depth": 6}),
    "vit_nano d6 p7": ("vit_nano", {"image_size": 28, "patch_size": 7, "depth": 6}),
    "vit_tiny d4 p7": ("vit_tiny", {"image_size": 28, "patch_size": 7, "depth": 4}),
    "vit_tiny d12 p4": ("vit_tiny", {"image_size": 28, "patch_size": 4}),
}


def views_per_second(name: str, options: dict, batch: torch.Tensor, seconds: float) -> float:
    torch.manual_seed(0)
    model = backbones.get(name, in_channels=1, **options).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(batch).float().pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up
        step()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return batch.shape[0] * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per backbone")
    args = parser.parse_args()
    batch = torch.randn(args.batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    rates = {label: views_per_second(name, options, batch, args.seconds) for label, (name, options) in
             CANDIDATES.items()}
    base = rates["resnet_small w16"]
    print(f"| backbone | views/s | vs resnet_small w16 |  (batch {args.batch_size}, 28 px, bf16, "
          f"{torch.get_num_threads()} threads)\n|---|---|---|")
    for label, rate in rates.items():
        print(f"| {label} | {rate:,.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
