"""``selfsup export PATH --format FORMAT``: write a trained backbone for torchvision, timm, Hugging Face,
TorchScript, ``torch.export``, ONNX or selfsup itself, and check the file gives the same features.

See :mod:`selfsup.backbones.formats` for what each format holds. The file goes next to the run's
export (:data:`DEFAULT_NAMES`, e.g. ``<run>/backbone.onnx``) unless ``--out`` says where; an existing file is kept
unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.errors import SelfSupError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``selfsup`` commands."""
    from selfsup.backbones.formats import FORMATS

    cmd = commands.add_parser(
        "export", help="write a trained backbone for torchvision, timm, Hugging Face, TorchScript, torch.export or ONNX",
        description=("Write the backbone of PATH (a run folder, a .ckpt checkpoint or an exported .safetensors "
                     "file) in FORMAT, load the file back as that tool would and compare its features with "
                     "selfsup's on random images of the training size. torchvision: ResNet-18/34/50; timm: "
                     "selfsup ViTs and Swins and timm: backbones; hf (a transformers ViTModel or SwinModel folder): "
                     "selfsup ViTs without registers and Swins; torchscript, pt2 and onnx: any backbone."))
    cmd.add_argument("path", help="run folder, .ckpt or .safetensors")
    cmd.add_argument("--format", required=True, choices=list(FORMATS), dest="fmt")
    cmd.add_argument("--out", help="file (hf: folder) to write (default: backbone.<format>... in PATH's run folder)")
    cmd.add_argument("--image-size", type=int, help="image side of the check (default: the training size)")
    cmd.add_argument("--overwrite", action="store_true", help="replace an existing file")
    cmd.set_defaults(handler=cmd_export)


DEFAULT_NAMES = {
    "safetensors": "backbone.exported.safetensors",  # backbone.safetensors is the run's own export
    "torchvision": "backbone.torchvision.safetensors",
    "timm": "backbone.timm.safetensors",
    "hf": "backbone.hf",
    "torchscript": "backbone.torchscript.pt",
    "pt2": "backbone.pt2",
    "onnx": "backbone.onnx",
}
"""The file (``hf``: folder) each format is written to in the run folder when ``--out`` is not given."""


def default_out(path: Path, fmt: str) -> Path:
    """:data:`DEFAULT_NAMES` ``[fmt]`` in the run folder of ``path`` (the folder itself, or the one
    holding the checkpoint's ``checkpoints`` folder or the export)."""
    folder = path if path.is_dir() else path.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder / DEFAULT_NAMES[fmt]


def cmd_export(args: argparse.Namespace) -> int:
    """Export, check and print the file, how to load it and the largest feature difference."""
    from selfsup.backbones.formats import export_as
    from selfsup.checkpoints import load_backbone

    path = Path(args.path)
    out = Path(args.out) if args.out else default_out(path, args.fmt)
    if out.exists() and not args.overwrite:
        raise SelfSupError(f"{out} exists; pass --overwrite to replace it, or --out another file")
    if out.resolve() == (path / "backbone.safetensors" if path.is_dir() else path).resolve():
        raise SelfSupError(f"{out} is the file being exported; choose another --out")
    if not out.parent.is_dir():
        raise SelfSupError(f"no folder {out.parent} for --out {out}")
    backbone, info = load_backbone(path)
    image_size = args.image_size or info.get("image_size")
    if not image_size:
        raise SelfSupError(f"{path} does not record its image size; pass --image-size")
    metadata = {key: info[key] for key in ("mean", "std", "data") if key in info}
    report = export_as(backbone, out, args.fmt, image_size=int(image_size), metadata=metadata)
    print(f"wrote {report.path} ({report.format})")
    print(f"  load: {report.loader}")
    if report.max_abs_diff is not None:
        print(f"  checked: largest feature difference from selfsup's {report.max_abs_diff:.2e} "
              f"(3 random {image_size} px images)")
    if report.note:
        print(f"  note: {report.note}")
    return 0
