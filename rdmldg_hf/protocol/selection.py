"""Training-domain validation: the model-selection rule and a selector that keeps the best checkpoint's weights.

DomainBed selects on the unweighted mean of the training domains' validation (out-part)
accuracies (``mean``, the default); ``pooled`` is the accuracy over all validation images,
which weighs large domains more (they differ on TerraIncognita or DomainNet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch

from .choices import check_choice

__all__ = [
    "SELECTION_RULES",
    "DEFAULT_SELECTION_RULE",
    "check_selection_rule",
    "selection_score",
    "CheckpointSelector",
]

SELECTION_RULES: dict[str, str] = {"mean": "mean_accuracy", "pooled": "accuracy"}
DEFAULT_SELECTION_RULE = "mean"


def check_selection_rule(rule: str) -> str:
    """The rule, if valid.

    Raises:
        ValueError: naming the value and the valid rules.
    """
    return check_choice(rule, SELECTION_RULES, "selection rule")


def selection_score(metrics: Mapping[str, Any], rule: str = DEFAULT_SELECTION_RULE) -> float:
    """The validation score of ``rule`` from :func:`rdmldg_hf.evaluation.dg_metric.compute_dg_metrics`'s metrics."""
    return float(metrics[SELECTION_RULES[check_selection_rule(rule)]])


class CheckpointSelector:
    """Scores the model at each checkpoint and keeps a copy of its trainable weights while it is the best.

    The first checkpoint with the highest score wins (later ties do not replace it), as DomainBed's
    ``argmax`` over a run's records in step order; :meth:`restore` puts its weights back. Without a
    ``score`` function every :meth:`check` gives its score (e.g. the training-domain validation of a
    per-checkpoint record, :mod:`rdmldg_hf.experiments.records`).
    """

    def __init__(self, score: Callable[[torch.nn.Module], float] | None = None):
        self.score = score
        self.best: float = -1.0
        self.best_at: str | None = None
        self.history: list[dict[str, Any]] = []
        self._weights: dict[str, torch.Tensor] | None = None

    def check(self, model: torch.nn.Module, where: str, score: float | None = None) -> float:
        """Score ``model`` as checkpoint ``where`` (or take ``score``, already measured on it); returns the score."""
        value = self.score(model) if score is None else float(score)
        self.history.append({"checkpoint": where, "validation_accuracy": value})
        if value > self.best:
            self.best, self.best_at = value, where
            self._weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return value

    def restore(self, model: torch.nn.Module) -> None:
        """Copy the best checkpoint's trainable weights into ``model`` (nothing when no checkpoint was scored)."""
        import torch

        if self._weights is None:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self._weights.items():
                params[name].copy_(value)
