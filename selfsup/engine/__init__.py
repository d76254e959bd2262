"""The training loop on PyTorch Lightning: one module that wraps any method, plus its parts.

Example:
    >>> module = SelfSupervisedModule(method, views, OptimizerConfig(name="lars"), batch_size=512,
    ...                               steps_per_epoch=97, epochs=100, num_classes=10)
    >>> L.Trainer(max_epochs=100, callbacks=[EpochCheckpoint("ckpts")]).fit(module, loader)
"""
from selfsup.engine.checkpoint import EpochCheckpoint
from selfsup.engine.lars import LARS
from selfsup.engine.logger import JsonlLogger, read_metrics
from selfsup.engine.module import SelfSupervisedModule
from selfsup.engine.monitor import EvaluationMonitor, MonitorConfig
from selfsup.engine.optim import OptimizerConfig, build_optimizer
from selfsup.engine.progress import RunProgressBar
from selfsup.engine.schedule import scaled_lr, warmup_cosine

__all__ = [
    "LARS", "EpochCheckpoint", "EvaluationMonitor", "JsonlLogger", "MonitorConfig", "OptimizerConfig",
    "RunProgressBar", "SelfSupervisedModule", "build_optimizer", "read_metrics", "scaled_lr", "warmup_cosine",
]
