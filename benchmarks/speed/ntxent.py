"""NT-Xent forward + backward: selfsup's NTXentLoss vs lightly's, same inputs, side by side.

Both losses get the same (N, D) embeddings (default N = 512 pairs, D = 128, temperature 0.5); the
script first checks that the two losses agree to 1e-5 (and their gradients to 1e-5), then times
forward + backward of each in interleaved rounds and prints the ratio. selfsup computes one
(2N x 2N) similarity product and masks its diagonal in place; lightly computes four N x N products,
drops the diagonals with boolean indexing and concatenates. Run with the benchmarks' environment:

    benchmarks/speed/.venv/bin/python benchmarks/speed/ntxent.py
    benchmarks/speed/.venv/bin/python benchmarks/speed/ntxent.py --device cuda
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_rates, fmt_rate, fmt_ratio, machine_line, parse_threads, print_table, resolve_device  # noqa: E402

from selfsup.losses import NTXentLoss  # noqa: E402


def check_agreement(ours: torch.nn.Module, theirs: torch.nn.Module, z0: torch.Tensor, z1: torch.Tensor) -> float:
    """Largest absolute difference between the two losses and their gradients; exits above 1e-5."""
    results = []
    for loss_fn in (ours, theirs):
        a, b = z0.detach().clone().requires_grad_(), z1.detach().clone().requires_grad_()
        loss = loss_fn(a, b)
        loss.backward()
        results.append((loss.detach(), a.grad, b.grad))
    diff = max((x - y).abs().max().item() for x, y in zip(*results))
    if diff > 1e-5:
        raise SystemExit(f"selfsup and lightly NT-Xent disagree by {diff:.2e} (> 1e-5); not timing")
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512, help="pairs N")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--threads", default="1,all", help="CPU thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per loss (best kept)")
    parser.add_argument("--steps", type=int, default=10, help="forward + backward passes per round")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="cpu: this process's CPU time (with --threads 1: steady on a shared machine)")
    args = parser.parse_args()
    if args.clock == "cpu" and (args.threads != "1" or args.device != "cpu"):
        raise SystemExit("--clock cpu measures per-thread cost: use it with --threads 1 on the CPU")
    warnings.filterwarnings("ignore")
    from lightly.loss import NTXentLoss as LightlyNTXentLoss

    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(args.batch, args.dim, generator=g).to(device)
    z1 = (z0.cpu() + 0.5 * torch.randn(args.batch, args.dim, generator=g)).to(device)
    ours, theirs = NTXentLoss(args.temperature), LightlyNTXentLoss(temperature=args.temperature)
    diff = check_agreement(ours, theirs, z0, z1)
    print(f"NT-Xent forward + backward, N = {args.batch} pairs, D = {args.dim}, T = {args.temperature} "
          f"(losses and gradients agree to {diff:.1e}), best of {args.repeats} rounds, {args.clock} clock; "
          f"{machine_line(device)}")

    def runner(loss_fn: torch.nn.Module):
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()

        def run() -> int:
            for _ in range(args.steps):
                a.grad = b.grad = None
                loss_fn(a, b).backward()
            return args.steps

        return run

    rows = []
    for threads in parse_threads(args.threads) if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        rates = best_rates({"selfsup": runner(ours), "lightly": runner(theirs)}, args.repeats, device,
                           clock=args.clock)
        ms = {k: 1000 / v for k, v in rates.items()}
        rows.append([device.type, threads, f"{ms['selfsup']:.2f}", f"{ms['lightly']:.2f}",
                     fmt_rate(rates["selfsup"]), fmt_rate(rates["lightly"]),
                     fmt_ratio(rates["selfsup"], rates["lightly"])])
    print_table(["device", "threads", "selfsup ms", "lightly ms", "selfsup steps / s", "lightly steps / s",
                 "selfsup / lightly"], rows)


if __name__ == "__main__":
    main()
