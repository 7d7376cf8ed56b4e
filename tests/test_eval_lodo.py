"""recipes/lodo.py on a tiny model and dataset: ablation rows, checkpoint selection, tables, resume."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import yaml

from helpers.mtct import tiny_model_dir
from helpers.sarr import tiny_rows
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.hub_layout import write_config
from rdmldg_hf.evaluation.lodo_config import LodoConfig
from rdmldg_hf.experiments.lodo import LodoRunner
from rdmldg_hf.models import RunConfig

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "lodo.py"


def _settings(tmp_path: Path, data: Path) -> dict:
    return {
        "output_dir": str(tmp_path / "lodo"),
        "dataset_name": str(data),
        "dataset_config": "rotdigits",
        "model_name_or_path": str(tiny_model_dir()),
        "test_domains": ["rot30"],
        "methods": ["labels_only", "mtct", "full"],
        "eval_modes": {"mtct": ["direct"], "full": ["direct", "reasoning"]},
        "holdout_fraction": 0.25,
        "lora_r": 0,
        "select_every": 1,
        "eval_batch_size": 8,
        "max_new_tokens": 8,
        "training": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1},
        "sarr": {"num_rounds": 1, "round_max_steps": 1, "relabel_batch_size": 8, "relabel_max_new_tokens": 8},
    }


@pytest.mark.slow
def test_lodo_rows_selection_tables_and_resume(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    rows = tiny_rows(8)
    write_config(
        data,
        "rotdigits",
        {d: rows.filter(lambda x, d=d: x == d, input_columns="domain") for d in get_benchmark("rotdigits").domains},
        "rotdigits",
    )
    settings = _settings(tmp_path, data)
    config_file = tmp_path / "lodo.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    recipe = runpy.run_path(str(RECIPE), run_name="lodo_recipe")
    recipe["main"](["--config", str(config_file)])

    out = Path(settings["output_dir"])
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert set(runs) == {"labels_only", "mtct", "full"}
    labels = runs["labels_only"]["rot30"]
    assert labels["train_images"] == 18 and labels["validation_images"] == 6  # 24 - int(8 * 0.25) * 3
    assert [c["checkpoint"] for c in labels["selection"]] == ["step-1", "step-2"]
    assert labels["test"]["direct"]["count_per_domain"] == {"rot30": 8}
    full = runs["full"]["rot30"]
    assert [c["checkpoint"] for c in full["selection"]] == ["start (mtct)", "round-1"]
    assert set(full["test"]) == {"direct", "reasoning"} and "invalid_rate" in full["test"]["reasoning"]
    model_dir = Path(full["model_dir"])
    run = RunConfig.load(model_dir)
    assert run.method == "full" and run.test_domain == "rot30" and run.domains == ["rot0", "rot60", "rot90"]
    assert run.settings["started_from"] == "mtct" and run.settings["selection"]["selected"] == full["selected"]
    shared = json.loads((model_dir / "results.json").read_text())
    assert shared["metrics"]["per_domain"] == {"rot30": full["test"]["direct"]["accuracy"]}
    table = (out / "results.md").read_text()
    assert "| Method | rot30 | Avg |" in table and "## Prediction mode: reasoning" in table
    acc = round(100 * labels["test"]["direct"]["accuracy"], 2)
    assert f"| Labels only | {acc:.2f} | {acc:.2f} |" in table
    mtct_accuracy = runs["mtct"]["rot30"]["test"]["direct"]["accuracy"]
    assert results["table"]["direct"]["mtct"]["rot30"] == round(100 * mtct_accuracy, 2)

    # Rerun: finished pairs are skipped; other settings are refused.
    monkeypatch.setattr(LodoRunner, "run_pair", lambda *a: pytest.fail("a finished pair was trained again"))
    recipe["main"](["--config", str(config_file)])
    assert "| Labels only |" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"holds a LODO run with other settings \(differs in: holdout_fraction\)"):
        LodoRunner(LodoConfig.from_dict({**settings, "holdout_fraction": 0.5}))
    with pytest.raises(ValueError, match="Unknown methods \\['clip'\\]. Valid methods: labels_only, reasoning_only"):
        LodoConfig.from_dict({**settings, "methods": ["clip"]})
