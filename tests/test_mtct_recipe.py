"""The MTCT recipe: its YAML configs parse into its three dataclasses; a tiny run feeds the analyses."""

import json
import runpy
from pathlib import Path

import pytest
from trl import ModelConfig, TrlParser

from helpers.analysis import dataset_dir, recipe_args
from helpers.mtct import tiny_model_dir
from rdmldg_hf.cli import main as rdmldg
from rdmldg_hf.models import RunConfig
from rdmldg_hf.trainers import MTCTConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def script_arguments():
    return runpy.run_path(str(RECIPES / "mtct.py"))["MTCTScriptArguments"]


def _parse(script_arguments, name, *extra):
    parser = TrlParser((script_arguments, MTCTConfig, ModelConfig))
    return parser.parse_args_and_config(args=["--config", str(RECIPES / "configs" / name), *extra])


def test_tiny_config(script_arguments):
    script, args, model = _parse(script_arguments, "mtct_tiny.yaml")
    assert (script.dataset_config, script.tiny_model, script.test_domain) == ("rotdigits", "llava", "rot30")
    assert args.mode == "paired" and args.reasoning_normalization == "per_sequence"
    assert args.bf16 is False and args.gradient_checkpointing is False and not model.use_peft


@pytest.mark.parametrize(
    "name,base",
    [
        ("mtct_internvl3_8b.yaml", "OpenGVLab/InternVL3-8B-hf"),
        ("mtct_qwen2_5_vl_7b.yaml", "Qwen/Qwen2.5-VL-7B-Instruct"),
    ],
)
def test_paper_configs(script_arguments, name, base):
    script, args, model = _parse(script_arguments, name, "--test_domain", "clipart")
    assert model.model_name_or_path == base and model.use_peft and model.lora_r == 8
    assert args.learning_rate == 5e-4 and args.num_train_epochs == 3 and args.bf16
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 4 == 128
    assert script.test_domain == "clipart" and script.dataset_config == "officehome"


def test_run_without_checkpoints_writes_the_loss_log_the_analysis_reads(script_arguments, tmp_path):
    out = tmp_path / "run"
    script, args, model = TrlParser((script_arguments, MTCTConfig, ModelConfig)).parse_args_and_config(
        args=recipe_args(out, 0, "--max_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4")
    )
    runpy.run_path(str(RECIPES / "mtct.py"), run_name="mtct_recipe")["main"](script, args, model)
    assert not list(out.glob("checkpoint-*"))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]
    assert rdmldg(["analyze", "losses", "--run", str(out), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "manifest.json").is_file()


@pytest.mark.slow
def test_rdmldg_train_launches_a_method_from_a_yaml_with_the_split_made_before_training(tmp_path, capsys):
    config = tmp_path / "mtct.yaml"
    config.write_text(
        f"dataset_name: {dataset_dir()}\ndataset_config: rotdigits\nmodel_name_or_path: {tiny_model_dir()}\n"
        "test_domain: rot60\nholdout_fraction: 0.34\nholdout_style: domainbed\nmax_steps: 1\n"
        "per_device_train_batch_size: 4\nsave_strategy: 'no'\neval_strategy: 'no'\nbf16: false\n"
        "activation_checkpointing: false\nreport_to: none\ndataloader_num_workers: 0\ndisable_tqdm: true\n"
    )
    out = tmp_path / "run"
    assert rdmldg(["train", "mtct", "--config", str(config), "--output_dir", str(out)]) == 0
    run = RunConfig.load(out)
    assert run.test_domain == "rot60" and run.domains == ["rot0", "rot30", "rot90"]
    assert {k: run.settings[k] for k in ("holdout_fraction", "holdout_seed", "holdout_style")} == {
        "holdout_fraction": 0.34,
        "holdout_seed": 0,
        "holdout_style": "domainbed",
    }
    assert run.settings["images"] == 3 * 4  # 6 images per domain, int(6 * 0.34) = 2 held out of each
    assert rdmldg(["train", "sarr", "--config", str(config), "--num_roundz", "2"]) == 2
    assert "Unknown command-line arguments ['--num_roundz', '2']" in capsys.readouterr().err


def test_recipes_are_thin():
    for recipe in sorted(RECIPES.glob("*.py")):
        assert len(recipe.read_text().splitlines()) <= 100, recipe.name
