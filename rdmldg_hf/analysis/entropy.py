"""Entropy reduction between two checkpoints on the same chains (paper Fig. 4B/C).

Both checkpoints score the same chain tokens by teacher forcing; for every token the
reduction is ``H_before - H_after`` (nats). Tokens are grouped by *type* (their text,
surrounding spaces removed) and by the chain *stage* they lie in. :func:`top_reductions`
ranks types by mean reduction; :func:`marked_examples` shows where a type occurs, the
token marked in its context.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..chains import STAGES
from .teacher_forcing import TokenScores

__all__ = [
    "TAG",
    "END",
    "token_type",
    "token_stages",
    "TypeChange",
    "entropy_changes",
    "top_reductions",
    "stage_changes",
    "marked_examples",
]

TAG, END = "tag", "end"
_STAGE_SPAN = re.compile(r"<\s*(" + "|".join(STAGES) + r")\s*>(.*?)<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL)
_WHITESPACE_NAMES = {"\n": "\\n", " ": "␣", "\t": "\\t"}


def token_type(piece: str) -> str:
    """The type of a token: its text without surrounding whitespace; whitespace tokens are named (``\\n``)."""
    stripped = piece.strip()
    if stripped:
        return stripped
    return "".join(_WHITESPACE_NAMES.get(c, repr(c)[1:-1]) for c in piece) or "<empty>"


def token_stages(score: TokenScores) -> list[str]:
    """The stage of each token (``SUMMARY`` ... ``CONCLUSION``).

    ``tag`` marks tag and newline tokens, ``end`` the tokens after the chain.
    """
    spans = [(m.start(2), m.end(2), m.group(1).upper()) for m in _STAGE_SPAN.finditer(score.text)]
    last = max((m.end() for m in _STAGE_SPAN.finditer(score.text)), default=0)
    stages = []
    for start, end in score.offsets:
        inside = [stage for s, e, stage in spans if start < e and end > s]
        stages.append(inside[0] if inside else (END if start >= last and last else TAG))
    return stages


@dataclass(frozen=True)
class TypeChange:
    """Mean entropy of one group of tokens before and after, and how many tokens it has."""

    group: str
    count: int
    before: float
    after: float

    @property
    def reduction(self) -> float:
        return self.before - self.after

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reduction": self.reduction}


def _check_same(before: Sequence[TokenScores], after: Sequence[TokenScores]) -> None:
    if len(before) != len(after):
        raise ValueError(f"{len(before)} chains scored before but {len(after)} after; score the same chains.")
    for i, (b, a) in enumerate(zip(before, after)):
        if b.token_ids != a.token_ids:
            raise ValueError(
                f"Chain {i} has different tokens before and after; both checkpoints must share the tokenizer."
            )


def _grouped(
    before: Sequence[TokenScores], after: Sequence[TokenScores], keys: Sequence[Sequence[str]]
) -> list[TypeChange]:
    sums: dict[str, list[float]] = {}
    for b, a, row_keys in zip(before, after, keys):
        for key, hb, ha in zip(row_keys, b.entropies, a.entropies):
            total = sums.setdefault(key, [0, 0.0, 0.0])
            total[0] += 1
            total[1] += hb
            total[2] += ha
    return [TypeChange(key, int(n), hb / n, ha / n) for key, (n, hb, ha) in sums.items()]


def entropy_changes(before: Sequence[TokenScores], after: Sequence[TokenScores]) -> list[TypeChange]:
    """Mean entropy before/after per token type, over every occurrence in the chains."""
    _check_same(before, after)
    return _grouped(before, after, [[token_type(p) for p in b.tokens] for b in before])


def top_reductions(changes: Sequence[TypeChange], k: int = 15, min_count: int = 1) -> list[TypeChange]:
    """The ``k`` types with the largest mean entropy reduction (ties: more occurrences, then text)."""
    eligible = [c for c in changes if c.count >= min_count]
    return sorted(eligible, key=lambda c: (-c.reduction, -c.count, c.group))[:k]


def stage_changes(before: Sequence[TokenScores], after: Sequence[TokenScores]) -> list[TypeChange]:
    """Mean entropy before/after per chain stage (stage order, then tags, then the end token)."""
    _check_same(before, after)
    changes = {c.group: c for c in _grouped(before, after, [token_stages(b) for b in before])}
    order = list(STAGES) + [TAG, END]
    return [changes[name] for name in order if name in changes]


def marked_examples(
    group: str,
    before: Sequence[TokenScores],
    after: Sequence[TokenScores],
    max_examples: int = 3,
    window: int = 60,
) -> list[str]:
    """Up to ``max_examples`` contexts of a token type, the token marked ``[[...]]`` with its entropies.

    Each line: ``chain <i>: ...text [[token]] text... (H 2.31 -> 0.12)``, ``window`` characters either side.
    """
    lines: list[str] = []
    for i, (b, a) in enumerate(zip(before, after)):
        for j, piece in enumerate(b.tokens):
            if token_type(piece) != group:
                continue
            start, end = b.offsets[j]
            left = b.text[max(0, start - window) : start].replace("\n", " ")
            right = b.text[end : end + window].replace("\n", " ")
            lines.append(
                f"chain {i}: …{left}[[{b.text[start:end]}]]{right}… "
                f"(H {b.entropies[j]:.3f} -> {a.entropies[j]:.3f} nats)"
            )
            if len(lines) >= max_examples:
                return lines
    return lines
