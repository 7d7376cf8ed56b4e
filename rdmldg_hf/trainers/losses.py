"""The MTCT loss (RD-MLDG, arXiv 2602.23777) from per-token log-probabilities, and its logged parts.

For a global batch of B units (images, in paired mode) with classification rows c and
reasoning rows r of T_r answer tokens::

    L = (1/B) * [ w_cls * sum_c sum_t NLL_ct  +  w_reason * sum_r (1/T_r) * sum_t NLL_rt ]

"Answer tokens" are the completion tokens (the answer text and the end-of-turn token that
closes it); prompt, image and padding tokens carry label -100 and never count. With
``normalization="per_token"`` the reasoning sums are divided by the batch's mean chain
length (sum of T_r / number of reasoning rows) instead of each chain's own T_r, so every
chain token weighs the same. An image without a chain has only its classification row:
it still counts once in B, so the reasoning term is averaged over all images, as if the
missing chain contributed zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..data.training_rows import CLASSIFICATION, REASONING

__all__ = ["NORMALIZATIONS", "MTCTLoss", "mtct_loss", "batch_normalizer", "loss_metrics", "NamedSums"]

NORMALIZATIONS: tuple[str, ...] = ("per_sequence", "per_token")


@dataclass
class MTCTLoss:
    """The loss and its per-row parts (row NLL sums, answer-token counts, task masks)."""

    loss: torch.Tensor
    row_nll: torch.Tensor
    row_tokens: torch.Tensor
    is_cls: torch.Tensor
    is_reasoning: torch.Tensor

    def stats(
        self,
        is_top1: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
        entropy: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Detached sums for logging, by name (the inputs of :func:`loss_metrics`).

        ``is_top1`` marks answer tokens predicted right and ``entropy`` is the per-token entropy, both
        shaped like ``label_mask``; without them the correct-token and entropy sums are zero.
        """
        with torch.no_grad():
            nll, tokens = self.row_nll.detach().float(), self.row_tokens.float()
            cls, rea = self.is_cls.float(), self.is_reasoning.float()
            zero = torch.zeros((), device=nll.device)
            correct = torch.zeros_like(tokens)
            if is_top1 is not None:
                correct = (is_top1.bool() & label_mask.bool()).sum(-1).float()
            return {
                "cls_nll": (nll * cls).sum(),
                "cls_rows": cls.sum(),
                "reasoning_nll": (nll / tokens.clamp(min=1) * rea).sum(),  # per-token NLL of each chain
                "reasoning_rows": rea.sum(),
                "cls_correct": (correct * cls).sum(),
                "cls_tokens": (tokens * cls).sum(),
                "reasoning_correct": (correct * rea).sum(),
                "reasoning_tokens": (tokens * rea).sum(),
                "entropy": (entropy * label_mask).sum().float() if entropy is not None else zero,
            }


def loss_metrics(sums: Mapping[str, float]) -> dict[str, float]:
    """The logged metrics from :meth:`MTCTLoss.stats` sums (over steps and processes).

    ``cls_loss`` is the mean NLL of a classification answer, ``reasoning_loss`` the mean per-token
    NLL of a chain; token accuracies and the entropy are over answer tokens. A metric whose rows
    are absent is left out.
    """
    answer_tokens = sums["cls_tokens"] + sums["reasoning_tokens"]
    metrics = {
        "cls_loss": _ratio(sums["cls_nll"], sums["cls_rows"]),
        "reasoning_loss": _ratio(sums["reasoning_nll"], sums["reasoning_rows"]),
        "cls_token_accuracy": _ratio(sums["cls_correct"], sums["cls_tokens"]),
        "reasoning_token_accuracy": _ratio(sums["reasoning_correct"], sums["reasoning_tokens"]),
        "mean_token_accuracy": (sums["cls_correct"] + sums["reasoning_correct"]) / max(answer_tokens, 1),
        "entropy": sums["entropy"] / max(answer_tokens, 1),
    }
    return {name: value for name, value in metrics.items() if value is not None}


def _ratio(total: float, count: float) -> float | None:
    return total / count if count else None


class NamedSums:
    """Named scalar sums accumulated on the device between logging steps, read back in one sync."""

    def __init__(self) -> None:
        self._names: tuple[str, ...] = ()
        self._values: torch.Tensor | None = None

    def add(
        self, sums: Mapping[str, torch.Tensor], reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        """Add ``sums`` (each name every time); ``reduce`` (e.g. a sum over processes) sees them as one tensor."""
        names = tuple(sums)
        if self._values is not None and names != self._names:
            raise ValueError(f"Sums named {names} added to sums named {self._names}; give the same names each step.")
        device = next(iter(sums.values())).device
        values = torch.stack([sums[name].detach().float().reshape(()).to(device) for name in names])
        if reduce is not None:
            values = reduce(values)
        self._names = names
        self._values = values if self._values is None else self._values.to(values.device) + values

    def totals(self) -> dict[str, float]:
        """The sums so far, by name (empty before the first :meth:`add`)."""
        return {} if self._values is None else dict(zip(self._names, self._values.tolist()))

    def reset(self) -> None:
        """Start again from zero."""
        self._names, self._values = (), None


def batch_normalizer(task: torch.Tensor, labels: torch.Tensor, num_units: int | torch.Tensor) -> torch.Tensor:
    """[units, reasoning rows, reasoning answer tokens] of one collated batch (float).

    Counts next-token targets (``labels[:, 1:]``), as the loss does.
    """
    tokens = (labels[:, 1:] != -100).sum(-1)
    reasoning = task == REASONING
    return torch.stack(
        [
            torch.as_tensor(num_units, device=labels.device).float(),
            reasoning.sum().float(),
            (tokens * reasoning).sum().float(),
        ]
    )


def mtct_loss(
    log_probs: torch.Tensor,
    label_mask: torch.Tensor,
    task: torch.Tensor,
    normalizer: torch.Tensor,
    normalization: str = "per_sequence",
    cls_weight: float = 1.0,
    reasoning_weight: float = 1.0,
) -> MTCTLoss:
    """The MTCT loss of the rows of one (micro-)batch.

    Args:
        log_probs: ``(rows, positions)`` log-probability of each next-token label, zero where masked.
        label_mask: same shape, True on answer-token targets.
        task: ``(rows,)`` task ids (``CLASSIFICATION`` / ``REASONING``).
        normalizer: ``[B, R, T]`` of the whole optimised batch (see :func:`batch_normalizer`;
            summed over processes and accumulation steps): units, reasoning rows, reasoning tokens.
        normalization: ``"per_sequence"`` (1/T_r, the paper's) or ``"per_token"``.
        cls_weight, reasoning_weight: weights of the two terms (1:1 in the paper).

    Returns:
        :class:`MTCTLoss`: ``loss`` is this batch's share of L (sum over its rows / B).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"Unknown reasoning normalization {normalization!r}. Valid: {', '.join(NORMALIZATIONS)}.")
    mask = label_mask.bool()
    row_nll = -(log_probs * mask).sum(-1)
    row_tokens = mask.sum(-1)
    is_cls, is_reasoning = task == CLASSIFICATION, task == REASONING
    if normalization == "per_sequence":
        reasoning_denominator = row_tokens.clamp(min=1).to(row_nll.dtype)
    else:
        mean_tokens = normalizer[2] / normalizer[1].clamp(min=1)
        reasoning_denominator = mean_tokens.clamp(min=1).to(row_nll.dtype)
    terms = torch.where(is_reasoning, reasoning_weight * row_nll / reasoning_denominator, cls_weight * row_nll)
    terms = terms * (is_cls | is_reasoning)
    loss = terms.sum() / normalizer[0].clamp(min=1).to(row_nll.dtype)
    return MTCTLoss(loss, row_nll, row_tokens, is_cls, is_reasoning)
