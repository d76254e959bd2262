"""Result files of the evaluation protocols: one JSON file per run, never overwritten.

Each file records what is needed to trust and repeat the number: the protocol and its settings, the
checkpoint (path and SHA-256), the data (name, root, splits and a hash of each split's samples),
the seed, the library version and the time it was written.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from selfsup.errors import ConfigError, DataError

REQUIRED_DATA_KEYS = ("name", "root", "train_split", "test_split", "train_hash", "test_hash")
_MAX_COPIES = 10_000


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; remembered while the file's size and modification time stay the same.

    Example:
        >>> import tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "backbone.safetensors"; _ = path.write_bytes(b"abc")
        >>> file_sha256(path)[:12]
        'ba7816bf8f01'
    """
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as err:
        raise DataError(f"Cannot read {path} to hash it: {err}") from err
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_result(
    path: str | Path,
    protocol: str,
    scores: dict[str, Any],
    *,
    checkpoint: str | Path,
    data: dict[str, Any],
    settings: dict[str, Any],
    seed: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one protocol's result as JSON and return the file's path.

    ``path`` is a folder (the file is named ``<protocol>-<data>-<test split>.json``, or
    ``...-1.json``, ``-2``, ... when that name is taken) or a ``.json`` file name, which must not
    exist yet: a previous result is never overwritten. ``data`` needs the keys ``name``, ``root``,
    ``train_split``, ``test_split``, ``train_hash`` and ``test_hash`` (see
    :func:`selfsup.eval.split_hash`) and may hold more (e.g. ``pretrained_on`` for transfer).
    ``checkpoint`` is hashed (SHA-256) into the record. ``extra`` adds top-level entries (e.g. the
    semi-supervised label subset).

    Example:
        >>> import tempfile; from selfsup.eval import split_hash
        >>> run = tempfile.mkdtemp()  # a run folder with its exported backbone
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> checkpoint = selfsup.backbones.export_backbone(backbone, run + "/backbone.safetensors")
        >>> train_set, test_set = selfsup.data.get("digits", split="train"), selfsup.data.get("digits", split="test")
        >>> data_record = {"name": "digits", "root": None, "train_split": "train", "test_split": "test",
        ...                "train_hash": split_hash(train_set), "test_hash": split_hash(test_set)}
        >>> out = write_result(run + "/eval", "linear", {"top1": 91.2}, checkpoint=checkpoint,
        ...                    data=data_record, settings={"solver": "lbfgs"}, seed=0)
        >>> out.name, read_result(out)["scores"]
        ('linear-digits-test.json', {'top1': 91.2})
    """
    from selfsup import __version__

    missing = [key for key in REQUIRED_DATA_KEYS if key not in data]
    if missing:
        raise ConfigError(f"write_result: the data record lacks {', '.join(missing)} (needs {', '.join(REQUIRED_DATA_KEYS)}).")
    checkpoint = Path(checkpoint)
    record: dict[str, Any] = {
        "protocol": protocol,
        "scores": scores,
        "checkpoint": {"path": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint)},
        "data": data,
        "settings": settings,
        "seed": int(seed),
        "selfsup_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    try:
        text = json.dumps(record, indent=2, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"write_result: the {protocol} result holds something that is not JSON data: {err}") from err
    path = Path(path)
    if path.suffix == ".json":
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(path, text, exists_message=f"Result file {path} already exists; results are never overwritten. "
                "Choose another file name or pass a folder.")
        return path
    path.mkdir(parents=True, exist_ok=True)
    stem = "-".join(_slug(part) for part in (protocol, str(data["name"]), str(data["test_split"])))
    for copy in range(_MAX_COPIES):
        target = path / (f"{stem}.json" if copy == 0 else f"{stem}-{copy}.json")
        try:
            _create(target, text)
            return target
        except FileExistsError:
            continue
    raise DataError(f"{path} already holds {_MAX_COPIES} results named {stem}*.json; clean it up or pass another --out.")


def read_result(path: str | Path) -> dict[str, Any]:
    """A result file written by :func:`write_result`, as a dict.

    Example:
        >>> import tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "linear-cifar10-test.json"  # as write_result names it
        >>> _ = path.write_text('{"protocol": "linear", "scores": {"top1": 91.2, "top5": 99.6}}')
        >>> read_result(path)["scores"]["top1"]
        91.2
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        raise DataError(f"Cannot read result file {path}: {err}") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not a JSON file: {err}") from err
    if not isinstance(record, dict):
        raise DataError(f"{path} does not hold a result (a JSON object); found {type(record).__name__}.")
    return record


def read_subset(path: str | Path) -> list[int]:
    """The label-subset indices saved in a semi-supervised result file (or a plain JSON list of ints).

    Example:
        >>> import tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "semisup-cifar10-test.json"
        >>> _ = path.write_text('{"protocol": "semisup", "subset": {"fraction": 0.01, "indices": [3, 14, 15]}}')
        >>> read_subset(path)
        [3, 14, 15]
    """
    path = Path(path)
    try:
        found: Any = json.loads(path.read_text())
    except OSError as err:
        raise DataError(f"Cannot read subset file {path}: {err}") from err
    except json.JSONDecodeError as err:
        raise DataError(f"Subset file {path} is not JSON: {err}") from err
    if isinstance(found, dict):
        found = (found.get("subset") or {}).get("indices") if isinstance(found.get("subset"), dict) else None
    if not isinstance(found, list) or not found or not all(isinstance(i, int) and not isinstance(i, bool) for i in found):
        raise DataError(
            f"Subset file {path} holds no subset: expected a semisup result (with subset.indices) or a JSON list "
            "of sample indices (non-empty, integers)."
        )
    return found


def _create(path: Path, text: str, exists_message: str | None = None) -> None:
    try:
        with open(path, "x") as handle:
            handle.write(text + "\n")
    except FileExistsError:
        if exists_message is not None:
            raise DataError(exists_message) from None
        raise


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+]+", "_", text).strip("_") or "x"
