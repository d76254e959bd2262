"""Soak test: does a long training run's resident memory (or open-file count) grow after epoch 1?

Runs ``selfsup train`` in a child process for ``--steps`` optimizer steps (default 2,000) of SimCLR
on the built-in digits with a small backbone and 16 px views, with the k-NN monitor and periodic
checkpoints on, and reads the ResourceMonitor's ``resources/rss_mb`` and ``resources/open_files``
from the run's ``metrics.jsonl`` (logged every ``--every`` steps). Prints the table
step -> resident memory, open files, and a verdict:

  baseline   the first sample taken after epoch 1 has ended (step >= steps per epoch)
  growth     max RSS over all later samples - baseline RSS            must be <= --tolerance-mb
  slope      least-squares slope of RSS over the later half of the    must be <= --max-slope
             samples, in MB per 1,000 steps
  files      open files at the last sample <= baseline, and at every later sample
             <= baseline + --fd-slack

Exit status 0 when all hold, 1 when memory or open files grow (2 when the run itself fails).
``--inject-leak MB`` makes the run keep MB of tensors alive per step (a check that the verdict
fails on a real leak). Usage:

    .venv/bin/python benchmarks/soak.py                       # 2,000 steps, resnet_tiny, batch 64
    .venv/bin/python benchmarks/soak.py --backbone resnet_small --width 8 --num-workers 2
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from selfsup.engine.logger import read_metrics

# runs `selfsup train` with a ResourceMonitor that also keeps sys.argv[1] MB alive per step
LEAKING_LAUNCHER = """
import sys, torch, selfsup.training
from selfsup.cli import main
from selfsup.engine.resources import ResourceMonitor
mb, kept = float(sys.argv.pop(1)), []
class Leaking(ResourceMonitor):
    def on_train_batch_end(self, *args):
        kept.append(torch.ones(int(mb * 262144)))
        super().on_train_batch_end(*args)
selfsup.training.ResourceMonitor = Leaking
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Sample:
    """One ResourceMonitor reading: after ``step`` optimizer steps (1-based), in ``epoch`` (0-based)."""

    step: int
    epoch: int
    rss_mb: float
    open_files: int


@dataclass
class Verdict:
    """The soak's measured figures and whether each limit holds."""

    baseline: Sample
    growth_mb: float
    slope_mb_per_1k: float
    fd_max: int
    fd_last: int
    memory_ok: bool
    files_ok: bool

    @property
    def ok(self) -> bool:
        return self.memory_ok and self.files_ok


def resource_samples(metrics_path: Path, every: int) -> list[Sample]:
    """The ``resources/*`` readings of a run's ``metrics.jsonl``, by step.

    The logger records Lightning's 0-based step, so the sample after ``n`` optimizer steps has
    ``step == n - 1``; it is reported here as ``n``. Only steps that are multiples of ``every`` are
    kept: Lightning writes a value logged at step 200 again at its next logging steps of the same
    epoch (210, ...), stale, and those copies are not measurements.
    """
    samples = []
    for record in read_metrics(metrics_path):
        if "resources/rss_mb" in record and (int(record["step"]) + 1) % every == 0:
            samples.append(Sample(step=int(record["step"]) + 1, epoch=int(record.get("epoch", -1)),
                                  rss_mb=float(record["resources/rss_mb"]),
                                  open_files=int(record["resources/open_files"])))
    return sorted(samples, key=lambda s: s.step)


def slope_per_1k(samples: list[Sample]) -> float:
    """Least-squares slope of RSS against step, in MB per 1,000 steps (0 for fewer than 2 samples)."""
    if len(samples) < 2:
        return 0.0
    xs = [s.step for s in samples]
    ys = [s.rss_mb for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return 1000.0 * sxy / sxx if sxx else 0.0


def judge(samples: list[Sample], steps_per_epoch: int, *, tolerance_mb: float, max_slope: float,
          fd_slack: int) -> Verdict:
    """Compare the samples after epoch 1 with the first of them (see the module docstring)."""
    after = [s for s in samples if s.step >= steps_per_epoch]
    if len(after) < 3:
        raise SystemExit(f"soak: only {len(after)} resource samples after epoch 1; run more steps or sample "
                         "more often (--every)")
    baseline, later = after[0], after[1:]
    growth = max(s.rss_mb for s in later) - baseline.rss_mb
    tail = later[len(later) // 2:]
    slope = slope_per_1k(tail)
    fd_max = max(s.open_files for s in later)
    fd_last = later[-1].open_files
    memory_ok = growth <= tolerance_mb and slope <= max_slope
    files_ok = fd_last <= baseline.open_files and fd_max <= baseline.open_files + fd_slack
    return Verdict(baseline, growth, slope, fd_max, fd_last, memory_ok, files_ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps at least (whole epochs)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--width", type=int, default=None, help="backbone.width (default: the backbone's)")
    parser.add_argument("--every", type=int, default=100, help="monitor.resources_every (steps)")
    parser.add_argument("--knn-every", type=int, default=1, help="monitor.knn_every (epochs)")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="checkpoint_every (epochs)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--tolerance-mb", type=float, default=30.0)
    parser.add_argument("--max-slope", type=float, default=5.0, help="MB per 1,000 steps")
    parser.add_argument("--fd-slack", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the run (1 keeps a shared CPU from being oversubscribed)")
    parser.add_argument("--inject-leak", type=float, default=0.0, metavar="MB",
                        help="keep this many MB alive per optimizer step (to see the verdict fail)")
    parser.add_argument("--output-dir", default=None, help="keep the run here (default: a temporary folder)")
    args = parser.parse_args()

    from selfsup import data

    n_images = len(data.get("digits", split="train"))
    steps_per_epoch = n_images // args.batch_size
    epochs = math.ceil(args.steps / steps_per_epoch)
    log_every = math.gcd(args.every, 10)  # Lightning writes logged values every log_every_n_steps steps
    if log_every > steps_per_epoch:
        log_every = 1
    with tempfile.TemporaryDirectory(prefix="selfsup-soak-") as tmp:
        output_dir = Path(args.output_dir or tmp)
        name = f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
        launcher = ["-c", LEAKING_LAUNCHER, str(args.inject_leak)] if args.inject_leak else ["-m", "selfsup"]
        command = [
            sys.executable, *launcher, "train", "--method", "simclr", "--backbone", args.backbone,
            "--data", "digits", "--epochs", str(epochs), "--batch-size", str(args.batch_size),
            "--num-workers", str(args.num_workers), "--output-dir", str(output_dir), "--name", name,
            "augment.size=16", f"monitor.knn_every={args.knn_every}", f"checkpoint_every={args.checkpoint_every}",
            f"monitor.resources_every={args.every}", f"log_every_n_steps={log_every}", "progress_bar=false",
        ]
        if args.width is not None:
            command.append(f"backbone.width={args.width}")
        shown = command[1 + len(launcher):]
        print("soak:", f"OMP_NUM_THREADS={args.threads}" if args.threads else "",
              f"(leaking {args.inject_leak:g} MB/step) selfsup" if args.inject_leak else "selfsup", " ".join(shown))
        print(f"soak: {epochs} epochs x {steps_per_epoch} steps = {epochs * steps_per_epoch} optimizer steps, "
              f"resources every {args.every} steps")
        started = time.perf_counter()
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
        finished = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if finished.returncode != 0:
            print(finished.stdout[-4000:], finished.stderr[-4000:], sep="\n", file=sys.stderr)
            print(f"soak: the training run failed with status {finished.returncode}", file=sys.stderr)
            return 2
        samples = resource_samples(output_dir / name / "metrics.jsonl", args.every)
        verdict = judge(samples, steps_per_epoch, tolerance_mb=args.tolerance_mb, max_slope=args.max_slope,
                        fd_slack=args.fd_slack)

    base = verdict.baseline
    print(f"\ntrained in {wall:.0f} s; baseline = step {base.step} (first sample after epoch 1, which ends at "
          f"step {steps_per_epoch})\n")
    print("| step | epoch | rss_mb | vs baseline | open files |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for s in samples:
        delta = f"{s.rss_mb - base.rss_mb:+.1f}" if s.step >= base.step else "(before)"
        print(f"| {s.step} | {s.epoch + 1} | {s.rss_mb:.1f} | {delta} | {s.open_files} |")
    print()
    print(f"memory: max growth after baseline {verdict.growth_mb:+.1f} MB (limit {args.tolerance_mb:.0f} MB); "
          f"slope over the later half {verdict.slope_mb_per_1k:+.2f} MB / 1,000 steps (limit {args.max_slope:g})"
          f" -> {'ok' if verdict.memory_ok else 'GROWS'}")
    print(f"open files: baseline {base.open_files}, max after {verdict.fd_max}, last {verdict.fd_last} "
          f"(slack {args.fd_slack}) -> {'ok' if verdict.files_ok else 'GROWS'}")
    print(f"verdict: {'PASS, no growth after epoch 1' if verdict.ok else 'FAIL, resources grow'}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
