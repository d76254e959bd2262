"""The training loop on PyTorch Lightning: one module that wraps any method, plus its parts.

Example:
    >>> import os, tempfile, lightning as L
    >>> from selfsup.engine import EpochCheckpoint, OptimizerConfig, SelfSupervisedModule
    >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
    >>> method = selfsup.methods.get("simclr", backbone=backbone, proj_output_dim=16)
    >>> views = selfsup.augment.get("simclr", size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> data = torch.utils.data.TensorDataset(torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8),
    ...                                       torch.randint(0, 10, (16,)), torch.arange(16))  # images, labels, ids
    >>> module = SelfSupervisedModule(method, views, OptimizerConfig(name="lars"), batch_size=8,
    ...                               steps_per_epoch=2, epochs=1, num_classes=10)
    >>> ckpts = tempfile.mkdtemp()
    >>> trainer = L.Trainer(max_epochs=1, callbacks=[EpochCheckpoint(ckpts)], accelerator="cpu", logger=False,
    ...                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    >>> trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    >>> os.listdir(ckpts)
    ['last.ckpt']
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
