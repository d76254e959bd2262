"""Parity: does selfsup's method learn as well as lightly's at the same budget?

For each method, lightly's implementation (its heads, loss, view transforms and the optimisation of
its own benchmark, see ``lightly_reference.py``) is trained on the backbone, data, epochs and batch
size of selfsup's row in the CPU benchmark table (``benchmarks/results/fashion_mnist-cpu.json``:
``resnet_small`` width 16, or for the ViT rows timm's ViT with the dimensions of the row's
``vit_nano``; Fashion-MNIST at 28 px, the 90% of the training split that selfsup's run trained on),
in the same precision (bf16 autocast where the CPU has it, as selfsup's ``precision: auto``). Both
encoders are then scored by the same code (``benchmarks/run.py``'s ``encoder_scores``: cosine k-NN
k=200 T=0.1 with the whole training split as memory, and the L-BFGS linear probe; test split, once,
final encoder) and printed side by side with the difference. Rows are kept in
``benchmarks/results/parity-fashion_mnist-cpu.{json,md}``.

    bash benchmarks/parity/setup.sh
    benchmarks/parity/.venv/bin/python benchmarks/parity/compare.py --methods simsiam --root ../shared/data/fashion-mnist
    python benchmarks/parity/compare.py --selfsup-only --methods simsiam  # after re-running selfsup's row

selfsup's side is the table's row as it stands (re-run it with ``benchmarks/run.py`` after changing
a method or recipe); the row's date and recipe are printed with it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import run as table  # noqa: E402  (benchmarks/run.py: the CPU table's scoring)

from selfsup import data  # noqa: E402
from selfsup.augment import EvalTransform  # noqa: E402
from selfsup.training import resolve_precision  # noqa: E402

TABLE = table.RESULTS / "fashion_mnist-cpu.json"
OUT = table.RESULTS / "parity-fashion_mnist-cpu.json"
RESNET_ROW = "resnet_small (width=16)"  # the backbone of the rows stored before rows named theirs


class PILViews(torch.utils.data.Dataset):
    """selfsup's uint8 images as PIL images, each turned into views by a lightly transform."""

    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image = self.dataset[i][0]  # uint8 (C, H, W)
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        return self.transform(Image.fromarray(array))  # uint8 (H, W) -> mode L, (H, W, 3) -> RGB


def train_reference(method: str, row: dict, root: str, workers: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """Train lightly's ``method`` at the row's budget; returns the backbone and what the run did."""
    full = data.get("fashion_mnist", root=root, split="train")
    train_part, _ = data.split_train_val(full, 0.1, seed=seed)  # what selfsup's run trained on
    from lightly_reference import REFERENCES

    reference = REFERENCES[method]
    normalize = {"mean": list(full.mean), "std": list(full.std)}
    loader = torch.utils.data.DataLoader(
        PILViews(train_part, reference.views(full.image_size[0], normalize)), batch_size=row["batch_size"],
        shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    backbone, feature_dim = reference.backbone(full.channels)
    model = reference.build(backbone, feature_dim)
    optimizer = reference.optimizer(model, row["batch_size"])
    epochs = int(row["epochs"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    bf16 = resolve_precision("auto", "cpu") == "bf16-mixed"
    started, steps = time.time(), 0
    model.train()
    for epoch in range(epochs):
        for views in loader:
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = model.loss(views, epoch, epochs)
            except torch.linalg.LinAlgError as err:  # an SVD inside the loss, of non-finite embeddings
                raise SystemExit(f"lightly's {method}: its loss failed at epoch {epoch}, step {steps}: {err}") from err
            if not torch.isfinite(loss):
                raise SystemExit(f"lightly's {method}: non-finite loss at epoch {epoch}, step {steps}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        schedule.step()
        print(f"lightly {method}: epoch {epoch + 1}/{epochs} loss {loss.item():.4f} "
              f"({(time.time() - started) / 60:.1f} min)", flush=True)
    info = {"epochs": epochs, "batch_size": row["batch_size"], "steps": steps, "precision": "bf16" if bf16 else "fp32",
            "wall_time_min": round((time.time() - started) / 60, 1)}
    return backbone.eval(), info


def markdown(rows: list[dict]) -> str:
    lines = ["### Parity with lightly, Fashion-MNIST, CPU protocol", "",
             "Same backbone (resnet_small width 16; for ViT rows the ViT's dimensions, timm's ViT for lightly), "
             "data (the 90% training part), epochs, batch and precision; "
             "both scored by benchmarks/run.py's k-NN (k=200, T=0.1) and linear probe on the test split, once. "
             "selfsup: its row of the CPU table; lightly 1.6.0: its heads, loss, views and its benchmark's "
             "optimisation (benchmarks/parity/lightly_reference.py).", "",
             "| method | epochs | batch | selfsup recipe | selfsup k-NN | lightly k-NN | k-NN diff | selfsup linear | "
             "lightly linear | linear diff | selfsup row date |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['method']} | {r['epochs']} | {r['batch_size']} | {r['selfsup_recipe']} | {r['selfsup_knn']} | "
                     f"{r['lightly_knn']} | {r['knn_diff']:+.2f} | {r['selfsup_linear']} | {r['lightly_linear']} | "
                     f"{r['linear_diff']:+.2f} | {r['selfsup_date']} |")
    return "\n".join(lines) + "\n"


def rescore_selfsup(methods: list[str], selfsup_rows: dict, stored: dict) -> None:
    """Put each method's current CPU-table row on the selfsup side of its stored parity row, keeping
    lightly's measurement; refused unless the row has lightly's epochs, batch and backbone."""
    for method in methods:
        row, old = selfsup_rows.get(method), stored.get(method)
        if old is None or row is None or "knn_top1" not in row:
            raise SystemExit(f"--selfsup-only {method}: needs a stored parity row and a scored table row")
        backbone = old.get("backbone", RESNET_ROW)
        same = (row["epochs"], row["batch_size"], row.get("backbone")) == (old["epochs"], old["batch_size"], backbone)
        if not same:
            raise SystemExit(f"--selfsup-only {method}: the table row's budget ({row['epochs']} epochs, batch "
                             f"{row['batch_size']}, {row.get('backbone')}) is not the one lightly's run had "
                             f"({old['epochs']}, {old['batch_size']}, {backbone}); run the comparison again")
        old.update(selfsup_recipe=row["recipe"], selfsup_date=row.get("date", "?"), selfsup_knn=row["knn_top1"],
                   selfsup_linear=row["linear_top1"], knn_diff=round(row["knn_top1"] - old["lightly_knn"], 2),
                   linear_diff=round(row["linear_top1"] - old["lightly_linear"], 2))
    rows = [stored[m] for m in sorted(stored)]
    OUT.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    OUT.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", help="comma-separated (default: every lightly reference; with --selfsup-only "
                                          "every stored comparison)")
    parser.add_argument("--selfsup-only", action="store_true",
                        help="re-read selfsup's table rows into the stored comparison, keeping lightly's figures "
                             "(same epochs, batch and backbone only); needs no lightly install")
    parser.add_argument("--root", default="../shared/data/fashion-mnist", help="Fashion-MNIST folder")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for lightly's per-image transforms")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    selfsup_rows = {r["method"]: r for r in json.loads(TABLE.read_text())["rows"]}
    stored = {r["method"]: r for r in json.loads(OUT.read_text())["rows"]} if OUT.is_file() else {}
    chosen = [m.strip() for m in (args.methods or "").split(",") if m.strip()]
    if args.selfsup_only:
        rescore_selfsup(chosen or sorted(stored), selfsup_rows, stored)
        return
    from lightly_reference import REFERENCES  # lightly itself: benchmarks/parity/setup.sh
    sets = (data.get("fashion_mnist", root=args.root, split="train"), data.get("fashion_mnist", root=args.root, split="test"))
    transform = EvalTransform(sets[0].image_size[0], sets[0].mean, sets[0].std)
    for method in chosen or list(REFERENCES):
        if method not in REFERENCES:
            raise SystemExit(f"no lightly reference for {method!r}; have {sorted(REFERENCES)}")
        row = selfsup_rows.get(method)
        if row is None or "knn_top1" not in row:
            raise SystemExit(f"{TABLE} has no scored row for {method!r}: run benchmarks/run.py --methods {method} first")
        if row.get("backbone") != REFERENCES[method].backbone_row:
            raise SystemExit(f"{method}'s table row trained {row.get('backbone')!r}; the parity run trains "
                             f"{REFERENCES[method].backbone_row!r}")
        backbone, info = train_reference(method, row, args.root, args.workers, args.seed)
        scores = table.encoder_scores(REFERENCES[method].scored(backbone), *sets, transform, "cpu", args.seed)
        stored[method] = {
            "method": method, **info, "backbone": row["backbone"], "selfsup_recipe": row["recipe"], "selfsup_date": row.get("date", "?"),
            "selfsup_knn": row["knn_top1"], "selfsup_linear": row["linear_top1"],
            "lightly_knn": scores["knn_top1"], "lightly_linear": scores["linear_top1"],
            "knn_diff": round(row["knn_top1"] - scores["knn_top1"], 2),
            "linear_diff": round(row["linear_top1"] - scores["linear_top1"], 2),
            "machine": table.machine(), "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/parity/compare.py " + " ".join(sys.argv[1:]),
        }
        print(json.dumps(stored[method]), flush=True)
        rows = [stored[m] for m in sorted(stored)]
        OUT.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
        OUT.with_suffix(".md").write_text(markdown(rows))
    print(markdown([stored[m] for m in sorted(stored)]))


if __name__ == "__main__":
    main()
