"""Train and evaluate a list of methods under one protocol; write a Markdown table and a JSON file.

Each method is trained by ``selfsup train`` in its own process (a failure is a row, not the end of
the table), then evaluated the same way: weighted cosine k-NN (k=200, T=0.1, the whole training
split as memory) and a linear probe (L-BFGS, weight decay chosen on a validation part of the
training features), both on the test split, once. Raw pixels and the randomly initialised backbone
are scored the same way for reference. Written to ``benchmarks/results/<data>-<protocol>.{md,json}``
(rows of methods run earlier are kept unless run again).

    .venv/bin/python benchmarks/run.py --protocol cpu --root ../shared/data/fashion-mnist --methods simclr,byol
    .venv/bin/python benchmarks/run.py --protocol gpu --cifar10-root data/cifar10 --methods simclr

``--reuse`` scores an existing run folder (``<runs>/<protocol>-<method>``) instead of training again,
and keeps a method's previous row when its exported backbone has not changed (same sha256).
``--render`` only rewrites the Markdown table from the JSON file. Every write also copies the table
into the README between ``<!-- <data>-<protocol> table -->`` and ``<!-- end of table -->``, where
those markers exist, so the README shows the measured rows and nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocols  # noqa: E402

from selfsup import backbones, data  # noqa: E402
from selfsup.augment import EvalTransform  # noqa: E402
from selfsup.checkpoints import load_backbone  # noqa: E402
from selfsup.eval import knn_accuracy, linear_probe  # noqa: E402
from selfsup.eval.features import extract_features  # noqa: E402
from selfsup.eval.records import file_sha256  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_END = "<!-- end of table -->"


def machine() -> str:
    """One line naming the hardware the figures came from."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU only: {cpu} ({cpu_features()}), {len(os.sched_getaffinity(0))} cores usable"


def cpu_features() -> str:
    """The CPU's family / model and widest vector and bf16 units (they set CPU training speed and,
    through ``precision: auto``, whether runs use bf16 autocast)."""
    info: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
    except OSError:
        return platform.machine()
    flags = set(info.get("flags", "").split())
    units = next((name for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"),
                                          ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "no AVX2")
    return f"family {info.get('cpu family', '?')} model {info.get('model', '?')}, {units}"


def score(features: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
          num_classes: int, seed: int) -> dict[str, float]:
    """k-NN (k=200, T=0.1) and linear-probe top-1 on the test features, each measured once."""
    (train_x, train_y), (test_x, test_y) = features, test
    knn = knn_accuracy(train_x, train_y, test_x, test_y, num_classes=num_classes, k=200, temperature=0.1)
    probe = linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, seed=seed)
    return {"knn_top1": round(knn["top1"], 2), "linear_top1": round(probe["top1"], 2),
            "linear_weight_decay": probe["chosen"]["weight_decay"]}


def encoder_scores(encoder, train_set, test_set, transform, device: str, seed: int) -> dict[str, float]:
    options = dict(device=device, batch_size=512)
    return score(extract_features(encoder, train_set, transform, **options),
                 extract_features(encoder, test_set, transform, **options), train_set.num_classes, seed)


def train_method(method: str, protocol: protocols.Protocol, runs: Path, reuse: bool, seed: int,
                 extra: tuple[str, ...] = (), suffix: str = "") -> Path:
    """Run ``selfsup train`` for one method (or reuse its finished run folder); ``extra`` overrides
    go last (they win), and ``suffix`` ends the run folder's name."""
    name = f"{protocol.name}-{method}{suffix}"
    run_dir = runs / name
    if reuse and (run_dir / "summary.json").is_file():
        return run_dir
    base, options = VARIANTS.get(method, (method, ()))
    command = [sys.executable, "-m", "selfsup", "train", "--config", protocol.recipe(base), "--name", name,
               "--output-dir", str(runs), f"seed={seed}", "progress_bar=false", *protocol.overrides(base),
               *options, *extra]
    print("$", " ".join(command[1:]), flush=True)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    tail: deque[str] = deque(maxlen=50)
    for line in process.stderr:  # shown as it comes; the end is kept to say why a run failed
        sys.stderr.write(line)
        if line.strip():
            tail.append(line.strip())
    if process.wait() != 0:
        raise TrainingFailed(f"selfsup train exited with status {process.returncode}: "
                             f"{tail[-1] if tail else 'no message'}")
    return run_dir


VARIANTS = {
    # DINOv3's Gram anchoring on DINOv2 under the CPU budget: from half the run on, the Gram teacher is
    # the EMA teacher's snapshot, refreshed at each epoch start (about 210 steps of 256 on the CPU)
    "dinov2+gram": ("dinov2", ("method.gram_weight=2", "method.gram_start=0.5", "method.gram_every=210",
                               "method.gram_max_updates=null")),
}
"""Table rows that are a method with options: row name -> (method, overrides); the run folder is
``<protocol>-<row name>``."""


def base_method(row: str) -> str:
    """The registered method a table row trains (``dinov2`` for ``dinov2+gram``)."""
    return VARIANTS.get(row, (row, ()))[0]


TEACHERS = {"distillation": "simclr"}
"""Methods that distil a frozen teacher, and the method whose run of the same protocol teaches them
(reused when finished, trained first otherwise)."""


def teacher_overrides(method: str, protocol: protocols.Protocol, runs: Path, seed: int) -> tuple[str, ...]:
    """``method.teacher=<run>`` for a method in :data:`TEACHERS`, else nothing."""
    if method not in TEACHERS:
        return ()
    return (f"method.teacher={train_method(TEACHERS[method], protocol, runs, True, seed)}",)


OWN_RUN = "training run"
"""``peak_memory_from`` of a row whose peak memory was read in its own training run."""
ONE_EPOCH_RUN = "1-epoch run"
"""``peak_memory_from`` of a row whose peak memory comes from ``benchmarks/peak_memory.py``."""


class TrainingFailed(RuntimeError):
    """``selfsup train`` stopped with an error; the message ends with its last line of output."""


def method_row(method: str, run_dir: Path, protocol: protocols.Protocol, sets, device: str, seed: int,
               previous: dict | None = None) -> dict:
    """The table row of one finished run: ``previous`` (its row from an earlier run of this script)
    when it scored the same exported backbone, else freshly scored."""
    sha = file_sha256(run_dir / "backbone.safetensors")
    if previous and previous.get("backbone_sha256") == sha and "knn_top1" in previous:
        return previous
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    backbone, info = load_backbone(run_dir)
    transform = EvalTransform(int(info["image_size"]), info["mean"], info["std"])
    row = {"method": method, "recipe": protocol.recipe(base_method(method)), "backbone": backbone_name(config["backbone"]),
           "epochs": summary["epochs"], "batch_size": int(config["batch_size"]),
           "val_knn_top1": round(summary["metrics"].get("knn/top1", float("nan")), 2),
           **encoder_scores(backbone.to(device), *sets, transform, device, seed),
           "wall_time_min": round(summary["wall_time_s"] / 60, 1),
           "train_images_per_s": summary.get("train_images_per_s"),
           "precision": summary.get("precision"), "machine": machine(),
           "peak_memory_mb": summary.get("peak_memory_mb"), "peak_memory_from": OWN_RUN, "run": str(run_dir),
           "backbone_sha256": sha,
           "date": time.strftime("%Y-%m-%d")}
    return row


def backbone_name(backbone: dict) -> str:
    extras = ", ".join(f"{k}={v}" for k, v in backbone.items() if k != "name")
    return f"{backbone['name']}" + (f" ({extras})" if extras else "")


REFERENCES = ("raw pixels", "random init", "random init (ViT)", "random init (ViT, avg)")


def reference_rows(protocol: protocols.Protocol, sets, size: int, device: str, seed: int) -> list[dict]:
    """Raw pixels (normalised, flattened) and the protocol's backbones at random initialisation
    (the CNN, and on the CPU also the small ViT that ViT methods train, pooled both ways a method
    can evaluate it: the class token and the mean patch token, ``Method.representation``)."""
    train_set, test_set = sets
    transform = EvalTransform(size, train_set.mean, train_set.std)
    rows = [{"method": "raw pixels", "backbone": f"{size}x{size} pixels",
             **encoder_scores(lambda x: x.flatten(1), train_set, test_set, transform, device, seed)}]
    random_inits = [("random init", protocol.small_backbone)]
    if protocol.small_vit:
        vit = protocol.small_vit + [f"backbone.image_size={size}"]
        random_inits += [("random init (ViT)", vit), ("random init (ViT, avg)", vit + ["backbone.pool=avg"])]
    for label, overrides in random_inits:
        options = {o.split("=")[0].removeprefix("backbone."): yaml.safe_load(o.split("=", 1)[1])
                   for o in overrides if o.startswith("backbone.")}
        name = options.pop("name")
        torch.manual_seed(seed)
        random_init = backbones.get(name, in_channels=train_set.channels, **options).to(device)
        rows.append({"method": label, "backbone": backbone_name({"name": name, **options}),
                     **encoder_scores(random_init, train_set, test_set, transform, device, seed)})
    return rows


def protocol_references(protocol: protocols.Protocol) -> set[str]:
    return set(REFERENCES) if protocol.small_vit else {"raw pixels", "random init"}


COLUMNS = [("method", "method"), ("recipe", "recipe"), ("backbone", "backbone"), ("epochs", "epochs"), ("batch_size", "batch"),
           ("val_knn_top1", "k-NN val"), ("knn_top1", "k-NN test"), ("linear_top1", "linear test"),
           ("wall_time_min", "wall (min)"), ("train_images_per_s", "images/s"), ("peak_rss_mb", "peak RSS (MiB)"),
           ("hardware", "CPU units, precision")]
PRECISION = {"bf16-mixed": "bf16", "32-true": "fp32", "16-mixed": "fp16"}


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in rows:
        row = {**row, "peak_rss_mb": peak_cell(row), "hardware": hardware_cell(row)}
        if "error" in row:  # a failed method keeps its row, saying why
            row = {"method": row["method"], "backbone": f"failed: {row['error']}"}
        cells = [row.get(key) for key, _ in COLUMNS]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def peak_cell(row: dict) -> str | None:
    """The peak-memory cell: the training process's own reading, ``*`` when it came from a one-epoch
    run; empty for readings taken before the training process read its own peak (they held the
    runner's: ``ru_maxrss`` survives ``exec``)."""
    peak = row.get("peak_memory_mb") or {}
    value = peak.get("cpu_rss_mb", peak.get("cuda_allocated_mb"))
    source = row.get("peak_memory_from")
    if value is None or source not in (OWN_RUN, ONE_EPOCH_RUN):
        return None
    return f"{value}*" if source == ONE_EPOCH_RUN else str(value)


def hardware_cell(row: dict) -> str | None:
    """``<vector units>, <precision>`` of a trained row (``AVX2, fp32``), ``?`` marking what the row
    did not record."""
    if "knn_top1" not in row or row["method"] in REFERENCES:
        return None
    machine = row.get("machine", "")
    inside = machine.partition("(")[2].partition(")")[0]  # "family 25 model 1, AVX2"
    units = inside.rsplit(", ", 1)[-1] if inside else "?"
    return f"{units}, {PRECISION.get(row.get('precision'), row.get('precision') or '?')}"


def table_marker(data_name: str, protocol_name: str) -> str:
    return f"<!-- {data_name}-{protocol_name} table -->"


def readme_with_table(readme: str, marker: str, table: str) -> str:
    """``readme`` with the Markdown table lines of ``table`` (the lines starting with ``|``) put
    between ``marker`` and the next :data:`TABLE_END`; unchanged when the marker is absent."""
    start = readme.find(marker)
    if start < 0:
        return readme
    end = readme.find(TABLE_END, start)
    if end < 0:
        raise ValueError(f"{README}: {marker!r} has no {TABLE_END!r} after it")
    rows = "\n".join(line for line in table.splitlines() if line.startswith("|"))
    return readme[:start + len(marker)] + "\n" + rows + "\n" + readme[end:]


def write_table(rows: dict[str, dict], protocol: protocols.Protocol, commands: list[str], header: str,
                out_json: Path) -> list[dict]:
    """Write the JSON and Markdown tables (reference rows first, then methods by name)."""
    ordered = [rows[name] for name in REFERENCES if name in rows]
    ordered += sorted((r for r in rows.values() if r["method"] not in REFERENCES),
                      key=lambda r: r["method"])
    RESULTS.mkdir(exist_ok=True)
    out_json.write_text(json.dumps({"protocol": protocol.name, "data": protocol.data, "machine": machine(),
                                    "commands": commands, "rows": ordered}, indent=2))
    table = markdown(ordered, header)
    out_json.with_suffix(".md").write_text(table)
    if README.is_file():
        readme = README.read_text()
        updated = readme_with_table(readme, table_marker(protocol.data, protocol.name), table)
        if updated != readme:
            README.write_text(updated)
    return ordered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--methods", default="simclr,byol,dcl,vicreg",
                        help="comma-separated, or 'all' (empty: only the reference rows)")
    parser.add_argument("--root", default="../shared/data/fashion-mnist", help="Fashion-MNIST folder")
    parser.add_argument("--cifar10-root", help="CIFAR-10 folder (GPU protocol); Fashion-MNIST when absent")
    parser.add_argument("--runs", default="runs/benchmarks", help="where run folders go")
    parser.add_argument("--reuse", action="store_true", help="score finished run folders instead of retraining")
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown table from the JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    protocol = protocols.get(args.protocol, args.root, args.cifar10_root)
    from selfsup.methods import METHODS

    out_json = RESULTS / f"{protocol.data}-{protocol.name}.json"
    stored = json.loads(out_json.read_text()) if out_json.is_file() else {}
    rows = {row["method"]: row for row in stored.get("rows", [])}
    commands = list(stored.get("commands", [stored["command"]] if "command" in stored else []))
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    if not args.render and command not in commands:
        commands.append(command)
    header = (f"### {protocol.data}, {protocol.name} protocol\n\nMachine of the latest run: {machine()}; the last "
              "column says which vector units and precision each row trained with (`?`: a row measured before "
              "rows recorded it). Wall time and images/s compare only between rows with the same units and "
              "precision. Rows come from "
              f"`python benchmarks/run.py --protocol {protocol.name} --methods <list> --reuse`, run {len(commands)} "
              "time(s) with different lists (the exact command lines, each row's date and run folder are in the "
              "JSON file; one training run per method). k-NN: cosine, k=200, T=0.1, memory = the whole training split; "
              "linear: L-BFGS on cached features, weight decay chosen on 10% of the training features; "
              "both on the test split, once, for the final encoder. k-NN val: the run's own monitor on the "
              "10% of the training split it held out. Recipe fashion_mnist_cpu/: tuned for this budget on the "
              "validation split; fashion_mnist/: the method's own recipe under the protocol's generic CPU "
              "budget (untuned; 8 epochs, a ViT 4 epochs of a 4-block vit_nano). Peak RSS: the training "
              "process's high-water mark (VmHWM); * = read in a one-epoch run of the same config "
              "(`python benchmarks/peak_memory.py`), for rows trained before the training process read its own peak.")
    if args.render:
        print(markdown(write_table(rows, protocol, commands, header, out_json), header))
        return
    methods = (sorted([*METHODS.names(), *VARIANTS]) if args.methods == "all"
               else [m.strip() for m in args.methods.split(",") if m.strip()])
    sets = (data.get(protocol.data, root=protocol.root, split="train"),
            data.get(protocol.data, root=protocol.root, split="test"))
    size = 32 if protocol.name == "gpu" else sets[0].image_size[0]
    started = time.time()
    if not (args.reuse and protocol_references(protocol) <= rows.keys()):
        rows.update({row["method"]: row for row in reference_rows(protocol, sets, size, args.device, args.seed)})
    ordered = write_table(rows, protocol, commands, header, out_json)
    for method in methods:
        try:
            teacher = teacher_overrides(method, protocol, Path(args.runs), args.seed)
            run_dir = train_method(method, protocol, Path(args.runs), args.reuse, args.seed, teacher)
            rows[method] = method_row(method, run_dir, protocol, sets, args.device, args.seed, rows.get(method))
        except (TrainingFailed, OSError, KeyError, ValueError) as err:
            rows[method] = {"method": method, "error": (str(err).splitlines() or [type(err).__name__])[0][:240],
                            "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(rows[method]), flush=True)
        ordered = write_table(rows, protocol, commands, header, out_json)  # after every method: a stop loses nothing
    print(markdown(ordered, header))
    print(f"written: {out_json} and {out_json.with_suffix('.md')} in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
