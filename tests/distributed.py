"""Run a function in N CPU processes joined by a gloo process group, and collect what each returns.

Used by the tests that show a loss computed across processes equals the one-process loss on the
concatenated batch. ``fn`` must be a module-level function (it is pickled into the children) and
return a dict of tensors / numbers.

Usage (a sketch; ``my_worker(rank, world) -> dict`` is the test's own function)::

    results = run_distributed(my_worker, tmp_path, world=2)
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, init_file: str, out_dir: str, fn: Callable[..., dict], args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world, *args), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., dict], tmp_path: Path, *args: Any, world: int = 2) -> list[dict]:
    """``[fn(0, world, *args), ..., fn(world - 1, world, *args)]``, each run in its own process."""
    mp.spawn(_entry, args=(world, str(tmp_path / "dist_init"), str(tmp_path), fn, args), nprocs=world)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
