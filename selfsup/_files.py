"""Writing files others on a shared machine can read.

safetensors creates its files with mode 0600 (owner only), unlike ``torch.save`` and ``open``,
which follow the umask. A backbone export or a feature cache written on a shared cluster must be
readable by the group like every other file of the run, so each is given the mode the umask allows
before it replaces its destination.

Example:
    >>> import tempfile; from pathlib import Path
    >>> from safetensors.torch import save_file
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_file({"w": torch.zeros(2)}, str(folder / "backbone.safetensors.tmp"))  # mode 0600
    >>> path = publish(folder / "backbone.safetensors.tmp", folder / "backbone.safetensors")
    >>> path.stat().st_mode & 0o777 == 0o666 & ~umask()  # 0644 under umask 022
    True
"""
from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def publish(tmp: Path, path: Path) -> Path:
    """Give ``tmp`` the mode a newly created file gets under the umask (``0666 & ~umask``), then
    atomically replace ``path`` with it."""
    os.chmod(tmp, 0o666 & ~umask())
    tmp.replace(path)
    return path
