"""Trainers of the method: MTCT (multi-task cross-training) and its loss."""

from .losses import mtct_loss
from .mtct import MTCTConfig, MTCTDataCollator, MTCTTrainer, prepare_mtct_data

__all__ = ["MTCTConfig", "MTCTTrainer", "MTCTDataCollator", "prepare_mtct_data", "mtct_loss"]
