"""One way to ask for the embedded default (``tiny_model``, ``tiny_preset``, ``tiny_sizes``) in the recipes, LODO and
sweeps, the flat fields of earlier versions still read (with a warning naming the new spelling), and the one
function that prepares it (:func:`rdmldg_hf.recipe_setup.prepare_embedded_default`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trl import ModelConfig

from helpers.analysis import dataset_dir
from rdmldg_hf.data import build as data_build
from rdmldg_hf.evaluation.lodo_config import LodoConfig
from rdmldg_hf.experiments.lodo import LodoRunner
from rdmldg_hf.experiments.sweep import Sweep, SweepArguments
from rdmldg_hf.recipe_setup import (
    DEFAULT_TINY_MODEL,
    RecipeScriptArguments,
    parse_recipe_args,
    prepare_embedded_default,
    prepare_embedded_inputs,
)
from rdmldg_hf.trainers import SARRConfig

# What each of the three reads its settings with (recipes and `rdmldg train`, recipes/lodo.py, `rdmldg sweep`).
PARSERS = {
    "recipe": lambda argv: parse_recipe_args((RecipeScriptArguments,), argv)[0],
    "lodo": lambda argv: parse_recipe_args((LodoConfig,), argv)[0],
    "sweep": lambda argv: parse_recipe_args((SweepArguments, SARRConfig, ModelConfig), argv)[0],
}


def _yaml(tmp_path: Path, text: str) -> list[str]:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return ["--config", str(config)]


def _spec(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "tiny_model_spec.json").read_text())


@pytest.mark.parametrize("kind", list(PARSERS))
def test_recipes_lodo_and_sweeps_read_the_same_fields(tmp_path, kind):
    text = "tiny_model: qwen2_vl\ntiny_preset: test\ntiny_sizes: {vocab_size: 700, phrase_tokens: true}\n"
    parsed = PARSERS[kind](_yaml(tmp_path, text))
    assert (parsed.tiny_model, parsed.tiny_preset, parsed.tiny_sizes) == (
        "qwen2_vl",
        "test",
        {"vocab_size": 700, "phrase_tokens": True},
    )
    command_line = PARSERS[kind](["--tiny_sizes", '{"text_layers": 1}', "--tiny_model", "internvl"])
    assert (command_line.tiny_model, command_line.tiny_preset, command_line.tiny_sizes) == (
        "internvl",
        "embedded",
        {"text_layers": 1},
    )


@pytest.mark.parametrize("kind", list(PARSERS))
def test_the_flat_fields_still_work_with_a_warning_naming_tiny_sizes(tmp_path, kind):
    argv = _yaml(tmp_path, "tiny_vocab_size: 1536\ntiny_phrase_tokens: true\n") + ["--tiny_text_hidden", "64"]
    with pytest.warns(FutureWarning) as caught:
        parsed = PARSERS[kind](argv)
    messages = sorted(m for w in caught if (m := str(w.message)).startswith("tiny_"))  # not TrainingArguments
    assert messages == [
        "tiny_phrase_tokens is deprecated; use tiny_sizes: {phrase_tokens: true} in the YAML "
        "(--tiny_sizes '{\"phrase_tokens\": true}' on the command line).",
        "tiny_text_hidden is deprecated; use tiny_sizes: {text_hidden: 64} in the YAML "
        "(--tiny_sizes '{\"text_hidden\": 64}' on the command line).",
        "tiny_vocab_size is deprecated; use tiny_sizes: {vocab_size: 1536} in the YAML "
        "(--tiny_sizes '{\"vocab_size\": 1536}' on the command line).",
    ]
    assert parsed.tiny_sizes == {"vocab_size": 1536, "phrase_tokens": True, "text_hidden": 64}
    assert parsed.tiny_vocab_size is parsed.tiny_phrase_tokens is parsed.tiny_text_hidden is None
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="tiny_vocab_size=1536 and tiny_sizes"):
        PARSERS[kind](argv + ["--tiny_sizes", '{"vocab_size": 640}'])


@pytest.mark.parametrize("kind", list(PARSERS))
def test_a_wrong_size_or_architecture_is_an_error_naming_the_valid_ones(tmp_path, kind):
    with pytest.raises(ValueError, match=r"section 'tiny_sizes' vocab; .*did you mean 'vocab_size'"):
        PARSERS[kind](["--tiny_sizes", '{"vocab": 1}'])
    config = _yaml(tmp_path, "tiny_model: gpt\n")  # YAML values skip argparse's choices
    with pytest.raises(ValueError, match=rf"{config[1]}.*Unknown architecture 'gpt'. Valid architectures: llava"):
        PARSERS[kind](config)
    with pytest.raises(ValueError, match="Unknown preset 'huge'. Valid presets: embedded, test"):
        PARSERS[kind](_yaml(tmp_path, "tiny_preset: huge\n"))


def test_prepare_builds_what_is_asked_for_and_missing(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(data_build, "build_embedded_once", lambda folder: built.append(Path(folder)))
    tiny = RecipeScriptArguments(tiny_model="llava", tiny_preset="test", tiny_sizes={"vocab_size": 700})
    dataset, model = prepare_embedded_default(tiny, None, "rotdigits", tmp_path / "m", dataset_dir=tmp_path / "d")
    assert (dataset, model) == (str(tmp_path / "d"), str(tmp_path / "m")) and built == [tmp_path / "d"]
    spec = _spec(tmp_path / "m")
    assert (spec["architecture"], spec["vocab_size"], spec["text_hidden"]) == ("llava", 700, 32)  # test preset
    weights = tmp_path / "m" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert prepare_embedded_default(tiny, "data", "pacs", tmp_path / "m") == ("data", str(tmp_path / "m"))
    assert weights.stat().st_mtime_ns == before and built == [tmp_path / "d"]  # kept; pacs is not built
    no_tiny = RecipeScriptArguments()
    assert prepare_embedded_default(no_tiny, "data", "pacs", "someone/model") == ("data", "someone/model")
    with pytest.raises(ValueError, match="dataset_name is unset, so the embedded benchmark 'rotdigits' is built"):
        prepare_embedded_default(no_tiny, None, "pacs", "someone/model")


def test_no_model_named_means_a_tiny_llava_at_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = RecipeScriptArguments(dataset_name=str(dataset_dir()), tiny_preset="test")
    model_args = ModelConfig()
    prepare_embedded_inputs(recipe, model_args)
    assert model_args.model_name_or_path == DEFAULT_TINY_MODEL and recipe.tiny_model == "llava"
    assert _spec(tmp_path / DEFAULT_TINY_MODEL)["architecture"] == "llava"
    sweep_args = SweepArguments(dataset_config=["rotdigits"])
    sweep = Sweep(sweep_args, SARRConfig(output_dir=str(tmp_path / "sweep")), ModelConfig())
    assert sweep.model_args.model_name_or_path == DEFAULT_TINY_MODEL and sweep_args.tiny_model == "llava"


def test_lodo_builds_its_model_as_the_recipes_do(tmp_path):
    config = LodoConfig(
        output_dir=str(tmp_path / "lodo"),
        dataset_name=str(dataset_dir()),
        tiny_model="qwen2_vl",
        tiny_preset="test",
        tiny_sizes={"vocab_size": 700},
    )
    runner = LodoRunner(config)
    assert runner.model_path == str(tmp_path / "lodo" / "base-model")
    spec = _spec(runner.model_path)
    assert (spec["architecture"], spec["vocab_size"]) == ("qwen2_vl", 700)
    # Runs from before LODO read tiny_model (or the flat fields) keep their fingerprint, and stay resumable.
    assert "tiny_model" not in LodoConfig().fingerprint() and not any(
        key.startswith("tiny_") and key not in ("tiny_preset", "tiny_sizes") for key in LodoConfig().fingerprint()
    )
    assert config.fingerprint()["tiny_model"] == "qwen2_vl"
