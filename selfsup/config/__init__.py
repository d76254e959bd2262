"""Typed run configuration: YAML recipes, flags and dotted overrides, all checked up front.

Example:
    >>> cfg = selfsup.config.load("fashion_mnist/simclr", overrides=["epochs=10"])
    >>> cfg.method["name"]
    'simclr'
"""
from selfsup.config.load import from_dict, load, packaged_recipes, read_yaml, to_dict, validate
from selfsup.config.schema import DataConfig, MonitorConfig, OptimizerConfig, TrainConfig  # noqa: F401

__all__ = [
    "DataConfig", "MonitorConfig", "OptimizerConfig", "TrainConfig", "from_dict", "load",
    "packaged_recipes", "read_yaml", "to_dict", "validate",
]
