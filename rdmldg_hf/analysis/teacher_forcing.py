"""Teacher-forced scoring of answer tokens, in batches, with the training rows' masks.

An :class:`ForcedExample` is one image with a task (``"classification"`` or ``"reasoning"``)
and the answer to force (the class name, or a chain). Examples are turned into rows and
collated exactly as MTCT training does (:class:`~rdmldg_hf.trainers.mtct.MTCTDataCollator`,
TRL's completion-only labels), so the scored tokens are the tokens the loss trains on:
the answer and the end-of-turn token, never prompt, image or padding tokens.

For each answer token the result holds the probability the model gave it and the
predictive entropy (in nats) of the distribution it was drawn from, plus the token's
text and its character span in the answer, so spans such as the conclusion's class name
can be read off (:meth:`TokenScores.span_logprob`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..data.training_rows import CLASSIFICATION, INDEX_COLUMN, REASONING, TASKS_COLUMN
from ..generation import eval_mode, run_batches
from ..prompts import TASKS

__all__ = ["ForcedExample", "TokenScores", "answer_token_stats", "token_pieces", "teacher_force"]

_TASK_IDS = {"classification": CLASSIFICATION, "reasoning": REASONING}


@dataclass(frozen=True)
class ForcedExample:
    """One image, its label and the answer forced after the task's question.

    ``answer`` is the chain of a ``"reasoning"`` example; a ``"classification"`` example's
    answer is the label's class name (as in training), so ``answer`` is ignored there.
    """

    image: Any
    label: int
    task: str = "classification"
    answer: str | None = None

    def __post_init__(self) -> None:
        if self.task not in _TASK_IDS:
            raise ValueError(f"Unknown task {self.task!r}. Valid tasks: {', '.join(TASKS)}.")
        if self.task == "reasoning" and not (self.answer and self.answer.strip()):
            raise ValueError("A reasoning example needs a non-empty chain as its answer.")

    def unit(self) -> dict[str, Any]:
        """The MTCT unit of this example (what the training collator takes)."""
        return {
            "image": self.image,
            "label": self.label,
            "reasoning": self.answer,
            TASKS_COLUMN: [_TASK_IDS[self.task]],
            INDEX_COLUMN: -1,
        }


@dataclass
class TokenScores:
    """Teacher-forced scores of one example's answer tokens (the completion: answer + end token).

    Attributes:
        token_ids: the answer tokens, in order.
        tokens: each token's decoded text.
        offsets: each token's ``(start, end)`` character span in ``text``.
        text: the decoded completion (``"".join(tokens)``).
        probs: probability the model gave each token.
        entropies: predictive entropy (nats) of the distribution at each token.
    """

    token_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    text: str
    probs: list[float]
    entropies: list[float]

    def span(self, start: int, end: int) -> list[int]:
        """Indices of the tokens overlapping characters ``[start, end)`` of ``text``."""
        return [i for i, (s, e) in enumerate(self.offsets) if s < end and e > start]

    def span_logprob(self, start: int, end: int) -> float:
        """Log-probability of the tokens covering characters ``[start, end)`` (their joint probability, in log)."""
        indices = self.span(start, end)
        if not indices:
            raise ValueError(f"No answer token covers characters [{start}, {end}) of {self.text!r}.")
        return sum(math.log(max(self.probs[i], 1e-45)) for i in indices)

    def answer_start(self, answer: str) -> int:
        """Where ``answer`` starts in ``text`` (the completion may wrap it in template tokens)."""
        index = self.text.find(answer)
        if index < 0:
            raise ValueError(f"The forced answer {answer[:60]!r} is not in the scored completion {self.text[:80]!r}.")
        return index


def answer_token_stats(
    logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None
) -> list[tuple[list[int], list[float], list[float]]]:
    """Per row: answer token ids, their probabilities and the predictive entropies.

    Args:
        logits: ``(rows, K, vocab)`` logits at ``K`` positions of the sequences.
        labels: ``(rows, length)`` labels, -100 where not an answer token.
        positions: the ``K`` sequence positions of ``logits``, increasing (default: the last
            ``K`` positions; ``K`` = sequence length for the full logits).

    The logits at position ``p`` predict the label at ``p + 1`` (next-token prediction,
    as in training). Entropies are ``-sum_v p_v log p_v`` in nats.

    Raises:
        ValueError: if an answer token is not predicted by a kept position.
    """
    length, keep = labels.shape[1], logits.shape[1]
    if positions is None:
        positions = torch.arange(length - keep, length, device=labels.device)
    following = positions.to(labels.device) + 1
    inside = following < length
    targets = torch.full((labels.shape[0], keep), -100, dtype=labels.dtype, device=labels.device)
    targets[:, inside] = labels[:, following[inside]]
    if (targets != -100).sum() != (labels[:, 1:] != -100).sum():
        raise ValueError(
            f"Answer tokens lie before the last {keep} positions whose logits were kept, or between them."
        )
    out = []
    for row in range(labels.shape[0]):  # one row at a time: float32 (tokens, vocab) stays small
        mask = targets[row] != -100
        logp = torch.log_softmax(logits[row][mask].float(), dim=-1)
        ids = targets[row][mask]
        token_logp = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        out.append((ids.tolist(), token_logp.exp().tolist(), entropy.tolist()))
    return out


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> tuple[list[str], list[tuple[int, int]], str]:
    """Each token's text, its character span and the whole decoded text.

    Tokens are decoded one by one; where that does not add up to the decoded whole (a
    character split over several byte-level tokens), spans come from decoding prefixes.
    """
    pieces = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    text = tokenizer.decode(list(ids), skip_special_tokens=False)
    if "".join(pieces) != text:
        ends = [len(tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=False)) for k in range(len(ids))]
        starts = [0] + ends[:-1]
        pieces = [text[s:e] for s, e in zip(starts, ends)]
    offsets, position = [], 0
    for piece in pieces:
        offsets.append((position, position + len(piece)))
        position += len(piece)
    return pieces, offsets, text


def _logits_to_keep_supported(model: torch.nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def teacher_force(
    model: torch.nn.Module,
    processor: Any,
    examples: Sequence[ForcedExample],
    class_names: Sequence[str],
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[TokenScores]:
    """Score every example's answer tokens by teacher forcing, ``batch_size`` examples per forward pass.

    Rows are built and collated as in MTCT training (same prompts, same masks). Examples
    are batched by task and answer length (results come back in the given order), so
    short direct answers are not padded to chain length; when the model supports
    ``logits_to_keep``, the LM head is applied only at positions predicting an answer token
    (never ``[batch, sequence, vocab]`` logits over prompt and image tokens). Under
    accelerate with N processes the batches are spread over the processes and every
    process returns all results.
    """
    from ..trainers.mtct import MTCTDataCollator

    collator = MTCTDataCollator(processor, list(class_names), max_length)
    tokenizer = getattr(processor, "tokenizer", processor)
    trim = _logits_to_keep_supported(model)
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: (examples[i].task, len(examples[i].answer or "")))

    def one_batch(indices: list[int], batch_index: int) -> list[TokenScores]:
        batch = collator([examples[order[i]].unit() for i in indices])
        labels = batch.pop("labels")
        inputs = {k: v.to(device) for k, v in batch.items() if not k.startswith("mtct_")}
        kwargs: dict[str, Any] = {"use_cache": False}
        positions = None
        if trim:  # the positions predicting an answer token in some row: the LM head is applied there only
            positions = (labels[:, 1:] != -100).any(0).nonzero().flatten()
            kwargs["logits_to_keep"] = positions.to(device)
        with eval_mode(model), torch.inference_mode():
            logits = model(**inputs, **kwargs).logits
        results = []
        for ids, probs, entropies in answer_token_stats(logits, labels.to(logits.device), positions):
            pieces, offsets, text = token_pieces(tokenizer, ids)
            results.append(TokenScores(ids, pieces, offsets, text, probs, entropies))
        return results

    scores = run_batches(one_batch, len(examples), batch_size)
    results: list[TokenScores] = [None] * len(examples)  # type: ignore[list-item]
    for position, index in enumerate(order):
        results[index] = scores[position]
    return results
