"""Rejection sampling: the stored replies of an image -> its chain columns.

Rounds of K candidates are judged in order. A candidate is *valid* when it passes the
five-stage check of :mod:`rdmldg_hf.chains` (which also rejects over-long chains and, as "special token",
chains holding a model's control tokens); a valid candidate whose conclusion maps to
exactly one class is *correct* when that class is the label, and the first correct one
is accepted, rendered in the canonical format with the class's own name as conclusion
("Dog." -> "dog", "television" -> "tv"). This comparison is the only place the label is
used, after generation.
The decision is a pure function of the replies, so a resumed build decides exactly as an
uninterrupted one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Sequence

from ..benchmarks import Benchmark
from ..chains import ClassMatch, check_chain, normalize_answer, resolve_conclusion
from ..data.schema import ChainRecord
from ..prompts import PROMPT_VERSION
from .store import Reply

__all__ = ["Verdict", "Decision", "judge_candidate", "decide", "REASON_CATEGORIES"]

REASON_CATEGORIES = (
    "empty reply",
    "invalid format",
    "special token",
    "no class",
    "several classes",
    "wrong class",
    "no choices",
    "request failed",
)


@dataclass(frozen=True)
class Verdict:
    """What rejection sampling thinks of one candidate."""

    valid: bool
    class_index: int | None
    correct: bool
    chain_text: str | None = None
    reason: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class Decision:
    """The state of one image after its stored replies.

    ``final`` is True when a chain was accepted or every round was used; otherwise
    ``next_round`` / ``next_start`` name the candidates to ask for next.
    """

    record: ChainRecord
    final: bool
    accepted: bool
    next_round: int | None = None
    next_start: int = 0
    categories: Counter = field(default_factory=Counter)
    rounds: int = 0


def judge_candidate(
    text: str | None,
    benchmark: Benchmark,
    label: int,
    finish_reason: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Verdict:
    """Check one candidate's format, map its conclusion to a class, compare with the label.

    ``class_names`` saves recomputing ``benchmark.class_names`` per candidate.
    """
    names = benchmark.class_names if class_names is None else class_names
    if not text or not text.strip():
        return Verdict(False, None, False, reason="empty reply", category="empty reply")
    check = check_chain(text)
    if not check.valid or check.chain is None:
        truncated = " (cut at max tokens)" if finish_reason == "length" else ""
        category = "special token" if check.special_tokens else "invalid format"
        return Verdict(False, None, False, reason="; ".join(check.problems) + truncated, category=category)
    index = _exact_classes(tuple(names)).get(normalize_answer(check.chain.conclusion))
    match = (
        ClassMatch(index)
        if index is not None
        else resolve_conclusion(check.chain.conclusion, names, benchmark.class_aliases)
    )
    if match.index is None:
        category = "several classes" if "several classes" in (match.reason or "") else "no class"
        return Verdict(True, None, False, reason=match.reason, category=category)
    if match.index != label:
        return Verdict(
            True,
            match.index,
            False,
            reason=f"concludes {names[match.index]!r}, not the label",
            category="wrong class",
        )
    canonical = replace(check.chain, conclusion=names[match.index])
    return Verdict(True, match.index, True, chain_text=canonical.render())


@lru_cache(maxsize=32)
def _exact_classes(class_names: tuple[str, ...]) -> dict[str, int]:
    """Normalised class name -> index, for names no other class normalises to (the first,
    fast step of :func:`resolve_conclusion`; anything else goes through it)."""
    counts = Counter(normalize_answer(name) for name in class_names)
    return {normalize_answer(name): i for i, name in enumerate(class_names) if counts[normalize_answer(name)] == 1}


def _rounds(replies: Sequence[Reply]) -> dict[int, list[Reply]]:
    by_round: dict[int, list[Reply]] = {}
    seen: set[str] = set()
    for reply in replies:
        if reply.custom_id in seen:
            continue
        seen.add(reply.custom_id)
        by_round.setdefault(reply.round, []).append(reply)
    for parts in by_round.values():
        parts.sort(key=lambda reply: reply.start)
    return by_round


def decide(
    replies: Sequence[Reply],
    benchmark: Benchmark,
    label: int,
    candidates: int,
    max_rounds: int,
    source: str,
) -> Decision:
    """Judge the complete rounds of an image, in order, until one accepts a candidate.

    Args:
        replies: the image's stored replies (any order; duplicates ignored).
        benchmark: gives the class names and aliases conclusions are matched against.
        label: the image's class index (used only to compare conclusions).
        candidates: K, candidates per round.
        max_rounds: further rounds after the first.
        source: the teacher model id written as ``chain_source``.
    """
    by_round = _rounds(replies)
    names = benchmark.class_names
    num = valid = correct = 0
    reasons: list[str] = []
    categories: Counter = Counter()
    accepted: str | None = None
    rounds_done = 0
    next_round: int | None = None
    next_start = 0
    for round_index in range(max_rounds + 1):
        parts = by_round.get(round_index, [])
        covered = 0
        for part in parts:
            if part.start != covered:
                break
            covered += part.covered
        if covered < candidates:
            next_round, next_start = round_index, covered
            break
        rounds_done += 1
        for part in parts:
            if not part.texts:
                reasons.append(f"round {round_index}: reply had no choices (asked for {part.n})")
                categories["no choices"] += 1
            for offset, text in enumerate(part.texts):
                finish = part.finish_reasons[offset] if offset < len(part.finish_reasons) else None
                verdict = judge_candidate(text, benchmark, label, finish, names)
                num += 1
                valid += verdict.valid
                correct += verdict.correct
                if verdict.correct:
                    accepted = accepted or verdict.chain_text
                else:
                    reasons.append(f"round {round_index} candidate {part.start + offset}: {verdict.reason}")
                    categories[verdict.category] += 1
        if accepted is not None:
            break
    final = accepted is not None or next_round is None
    record = ChainRecord(
        reasoning=accepted,
        chain_source=source if accepted is not None else None,
        prompt_version=PROMPT_VERSION,
        num_candidates=num,
        num_valid=valid,
        num_correct=correct,
        rejection_reasons=tuple(reasons),
    )
    return Decision(
        record=record,
        final=final,
        accepted=accepted is not None,
        next_round=None if final else next_round,
        next_start=next_start,
        categories=categories,
        rounds=rounds_done,
    )
