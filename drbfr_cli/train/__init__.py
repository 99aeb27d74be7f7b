"""Training: the shared loop (accelerate, checkpoints, EMA, resume) and, per stage, a TrainTask."""

from drbfr_cli.train.checkpoint import load_modules
from drbfr_cli.train.loop import LoopConfig, LossOutput, TrainResult, TrainTask, train

__all__ = ["LoopConfig", "LossOutput", "TrainResult", "TrainTask", "load_modules", "train"]
