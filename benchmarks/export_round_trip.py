"""Print the export round-trip table: every format each backbone kind takes, the loader, the largest
feature difference from selfsup's own forward, and the time to write and check the file.

Backbones have every tensor drawn at random (so a misplaced key shows), on images of their size.

    .venv/bin/python benchmarks/export_round_trip.py
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import selfsup.backbones as backbones
from selfsup.backbones.formats import FORMATS, export_as
from selfsup.errors import SelfSupError

CASES = {
    "resnet18 (CIFAR stem, 1 channel)": (lambda: backbones.get("resnet18", cifar_stem=True, in_channels=1), 28),
    "resnet_small (width 16)": (lambda: backbones.get("resnet_small", width=16, in_channels=1), 28),
    "vit_tiny (4 px patches, 2 registers, avg)": (
        lambda: backbones.get("vit_tiny", image_size=32, patch_size=4, num_registers=2, pool="avg"), 32),
    "timm:resnet18": (lambda: backbones.get("timm:resnet18"), 32),
}


def randomise(net: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                low = 0.5 if "running_var" in name else -0.1
                tensor.copy_(low + 0.2 * torch.rand(tensor.shape, generator=generator))
    return net


def main() -> None:
    print("| backbone | format | loaded with | max abs difference | seconds |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for label, (make, size) in CASES.items():
            net = randomise(make())
            for fmt, ending in FORMATS.items():
                start = time.perf_counter()
                try:
                    report = export_as(net, Path(folder) / f"x.{fmt}{ending}", fmt, image_size=size)
                except SelfSupError as err:
                    print(f"| {label} | {fmt} | not taken: {str(err).split(';')[0]} | | |")
                    continue
                diff = "not checked" if report.max_abs_diff is None else f"{report.max_abs_diff:.1e}"
                loader = report.loader.split("(")[0].removeprefix("m = ")
                print(f"| {label} | {fmt} | `{loader}` | {diff} | {time.perf_counter() - start:.1f} |")


if __name__ == "__main__":
    main()
