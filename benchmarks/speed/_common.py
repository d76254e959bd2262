"""Shared helpers of the speed benchmarks: interleaved best-of timing, thread settings, tables.

Every benchmark compares its candidates in one process and one run. Candidates are timed in
rounds, round-robin (A, B, C, A, B, C, ...), and each keeps its best round, so load from other
processes on a shared machine hits all of them alike and the ratios stay fair.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence

import torch


def parse_threads(text: str) -> list[int]:
    """``"1,all"`` -> ``[1, os.cpu_count()]``.

    Example:
        >>> parse_threads("1")
        [1]
    """
    out = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            out.append(os.cpu_count() or 1)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise SystemExit(f"--threads takes positive integers or 'all' separated by commas, got {part!r}")
    return out


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time. ``cpu``: this process's CPU time (all its threads, not its DataLoader
workers), the cost per thread when one thread works: steady on a machine shared with other jobs."""


def best_rates(
    candidates: dict[str, Callable[[], int]], repeats: int, device: torch.device, warmup: int = 1,
    clock: str = "wall",
) -> dict[str, float]:
    """Units per second of each candidate: its best of ``repeats`` round-robin rounds.

    Each candidate is a function that does one round of work and returns how many units (views,
    images, steps) it produced. ``warmup`` untimed rounds come first. ``clock`` names an entry of
    :data:`CLOCKS`.

    Example:
        >>> rates = best_rates({"noop": lambda: 1}, repeats=2, device=torch.device("cpu"))
        >>> rates["noop"] > 0
        True
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
            synchronize(device)
    now = CLOCKS[clock]
    best: dict[str, float] = {name: 0.0 for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            synchronize(device)
            start = now()
            units = fn()
            synchronize(device)
            best[name] = max(best[name], units / max(now() - start, 1e-9))
    return best


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (numbers right-aligned by their own formatting).

    Example:
        >>> print_table(["a", "b"], [[1, "x"]])
        | a | b |
        | --- | --- |
        | 1 | x |
    """
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def fmt_rate(value: float | None) -> str:
    """``12,345`` for rates, ``-`` when not measured."""
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``3.21x``, ``-`` when either is missing."""
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def machine_line(device: torch.device) -> str:
    """One line naming the machine: CPU model and cores, bf16 support, GPU if used, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at start"
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    bf16 = ", bf16 matmul units" if cpu_has_bf16() else ""
    return f"{cpu}, {os.cpu_count()} cores{bf16}{gpu}, torch {torch.__version__}{load}"


def cpu_has_bf16() -> bool:
    """Whether the CPU advertises bf16 / AMX instructions (where bf16 autocast pays off)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda``; a clear exit when CUDA is asked for but missing."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch.cuda.is_available() is False")
    return device
