"""The one method registry (rdmldg_hf.methods): recipes and ablation rows, read by the CLI, the recipes, LODO and the
sweep; the default configs shipped in the package, which recipes/configs/ links to."""

import configparser
import fnmatch
import runpy
from pathlib import Path

import pytest
from trl import ModelConfig

from rdmldg_hf.cli import build_parser
from rdmldg_hf.evaluation import lodo_config
from rdmldg_hf.experiments.sweep import SweepArguments
from rdmldg_hf.methods import CONFIGS_DIR, METHODS, RECIPES, check_methods, get_recipe, method_of, packaged_config
from rdmldg_hf.recipe_setup import RecipeScriptArguments, parse_recipe_args, resolve_config_argument
from rdmldg_hf.trainers import MTCTConfig, SARRConfig
from rdmldg_hf.training import LODO, MTCT, SARR, parse_method_args, runs_embedded_default

REPO = Path(__file__).resolve().parents[1]


def test_each_recipe_loads_its_arguments_and_runner():
    assert {name: recipe.load() for name, recipe in RECIPES.items()} == {"mtct": MTCT, "sarr": SARR, "lodo": LODO}
    assert MTCT.argument_types == (MTCT.argument_types[0], MTCTConfig, ModelConfig)
    assert issubclass(SARR.argument_types[0], RecipeScriptArguments) and SARR.argument_types[1] is SARRConfig
    assert LODO.argument_types == (lodo_config.LodoConfig,)
    with pytest.raises(ValueError, match="Unknown recipe 'dpo'. Valid recipes: mtct, sarr, lodo"):
        get_recipe("dpo")


def test_every_ablation_row_is_trained_by_a_recipe_in_a_mode_its_config_takes():
    for name, spec in METHODS.items():
        config = RECIPES[spec.trainer].load().argument_types[1]
        assert config(output_dir="unused", mode=spec.mode).mode == spec.mode, name
        assert method_of(spec.trainer, spec.mode) == name
        assert spec.starts_from is None or METHODS[spec.starts_from].trainer == "mtct"
    assert method_of("mtct", "no_such_mode") is None


def test_the_cli_lodo_and_the_sweep_read_the_registry():
    parser = build_parser(["train"])
    assert [parser.parse_args(["train", name]).method for name in RECIPES] == list(RECIPES)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "labels_only"])
    assert lodo_config.METHODS is METHODS and lodo_config.MethodSpec is type(METHODS["mtct"])
    assert lodo_config.LodoConfig().methods == list(METHODS)
    assert SweepArguments().methods == list(METHODS)
    for make in (lambda: lodo_config.LodoConfig(methods=["mtct", "clip"]), lambda: SweepArguments(methods=["clip"])):
        with pytest.raises(
            ValueError, match=r"Unknown methods \['clip'\]. Valid methods: labels_only, reasoning_only"
        ):
            make()
    with pytest.raises(ValueError, match=r"Unknown methods in eval_modes \['clip'\]"):
        lodo_config.LodoConfig(eval_modes={"clip": ["direct"]})
    check_methods(METHODS)


def test_the_former_tables_still_answer_with_a_warning():
    from rdmldg_hf import training
    from rdmldg_hf.commands import train

    with pytest.warns(FutureWarning, match="rdmldg_hf.methods.RECIPES"):
        assert training.TRAINING_METHODS == {"mtct": MTCT, "sarr": SARR}
    with pytest.warns(FutureWarning, match="rdmldg_hf.methods.RECIPES"):
        assert train.METHODS == ("mtct", "sarr", "lodo")


# --------------------------------------------------------------------------- packaged configs


def test_recipes_configs_are_the_packaged_configs():
    linked = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
    assert [p.name for p in linked] == sorted(p.name for p in CONFIGS_DIR.glob("*.yaml"))
    for path in linked:
        assert path.read_bytes() == (CONFIGS_DIR / path.name).read_bytes(), path.name
        assert path.resolve() == (CONFIGS_DIR / path.name).resolve(), f"{path} is a copy, not a link"


def test_the_configs_are_package_data():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in setup["options.package_data"]["rdmldg_hf"].split(",")]
    for path in CONFIGS_DIR.glob("*.yaml"):
        assert any(fnmatch.fnmatch(f"configs/{path.name}", pattern) for pattern in patterns), path.name


@pytest.mark.parametrize("name", list(RECIPES))
def test_no_arguments_read_the_recipes_packaged_default(name):
    default = RECIPES[name].config_path
    assert default.parent == CONFIGS_DIR and default.is_file()
    parsed = parse_method_args(name, [])
    assert parsed == parse_method_args(name, ["--config", str(default)])
    recipe = runpy.run_path(str(REPO / "recipes" / f"{name}.py"), run_name=f"{name}_recipe")
    from_recipe = recipe["parse_args"]([])
    assert (from_recipe if isinstance(from_recipe, tuple) else (from_recipe,)) == parsed


@pytest.mark.parametrize("name", list(RECIPES))
def test_overrides_without_a_config_model_or_dataset_tweak_the_packaged_default(name):
    default = RECIPES[name].config_path
    tweaked = parse_method_args(name, ["--holdout_seed", "7"])
    assert tweaked != parse_method_args(name, ["--config", str(default)])
    assert tweaked == parse_method_args(name, ["--config", str(default), "--holdout_seed", "7"])
    # Naming a model or a dataset (either spelling) leaves the packaged default out: the fields' own defaults count.
    for argv in (["--model_name_or_path", "m"], ["--model_name_or_path=m"], ["--dataset_name", "d"]):
        assert not runs_embedded_default(argv)
    assert runs_embedded_default(["--bf16", "true", "--output_dir", "o"])


def test_a_config_is_a_file_or_the_name_of_a_packaged_one(tmp_path, monkeypatch):
    assert packaged_config("sarr_internvl3_8b") == packaged_config("sarr_internvl3_8b.yaml")
    assert resolve_config_argument(["--config", "sarr_internvl3_8b.yaml", "--x", "1"]) == [
        "--config",
        str(CONFIGS_DIR / "sarr_internvl3_8b.yaml"),
        *("--x", "1"),
    ]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sarr_tiny.yaml").write_text("num_rounds: 1\n")  # a file of that name here wins
    assert resolve_config_argument(["--config", "sarr_tiny.yaml"]) == ["--config", "sarr_tiny.yaml"]
    with pytest.raises(FileNotFoundError, match="the packaged configs are: build_officehome_gpt4o.yaml"):
        packaged_config("sarr_tiny_typo")
    with pytest.raises(FileNotFoundError, match="Config file 'elsewhere/sarr_tiny.yaml' not found"):
        resolve_config_argument(["--config", "elsewhere/sarr_tiny.yaml"])
    script, training, _ = parse_recipe_args(SARR.argument_types, ["--config", "sarr_qwen2_5_vl_7b"])
    assert script.dataset_config == "officehome" and training.num_rounds == 3
