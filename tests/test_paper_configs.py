"""The shipped recipe configs: every field is read by its recipe (a typo is an error naming the field and the
file), and the paper's configs run end to end (MTCT; MTCT stage + one SARR round) on a CPU with a tiny model of
their architecture, on a tiny OfficeHome built from DomainBed-format folders."""

from __future__ import annotations

import json
import re
import runpy
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from transformers import AutoConfig
from trl import ModelConfig

from helpers.officehome import OFFICEHOME, build_officehome
from rdmldg_hf.experiments.sweep import SweepArguments
from rdmldg_hf.methods import CONFIGS_DIR
from rdmldg_hf.recipe_setup import parse_recipe_args
from rdmldg_hf.testing import TinyModelSpec
from rdmldg_hf.trainers import MTCTConfig, SARRConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CONFIGS = CONFIGS_DIR  # recipes/configs/ links to them (tests/test_methods.py)
# Each shipped YAML starts with the name of the recipe that reads it.
RECIPE_OF_PREFIX = {"mtct_": "mtct", "sarr_": "sarr", "lodo_": "lodo", "build_": "build_dataset", "sweep_": "sweep"}
# The Hub checkpoint each paper config names, and the architecture (model_type) of its tiny stand-in.
ARCHITECTURE_OF = {"OpenGVLab/InternVL3-8B-hf": "internvl", "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2_5_vl"}
PAPER_MODELS = ("internvl3_8b", "qwen2_5_vl_7b")
PAPER_CONFIGS = [f"{recipe}_{model}.yaml" for recipe in ("mtct", "sarr") for model in PAPER_MODELS]


@pytest.fixture(scope="module")
def recipes() -> dict[str, dict]:
    names = set(RECIPE_OF_PREFIX.values()) - {"sweep"}
    loaded = {name: runpy.run_path(str(RECIPES / f"{name}.py"), run_name=f"{name}_recipe") for name in names}
    sweep_arguments = (SweepArguments, SARRConfig, ModelConfig)  # `rdmldg sweep` reads them as the recipes do
    return {**loaded, "sweep": {"parse_args": lambda argv: parse_recipe_args(sweep_arguments, argv)}}


def _recipe_of(config: Path) -> str:
    names = [recipe for prefix, recipe in RECIPE_OF_PREFIX.items() if config.name.startswith(prefix)]
    assert len(names) == 1, f"{config.name}: name a shipped config after its recipe ({', '.join(RECIPE_OF_PREFIX)}...)"
    return names[0]


def _parse(recipes: dict[str, dict], config: Path, *extra: str):
    recipe = _recipe_of(config)
    required = ["--images", "/data/DomainBed/office_home"] if recipe == "build_dataset" else []
    return recipe, recipes[recipe]["parse_args"](["--config", str(config), *required, *extra])


def test_every_shipped_config_parses_and_every_field_lands(recipes):
    configs = sorted(CONFIGS.glob("*.yaml"))
    assert len(configs) >= 8
    for config in configs:
        values = yaml.safe_load(config.read_text())
        recipe, parsed = _parse(recipes, config)
        if recipe == "lodo":
            lodo = parsed
            assert lodo.training and lodo.sarr and {k: getattr(lodo, k) for k in values} == values
        elif recipe == "build_dataset":
            given = {key: value for key, value in values.items() if key != "images"}  # images: on the command line
            assert {key: getattr(parsed, key) for key in given} == given
        else:
            for key, value in values.items():
                owners = [p for p in parsed if hasattr(p, key)]
                assert owners, f"{config.name}: {key} is read by none of the recipe's arguments"
                got = getattr(owners[0], key)
                if key != "report_to":  # TrainingArguments turns "none" into []
                    assert value == got or str(value) == str(getattr(got, "value", got)), (config.name, key, got)


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_configs_hold_the_papers_set_up(recipes, config):
    _, (script, args, model) = _parse(recipes, CONFIGS / config)
    assert model.model_name_or_path in ARCHITECTURE_OF and model.use_peft and model.lora_r == 8
    assert args.learning_rate == 5e-4 and args.num_train_epochs == 3 and args.bf16 and args.gradient_checkpointing
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 4 == 128  # 4 GPUs
    assert (script.dataset_config, script.test_domain, args.benchmark) == ("officehome", "art", None)
    if isinstance(args, SARRConfig):
        assert (args.num_rounds, args.fallback, args.round_init, args.mtct_stage) == (3, "teacher", "continue", True)


def _with_typo(tmp_path: Path, config: Path, field: str, typo: str) -> Path:
    text = config.read_text()
    assert f"\n{field}:" in text
    changed = tmp_path / config.name
    changed.write_text(text.replace(f"\n{field}:", f"\n{typo}:"))
    return changed


@pytest.mark.parametrize(
    "config, field, typo",
    [
        ("sarr_internvl3_8b.yaml", "learning_rate", "learnig_rate"),
        ("mtct_qwen2_5_vl_7b.yaml", "lora_r", "lora_rank"),
        ("build_officehome_gpt4o.yaml", "candidates", "candidate"),
        ("lodo_tiny.yaml", "select_every", "select_evry"),
        ("sweep_tiny.yaml", "n_trials", "n_trial"),
    ],
)
def test_a_field_nobody_reads_is_an_error_naming_it_and_the_file(recipes, tmp_path, capsys, config, field, typo):
    changed = _with_typo(tmp_path, CONFIGS / config, field, typo)
    with pytest.raises((ValueError, SystemExit)) as error:
        _parse(recipes, changed)
    message = str(error.value) + capsys.readouterr().err
    assert typo in message and str(changed) in message
    if error.type is ValueError and config.startswith(("sarr", "mtct")):
        assert re.search(rf"{typo}': did you mean [^?]*'{field}'", message)


def test_a_typo_in_a_lodo_section_is_an_error_naming_it_and_the_file(recipes, tmp_path):
    values = yaml.safe_load((CONFIGS / "lodo_tiny.yaml").read_text())
    assert set(values["training"]) <= {f.name for f in fields(MTCTConfig)}
    assert set(values["sarr"]) <= {f.name for f in fields(SARRConfig)}
    assert set(values["tiny_sizes"]) <= {f.name for f in fields(TinyModelSpec)}
    for section, typo in (("training", "warmup_step"), ("sarr", "num_round"), ("tiny_sizes", "vocab")):
        broken = {**values, section: {**values[section], typo: 1}}
        changed = tmp_path / f"lodo_{section}.yaml"
        changed.write_text(yaml.safe_dump(broken))
        with pytest.raises(ValueError, match=rf"{changed}.*{section}.*{typo}"):
            _parse(recipes, changed)


def test_unknown_command_line_argument_is_an_error(recipes):
    with pytest.raises(ValueError, match=r"Unknown command-line arguments \['--num_roundz', '2'\]"):
        _parse(recipes, CONFIGS / "sarr_tiny.yaml", "--num_roundz", "2")


# --------------------------------------------------------------------------- the paper's configs, run tiny


@pytest.fixture(scope="module")
def officehome_dir(tmp_path_factory) -> Path:
    return build_officehome(tmp_path_factory.mktemp("officehome"))


def _adapter_towers(out: Path) -> dict[str, int]:
    """LoRA weights saved per tower: vision (``vision_tower``/``visual``) and language (``language_model``)."""
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    return {
        "vision": sum(".vision_tower." in k or ".visual." in k for k in keys),
        "language": sum(".language_model." in k for k in keys),
    }


@pytest.mark.slow
@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_config_runs_with_a_tiny_model_of_its_architecture(
    recipes, officehome_dir, tiny_model, tmp_path, config
):
    recipe = _recipe_of(CONFIGS / config)
    checkpoint = yaml.safe_load((CONFIGS / config).read_text())["model_name_or_path"]
    architecture = ARCHITECTURE_OF[checkpoint]
    model_dir = tiny_model(architecture)
    assert AutoConfig.from_pretrained(model_dir).model_type == architecture  # the checkpoint's model_type
    out = tmp_path / "out"
    overrides = [
        "--model_name_or_path",
        str(model_dir),
        "--tiny_model",
        architecture,
        "--dataset_name",
        str(officehome_dir),
        "--dataset_config",
        "officehome",
        "--test_domain",
        "art",
        "--dtype",
        "float32",
        "--bf16",
        "false",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--output_dir",
        str(out),
    ]
    if recipe == "sarr":
        overrides += ["--num_rounds", "1", "--relabel_max_new_tokens", "48"]
    else:  # 4 images per domain: keep an out-part for the MTCT configs' evaluation every epoch
        overrides += ["--holdout_fraction", "0.5"]
    parsed = recipes[recipe]["parse_args"](["--config", str(CONFIGS / config), *overrides])
    assert parsed[1].gradient_checkpointing and parsed[2].lora_r == 8  # the YAML's values, not shrunk
    recipes[recipe]["main"](*parsed)

    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (8, 16, 0.05)
    towers = _adapter_towers(out)
    assert towers["vision"] > 0 and towers["language"] > 0, towers
    run = json.loads((out / "rdmldg_config.json").read_text())
    assert run["benchmark"] == "officehome" and run["test_domain"] == "art" and len(run["class_names"]) == 65
    if recipe == "mtct":
        state = json.loads((out / "trainer_state.json").read_text())
        assert state["global_step"] == 2 and any("eval_loss" in entry for entry in state["log_history"])
        return
    results = json.loads((out / "results.json").read_text())
    assert [stage["stage"] for stage in results["stages"]] == ["mtct", "round-1"]
    assert results["chance"] == pytest.approx(1 / OFFICEHOME.num_classes)
    assert results["images"] == {"train": 12, "source_holdout": 0, "heldout": 4}  # holdout 0.2 of 4: none
    relabel = results["stages"][1]["relabel"]
    assert relabel["images"] == relabel["candidates"] == 12 and relabel["fallback_policy"] == "teacher"
    assert set(relabel["acceptance_per_domain"]) == {"clipart", "product", "real_world"}
    assert {"heldout_direct", "heldout_reasoning", "heldout_reasoning_invalid"} <= set(results["final"])
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    direct = [p for p in predictions if p["mode"] == "direct" and p["part"] == "heldout"]
    assert len(direct) == 4 and all(len(p["probabilities"]) == 65 for p in direct)
