"""Per-checkpoint records (DomainBed's results.jsonl) written by the MTCT recipe and the LODO runner, and their
in-training choice of checkpoint equal to the one `rdmldg collect` makes by training-domain validation."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import load_dataset
from trl import ModelConfig, TrlParser

from helpers.analysis import dataset_dir, recipe_args
from helpers.mtct import tiny_model_dir
from rdmldg_hf.experiments.records import RecordWriter, write_json_atomic
from rdmldg_hf.experiments.selection import TrainingDomainValidation
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.protocol.environments import environment_split
from rdmldg_hf.trainers import MTCTConfig, SARRConfig
from rdmldg_hf.training import MTCTScriptArguments, SARRScriptArguments, run_mtct, run_sarr

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _iid_choice(records: list[dict]) -> dict:
    """DomainBed's training-domain validation: the first checkpoint with the highest mean out-accuracy of the
    environments not held out (recomputed here)."""
    test_env = records[0]["args"]["test_envs"][0]
    envs = sum(1 for key in records[0] if key.endswith("_out_acc"))
    scores = [np.mean([r[f"env{i}_out_acc"] for i in range(envs) if i != test_env]) for r in records]
    return records[int(np.argmax(scores))]


def test_environment_split_holds_lodo_splits_rows_and_every_part():
    dataset = load_dataset(str(dataset_dir()), "rotdigits")
    lodo = lodo_split(dataset, "rot60", 0.25, 3, 4, holdout_style="domainbed", test_split="in")
    split = environment_split(dataset, [2], 0.25, 3, holdout_style="domainbed", max_train_images_per_domain=4)
    assert split.environments == ["rot0", "rot30", "rot60", "rot90"] and split.test_domains == ["rot60"]
    assert split.train["image_id"] == lodo.train["image_id"]
    assert split.validation["image_id"] == lodo.validation["image_id"]
    assert split.test_in["image_id"] == lodo.test["image_id"]
    parts = {(i, part): rows for i, part, rows in split.parts()}
    assert len(parts) == 8 and set(parts[(2, "in")]["image_id"]) == set(lodo.test["image_id"])
    assert set(parts[(0, "out")]["image_id"]) <= set(lodo.validation["image_id"])
    with pytest.raises(ValueError, match=r"Unknown test environment 7\. Valid environments: 0 \(rot0\), 1 \(rot30\)"):
        environment_split(dataset, [7], 0.25)


def test_an_environment_without_out_images_is_refused_before_training(tmp_path):
    dataset = load_dataset(str(dataset_dir()), "rotdigits")
    split = environment_split(dataset, [1], 0.01)  # int(n * 0.01) = 0 out images per domain
    with pytest.raises(ValueError, match=r"env0_out \(rot0\), .* hold no image .* Raise holdout_fraction"):
        RecordWriter(tmp_path / "run", {}, {}, split, None, None)


def test_mtct_recipe_writes_records_and_saves_the_checkpoint_collect_selects(tmp_path, capsys):
    out = tmp_path / "run"
    argv = recipe_args(out, 0.25, "--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3")
    argv += ["--holdout_style", "domainbed", "--records_every", "1", "--per_device_eval_batch_size", "16"]
    script, args, model = TrlParser((MTCTScriptArguments, MTCTConfig, ModelConfig)).parse_args_and_config(args=argv)
    trainer = run_mtct(script, args, model)
    records = _records(out / "results.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and (out / "done").read_text() == "done"
    first = records[0]
    assert first["args"]["dataset"] == "RotatedDigits" and first["args"]["algorithm"] == "mtct"
    assert first["args"]["test_envs"] == [1] and first["args"]["trial_seed"] == 0  # rot30, DomainBed's order
    assert first["hparams"] == {"learning_rate": 5e-3, "per_device_train_batch_size": 4, "weight_decay": 0.0}
    assert sorted(k for k in first if k.startswith("env")) == sorted(
        f"env{i}_{part}_acc" for i in range(4) for part in ("in", "out")
    )
    assert json.loads((out / "args.json").read_text()) == first["args"]
    chosen = _iid_choice(records)
    assert TrainingDomainValidation.choose(records)["record"]["step"] == chosen["step"]  # collect's choice
    selector = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "selector")).selector
    assert selector.best_at == f"step-{chosen['step']}"
    assert f"Training-domain validation selects step-{chosen['step']}" in capsys.readouterr().out


def test_sarr_recipe_records_every_stage_with_steps_counting_on(tmp_path, capsys):
    out = tmp_path / "run"
    argv = recipe_args(out, 0.25, "--max_steps", "2", "--round_max_steps", "1", "--num_rounds", "1")
    argv += ["--per_device_train_batch_size", "4", "--relabel_batch_size", "8", "--relabel_max_new_tokens", "8"]
    argv += ["--eval_reasoning", "never", "--holdout_style", "domainbed", "--records_every", "1"]
    script, args, model = TrlParser((SARRScriptArguments, SARRConfig, ModelConfig)).parse_args_and_config(args=argv)
    run_sarr(script, args, model)
    records = _records(out / "results.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and records[0]["args"]["algorithm"] == "full"
    assert (out / "done").exists()
    chosen = _iid_choice(records)
    assert TrainingDomainValidation.choose(records)["record"]["step"] == chosen["step"]
    assert f"Training-domain validation selects step-{chosen['step']}" in capsys.readouterr().out


def test_lodo_rows_with_records_select_what_collect_selects(tmp_path, capsys):
    data = dataset_dir()
    settings = {
        "output_dir": str(tmp_path / "lodo"),
        "dataset_name": str(data),
        "dataset_config": "rotdigits",
        "model_name_or_path": str(tiny_model_dir()),
        "test_domains": ["rot30"],
        "methods": ["labels_only", "full"],
        "holdout_fraction": 0.25,
        "holdout_style": "domainbed",
        "lora_r": 0,
        "select_every": 1,
        "eval_batch_size": 16,
        "max_new_tokens": 8,
        "write_records": True,
        "training": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 5e-3},
        "sarr": {"num_rounds": 1, "round_max_steps": 1, "relabel_batch_size": 8, "relabel_max_new_tokens": 8},
    }
    config_file = tmp_path / "lodo.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    runpy.run_path(str(RECIPES / "lodo.py"), run_name="lodo_recipe")["main"](["--config", str(config_file)])
    results = json.loads((tmp_path / "lodo" / "results.json").read_text())
    for method, steps in (("labels_only", [1, 2]), ("full", [1, 2, 3])):  # full: MTCT stage 2 steps, round-1 1
        records = _records(tmp_path / "lodo" / "runs" / method / "rot30" / "results.jsonl")
        assert [r["step"] for r in records] == steps and records[0]["args"]["algorithm"] == method
        chosen = _iid_choice(records)
        history = results["runs"][method]["rot30"]["selection"]
        assert [h["checkpoint"] for h in history] == [f"step-{s}" for s in steps]
        assert results["runs"][method]["rot30"]["selected"] == f"step-{chosen['step']}"
    capsys.readouterr()
    assert rdmldg_collect(tmp_path / "lodo" / "runs" / "labels_only", tmp_path / "lodo" / "runs" / "full") == 0
    assert "| full |" in capsys.readouterr().out


def rdmldg_collect(*folders: Path) -> int:
    from rdmldg_hf.cli import main

    return main(["collect", *map(str, folders)])


def test_the_records_module_spelling_still_writes_and_names_the_new_one(tmp_path):
    with pytest.warns(FutureWarning, match="rdmldg_hf.atomic.atomic_write"):
        write_json_atomic(tmp_path / "args.json", "{}\n")
    assert (tmp_path / "args.json").read_text() == "{}\n"
