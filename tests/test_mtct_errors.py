"""Bad input fails before training starts, with errors that name the value and the valid ones."""

import pytest
from datasets import Value

from helpers.mtct import config, load_tiny, tiny_dataset
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer


@pytest.fixture(scope="module")
def tiny():
    return load_tiny()


def _make(tmp_path, tiny, dataset, **overrides):
    model, processor = tiny
    return MTCTTrainer(model, args=config(tmp_path, **overrides), train_dataset=dataset, processing_class=processor)


@pytest.mark.parametrize("mode", ["paired", "mixed", "reasoning_only"])
def test_no_reasoning_column(tmp_path, tiny, mode):
    with pytest.raises(ValueError, match=rf"Mode '{mode}' needs a 'reasoning' column.*cls_only"):
        _make(tmp_path, tiny, tiny_dataset(8, reasoning=False), mode=mode)
    # Labels alone need no chains.
    _make(tmp_path, tiny, tiny_dataset(8, reasoning=False), mode="cls_only")


def test_reasoning_only_without_any_chain(tmp_path, tiny):
    with pytest.raises(ValueError, match="every 'reasoning' value is empty"):
        _make(tmp_path, tiny, tiny_dataset(4, without_chain=(0, 1, 2, 3)), mode="reasoning_only")


def test_splitting_is_not_the_trainers_job(tmp_path):
    """The held-out domain and the holdout are chosen where the data is split (rdmldg_hf.protocol), and an
    unknown held-out domain is named there with the valid ones."""
    for field in ("test_domain", "holdout_fraction", "holdout_seed", "holdout_style"):
        with pytest.raises(TypeError, match=field):
            MTCTConfig(output_dir=str(tmp_path), **{field: None})
    with pytest.raises(ValueError, match="Domain 'rot45' is not in the dataset. Its domains: rot0, rot30, rot60"):
        lodo_split(tiny_dataset(8), "rot45")


def test_labels_outside_the_class_list(tmp_path, tiny):
    dataset = tiny_dataset(8).cast_column("label", Value("int64"))
    dataset = dataset.map(lambda row, i: {"label": 12 if i == 2 else row["label"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"Labels \[12\] are outside the class list.*zero, one"):
        _make(tmp_path, tiny, dataset, benchmark="rotdigits")
    with pytest.raises(ValueError, match="not a ClassLabel"):
        _make(tmp_path, tiny, dataset)


def test_benchmark_that_does_not_match_the_labels(tmp_path, tiny):
    with pytest.raises(ValueError, match="not those of benchmark 'pacs'"):
        _make(tmp_path, tiny, tiny_dataset(8), benchmark="pacs")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("mode", "joint", "Valid modes: paired, mixed, cls_only, reasoning_only"),
        ("reasoning_normalization", "per_batch", "Valid: per_sequence, per_token"),
        ("mixed_reasoning_ratio", 1.5, r"in \[0, 1\]"),
        ("loss_type", "dft", "loss_type must be 'nll'"),
    ],
)
def test_bad_config_values(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        MTCTConfig(output_dir=str(tmp_path), **{field: value})


def test_config_defaults_are_cpu_safe(tmp_path):
    args = MTCTConfig(output_dir=str(tmp_path))
    assert args.bf16 is False and args.mode == "paired" and args.reasoning_normalization == "per_sequence"
    assert (args.cls_weight, args.reasoning_weight) == (1.0, 1.0)
