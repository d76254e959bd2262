"""Decoding JPEG bytes with torchvision, and the shared shorter-side resize + centre crop on tensors.

torchvision decodes JPEGs with libjpeg-turbo (CPU) or nvjpeg (CUDA) straight into a uint8 tensor,
without PIL's image objects. :mod:`selfsup.data.folder` uses it for plain 8-bit RGB / grey JPEGs and
keeps PIL for every other file; :mod:`selfsup.data.device_decode` uses the same resize on the GPU
after nvjpeg. PNGs are never given to torchvision: its ``decode_png`` (0.29.1) crashed the process
(SIGSEGV) on 182 of about 270 damaged PNGs in the fuzz test of ``tests/test_bad_data.py``, where
PIL raises an error; its ``decode_jpeg`` never crashed on 3,000 damaged JPEGs. torchvision 0.29 also
marks its image decoders deprecated (in favour of TorchCodec); :func:`torchvision_decoding_available`
says whether they load, and folders fall back to PIL when they do not.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

_DEPRECATION = ".*image decoding and encoding capabilities of TorchVision are deprecated"


@functools.cache
def torchvision_decoding_available() -> bool:
    """Whether torchvision's JPEG decoder loads in this environment.

    Example:
        >>> isinstance(torchvision_decoding_available(), bool)
        True
    """
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
        from torchvision.io.image import _has_image_ops
    except ImportError:
        return False
    return bool(_has_image_ops())


def decode_jpeg_bytes(data: Tensor, channels: int, *, device: str | torch.device = "cpu") -> Tensor:
    """Decode one JPEG file's bytes with torchvision to a uint8 tensor (channels, H, W).

    On the CPU the EXIF orientation is applied; with ``device="cuda"`` (nvjpeg) it is not, so
    callers send only upright images there.

    Args:
        data: the file's bytes as a 1-D uint8 CPU tensor.
        channels: 3 (RGB) or 1 (grey).
        device: where the decoded image lands.

    Raises:
        RuntimeError: torchvision could not decode the bytes (damaged, truncated, unsupported).

    Example:
        >>> import io; from PIL import Image
        >>> jpeg = io.BytesIO(); Image.new("RGB", (500, 375), "orange").save(jpeg, "JPEG")  # e.g. cat.jpg
        >>> data = torch.frombuffer(bytearray(jpeg.getvalue()), dtype=torch.uint8)  # the file's bytes
        >>> decode_jpeg_bytes(data, 3).shape
        torch.Size([3, 375, 500])
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    on_cpu = torch.device(device).type == "cpu"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        return decode_jpeg(data, mode=mode, device=device, apply_exif_orientation=on_cpu)


def decode_jpegs(data: list[Tensor], channels: int, device: str | torch.device) -> list[Tensor]:
    """Decode a list of JPEG byte tensors in one call (one batched nvjpeg call on CUDA).

    Example:
        >>> import io; from PIL import Image
        >>> jpeg = io.BytesIO(); Image.new("RGB", (64, 48), "orange").save(jpeg, "JPEG")  # e.g. a.jpg
        >>> data = torch.frombuffer(bytearray(jpeg.getvalue()), dtype=torch.uint8)  # the file's bytes
        >>> [image.shape for image in decode_jpegs([data, data], 1, "cpu")]  # "cuda": one nvjpeg call
        [torch.Size([1, 48, 64]), torch.Size([1, 48, 64])]
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        return decode_jpeg(data, mode=mode, device=device)


def center_square_resize(image: Tensor, size: int) -> Tensor:
    """The centre square of ``image`` (C, H, W, uint8) resized to (C, size, size) uint8.

    The square's side is the shorter side (offsets rounded down), resized bilinearly with
    antialiasing (as PIL's bilinear resize does when shrinking). On the CPU this uses PyTorch's
    uint8 kernel; elsewhere it resizes in float32 and rounds. PIL's own path (in
    :mod:`selfsup.data.folder`) crops at half-pixel offsets and reads pixels just outside the square
    at its edges, so the two agree to within a few grey levels, not exactly.

    Example:
        >>> center_square_resize(torch.zeros(3, 40, 60, dtype=torch.uint8), 16).shape
        torch.Size([3, 16, 16])
    """
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(
            f"center_square_resize expects a uint8 (C, H, W) tensor, got {image.dtype} {tuple(image.shape)}"
        )
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[:, top : top + side, left : left + side]
    if side == size:
        return square.contiguous()
    batch = square.unsqueeze(0).contiguous(memory_format=torch.channels_last)  # the fast uint8 layout
    if image.device.type == "cpu":
        out = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    else:
        out = F.interpolate(batch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out[0].contiguous()


FITS = ("full", "center")
"""How a folder image becomes a square: ``full``: the whole image, longer side fitted to the square
(:func:`fit_in_canvas`); ``center``: the shorter side fitted and the centred square kept."""


def fitted_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` of an image with its longer side resized to ``size`` (aspect ratio kept,
    each side at least 1 pixel).

    Example:
        >>> fitted_size(300, 400, 32)
        (24, 32)
    """
    longer = max(height, width)
    return max(1, min(size, round(height * size / longer))), max(1, min(size, round(width * size / longer)))


def fit_in_canvas(image: Tensor, size: int) -> tuple[Tensor, tuple[int, int]]:
    """The whole ``image`` (C, H, W, uint8), longer side resized to ``size``, in the top-left corner
    of a zero (C, size, size) canvas, and its ``(height, width)`` there.

    Resized as :func:`center_square_resize` resizes (bilinear, antialiased when shrinking).

    Example:
        >>> canvas, extent = fit_in_canvas(torch.full((3, 30, 60), 9, dtype=torch.uint8), 16)
        >>> canvas.shape, extent, canvas[0, 8:].sum().item()
        (torch.Size([3, 16, 16]), (8, 16), 0)
    """
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(f"fit_in_canvas expects a uint8 (C, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    c, h, w = image.shape
    nh, nw = fitted_size(h, w, size)
    if (nh, nw) != (h, w):
        batch = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)
        if image.device.type == "cpu":
            image = F.interpolate(batch, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
        else:
            resized = F.interpolate(batch.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            image = resized.round_().clamp_(0, 255).to(torch.uint8)[0]
    canvas = torch.zeros(c, size, size, dtype=torch.uint8, device=image.device)
    canvas[:, :nh, :nw] = image
    return canvas, (nh, nw)
