"""Tutorial: selfsup's blocks in your own training loop, without a Method and without the engine.

MoCo v2 (He et al. 2020, Chen et al. 2020) assembled by hand from the library's parts: device-side
views (``selfsup.augment``), a backbone (``selfsup.backbones``), a projector (``selfsup.nn.MLP``),
an EMA key encoder (``selfsup.nn.MomentumTeacher``) and InfoNCE against a queue of keys
(``selfsup.losses.NTXentLoss`` with ``memory_bank_size``), trained on the built-in digits by a plain
PyTorch loop, then judged frozen by ``selfsup.eval``'s k-NN and linear probe. Full run (about a
minute on a 2-core CPU)::

    python examples/blocks_in_your_loop.py --epochs 40

``--tiny`` runs two steps (the test suite's budget).
"""
from __future__ import annotations

import argparse
import math

import torch

import selfsup
from selfsup.eval import extract_features, knn_accuracy, linear_probe
from selfsup.losses import NTXentLoss
from selfsup.nn import MLP, MomentumTeacher


def evaluate(backbone: torch.nn.Module, train_set, test_set) -> dict[str, float]:
    """The frozen backbone's k-NN and linear-probe top-1 on the test split (the training split as memory)."""
    backbone.eval()
    transform = selfsup.augment.EvalTransform(16, train_set.mean, train_set.std)
    train_x, train_y = extract_features(backbone, train_set, transform)
    test_x, test_y = extract_features(backbone, test_set, transform)
    return {"knn_top1": knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10, k=20, temperature=0.1)["top1"],
            "linear_top1": linear_probe(train_x, train_y, test_x, test_y, num_classes=10)["top1"]}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--tiny", action="store_true", help="two steps (the test suite)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    train_set = selfsup.data.get("digits", split="train")  # items: (uint8 image, label, index)
    test_set = selfsup.data.get("digits", split="test")
    loader = torch.utils.data.DataLoader(train_set, batch_size=128, shuffle=True, drop_last=True)
    make_views = selfsup.augment.get("mocov2", size=16, scale=(0.4, 1.0), hflip_p=0.0, blur_p=0.0,
                                     mean=train_set.mean, std=train_set.std, seed=0)

    backbone = selfsup.backbones.get("resnet_small", width=16, in_channels=train_set.channels)
    projector = MLP([backbone.feature_dim, 256, 64], batch_norm=False)
    keys = MomentumTeacher({"backbone": backbone, "projector": projector}, base_momentum=0.999, final_momentum=None)  # MoCo: constant 0.999
    criterion = NTXentLoss(temperature=0.2, memory_bank_size=256, memory_bank_dim=64)
    parameters = [*backbone.parameters(), *projector.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.06, momentum=0.9, weight_decay=5e-4)

    at_random_init = evaluate(backbone, train_set, test_set)
    print(f"held-out digits, random init: k-NN (k=20) {at_random_init['knn_top1']:.2f}%, "
          f"linear probe {at_random_init['linear_top1']:.2f}%")
    backbone.train()

    steps = 2 if args.tiny else args.epochs * len(loader)
    step = 0
    while step < steps:
        for images, _, _ in loader:
            query_view, key_view = make_views(images)
            for group in optimizer.param_groups:  # cosine learning rate over the run
                group["lr"] = 0.06 * 0.5 * (1 + math.cos(math.pi * step / steps))
            query = projector(backbone(query_view))
            with torch.no_grad():
                key = keys(key_view)  # the EMA encoder's projection, no gradient
            loss = criterion(query, key)  # positives: the keys; negatives: the queue, then the keys join it
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            keys.momentum_update()  # keys <- 0.999 keys + 0.001 query encoder
            step += 1
            if step % 100 == 0 or step == steps:
                print(f"step {step}/{steps}: loss {loss.item():.3f}")
            if step == steps:
                break

    trained = evaluate(backbone, train_set, test_set)
    print(f"held-out digits, trained: k-NN (k=20) {trained['knn_top1']:.2f}%, linear probe {trained['linear_top1']:.2f}%")
    return {**trained, **{f"random_{k}": v for k, v in at_random_init.items()}}


if __name__ == "__main__":
    main()
