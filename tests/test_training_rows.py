"""Image rows -> MTCT units and flat training rows."""

import pytest

from helpers.mtct import BENCHMARK, tiny_dataset
from rdmldg_hf.data.training_rows import (
    CLASSIFICATION,
    INDEX_COLUMN,
    REASONING,
    TASKS_COLUMN,
    build_training_rows,
    build_units,
    unit_rows,
)
from rdmldg_hf.prompts import classification_question, reasoning_question


def test_units_per_mode():
    dataset = tiny_dataset(10, without_chain=(1, 4))
    paired, stats = build_units(dataset, "paired")
    assert len(paired) == 10 and paired[1][TASKS_COLUMN] == [CLASSIFICATION] and paired[0][TASKS_COLUMN] == [0, 1]
    assert (stats.classification_rows, stats.reasoning_rows, stats.with_chain) == (10, 8, 8)
    cls_only, _ = build_units(dataset, "cls_only")
    assert all(unit == [CLASSIFICATION] for unit in cls_only[TASKS_COLUMN])
    reasoning, stats = build_units(dataset, "reasoning_only")
    assert reasoning[INDEX_COLUMN] == [0, 2, 3, 5, 6, 7, 8, 9] and stats.dropped_without_chain == 2
    assert "2 images without a chain left out" in stats.summary()
    mixed, stats = build_units(dataset, "mixed", mixed_reasoning_ratio=0.5, seed=1)
    assert len(mixed) == 14 and stats.reasoning_rows == 4
    picked = [i for i, tasks in zip(mixed[INDEX_COLUMN], mixed[TASKS_COLUMN]) if tasks == [REASONING]]
    assert set(picked) <= {0, 2, 3, 5, 6, 7, 8, 9}


def test_mixed_selection_is_seeded():
    dataset = tiny_dataset(12)
    first, _ = build_units(dataset, "mixed", 0.5, seed=3)
    again, _ = build_units(dataset, "mixed", 0.5, seed=3)
    other, _ = build_units(dataset, "mixed", 0.5, seed=4)
    assert first[INDEX_COLUMN] == again[INDEX_COLUMN] != other[INDEX_COLUMN]


def test_unit_rows_are_trl_prompt_completion_rows():
    dataset = tiny_dataset(3)
    units, _ = build_units(dataset, "paired")
    unit = units[0]
    cls_row, reasoning_row = unit_rows(unit, BENCHMARK.class_names)
    names = BENCHMARK.class_names
    assert cls_row["prompt"][0]["content"][-1]["text"] == classification_question(names)
    assert cls_row["completion"][0]["content"][0]["text"] == names[dataset[0]["label"]]
    assert reasoning_row["prompt"][0]["content"][-1]["text"] == reasoning_question(names)
    assert reasoning_row["completion"][0]["content"][0]["text"] == dataset[0]["reasoning"]
    assert cls_row["image"] is unit["image"] and (cls_row["task"], reasoning_row["task"]) == (0, 1)
    with pytest.raises(ValueError, match="outside the class list"):
        unit_rows({**unit, "label": 10}, names)


def test_flat_rows_keep_units_together():
    dataset = tiny_dataset(4)
    rows = build_training_rows(dataset, BENCHMARK.class_names, "paired")
    assert rows["image_index"] == [0, 0, 1, 2, 2, 3, 3] and rows["task"] == [0, 1, 0, 0, 1, 0, 1]
    assert rows[0]["image"].size == (32, 32)


def test_bad_mode_and_ratio():
    dataset = tiny_dataset(4)
    with pytest.raises(ValueError, match="Valid modes"):
        build_units(dataset, "both")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_units(dataset, "mixed", mixed_reasoning_ratio=-0.1)
