"""The training engine: run config, one training loop, checkpoints, precision, DDP."""

from .checkpoint import CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint
from .config import ConfigError, DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from .distributed import DistInfo
from .trainer import OutOfMemory, RunFolderInUse, TrainingInterrupted, evaluate_loss, fit, lr_lambda

__all__ = [
    "CheckpointError", "CheckpointManager", "load_checkpoint", "save_checkpoint", "ConfigError",
    "DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "TrainConfig", "DistInfo",
    "OutOfMemory", "RunFolderInUse", "TrainingInterrupted", "evaluate_loss", "fit", "lr_lambda",
]
