"""Predictions of a vision-language classifier: direct answers by class-name likelihood, and
reasoning answers by generating a chain and parsing its conclusion.

* :func:`score_classes` asks the classification question and scores every class name as
  the answer: the summed log-likelihood of its tokens right after the prompt, softmaxed
  over the classes. When every class name is a single token this is one forward pass per
  batch of images; otherwise one forward pass per batch over (image, class) rows.
* :func:`predict_direct` is its argmax; :func:`predict_reasoning` generates with the
  reasoning question (see :mod:`rdmldg_hf.generation`) and maps each conclusion to a class
  (:func:`rdmldg_hf.chains.resolve_conclusion`); an output with no valid conclusion is
  predicted as ``-1`` and counts as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch

from .chains import check_chain, extract_conclusion, resolve_conclusion
from .generation import GenerationSettings, ModelBackend, eval_mode, generate, run_batches
from .prompts import prompt_messages

__all__ = [
    "answer_token_ids",
    "score_classes",
    "predict_direct",
    "ReasoningPrediction",
    "predict_reasoning",
    "accuracy",
]


def answer_token_ids(processor: Any, class_names: Sequence[str]) -> list[list[int]]:
    """Token ids of each class name as the assistant's answer, right after the rendered prompt."""
    tokenizer = getattr(processor, "tokenizer", processor)
    prompt = processor.apply_chat_template(
        prompt_messages("classification", class_names), add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answers = []
    for name in class_names:
        full_ids = tokenizer(prompt + name, add_special_tokens=False)["input_ids"]
        if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
            raise ValueError(
                f"The class name {name!r} does not tokenize as a separate answer after the prompt; "
                "scoring needs a chat template that ends the prompt on a token boundary."
            )
        answers.append(full_ids[len(prompt_ids) :])
    return answers


def score_classes(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Any],
    class_names: Sequence[str],
    batch_size: int = 16,
    messages: Sequence[list[dict[str, Any]]] | None = None,
) -> torch.Tensor:
    """Probabilities ``[num_images, num_classes]`` of each class name as the direct answer.

    Uses the classification question of :mod:`rdmldg_hf.prompts`. Under accelerate with N
    processes the batches are spread over processes and every process gets all rows.
    ``messages`` optionally gives each image its own prompt ending with the classification
    question (e.g. in-context demos, :func:`rdmldg_hf.prompts.icl_messages`); then
    ``images[i]`` is the list of that prompt's images.
    """
    if not class_names:
        raise ValueError("score_classes needs at least one class name.")
    if messages is not None and len(messages) != len(images):
        raise ValueError(f"{len(messages)} prompts but {len(images)} images; pass one prompt per image.")
    backend = ModelBackend(model, processor)
    answers = answer_token_ids(processor, class_names)
    question_messages = prompt_messages("classification", class_names)
    single_token = all(len(ids) == 1 for ids in answers)

    def one_batch(indices: list[int], batch_index: int) -> list[list[float]]:
        batch_images = [images[i] for i in indices]
        batch_messages = [question_messages] * len(indices) if messages is None else [messages[i] for i in indices]
        with eval_mode(model), torch.inference_mode():
            if single_token:
                inputs = backend.encode(batch_messages, batch_images)
                logits = model(**inputs).logits[:, -1, :].float()
                logprobs = torch.log_softmax(logits, dim=-1)[:, [ids[0] for ids in answers]]
            else:
                logprobs = _score_rows(backend, batch_messages, batch_images, class_names, answers)
        return torch.softmax(logprobs, dim=-1).tolist()

    rows = run_batches(one_batch, len(images), batch_size)
    return torch.tensor(rows, dtype=torch.float32).reshape(len(images), len(class_names))


def _score_rows(
    backend: ModelBackend,
    messages: list[dict[str, Any]] | Sequence[list[dict[str, Any]]],
    images: Sequence[Any],
    class_names: Sequence[str],
    answers: Sequence[Sequence[int]],
) -> torch.Tensor:
    """Summed answer log-likelihoods from one forward pass over (image, class) rows (left padded).

    ``messages`` is one prompt shared by every image, or one prompt per image."""
    if messages and isinstance(messages[0], dict):
        messages = [messages] * len(images)
    num_classes = len(class_names)
    row_images = [image for image in images for _ in range(num_classes)]
    row_messages = [m for m in messages for _ in range(num_classes)]
    inputs = backend.encode(row_messages, row_images, suffixes=list(class_names) * len(images))
    logprobs = torch.log_softmax(backend.model(**inputs).logits.float(), dim=-1)
    ids = inputs["input_ids"]
    scores = torch.zeros(len(row_images))
    for row in range(len(row_images)):
        length = len(answers[row % num_classes])
        positions = torch.arange(ids.shape[1] - length, ids.shape[1])
        scores[row] = logprobs[row, positions - 1, ids[row, positions]].sum()
    return scores.reshape(len(images), num_classes)


def predict_direct(
    model: torch.nn.Module, processor: Any, images: Sequence[Any], class_names: Sequence[str], batch_size: int = 16
) -> list[int]:
    """The most likely class index of each image as a direct answer."""
    return score_classes(model, processor, images, class_names, batch_size).argmax(dim=-1).tolist()


@dataclass(frozen=True)
class ReasoningPrediction:
    """A generated chain and the class its conclusion maps to (``-1``: invalid output)."""

    text: str
    prediction: int
    valid_format: bool


def predict_reasoning(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    class_names: Sequence[str],
    settings: GenerationSettings | None = None,
    aliases: Mapping[str, Iterable[str]] | None = None,
) -> list[ReasoningPrediction]:
    """Generate a chain per image with the reasoning question and parse its conclusion (greedy)."""
    settings = settings or GenerationSettings()
    messages = [prompt_messages("reasoning", class_names)] * len(images)
    outputs = generate(model, processor, messages, images, settings)
    predictions = []
    for texts in outputs:
        text = texts[0]
        index = resolve_conclusion(extract_conclusion(text), class_names, aliases).index
        predictions.append(ReasoningPrediction(text, -1 if index is None else index, check_chain(text).valid))
    return predictions


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to their label (0.0 for no rows)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels.")
    return sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels) if labels else 0.0
