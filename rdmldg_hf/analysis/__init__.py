"""Analyses of the paper's figures: class-token probabilities, token-probability distributions,
entropy reduction between checkpoints, and loss curves (``rdmldg analyze``).

Heavy parts (models, matplotlib) are imported by the submodules that need them.
"""

from .entropy import entropy_changes, marked_examples, stage_changes, token_type, top_reductions
from .losses import read_run_logs
from .probabilities import CONDITIONS, class_probabilities, force_conclusion, self_chains
from .teacher_forcing import ForcedExample, TokenScores, answer_token_stats, teacher_force, token_pieces

__all__ = [
    "CONDITIONS",
    "ForcedExample",
    "TokenScores",
    "answer_token_stats",
    "teacher_force",
    "token_pieces",
    "class_probabilities",
    "force_conclusion",
    "self_chains",
    "entropy_changes",
    "stage_changes",
    "top_reductions",
    "marked_examples",
    "token_type",
    "read_run_logs",
]
