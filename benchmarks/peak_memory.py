"""Measure each method's peak training memory under a benchmark protocol with a one-epoch run.

The rows of ``benchmarks/results/<data>-<protocol>.json`` written before the training process read
its peak from ``VmHWM`` held the benchmark runner's own peak instead (``ru_maxrss`` survives
``exec`` on Linux, and the runner holds every scored feature set). Training a method again for the
whole budget only to read its memory would cost the table's hours again, so this script trains
each method for one epoch with the protocol's config, the k-NN monitor and the end-of-run test
included (every phase of a full run happens once; memory per step does not grow with the epoch
count, which ``benchmarks/soak.py`` checks), and stores the training process's peak in the row:

- a row without a figure of its own gets ``peak_memory_mb`` with ``peak_memory_from: "1-epoch run"``
  (the table marks it with ``*``);
- a row whose figure came from its own training run keeps it and gets the one-epoch reading as
  ``peak_memory_1epoch_mb``, which says how close the two readings are.

    .venv/bin/python benchmarks/peak_memory.py --protocol cpu --root ../shared/data/fashion-mnist
    .venv/bin/python benchmarks/peak_memory.py --methods simclr,byol   # only these rows
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocols  # noqa: E402
import run as runner  # noqa: E402

ONE_EPOCH = ("epochs=1", "optimizer.warmup_epochs=0", "monitor.knn_every=1", "checkpoint_every=1")
"""Appended to the protocol's overrides (the last override wins)."""


def needs_reading(row: dict) -> bool:
    """A method row (not a reference, not a failure) whose peak memory is not its own run's."""
    return ("knn_top1" in row and row["method"] not in runner.REFERENCES
            and row.get("peak_memory_from") != runner.OWN_RUN)


def record(row: dict, peak: dict, day: str) -> dict:
    """``row`` with the one-epoch reading ``peak`` stored as the module docstring says."""
    if row.get("peak_memory_from") == runner.OWN_RUN:
        return {**row, "peak_memory_1epoch_mb": peak, "peak_memory_1epoch_date": day}
    return {**row, "peak_memory_mb": peak, "peak_memory_from": runner.ONE_EPOCH_RUN, "peak_memory_date": day}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--root", default="../shared/data/fashion-mnist", help="Fashion-MNIST folder")
    parser.add_argument("--cifar10-root", help="CIFAR-10 folder (GPU protocol)")
    parser.add_argument("--runs", default="runs/benchmarks", help="where run folders go")
    parser.add_argument("--methods", default="", help="comma-separated (default: every row without a reading "
                                                       "of its own run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    protocol = protocols.get(args.protocol, args.root, args.cifar10_root)
    table = runner.RESULTS / f"{protocol.data}-{protocol.name}.json"
    if not table.is_file():
        raise SystemExit(f"{table} does not exist: run benchmarks/run.py first")
    stored = json.loads(table.read_text())
    rows = {row["method"]: row for row in stored["rows"]}
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else [name for name, row in rows.items() if needs_reading(row)])
    unknown = [m for m in methods if m not in rows]
    if unknown:
        raise SystemExit(f"no row for {unknown} in {table}; rows: {sorted(rows)}")
    for method in methods:
        run_dir = runner.train_method(method, protocol, Path(args.runs), reuse=True, seed=args.seed,
                                      extra=ONE_EPOCH, suffix="-1epoch")
        peak = json.loads((run_dir / "summary.json").read_text())["peak_memory_mb"]
        rows[method] = record(rows[method], peak, time.strftime("%Y-%m-%d"))
        print(method, json.dumps(peak), flush=True)
        stored["rows"] = [rows[r["method"]] for r in stored["rows"]]
        table.write_text(json.dumps(stored, indent=2))  # after every method: a stop loses nothing
    print(f"updated {table}; `python benchmarks/run.py --render` rewrites the Markdown table")


if __name__ == "__main__":
    main()
