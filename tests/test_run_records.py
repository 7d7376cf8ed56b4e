"""Tiny MTCT, SARR (recipe) and LODO runs: one builder of their run records (the same fields filled the same way),
what they record about their holdout, the split the analyses read back, DomainBed's protocol (test on the in part,
selection per epoch), and the per-image predictions they write."""

from __future__ import annotations

import argparse
import json
import runpy
from pathlib import Path

import pytest
from datasets import concatenate_datasets, load_dataset
from trl import ModelConfig, TrlParser

from helpers.analysis import dataset_dir, recipe_args
from helpers.mtct import config as mtct_config
from helpers.mtct import tiny_model_dir
from helpers.sarr import sarr_test_config
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.commands import analyze as analyze_command
from rdmldg_hf.evaluation.lodo_config import LodoConfig
from rdmldg_hf.experiments.lodo import LodoRunner
from rdmldg_hf.models import RunConfig, build_run_record, load_model_and_processor
from rdmldg_hf.prompts import PROMPT_VERSION
from rdmldg_hf.protocol import lodo_split, split_holdout
from rdmldg_hf.testing import ScriptedBackend
from rdmldg_hf.trainers import MTCTTrainer, SARRConfig, SARRTrainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _in_part_ids(fraction: float, style: str, test_domain: str) -> set[str]:
    rows = load_dataset(str(dataset_dir()), "rotdigits")
    in_part, _ = split_holdout(concatenate_datasets([rows[d] for d in rows]), fraction, 0, style)
    return {i for i, d in zip(in_part["image_id"], in_part["domain"]) if d != test_domain}


def _analysis_source_ids(run_dir: Path) -> set[str]:
    """The training-domain images ``rdmldg analyze`` scores for a run, read back from its rdmldg_config.json."""
    args = argparse.Namespace(
        dataset=str(dataset_dir()), config=None, domains=None, test_domain=None, max_images=None, seed=0
    )
    data = analyze_command._data(args, RunConfig.load(run_dir))
    return {image_id for image_id, group in zip(data.image_ids, data.groups) if group == "source"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sarr_recipe_records_the_runs_holdout_and_writes_predictions(tmp_path):
    recipe = runpy.run_path(str(RECIPES / "sarr.py"), run_name="sarr_recipe")
    out = tmp_path / "sarr"
    script, args, model = TrlParser((recipe["SARRScriptArguments"], SARRConfig, ModelConfig)).parse_args_and_config(
        args=recipe_args(
            out,
            0.34,
            *("--max_steps", "1", "--num_rounds", "1", "--round_max_steps", "1"),
            *("--per_device_train_batch_size", "4", "--eval_batch_size", "12", "--logging_steps", "1"),
            *("--relabel_batch_size", "12", "--relabel_max_new_tokens", "4"),
        )
    )
    recipe["main"](script, args, model)
    run = RunConfig.load(out)
    assert run.settings["holdout_fraction"] == 0.34 and run.settings["holdout_seed"] == 0  # was 0.0 (a stage's)
    assert run.settings["holdout_style"] == "hash"
    source = _analysis_source_ids(out)
    stage = out / "stages" / "mtct" / "final"  # a stage trains on rows already split: it records the run's split
    assert RunConfig.load(stage).test_domain == "rot30" and _analysis_source_ids(stage) == source
    assert source == _in_part_ids(0.34, "hash", "rot30") and len(source) == 3 * 4  # int(6 * 0.34) = 2 held out

    records = _lines(out / "predictions.jsonl")
    parts = {(r["part"], r["mode"]) for r in records}
    assert parts == {("heldout", "direct"), ("heldout", "reasoning"), ("source_holdout", "direct")}
    heldout = [r for r in records if r["part"] == "heldout" and r["mode"] == "direct"]
    assert len(heldout) == 6 and {r["domain"] for r in heldout} == {"rot30"}
    assert all(
        len(r["probabilities"]) == 10 and r["prediction"] == max(range(10), key=r["probabilities"].__getitem__)
        for r in heldout
    )
    validation = {r["image_id"] for r in records if r["part"] == "source_holdout"}
    assert len(validation) == 6 and not validation & source
    results = json.loads((out / "results.json").read_text())
    assert results["final"]["heldout_direct"] == pytest.approx(sum(r["correct"] for r in heldout) / 6)
    assert all("chain" in r for r in records if r["mode"] == "reasoning")


def test_lodo_domainbed_protocol_records_selection_and_predictions(tmp_path):
    settings = {
        "output_dir": str(tmp_path / "lodo"),
        "dataset_name": str(dataset_dir()),
        "dataset_config": "rotdigits",
        "model_name_or_path": str(tiny_model_dir()),
        "test_domains": ["rot30"],
        "methods": ["labels_only"],
        "max_train_images_per_domain": 4,
        "holdout_fraction": 0.2,
        "holdout_style": "domainbed",
        "test_split": "in",
        "lora_r": 0,
        "eval_batch_size": 8,
        "training": {
            **{"max_steps": 6, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1},
            "bf16": False,  # fp32 on every device: the selection is recomputed below from the saved weights
        },
    }
    runner = LodoRunner(LodoConfig.from_dict(settings))
    record = runner.run()["runs"]["labels_only"]["rot30"]
    model_dir = Path(record["model_dir"])
    run = RunConfig.load(model_dir)
    assert {k: run.settings[k] for k in ("holdout_fraction", "holdout_style", "test_split", "selection_rule")} == {
        "holdout_fraction": 0.2,
        "holdout_style": "domainbed",
        "test_split": "in",
        "selection_rule": "mean",
    }
    assert _analysis_source_ids(model_dir) == _in_part_ids(0.2, "domainbed", "rot30")

    # One checkpoint per epoch (12 training images, batch 4: 3 steps an epoch), then the final one.
    history = record["selection"]
    assert [h["checkpoint"] for h in history] == ["epoch-1 (step-3)", "step-6"]
    best = max(h["validation_accuracy"] for h in history)
    assert record["validation_accuracy"] == best
    assert record["selected"] == next(h["checkpoint"] for h in history if h["validation_accuracy"] == best)
    model, processor = load_model_and_processor(model_dir, device="auto", dtype="float32")  # where it trained
    split = runner.split("rot30")
    train, validation, test = split.train, split.validation, split.test
    assert len(train) == 12 and len(validation) == 3
    assert runner._validate(model, processor, validation, "direct") == pytest.approx(best)  # the restored weights

    # DomainBed's test split: the held-out domain's in part (6 images, 1 out), every prediction on file.
    in_rot30 = set(
        split_holdout(load_dataset(str(dataset_dir()), "rotdigits")["rot30"], 0.2, 0, "domainbed")[0]["image_id"]
    )
    lines = _lines(model_dir / "predictions.jsonl")
    assert {r["image_id"] for r in lines} == set(test["image_id"]) == in_rot30 and len(lines) == 5
    direct = record["test"]["direct"]
    assert direct["accuracy"] == pytest.approx(sum(r["correct"] for r in lines) / 5)
    assert direct["rows"] == {"part": "in part", "images_per_domain": {"rot30": 5}}
    table = (tmp_path / "lodo" / "results.md").read_text()
    assert "Test images: rot30: in part (5 images)." in table and "holdout domainbed (fraction 0.2, seed 0)" in table
    assert "stratified sample of 4 in-part images per training domain (seed 0)" in table


# --------------------------------------------------------------------------- one run-record builder


def test_the_builder_records_the_split_and_the_classes():
    benchmark = get_benchmark("rotdigits")
    split = {"test_domain": "rot30", "holdout_fraction": 0.2, "holdout_seed": 0}
    run = build_run_record(
        "mtct",
        benchmark,
        domains=["rot90", "rot0", "rot90"],
        base_model="base",
        adapter=True,
        split_record=split,
        settings={"mode": "paired", "holdout_fraction": 0.5},  # the split's own value wins
    )
    assert (run.method, run.benchmark, run.test_domain, run.domains) == (
        "mtct",
        "rotdigits",
        "rot30",
        ["rot0", "rot90"],
    )
    assert run.classes == list(benchmark.classes) and run.class_names == list(benchmark.class_names)
    assert run.settings == {"mode": "paired", "holdout_fraction": 0.2, "holdout_seed": 0}
    assert run.prompt_version == PROMPT_VERSION and (run.base_model, run.adapter) == ("base", True)
    custom = build_run_record(
        "sarr", None, domains=["a"], base_model=None, adapter=False, classes=["x_y"], class_names=["x y"]
    )
    assert (custom.benchmark, custom.classes, custom.class_names, custom.test_domain) == (None, ["x_y"], ["x y"], None)
    with pytest.raises(ValueError, match="without a benchmark needs its classes and class_names"):
        build_run_record("mtct", None, domains=[], base_model=None, adapter=False)


@pytest.mark.slow
def test_mtct_sarr_and_lodo_runs_fill_their_records_the_same_way(tmp_path):
    rows = load_dataset(str(dataset_dir()), "rotdigits")
    split = lodo_split(rows, "rot30", 0.34)
    records = {}
    model, processor = load_model_and_processor(tiny_model_dir())
    mtct = MTCTTrainer(
        model,
        args=mtct_config(tmp_path / "mtct"),
        train_dataset=split.train,
        processing_class=processor,
        split_record=split.record(),
    )
    mtct.train()
    mtct.save_model()
    records["mtct"] = RunConfig.load(tmp_path / "mtct")
    model, processor = load_model_and_processor(tiny_model_dir())
    sarr = SARRTrainer(
        model,
        sarr_test_config(tmp_path / "sarr", max_steps=1, round_max_steps=1),
        train_dataset=split.train,
        processing_class=processor,
        split_record=split.record(),
        backend=ScriptedBackend(lambda messages, image: "no chain"),
    )
    sarr.train()
    records["sarr"] = RunConfig.load(sarr.save_model())
    lodo = LodoConfig.from_dict(
        {
            "output_dir": str(tmp_path / "lodo"),
            "dataset_name": str(dataset_dir()),
            "model_name_or_path": str(tiny_model_dir()),
            "test_domains": ["rot30"],
            "methods": ["mtct", "full"],  # full: SARR rounds from the mtct row's model (full weights, reloaded)
            "holdout_fraction": 0.34,
            "lora_r": 0,
            "select_every": "final",
            "eval_batch_size": 8,
            "max_new_tokens": 4,
            "training": {"max_steps": 1, "per_device_train_batch_size": 4, "bf16": False},
            "sarr": {"num_rounds": 1, "round_max_steps": 1, "relabel_batch_size": 12, "relabel_max_new_tokens": 4},
        }
    )
    runs = LodoRunner(lodo).run()["runs"]
    records["lodo"], records["lodo_full"] = (RunConfig.load(runs[m]["rot30"]["model_dir"]) for m in ("mtct", "full"))

    methods = {name: run.method for name, run in records.items()}
    assert methods == {"mtct": "mtct", "sarr": "sarr", "lodo": "mtct", "lodo_full": "full"}
    shared = {
        "benchmark": "rotdigits",
        "classes": list(split.train.features["label"].names),
        "class_names": list(get_benchmark("rotdigits").class_names),
        "domains": ["rot0", "rot60", "rot90"],
        "test_domain": "rot30",
        "prompt_version": PROMPT_VERSION,
        "base_model": str(tiny_model_dir()),
        "adapter": False,
    }
    for name, run in records.items():
        assert {key: getattr(run, key) for key in shared} == shared, name
        assert {key: run.settings[key] for key in split.record() if key != "test_domain"} == {
            key: value for key, value in split.record().items() if key != "test_domain"
        }, name
        assert set(records["mtct"].settings) <= set(run.settings), name  # the MTCT stage's settings in each
    assert records["sarr"].settings["num_rounds"] == 1 and records["sarr"].settings["rounds"]
    assert records["lodo"].settings["selection_rule"] == records["lodo_full"].settings["selection_rule"] == "mean"
    assert records["lodo_full"].settings["started_from"] == "mtct" and records["lodo_full"].settings["rounds"]
