"""Features of a frozen encoder, computed once per (checkpoint, data, split, transform) and kept on disk."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor
from torch.utils.data import Dataset

from selfsup._files import publish
from selfsup.errors import ConfigError
from selfsup.eval.features import extract_features

log = logging.getLogger(__name__)


def cache_key_digest(key: dict[str, Any]) -> str:
    """The SHA-256 (hex) of ``key`` as canonical JSON: the name of its cache file.

    Example:
        >>> cache_key_digest({"data": "digits", "split": "test"}) == cache_key_digest({"split": "test", "data": "digits"})
        True
    """
    try:
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"A feature cache key must be JSON data (str, numbers, lists, dicts): {err}") from err
    return hashlib.sha256(text.encode()).hexdigest()


def cached_features(
    encoder: Callable[[Tensor], Tensor],
    dataset: Dataset,
    transform: Callable[[Tensor], Tensor],
    *,
    cache_dir: str | Path | None,
    key: dict[str, Any],
    **extract_options: Any,
) -> tuple[Tensor, Tensor]:
    """:func:`~selfsup.eval.extract_features`, stored in ``cache_dir`` and reused while ``key`` matches.

    ``key`` must describe everything that changes the features and that the cache cannot see: the
    weights (e.g. the checkpoint file's SHA-256), the data set name, root and split, and the
    transform's settings. Added to it automatically: the data set's length, a digest of
    ``indices`` (when given) and the autocast dtype. The file is
    ``<cache_dir>/<sha256 of the key>.safetensors`` holding ``features`` and ``labels``, with the
    whole key in its metadata; a file whose stored key differs, or that cannot be read, is
    recomputed and replaced (written atomically). ``cache_dir=None`` computes without caching.

    Example:
        >>> import os, tempfile
        >>> test_set, cache_dir = selfsup.data.get("digits", split="test"), tempfile.mkdtemp()
        >>> transform = selfsup.augment.EvalTransform(8, test_set.mean, test_set.std)
        >>> key = {"checkpoint": "raw pixels", "data": "digits", "split": "test", "size": 8}  # checkpoint: its SHA-256
        >>> x, y = cached_features(nn.Flatten(), test_set, transform, cache_dir=cache_dir, key=key)
        >>> x.shape, len(os.listdir(cache_dir))  # a second call with this key reads the file
        (torch.Size([450, 64]), 1)
    """
    if cache_dir is None:
        return extract_features(encoder, dataset, transform, **extract_options)
    full_key = dict(key)
    indices = extract_options.get("indices")
    full_key["_len"] = len(dataset)  # type: ignore[arg-type]
    full_key["_indices"] = None if indices is None else _indices_digest(indices)
    full_key["_autocast"] = str(extract_options.get("autocast_dtype"))
    digest = cache_key_digest(full_key)
    stored_key = json.dumps(full_key, sort_keys=True, separators=(",", ":"))
    path = Path(cache_dir) / f"{digest}.safetensors"
    if path.is_file():
        found = _read(path, stored_key)
        if found is not None:
            return found
    features, labels = extract_features(encoder, dataset, transform, **extract_options)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({"features": features.contiguous(), "labels": labels.contiguous()}, str(tmp),
              metadata={"key": stored_key})
    publish(tmp, path)
    return features, labels


def _read(path: Path, stored_key: str) -> tuple[Tensor, Tensor] | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("key") != stored_key:
            log.warning("Feature cache %s was written for another key; recomputing it.", path)
            return None
        tensors = load_file(str(path))
        return tensors["features"], tensors["labels"]
    except (SafetensorError, OSError, KeyError, RuntimeError) as err:
        log.warning("Feature cache %s cannot be read (%s); recomputing it.", path, err)
        return None


def _indices_digest(indices: Any) -> str:
    values = torch.as_tensor([int(i) for i in indices] if not isinstance(indices, Tensor) else indices)
    return hashlib.sha256(values.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()
