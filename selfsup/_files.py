"""Writing files others on a shared machine can read.

safetensors creates its files with mode 0600 (owner only), unlike ``torch.save`` and ``open``,
which follow the umask. A backbone export or a feature cache written on a shared cluster must be
readable by the group like every other file of the run, so each is given the mode the umask allows
before it replaces its destination.

Example:
    >>> save_file(state, "backbone.safetensors.tmp")
    >>> publish(Path("backbone.safetensors.tmp"), Path("backbone.safetensors"))  # mode 0644 under umask 022
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
