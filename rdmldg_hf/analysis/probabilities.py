"""Class-token probabilities and all-token probability distributions (paper Fig. 3A/B, 4A, 5A/B).

* :func:`class_probabilities`: per image, the probability of the correct class's answer
  tokens under the direct question (``direct``), and after a reasoning chain that is
  teacher-forced up to ``<CONCLUSION>``: the dataset's (teacher) chain (``teacher_chain``)
  or the chain the model generates itself (``generated_chain``). The conclusion is forced
  to the correct class name, so the number is ``p(y | x, question, chain)``.
* :func:`chain_token_scores` / :func:`self_chains`: teacher-forced scores of every token of
  given chains, and the model's own chains (kept when their conclusion is right, as SARR does).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..chains import STAGES, check_chain
from ..evaluation.predict import predict
from ..generation import GenerationSettings
from .teacher_forcing import ForcedExample, TokenScores, teacher_force

__all__ = [
    "CONDITIONS",
    "SELF_FILTERS",
    "force_conclusion",
    "ClassProbability",
    "class_probabilities",
    "chain_token_scores",
    "SelfChain",
    "self_chains",
]

CONDITIONS: tuple[str, ...] = ("direct", "teacher_chain", "generated_chain")
SELF_FILTERS: tuple[str, ...] = ("correct", "valid", "all")

_CONCLUSION = STAGES[-1]
_OPEN_CONCLUSION = re.compile(r"<\s*" + _CONCLUSION + r"\s*>", re.IGNORECASE)


def force_conclusion(chain: str, class_name: str) -> tuple[str, int]:
    """The chain up to its ``<CONCLUSION>`` tag, concluded with ``class_name``; and where the name starts.

    A chain without the tag (e.g. a generated one cut short) is kept whole and the
    conclusion stage appended on a new line.
    """
    match = _OPEN_CONCLUSION.search(chain)
    if match:
        prefix = chain[: match.start()]
    else:
        prefix = chain.rstrip() + "\n" if chain.strip() else ""
    head = f"{prefix}<{_CONCLUSION}>"
    return f"{head}{class_name}</{_CONCLUSION}>", len(head)


@dataclass
class ClassProbability:
    """Probabilities of one image's correct class (NaN where a condition was not computed).

    ``generated_prediction`` is the class the generated chain concluded (-1: no valid
    conclusion); ``generated_chain`` its text.
    """

    direct: float = math.nan
    teacher_chain: float = math.nan
    generated_chain: float = math.nan
    generated_prediction: int | None = None
    generated_valid: bool | None = None
    generated_text: str | None = None

    def get(self, condition: str) -> float:
        return getattr(self, condition)


def _check_conditions(conditions: Sequence[str]) -> None:
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        raise ValueError(f"Unknown condition(s) {bad}. Valid conditions: {', '.join(CONDITIONS)}.")


def _span_probability(score: TokenScores, answer: str, start: int, length: int) -> float:
    base = score.answer_start(answer)
    return math.exp(score.span_logprob(base + start, base + start + length))


def class_probabilities(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    labels: Sequence[int],
    class_names: Sequence[str],
    conditions: Sequence[str] = CONDITIONS,
    chains: Sequence[str | None] | None = None,
    generation: GenerationSettings | None = None,
    batch_size: int = 16,
) -> list[ClassProbability]:
    """The correct class's probability per image under each condition (see the module docstring).

    ``chains`` (the teacher chains, one per image or None) are needed for ``teacher_chain``;
    images without a chain get NaN there. ``generation`` sets how chains are generated for
    ``generated_chain`` (default greedy, 256 new tokens).
    """
    _check_conditions(conditions)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    if "teacher_chain" in conditions and (chains is None or len(chains) != len(images)):
        raise ValueError("The 'teacher_chain' condition needs one chain (or None) per image: pass chains=...")
    results = [ClassProbability() for _ in images]
    jobs: list[tuple[int, str, ForcedExample, str, int, int]] = []
    for i, (image, label) in enumerate(zip(images, labels)):
        name = class_names[label]
        if "direct" in conditions:
            jobs.append((i, "direct", ForcedExample(image, label), name, 0, len(name)))
        if "teacher_chain" in conditions and chains[i] and chains[i].strip():
            text, start = force_conclusion(chains[i], name)
            jobs.append((i, "teacher_chain", ForcedExample(image, label, "reasoning", text), text, start, len(name)))
    if "generated_chain" in conditions:
        settings = generation or GenerationSettings(batch_size=batch_size, max_new_tokens=256)
        predictions = predict(model, processor, images, class_names, "reasoning", generation=settings)
        for i, (index, generated, label) in enumerate(zip(predictions.indices, predictions.texts, labels)):
            name = class_names[label]
            results[i].generated_prediction = index
            results[i].generated_valid = check_chain(generated).valid
            results[i].generated_text = generated
            text, start = force_conclusion(generated, name)
            jobs.append(
                (i, "generated_chain", ForcedExample(images[i], label, "reasoning", text), text, start, len(name))
            )
    scores = teacher_force(model, processor, [job[2] for job in jobs], class_names, batch_size)
    for (i, condition, _, answer, start, length), score in zip(jobs, scores):
        setattr(results[i], condition, _span_probability(score, answer, start, length))
    return results


def chain_token_scores(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    labels: Sequence[int],
    chains: Sequence[str],
    class_names: Sequence[str],
    batch_size: int = 16,
) -> list[TokenScores]:
    """Teacher-forced scores of every token of each image's chain (after the reasoning question)."""
    examples = [ForcedExample(image, label, "reasoning", chain) for image, label, chain in zip(images, labels, chains)]
    return teacher_force(model, processor, examples, class_names, batch_size)


@dataclass(frozen=True)
class SelfChain:
    """A chain the model wrote for image ``index``; ``correct``: its conclusion is the label."""

    index: int
    text: str
    valid: bool
    correct: bool


def self_chains(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    labels: Sequence[int],
    class_names: Sequence[str],
    keep: str = "correct",
    generation: GenerationSettings | None = None,
) -> tuple[list[SelfChain], dict[str, int]]:
    """The model's own chains (greedy) and counts of generated / valid / correct / kept.

    ``keep``: ``"correct"`` (well formed and concluding the label, as SARR keeps them),
    ``"valid"`` (well formed) or ``"all"`` (every non-empty output).
    """
    if keep not in SELF_FILTERS:
        raise ValueError(f"Unknown self-chain filter {keep!r}. Valid: {', '.join(SELF_FILTERS)}.")
    settings = generation or GenerationSettings(max_new_tokens=256)
    outputs = predict(model, processor, images, class_names, "reasoning", generation=settings)
    valid = [check_chain(text).valid for text in outputs.texts]
    chains = [
        SelfChain(i, text, valid[i], valid[i] and index == label)
        for i, (text, index, label) in enumerate(zip(outputs.texts, outputs.indices, labels))
    ]
    rule = {"correct": lambda c: c.correct, "valid": lambda c: c.valid, "all": lambda c: bool(c.text.strip())}[keep]
    kept = [c for c in chains if rule(c)]
    counts = {
        "generated": len(chains),
        "valid": sum(c.valid for c in chains),
        "correct": sum(c.correct for c in chains),
        "kept": len(kept),
    }
    return kept, counts
