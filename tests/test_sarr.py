"""SARRTrainer in-process: bad input, a scripted relabel round end to end, overwrite/resume, PEFT restart."""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset

from rdmldg_hf.generation import ScriptedBackend
from rdmldg_hf.models import default_lora_config, load_model_and_processor
from rdmldg_hf.testing import build_tiny_model
from rdmldg_hf.trainers.sarr import SARRConfig, SARRTrainer
from sarr_support import CLASSES, chain_for, scripted_reply, tiny_rows


@pytest.fixture(scope="module")
def rows():
    return tiny_rows(4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), preset="test", phrase_tokens=True, vocab_size=1024)


def config(out, **overrides) -> SARRConfig:
    settings = dict(
        output_dir=str(out), num_rounds=1, test_domain="rot30", max_steps=2, per_device_train_batch_size=4,
        relabel_batch_size=4, relabel_max_new_tokens=8, save_strategy="no", report_to="none",
        activation_checkpointing=False, bf16=False, disable_tqdm=True, logging_steps=1,
    )
    settings.update(overrides)
    return SARRConfig(**settings)


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
        SARRTrainer(model, config(tmp_path), rows.remove_columns("reasoning"), processor)


def test_scripted_round_trains_on_the_kept_chains_and_refuses_another_run(tmp_path, rows, model_dir):
    model, processor = load_model_and_processor(model_dir)
    train = [r for r in rows if r["domain"] != "rot30"]
    right = {r["image_id"] for r in train[::2]}
    replies = {r["image_id"]: chain_for(CLASSES[r["label"]] if r["image_id"] in right else "a cloud") for r in train}
    backend = ScriptedBackend(scripted_reply(rows, replies))
    calls = []
    trainer = SARRTrainer(
        model, config(tmp_path, fallback="drop"), rows, processor, backend=backend,
        stage_callback=lambda stage, m: calls.append(stage) or {"seen": stage},
    )
    assert len(trainer.train_rows) == 12 and len(trainer.test_rows) == 4  # holdout of 4 per domain: 0
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
    assert json.loads((tmp_path / "rdmldg_config.json").read_text())["method"] == "sarr"

    # Same command again: nothing is redone.
    again = SARRTrainer(model, config(tmp_path, fallback="drop"), rows, processor, backend=ScriptedBackend(lambda m, i: 1 / 0))
    assert [r.metrics for r in again.train()] == [{"seen": "mtct"}, {"seen": "round-1"}]
    # Another run's settings: refused, unless told to overwrite or resume.
    with pytest.raises(ValueError, match=r"holds another SARR run .*differs in: fallback.*--overwrite.*--resume"):
        SARRTrainer(model, config(tmp_path, fallback="teacher"), rows, processor)
    resumed = SARRTrainer(model, config(tmp_path, fallback="teacher", resume_run=True), rows, processor)
    assert resumed.state.is_done("round-1")
    fresh = SARRTrainer(model, config(tmp_path, fallback="cls_only", overwrite_output_dir=True), rows, processor)
    assert not fresh.state.is_done("mtct") and not (tmp_path / "dataset").exists()


def test_restart_rounds_with_a_fresh_adapter(tmp_path, rows, model_dir):
    model, processor = load_model_and_processor(model_dir)
    trainer = SARRTrainer(
        model, config(tmp_path, round_init="restart", mtct_stage=False, num_rounds=2), rows, processor,
        peft_config=default_lora_config(r=2), backend=ScriptedBackend(lambda m, i: "no chain"),
    )
    results = trainer.train()
    assert [r.name for r in results] == ["round-1", "round-2"]
    assert all(r.relabel["fallbacks"] == {"teacher": 12} for r in results)
    trainer.save_model()
    assert (tmp_path / "adapter_config.json").exists()
    assert json.loads((tmp_path / "rdmldg_config.json").read_text())["adapter"] is True
