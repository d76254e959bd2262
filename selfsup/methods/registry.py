"""The method registry: ``selfsup.methods.get("byol", backbone=...)``."""
from __future__ import annotations

from selfsup._registry import Registry
from selfsup.methods.base import Method

METHODS: Registry[Method] = Registry("method")
