"""SARR relabeling: the model writes a chain for every training image, correct chains are kept.

Pieces, each usable on its own:

* :func:`relabel` generates chains for a dataset's images with the reasoning question
  (batched, images with the most prompt tokens first so that a batch pads little, spread over
  accelerate processes, see :mod:`rdmldg_hf.generation`) and writes each finished batch to a
  :class:`RelabelStore` so that a killed run regenerates nothing already written.
* :func:`judge` decides, per image, which candidate (if any) is accepted: the first one that
  passes :func:`rdmldg_hf.chains.check_chain` and whose conclusion maps to the label, re-rendered
  canonically (the five stages only, the conclusion spelled as the class), as teacher chains are.
* :func:`build_round_dataset` applies a fallback policy to images with no accepted chain
  (``teacher``: keep the teacher chain; ``cls_only``: classification row only; ``drop``:
  leave the image out) and returns the round's rows in the dataset schema, with
  :class:`RoundStats` (acceptance overall / per domain / per class, invalid outputs, fallbacks).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from datasets import Dataset
from datasets import Image as ImageFeature

from ..chains import check_chain, extract_conclusion, resolve_conclusion
from ..data.pixel_limit import open_image
from ..data.schema import CHAIN_COLUMNS, dataset_features
from ..generation import (
    GenerationBackend,
    GenerationSettings,
    batch_indices,
    generate,
    length_order,
    process_state,
)
from ..prompts import PROMPT_VERSION, prompt_messages

__all__ = [
    "FALLBACK_POLICIES",
    "ImageVerdict",
    "RoundStats",
    "RelabelStore",
    "relabel",
    "prompt_length_order",
    "judge",
    "build_round_dataset",
]

FALLBACK_POLICIES: tuple[str, ...] = ("teacher", "cls_only", "drop")


class RelabelStore:
    """Relabel outputs on disk, one JSON line per finished batch, one file per process.

    ``part-<rank>.jsonl`` lines are ``{"batch": b, "image_ids": [...], "outputs": [[text, ...], ...]}``.
    A line cut short by a kill is ignored (and trimmed before the next append).
    """

    def __init__(self, folder: str | os.PathLike, process_index: int = 0):
        self.folder = Path(folder)
        self.path = self.folder / f"part-{process_index}.jsonl"

    def read(self) -> list[dict[str, Any]]:
        """Every complete line of every process's file."""
        records = []
        for path in sorted(self.folder.glob("part-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records

    def load(self, batches: Sequence[Sequence[str]]) -> dict[int, list[list[str]]]:
        """Outputs of the batches already written, checked against the expected image ids."""
        done: dict[int, list[list[str]]] = {}
        for record in self.read():
            b = record["batch"]
            if b >= len(batches) or list(batches[b]) != record["image_ids"]:
                raise RuntimeError(
                    f"{self.folder} holds relabel outputs for other images (batch {b}); "
                    "the dataset or batch size changed since they were written. Use a new output folder."
                )
            done[b] = record["outputs"]
        return done

    def append(self, batch_index: int, image_ids: Sequence[str], outputs: Sequence[Sequence[str]]) -> None:
        """Write one finished batch durably (flush + fsync)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._trim_partial_line()
        line = json.dumps({"batch": batch_index, "image_ids": list(image_ids), "outputs": [list(o) for o in outputs]})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _trim_partial_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])


def relabel(
    backend: GenerationBackend,
    dataset: Dataset,
    class_names: Sequence[str],
    settings: GenerationSettings,
    store: RelabelStore | None = None,
) -> list[list[str]]:
    """Generate ``settings.num_candidates`` chains for every image of ``dataset`` (reasoning question).

    Batches hold images of similar prompt length, most image tokens first, when the backend can count
    them (:meth:`~rdmldg_hf.generation.ModelBackend.image_tokens`, from the image headers); outputs come
    back in dataset order. With a ``store``, batches it already holds are read back instead of generated,
    and each new batch is written as soon as it is done. Every accelerate process returns all outputs.
    """
    image_ids = list(dataset["image_id"])
    order = prompt_length_order(backend, dataset)
    batches = [[image_ids[i] for i in batch] for batch in batch_indices(len(image_ids), settings.batch_size, order)]
    done = store.load(batches) if store is not None else {}
    process_state().wait_for_everyone()  # every process sees the same finished batches

    def write(batch_index: int, indices: list[int], outputs: Sequence[list[str]]) -> None:
        if store is not None:
            store.append(batch_index, [image_ids[i] for i in indices], outputs)

    messages = [prompt_messages("reasoning", class_names)] * len(dataset)
    images = dataset["image"]  # datasets' lazy Column: an image decodes when its batch needs it
    return generate(backend, None, messages, images, settings, done=done, on_batch=write, order=order)


def prompt_length_order(backend: GenerationBackend, dataset: Dataset) -> list[int] | None:
    """Indices of ``dataset`` by decreasing image tokens (its prompts differ only by their image), or None
    (dataset order) when the backend cannot count them. Image sizes are read from the headers only."""
    count = getattr(backend, "image_tokens", None)
    if count is None or not isinstance(dataset.features.get("image"), ImageFeature):
        return None
    sizes = []
    for chunk in dataset.select_columns(["image"]).cast_column("image", ImageFeature(decode=False)).iter(256):
        for image in chunk["image"]:
            with open_image(image["bytes"] if image.get("bytes") else image["path"], max_pixels=None) as header:
                sizes.append((header.height, header.width))
    return length_order(count(sizes))


@dataclass(frozen=True)
class ImageVerdict:
    """What one image's candidates gave: the accepted chain (or None) and the counts."""

    accepted: str | None
    num_candidates: int
    num_valid: int
    num_correct: int
    num_no_class: int
    reasons: tuple[str, ...]


def judge(
    candidates: Sequence[str],
    label: int,
    class_names: Sequence[str],
    aliases: Mapping[str, Iterable[str]] | None = None,
    strict: bool = False,
) -> ImageVerdict:
    """Accept the first candidate that is a valid chain concluding the label's class.

    The accepted chain is re-rendered (:meth:`rdmldg_hf.chains.Chain.render`) with the class name as
    conclusion, so text around the tags (e.g. after ``</CONCLUSION>``) is never trained on.

    ``num_valid`` counts candidates passing the format check, ``num_correct`` valid ones
    concluding the label, ``num_no_class`` outputs whose conclusion maps to no class;
    ``reasons`` says why each rejected candidate was rejected.
    """
    accepted, valid, correct, no_class, reasons = None, 0, 0, 0, []
    for text in candidates:
        check = check_chain(text, strict=strict)
        match = resolve_conclusion(extract_conclusion(text), class_names, aliases)
        if match.index is None:
            no_class += 1
        if not check.valid:
            reasons.append("format: " + "; ".join(check.problems))
            continue
        valid += 1
        if match.index is None:
            reasons.append(f"conclusion: {match.reason}")
        elif match.index != label:
            reasons.append(f"wrong class: {class_names[match.index]}")
        else:
            correct += 1
            if accepted is None and check.chain is not None:
                accepted = replace(check.chain, conclusion=class_names[label]).render()
    return ImageVerdict(accepted, len(candidates), valid, correct, no_class, tuple(reasons))


@dataclass
class RoundStats:
    """Relabel figures of one round (all rates are fractions in [0, 1])."""

    round: int
    images: int
    accepted: int
    acceptance: float
    acceptance_per_domain: dict[str, float]
    acceptance_per_class: dict[str, float]
    candidates: int
    invalid_format_rate: float
    no_class_rate: float
    fallback_policy: str
    fallbacks: dict[str, int] = field(default_factory=dict)
    training_images: int = 0
    training_chains: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rates(keys: Sequence[str], accepted: Sequence[bool]) -> dict[str, float]:
    total, good = Counter(keys), Counter(k for k, ok in zip(keys, accepted) if ok)
    return {k: good[k] / total[k] for k in sorted(total)}


def build_round_dataset(
    dataset: Dataset,
    outputs: Sequence[Sequence[str]],
    round_index: int,
    fallback: str,
    chain_source: str,
    benchmark: Any,
    aliases: Mapping[str, Iterable[str]] | None = None,
    strict: bool = False,
) -> tuple[Dataset, RoundStats]:
    """The round's training rows: accepted self-chains, and the fallback for the other images.

    ``dataset`` holds the training images in the dataset schema (``reasoning`` is the teacher
    chain; a missing ``reasoning``, ``chain_source`` or ``prompt_version`` column means none);
    ``outputs`` are their relabel candidates, in order. In the returned rows,
    ``reasoning``/``chain_source`` are the chain trained on (``chain_source`` of an accepted
    chain is the given one, e.g. ``"<model>@sarr-r2"``) and ``num_candidates``/``num_valid``/
    ``num_correct``/``rejection_reasons`` describe this round's relabel attempt.
    """
    if fallback not in FALLBACK_POLICIES:
        raise ValueError(f"Unknown fallback {fallback!r}. Valid policies: {', '.join(FALLBACK_POLICIES)}.")
    if len(outputs) != len(dataset):
        raise ValueError(f"{len(outputs)} relabel outputs for {len(dataset)} images.")
    class_names = list(benchmark.class_names)
    labels = list(dataset["label"])
    verdicts = [judge(c, y, class_names, aliases, strict) for c, y in zip(outputs, labels)]
    # A column the rows lack (e.g. no chain_source: chains imported without their teacher) is None for every image.
    teacher = {
        c: list(dataset[c]) if c in dataset.column_names else [None] * len(dataset)
        for c in ("reasoning", "chain_source", "prompt_version")
    }
    columns: dict[str, list[Any]] = {c: [] for c in CHAIN_COLUMNS}
    keep: list[int] = []
    fallbacks: Counter[str] = Counter()
    for i, verdict in enumerate(verdicts):
        chain, source, version = verdict.accepted, chain_source, PROMPT_VERSION
        if chain is None:
            chain, source, version = None, None, None
            if fallback == "teacher" and teacher["reasoning"][i]:
                chain, source, version = (teacher[c][i] for c in ("reasoning", "chain_source", "prompt_version"))
                fallbacks["teacher"] += 1
            elif fallback == "drop":
                fallbacks["dropped"] += 1
                continue
            else:
                fallbacks["cls_only" if fallback == "cls_only" else "cls_only_no_teacher_chain"] += 1
        keep.append(i)
        for name, value in (
            ("reasoning", chain),
            ("chain_source", source),
            ("prompt_version", version),
            ("num_candidates", verdict.num_candidates),
            ("num_valid", verdict.num_valid),
            ("num_correct", verdict.num_correct),
            ("rejection_reasons", list(verdict.reasons)),
        ):
            columns[name].append(value)
    features = dataset_features(benchmark)
    rows = dataset.select(keep).remove_columns([c for c in CHAIN_COLUMNS if c in dataset.column_names])
    for name in CHAIN_COLUMNS:
        rows = rows.add_column(name, columns[name], feature=features[name])
    rows = rows.select_columns([c for c in features if c in rows.column_names])
    accepted = [v.accepted is not None for v in verdicts]
    candidates = sum(v.num_candidates for v in verdicts)
    stats = RoundStats(
        round=round_index,
        images=len(dataset),
        accepted=sum(accepted),
        acceptance=sum(accepted) / max(len(dataset), 1),
        acceptance_per_domain=_rates(list(dataset["domain"]), accepted),
        acceptance_per_class=_rates([class_names[y] for y in labels], accepted),
        candidates=candidates,
        invalid_format_rate=sum(v.num_candidates - v.num_valid for v in verdicts) / max(candidates, 1),
        no_class_rate=sum(v.num_no_class for v in verdicts) / max(candidates, 1),
        fallback_policy=fallback,
        fallbacks=dict(fallbacks),
        training_images=len(keep),
        training_chains=sum(1 for chain in columns["reasoning"] if chain),
    )
    return rows, stats
