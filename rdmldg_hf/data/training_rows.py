"""Image rows -> classification and reasoning training rows.

Each image of a DomainBed-Reasoning dataset (``image``, ``label``, ``reasoning``, ...)
gives up to two TRL prompt-completion rows (see :func:`rdmldg_hf.prompts.training_example`):

- a classification row: the classification question, answered with the class name;
- a reasoning row: the reasoning question, answered with the image's five-stage chain
  (only when the image has one).

Training works on *units*: the items a sampler draws and ``per_device_train_batch_size``
counts. A unit is one image with the list of its tasks (``mtct_tasks``), expanded into its
rows only in the collator, so both rows of an image always land in the same batch:

==================  ======================================================================
mode                units
==================  ======================================================================
``paired``          one per image: tasks ``[cls, reasoning]`` (``[cls]`` without a chain)
``mixed``           one per row: every image's ``[cls]``, plus ``[reasoning]`` for a seeded
                    ``mixed_reasoning_ratio`` share of the images with a chain; shuffled
                    independently, so an image's two rows rarely share a batch
``cls_only``        one per image: ``[cls]``
``reasoning_only``  one per image with a chain: ``[reasoning]`` (images without are dropped)
==================  ======================================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Collection, Mapping, Sequence

from datasets import Dataset, Value, concatenate_datasets
from datasets import Sequence as SequenceFeature

from ..chains import escape_special_tokens
from ..prompts import TASKS, training_example

__all__ = [
    "CLASSIFICATION",
    "REASONING",
    "MODES",
    "TASKS_COLUMN",
    "INDEX_COLUMN",
    "UnitStats",
    "has_chain",
    "check_mode",
    "build_units",
    "unit_rows",
    "unit_lengths",
    "build_training_rows",
    "RenderedRow",
    "render_rows",
]

CLASSIFICATION, REASONING = 0, 1  # task ids, indices into prompts.TASKS
MODES: tuple[str, ...] = ("paired", "mixed", "cls_only", "reasoning_only")
TASKS_COLUMN = "mtct_tasks"
INDEX_COLUMN = "mtct_image_index"
NEEDS_CHAINS = ("paired", "mixed", "reasoning_only")


def has_chain(reasoning: str | None) -> bool:
    """Whether a ``reasoning`` value is a usable chain (not null, not blank)."""
    return reasoning is not None and bool(str(reasoning).strip())


@dataclass(frozen=True)
class UnitStats:
    """What :func:`build_units` made: counts of images, rows and images left out."""

    mode: str
    images: int
    with_chain: int
    classification_rows: int
    reasoning_rows: int
    units: int
    dropped_without_chain: int

    def summary(self) -> str:
        text = (
            f"MTCT mode {self.mode!r}: {self.images} images ({self.with_chain} with a chain) -> "
            f"{self.classification_rows} classification + {self.reasoning_rows} reasoning rows in {self.units} units"
        )
        if self.dropped_without_chain:
            text += f"; {self.dropped_without_chain} images without a chain left out"
        return text


def check_mode(mode: str, dataset: Dataset) -> None:
    """Raise a ValueError for an unknown mode, or a mode that needs chains on a dataset without them."""
    if mode not in MODES:
        raise ValueError(f"Unknown MTCT mode {mode!r}. Valid modes: {', '.join(MODES)}.")
    if mode in NEEDS_CHAINS and "reasoning" not in dataset.column_names:
        raise ValueError(
            f"Mode {mode!r} needs a 'reasoning' column (the five-stage chains), but the dataset has only "
            f"{dataset.column_names}. Import chains first (rdmldg build --chains FILE) or use mode='cls_only'."
        )


def build_units(
    dataset: Dataset,
    mode: str = "paired",
    mixed_reasoning_ratio: float = 1.0,
    seed: int = 0,
) -> tuple[Dataset, UnitStats]:
    """The unit dataset of a mode: the image rows plus ``mtct_tasks`` and ``mtct_image_index``.

    ``mtct_image_index`` is the unit's row in ``dataset``; images are not decoded.

    Raises:
        ValueError: unknown mode, no ``reasoning`` column in a mode that needs chains, a ratio
            outside [0, 1], or no image with a chain in ``reasoning_only`` mode.
    """
    check_mode(mode, dataset)
    if not 0.0 <= mixed_reasoning_ratio <= 1.0:
        raise ValueError(f"mixed_reasoning_ratio must be in [0, 1]; got {mixed_reasoning_ratio!r}.")
    n = len(dataset)
    chained = (
        [i for i, r in enumerate(dataset["reasoning"]) if has_chain(r)] if "reasoning" in dataset.column_names else []
    )
    chained_set = set(chained)
    feature = SequenceFeature(Value("int8"))

    def with_tasks(indices: list[int] | range, tasks: list[list[int]]) -> Dataset:
        part = dataset if isinstance(indices, range) else dataset.select(indices)
        part = part.add_column(INDEX_COLUMN, list(indices), feature=Value("int64"))
        return part.add_column(TASKS_COLUMN, tasks, feature=feature)

    dropped = 0
    if mode == "paired":
        units = with_tasks(
            range(n), [[CLASSIFICATION, REASONING] if i in chained_set else [CLASSIFICATION] for i in range(n)]
        )
        cls_rows, reasoning_rows = n, len(chained)
    elif mode == "cls_only":
        units = with_tasks(range(n), [[CLASSIFICATION]] * n)
        cls_rows, reasoning_rows = n, 0
    elif mode == "reasoning_only":
        if not chained:
            raise ValueError("Mode 'reasoning_only' needs images with a chain, but every 'reasoning' value is empty.")
        units = with_tasks(chained, [[REASONING]] * len(chained))
        cls_rows, reasoning_rows, dropped = 0, len(chained), n - len(chained)
    else:  # mixed
        picked = sorted(random.Random(seed).sample(chained, round(mixed_reasoning_ratio * len(chained))))
        parts = [with_tasks(range(n), [[CLASSIFICATION]] * n)]
        if picked:
            parts.append(with_tasks(picked, [[REASONING]] * len(picked)))
        units = concatenate_datasets(parts)
        cls_rows, reasoning_rows = n, len(picked)
    stats = UnitStats(mode, n, len(chained), cls_rows, reasoning_rows, len(units), dropped)
    return units, stats


def unit_rows(
    unit: Mapping[str, Any], class_names: Sequence[str], special_tokens: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The prompt-completion rows of one unit, each with its ``image`` and ``task`` id.

    ``special_tokens`` (the tokenizer's) found in a chain are escaped
    (:func:`rdmldg_hf.chains.escape_special_tokens`): the chain trains as plain text, never as those tokens.

    Raises:
        ValueError: a label outside the class list, or a reasoning task without a chain.
    """
    label = unit["label"]
    if label is None or not 0 <= int(label) < len(class_names):
        raise ValueError(
            f"Label {label!r} is outside the class list ({len(class_names)} classes: {', '.join(class_names)})."
        )
    rows = []
    for task in unit[TASKS_COLUMN]:
        if task == CLASSIFICATION:
            answer = class_names[int(label)]
        else:
            answer = escape_special_tokens(unit["reasoning"], special_tokens) if special_tokens else unit["reasoning"]
        row = training_example(TASKS[task], class_names, answer)
        row["image"] = unit["image"]
        row["task"] = int(task)
        rows.append(row)
    return rows


def unit_lengths(units: Dataset, tokenizer: Any, class_names: Sequence[str]) -> list[int]:
    """The answer tokens of each unit: its class name's and its chain's, as its tasks say (images not decoded).

    Rows of a unit share their prompts, so the answers are what makes units of one dataset differ in
    length: the key of length-grouped sampling.
    """
    columns = [TASKS_COLUMN, "label"] + (["reasoning"] if "reasoning" in units.column_names else [])
    table = units.select_columns(columns).to_dict()
    chains = table.get("reasoning") or [None] * len(units)
    names = tokenizer(list(class_names), add_special_tokens=False)["input_ids"]
    texts = [
        chain if REASONING in tasks and has_chain(chain) else "" for tasks, chain in zip(table[TASKS_COLUMN], chains)
    ]
    chain_tokens = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [
        (len(names[int(label)]) if CLASSIFICATION in tasks else 0) + len(tokens)
        for tasks, label, tokens in zip(table[TASKS_COLUMN], table["label"], chain_tokens)
    ]


def build_training_rows(
    dataset: Dataset,
    class_names: Sequence[str],
    mode: str = "paired",
    mixed_reasoning_ratio: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """Flat TRL rows (``image``, ``prompt``, ``completion``, ``task``, ``image_index``), units in order.

    What a plain ``SFTTrainer`` would train on for the same mode; each unit's rows are
    consecutive. Images are decoded to build the rows, so use it for small datasets.
    """
    units, _ = build_units(dataset, mode, mixed_reasoning_ratio, seed)
    rows: list[dict[str, Any]] = []
    for unit in units:
        for row in unit_rows(unit, class_names):
            row["image_index"] = unit[INDEX_COLUMN]
            rows.append(row)
    if not rows:
        raise ValueError(f"Mode {mode!r} makes no training rows from {len(dataset)} images.")
    return Dataset.from_list(rows).cast_column("image", dataset.features["image"])


@dataclass(frozen=True)
class RenderedRow:
    """A prompt-completion row as training sees it: its prompt text, its completion text and the completion's
    token ids (the tokens its loss is computed on)."""

    prompt: str
    completion: str
    completion_ids: list[int]


def render_rows(processor: Any, rows: Sequence[Mapping[str, Any]]) -> list[RenderedRow]:
    """Render prompt-completion rows (:func:`unit_rows`, :func:`rdmldg_hf.prompts.training_example`) as the
    training collator does.

    TRL's vision collator renders a row with ``trl.apply_chat_template``: the prompt is the start that the chat
    template's rendering of the prompt turns (with the generation prompt) shares with its rendering of the whole
    conversation, the completion is the rest, and each is tokenized on its own without added special tokens.
    Whatever the chat template writes around an answer (a space, an end-of-turn token) is part of the completion.
    """
    from trl.data_utils import apply_chat_template

    rendered = [apply_chat_template({"prompt": r["prompt"], "completion": r["completion"]}, processor) for r in rows]
    completions = [r["completion"] for r in rendered]
    ids = processor(text=completions, add_special_tokens=False)["input_ids"] if rendered else []  # as the collator
    return [RenderedRow(r["prompt"], r["completion"], list(row_ids)) for r, row_ids in zip(rendered, ids)]
