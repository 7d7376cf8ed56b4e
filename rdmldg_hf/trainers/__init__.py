"""Trainers of the method: MTCT (multi-task cross-training), its loss, and SARR (self-aligned rounds)."""

from .losses import mtct_loss
from .mtct import MTCTDataCollator, MTCTTrainer, prepare_mtct_data
from .mtct_config import MTCTConfig
from .sarr import SARRTrainer
from .sarr_config import SARRConfig

__all__ = [
    "MTCTConfig",
    "MTCTTrainer",
    "MTCTDataCollator",
    "prepare_mtct_data",
    "mtct_loss",
    "SARRConfig",
    "SARRTrainer",
]
