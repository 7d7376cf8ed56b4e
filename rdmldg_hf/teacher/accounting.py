"""Tokens, estimated cost and acceptance statistics of a teacher run -> the build summary.

Prices are list prices in USD per million tokens (input, output) at the time of writing;
pass ``price=`` (``--teacher-price IN,OUT``) when they change or for another model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from .rejection import Decision

__all__ = ["PRICES", "BATCH_DISCOUNT", "price_for", "estimate_cost", "Tally", "AcceptanceStats"]

PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}
BATCH_DISCOUNT = 0.5  # the Batch API's price relative to the synchronous API


def price_for(
    model: str, override: tuple[float, float] | None = None, table: Mapping[str, tuple[float, float]] = PRICES
) -> tuple[float, float] | None:
    """(input, output) USD per million tokens of ``model``: the override, the table, or None."""
    if override is not None:
        return override
    return table.get(model)


def estimate_cost(
    prompt_tokens: int,
    completion_tokens: int,
    price: tuple[float, float] | None,
    batch_prompt_tokens: int = 0,
    batch_completion_tokens: int = 0,
    batch_factor: float = BATCH_DISCOUNT,
) -> float | None:
    """USD for the given tokens (those through the Batch API, included in the totals, at
    ``batch_factor`` times the price), or None when the price is unknown."""
    if price is None:
        return None
    full = (prompt_tokens - batch_prompt_tokens) * price[0] + (completion_tokens - batch_completion_tokens) * price[1]
    batch = (batch_prompt_tokens * price[0] + batch_completion_tokens * price[1]) * batch_factor
    return round((full + batch) / 1e6, 6)


@dataclass
class Tally:
    """Counts of one group of images (a domain, a class, or all)."""

    images: int = 0
    accepted: int = 0
    no_chain: int = 0
    failed: int = 0
    candidates: int = 0
    valid: int = 0
    correct: int = 0

    def add(self, decision: Decision, failed: bool) -> None:
        record = decision.record
        self.images += 1
        self.accepted += decision.accepted
        self.failed += failed
        self.no_chain += not decision.accepted and not failed
        self.candidates += record.num_candidates or 0
        self.valid += record.num_valid or 0
        self.correct += record.num_correct or 0

    def as_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["acceptance_rate"] = round(self.accepted / self.images, 4) if self.images else None
        return out


@dataclass
class AcceptanceStats:
    """Acceptance per domain, per class and overall, and rejection reasons by category."""

    class_names: tuple[str, ...]
    total: Tally = field(default_factory=Tally)
    per_domain: dict[str, Tally] = field(default_factory=dict)
    per_class: dict[str, Tally] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)

    def add(self, domain: str, label: int, decision: Decision, failed: bool) -> None:
        """Count one image's final state (``failed``: its requests gave up in this run)."""
        self.total.add(decision, failed)
        self.per_domain.setdefault(domain, Tally()).add(decision, failed)
        self.per_class.setdefault(self.class_names[label], Tally()).add(decision, failed)
        self.reasons.update(decision.categories)
        if failed:
            self.reasons["request failed"] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.total.as_dict(),
            "rejection_reasons": dict(sorted(self.reasons.items())),
            "per_domain": {name: tally.as_dict() for name, tally in sorted(self.per_domain.items())},
            "per_class": {name: tally.as_dict() for name, tally in sorted(self.per_class.items())},
        }
