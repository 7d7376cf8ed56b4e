"""The three prediction modes of evaluation, on a local model (or a generation backend).

* ``direct``: the classification question; every class name is scored by its
  log-likelihood as the answer (:func:`rdmldg_hf.scoring.score_classes`). Always a valid
  class, gives probabilities, no generation.
* ``direct-generate``: the classification question, answered by greedy generation and
  parsed into a class (what a chat user would see); an answer naming no class is invalid.
* ``reasoning``: the reasoning question; the five-stage chain is generated in batches and
  its ``<CONCLUSION>`` mapped to a class; no or an unusable conclusion is invalid.

Invalid outputs are predicted as ``-1`` (scored as wrong, counted in the invalid-output
rate). Images that fail to decode are not fatal: they are counted in ``unreadable``,
predicted as ``-1`` and never sent to the model. Every mode takes optional in-context
demos (see :mod:`rdmldg_hf.evaluation.icl`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from PIL import Image

from ..atomic import atomic_open
from ..chains import extract_conclusion, match_class
from ..data.pixel_limit import open_image
from ..generation import GenerationSettings, generate
from ..prompts import Task, icl_messages, prompt_messages
from ..scoring import score_classes

__all__ = [
    "MODES",
    "PREDICTIONS_NAME",
    "Demo",
    "Predictions",
    "decode_image",
    "decode_images",
    "predict",
    "prediction_records",
    "task_of",
    "write_predictions",
]

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("direct", "direct-generate", "reasoning")
PREDICTIONS_NAME = "predictions.jsonl"
# Default generation lengths: a class name, or a whole five-stage chain.
_MAX_NEW_TOKENS = {"direct-generate": 16, "reasoning": 256}


@dataclass(frozen=True)
class Demo:
    """One in-context example: an image and its answer (a class name, or a chain)."""

    image: Any
    answer: str


@dataclass
class Predictions:
    """What a model answered for a list of images.

    Attributes:
        mode: the prediction mode.
        indices: predicted class index per image; ``-1`` for invalid outputs and unreadable images.
        texts: the generated text per image (None in ``direct`` mode and for unreadable images).
        probabilities: ``direct`` mode only: class probabilities per image (None where unreadable).
        unreadable: positions of the images that failed to decode.
        failed: position -> error of the images whose request to an API model failed after all its
            retries: no answer, so they are left out of the accuracy (and counted beside it).
    """

    mode: str
    indices: list[int]
    texts: list[str | None]
    probabilities: list[list[float] | None] | None = None
    unreadable: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def invalid(self) -> list[int]:
        """Positions of readable, answered images whose output named no class."""
        skip = set(self.unreadable) | set(self.failed)
        return [i for i, index in enumerate(self.indices) if index < 0 and i not in skip]

    @property
    def invalid_rate(self) -> float:
        """Share of readable, answered images with an invalid output."""
        answered = len(self.indices) - len(set(self.unreadable) | set(self.failed))
        return len(self.invalid) / answered if answered else 0.0

    def records(self, image_ids: Sequence[str], domains: Sequence[str], labels: Sequence[int]) -> list[dict[str, Any]]:
        """One JSON-ready record per image (see :func:`prediction_records`)."""
        return prediction_records(
            self.mode,
            image_ids,
            domains,
            labels,
            self.indices,
            self.probabilities,
            self.texts,
            self.unreadable,
            self.failed,
        )


def prediction_records(
    mode: str,
    image_ids: Sequence[str],
    domains: Sequence[str],
    labels: Sequence[int],
    indices: Sequence[int],
    probabilities: Sequence[Sequence[float] | None] | None = None,
    texts: Sequence[str | None] | None = None,
    unreadable: Iterable[int] = (),
    failed: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Per image: ``image_id``, ``domain``, ``label``, ``mode``, ``prediction`` (-1: invalid or unreadable),
    ``correct``, and the class ``probabilities`` (direct mode), the ``chain`` (reasoning) or the ``answer``
    (direct-generate); ``unreadable: true`` for images that failed to decode; ``request_failed`` (the error)
    and ``correct: null`` for images whose API request failed (left out of the accuracy)."""
    if not len(image_ids) == len(domains) == len(labels) == len(indices):
        raise ValueError(
            f"{len(indices)} predictions for {len(image_ids)} image ids, {len(domains)} domains, {len(labels)} labels."
        )
    text_key = "chain" if mode == "reasoning" else "answer"
    broken = set(unreadable)
    out = []
    for i, (image_id, domain, label, index) in enumerate(zip(image_ids, domains, labels, indices)):
        record: dict[str, Any] = {
            "image_id": image_id,
            "domain": domain,
            "label": int(label),
            "mode": mode,
            "prediction": int(index),
            "correct": int(index) == int(label),
        }
        if probabilities is not None:
            row = probabilities[i]
            record["probabilities"] = None if row is None else [round(float(p), 6) for p in row]
        if texts is not None and mode != "direct":
            record[text_key] = texts[i]
        if i in broken:
            record["unreadable"] = True
        if failed and i in failed:
            record.update(correct=None, request_failed=failed[i])
        out.append(record)
    return out


def write_predictions(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records as JSON lines (replacing the file, atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def task_of(mode: str) -> Task:
    """The question a mode asks: ``classification`` (direct modes) or ``reasoning``."""
    check_mode(mode)
    return "reasoning" if mode == "reasoning" else "classification"


def check_mode(mode: str) -> str:
    """The mode, if valid.

    Raises:
        ValueError: naming the value and listing the valid modes.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown prediction mode {mode!r}. Valid modes: {', '.join(MODES)}.")
    return mode


def decode_image(value: Any) -> Image.Image:
    """An RGB PIL image from a PIL image, encoded bytes, a path, or a ``datasets`` image dict.

    Raises:
        ValueError: when the value cannot be decoded as an image, or has more pixels than PIL's
            ``Image.MAX_IMAGE_PIXELS`` (read from its header: such an image is never decoded).
    """
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, Mapping):
            data, path = value.get("bytes"), value.get("path")
            image = open_image(data if data is not None else path)
        else:
            image = open_image(value)
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as error:
        raise ValueError(f"unreadable image: {type(error).__name__}: {error}") from error


def decode_images(values: Iterable[Any]) -> tuple[list[Image.Image | None], list[int]]:
    """Decode every value (see :func:`decode_image`); returns the images (None where it failed)
    and the positions of the failures."""
    images: list[Image.Image | None] = []
    failed: list[int] = []
    for position, value in enumerate(values):
        try:
            images.append(decode_image(value))
        except ValueError as error:
            images.append(None)
            failed.append(position)
            logger.warning("Image %d: %s", position, error)
    return images, failed


def _class_of_answer(
    text: str, class_names: Sequence[str], aliases: Mapping[str, Iterable[str]] | None, mode: str
) -> int:
    answer = extract_conclusion(text) if mode == "reasoning" else text
    index = match_class(answer, class_names, aliases)
    return -1 if index is None else index


def predict(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    class_names: Sequence[str],
    mode: str = "direct",
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    aliases: Mapping[str, Iterable[str]] | None = None,
    demos: Sequence[Sequence[Demo]] | None = None,
    generation: GenerationSettings | None = None,
) -> Predictions:
    """Predict a class for every image in one of :data:`MODES`.

    Args:
        model: a vision-language model; in the generating modes also any
            :class:`~rdmldg_hf.generation.GenerationBackend`.
        processor: the model's processor.
        images: PIL images, encoded bytes or ``datasets`` image dicts (decoded here; failures counted).
        class_names: the names the questions offer, in label order.
        mode: ``direct``, ``direct-generate`` or ``reasoning``.
        batch_size: images per forward pass or ``generate`` call.
        max_new_tokens: generation length (default 16 for ``direct-generate``, 256 for ``reasoning``).
        aliases: extra accepted spellings per class name.
        demos: per image, its in-context demos (same length as ``images``); None for zero-shot.
        generation: how the generating modes generate (e.g. sampling); default greedy with
            ``batch_size`` and ``max_new_tokens``.
    """
    task = task_of(mode)
    if demos is not None and len(demos) != len(images):
        raise ValueError(f"{len(demos)} demo lists for {len(images)} images; give one list per image.")
    decoded, unreadable = decode_images(images)
    keep = [i for i, image in enumerate(decoded) if image is not None]
    if demos is None:
        messages = [prompt_messages(task, class_names)] * len(keep)
        inputs: list[Any] = [decoded[i] for i in keep]
    else:
        messages = [icl_messages(task, class_names, [demo.answer for demo in demos[i]]) for i in keep]
        inputs = [[decode_image(demo.image) for demo in demos[i]] + [decoded[i]] for i in keep]
    indices = [-1] * len(decoded)
    texts: list[str | None] = [None] * len(decoded)
    probabilities: list[list[float] | None] | None = None
    if mode == "direct":
        probabilities = [None] * len(decoded)
        if keep:
            scores = score_classes(
                model, processor, inputs, class_names, batch_size, messages=messages if demos is not None else None
            )
            for position, row in zip(keep, scores.tolist()):
                probabilities[position] = row
                indices[position] = max(range(len(row)), key=row.__getitem__)
    elif keep:
        settings = generation or GenerationSettings(
            batch_size=batch_size, max_new_tokens=max_new_tokens or _MAX_NEW_TOKENS[mode]
        )
        outputs = generate(model, processor, messages, inputs, settings)
        for position, candidates in zip(keep, outputs):
            texts[position] = candidates[0]
            indices[position] = _class_of_answer(candidates[0], class_names, aliases, mode)
    return Predictions(mode, indices, texts, probabilities, unreadable)
