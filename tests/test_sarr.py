"""SARRTrainer in-process: bad input, a scripted relabel round end to end, overwrite/resume, PEFT restart."""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset

from helpers.sarr import CLASSES, chain_for, scripted_reply, tiny_rows
from helpers.sarr import sarr_test_config as config
from rdmldg_hf.models import default_lora_config, load_model_and_processor
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.testing import ScriptedBackend
from rdmldg_hf.trainers import SARRTrainer


@pytest.fixture(scope="module")
def rows():
    return tiny_rows(4)


@pytest.fixture(scope="module")
def split(rows):
    return lodo_split(rows, "rot30", holdout_fraction=0.0)  # 4 images per domain: nothing held out at 0.2 either


def sarr(model, processor, split, args, **kwargs) -> SARRTrainer:
    return SARRTrainer(
        model, args, train_dataset=split.train, processing_class=processor, split_record=split.record(), **kwargs
    )


@pytest.fixture(scope="module")
def model_dir(tiny_phrase_model):
    return tiny_phrase_model


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_rounds": 0}, "num_rounds must be >= 1"),
        ({"fallback": "keep"}, "Valid policies: teacher, cls_only, drop"),
        ({"round_init": "warm"}, "Valid: continue, restart"),
        ({"mode": "cls_only"}, "mode='cls_only' has no reasoning rows"),
        ({"relabel_num_candidates": 3}, "do_sample=True"),
    ],
)
def test_bad_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)


def test_mtct_stage_needs_chains(tmp_path, rows, model_dir):
    model, processor = load_model_and_processor(model_dir)
    with pytest.raises(ValueError, match="no 'reasoning' column"):
        SARRTrainer(model, config(tmp_path), rows.remove_columns("reasoning"), processing_class=processor)


def test_scripted_round_trains_on_the_kept_chains_and_refuses_another_run(tmp_path, rows, split, model_dir):
    model, processor = load_model_and_processor(model_dir)
    train = [r for r in rows if r["domain"] != "rot30"]
    right = {r["image_id"] for r in train[::2]}
    replies = {r["image_id"]: chain_for(CLASSES[r["label"]] if r["image_id"] in right else "a cloud") for r in train}
    backend = ScriptedBackend(scripted_reply(rows, replies))
    calls = []
    trainer = sarr(
        model,
        processor,
        split,
        config(tmp_path, fallback="drop"),
        backend=backend,
        stage_callback=lambda stage, m: calls.append(stage) or {"seen": stage},
    )
    assert len(trainer.train_dataset) == 12 and trainer.eval_dataset is None
    results = trainer.train()
    trainer.save_model()
    assert [r.name for r in results] == ["mtct", "round-1"] and calls == ["mtct", "round-1"]
    relabel = results[1].relabel
    assert relabel["accepted"] == len(right) and relabel["fallbacks"] == {"dropped": 12 - len(right)}
    assert relabel["training_images"] == len(right) == relabel["training_chains"]
    saved = load_dataset(str(tmp_path / "dataset"), "rotdigits-sarr-r1")
    saved_rows = [row for split in saved.values() for row in split]
    assert {row["image_id"] for row in saved_rows} == right
    assert all(row["reasoning"] == replies[row["image_id"]] for row in saved_rows)
    assert {row["chain_source"] for row in saved_rows} == {f"{model_dir.name}@sarr-r1"}
    record = json.loads((tmp_path / "rdmldg_config.json").read_text())
    assert (record["method"], record["test_domain"], record["settings"]["holdout_fraction"]) == ("sarr", "rot30", 0)

    # Same command again: nothing is redone.
    failing = ScriptedBackend(lambda m, i: 1 / 0)
    again = sarr(model, processor, split, config(tmp_path, fallback="drop"), backend=failing)
    assert [r.metrics for r in again.train()] == [{"seen": "mtct"}, {"seen": "round-1"}]
    # Another run's settings, or another split: refused, unless told to overwrite or resume.
    with pytest.raises(ValueError, match=r"holds another SARR run .*differs in: fallback.*--overwrite.*--resume"):
        sarr(model, processor, split, config(tmp_path, fallback="teacher"))
    other_split = lodo_split(rows, "rot60", holdout_fraction=0.0)
    with pytest.raises(ValueError, match=r"differs in: dataset, split\b"):
        sarr(model, processor, other_split, config(tmp_path, fallback="drop"))
    resumed = sarr(model, processor, split, config(tmp_path, fallback="teacher", resume_run=True))
    assert resumed.run_state.is_done("round-1")
    fresh = sarr(model, processor, split, config(tmp_path, fallback="cls_only", overwrite_output_dir=True))
    assert not fresh.run_state.is_done("mtct") and not (tmp_path / "dataset").exists()


def test_restart_rounds_with_a_fresh_adapter(tmp_path, split, model_dir):
    model, processor = load_model_and_processor(model_dir)
    trainer = sarr(
        model,
        processor,
        split,
        config(tmp_path, round_init="restart", mtct_stage=False, num_rounds=2),
        peft_config=default_lora_config(r=2),
        backend=ScriptedBackend(lambda m, i: "no chain"),
    )
    results = trainer.train()
    assert [r.name for r in results] == ["round-1", "round-2"]
    assert all(r.relabel["fallbacks"] == {"teacher": 12} for r in results)
    trainer.save_model()
    assert (tmp_path / "adapter_config.json").exists()
    assert json.loads((tmp_path / "rdmldg_config.json").read_text())["adapter"] is True


@pytest.mark.parametrize("reasoning", [True, False], ids=["with-reasoning", "without-reasoning"])
def test_a_dataset_without_the_teacher_columns_relabels(tmp_path, rows, model_dir, reasoning):
    """image/label/domain/image_id(/reasoning) only, as MTCTTrainer accepts: no teacher columns means no teacher
    chain (nor its source) for the fallback."""
    keep = ["image", "label", "domain", "image_id"] + (["reasoning"] if reasoning else [])
    bare = rows.select_columns(keep)
    split = lodo_split(bare, "rot30", holdout_fraction=0.0)
    model, processor = load_model_and_processor(model_dir)
    train = [r for r in bare if r["domain"] != "rot30"]
    right = {r["image_id"] for r in train[::3]}
    replies = {r["image_id"]: chain_for(CLASSES[r["label"]] if r["image_id"] in right else "a cloud") for r in train}
    trainer = sarr(
        model,
        processor,
        split,
        config(tmp_path, mtct_stage=False, max_steps=1),
        backend=ScriptedBackend(scripted_reply(bare, replies)),
    )
    (result,) = trainer.train()
    fallbacks = {"teacher": 12 - len(right)} if reasoning else {"cls_only_no_teacher_chain": 12 - len(right)}
    assert result.relabel["accepted"] == len(right) and result.relabel["fallbacks"] == fallbacks
    saved = [row for part in load_dataset(str(tmp_path / "dataset"), "rotdigits-sarr-r1").values() for row in part]
    teacher = {r["image_id"]: r.get("reasoning") for r in train}
    for row in saved:
        if row["image_id"] in right:
            assert row["chain_source"] == f"{model_dir.name}@sarr-r1"
        else:
            assert row["reasoning"] == teacher[row["image_id"]] and row["chain_source"] is None
