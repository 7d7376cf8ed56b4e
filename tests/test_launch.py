"""`rdmldg train NAME`: recipe NAME launched through `accelerate launch` (as `trl sft` launches its script), the same
process as `accelerate launch recipes/NAME.py`; the accelerate command line it builds; its help."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from safetensors.torch import load_file

from helpers.analysis import dataset_dir, recipe_args
from helpers.mtct import tiny_model_dir
from rdmldg_hf.cli import main as rdmldg
from rdmldg_hf.launch import launch_argv
from rdmldg_hf.methods import RECIPES

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
RDMLDG = str(Path(sys.executable).with_name("rdmldg"))
TINY_SARR = (
    *("--max_steps", "1", "--num_rounds", "1", "--round_max_steps", "1", "--per_device_train_batch_size", "4"),
    *("--eval_batch_size", "12", "--relabel_batch_size", "12", "--relabel_max_new_tokens", "4"),
    *("--logging_steps", "1", "--cpu_threads", "1"),
)


def _run_rdmldg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``rdmldg ARGS`` in a process of its own, bounded in time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([RDMLDG, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _without_timings(value):
    """``results.json`` less what a clock measures."""
    if isinstance(value, dict):
        return {
            k: _without_timings(v)
            for k, v in value.items()
            if k != "timing" and not k.endswith(("seconds", "runtime"))
        }
    return [_without_timings(v) for v in value] if isinstance(value, list) else value


@pytest.mark.slow
@pytest.mark.multiprocess
def test_rdmldg_train_sarr_is_a_launched_process_that_writes_what_the_recipe_writes(tmp_path, monkeypatch):
    launched = _run_rdmldg("train", "sarr", *recipe_args(tmp_path / "launched", 0.34, *TINY_SARR))
    assert "accelerate launch --module rdmldg_hf.launch sarr --dataset_name" in launched.stderr
    assert "not passed to `accelerate launch`" in launched.stderr  # accelerate's launcher chose the processes
    assert "heldout direct" in launched.stdout  # the launched process's summary table

    threads = torch.get_num_threads()  # the recipe as `accelerate launch recipes/sarr.py` runs it, in this process
    monkeypatch.setattr(sys, "argv", ["recipes/sarr.py", *recipe_args(tmp_path / "recipe", 0.34, *TINY_SARR)])
    try:
        runpy.run_path(str(RECIPES_DIR / "sarr.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)

    launched_dir, recipe_dir = tmp_path / "launched", tmp_path / "recipe"
    assert _files(launched_dir) == _files(recipe_dir) and "predictions.jsonl" in _files(recipe_dir)
    assert (launched_dir / "predictions.jsonl").read_text() == (recipe_dir / "predictions.jsonl").read_text()
    results = [json.loads((d / "results.json").read_text()) for d in (launched_dir, recipe_dir)]
    assert _without_timings(results[0]) == _without_timings(results[1])
    weights = [load_file(d / "model.safetensors") for d in (launched_dir, recipe_dir)]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_rdmldg_train_lodo_runs_the_packaged_tiny_config_made_tinier(tmp_path):
    out = tmp_path / "lodo"
    done = _run_rdmldg(
        *("train", "lodo", "--config", "lodo_tiny.yaml", "--output_dir", str(out), "--methods", "labels_only"),
        *("--dataset_name", str(dataset_dir()), "--model_name_or_path", str(tiny_model_dir())),
        *("--test_domains", "rot30", "--select_every", "final", "--eval_batch_size", "8"),
        *("--training", json.dumps({"max_steps": 1, "per_device_train_batch_size": 4, "logging_steps": 1})),
    )
    assert "accelerate launch --module rdmldg_hf.launch lodo --config lodo_tiny.yaml" in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["runs"]["labels_only"]["rot30"]["test"]["direct"]["count_per_domain"] == {"rot30": 6}
    assert results["settings"]["max_new_tokens"] == 96  # the rest from the packaged config
    assert "| Labels only |" in done.stdout  # the table the recipe prints


# --------------------------------------------------------------------------- the accelerate command line


def _accelerate(argv: list[str]):
    return launch_command_parser().parse_args(argv)


def test_recipe_arguments_go_to_the_recipe_and_the_rest_to_accelerate_launch():
    argv = launch_argv("sarr", ["--max_steps", "3", "--num_processes", "2", "--cpu", "--test_domain", "rot0"])
    assert argv == [
        *("--num_processes", "2", "--cpu", "--module", "rdmldg_hf.launch", "sarr"),
        *("--max_steps", "3", "--test_domain", "rot0"),
    ]
    args = _accelerate(argv)
    assert (args.num_processes, args.cpu, args.module) == (2, True, True)
    assert (args.training_script, args.training_script_args) == ("rdmldg_hf.launch", argv[-5:])
    # a field both read goes to the recipe, as `trl sft` does; no abbreviations (--cpu is not --cpu_threads)
    argv = launch_argv("mtct", ["--gradient_accumulation_steps", "4", "--cpu_threads", "1"])
    assert argv == ["--module", "rdmldg_hf.launch", "mtct", "--gradient_accumulation_steps", "4", "--cpu_threads", "1"]


def test_no_arguments_launch_the_packaged_default_the_readme_command_runs():
    assert launch_argv("sarr", []) == ["--module", "rdmldg_hf.launch", "sarr"]
    recipe = runpy.run_path(str(RECIPES_DIR / "sarr.py"), run_name="sarr_recipe")
    script, training, model = recipe["parse_args"]([])  # `accelerate launch recipes/sarr.py`
    assert (script, training, model) == recipe["parse_args"](["--config", str(RECIPES["sarr"].config_path)])
    assert training.output_dir == "outputs/sarr-tiny" and script.dataset_config == "rotdigits"


def test_an_accelerate_config_file_decides_the_processes(tmp_path):
    config = tmp_path / "accelerate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "compute_environment": "LOCAL_MACHINE",
                "distributed_type": "MULTI_GPU",
                "num_processes": 4,
                "num_machines": 1,
                "mixed_precision": "no",
            }
        )
    )
    argv = launch_argv("sarr", ["--config_file", str(config), "--config", "sarr_tiny.yaml"])
    assert argv == ["--config_file", str(config), "--module", "rdmldg_hf.launch", "sarr", "--config", "sarr_tiny.yaml"]
    args, _, _ = _validate_launch_command(_accelerate(argv))  # what `accelerate launch` makes of it
    assert (args.num_processes, args.multi_gpu) == (4, True)
    # TRL's --accelerate_config: a file, or the name of one TRL ships
    argv = launch_argv("lodo", ["--accelerate_config", "multi_gpu", "--methods", "mtct"])
    assert argv[0] == "--config_file" and Path(argv[1]).name == "multi_gpu.yaml" and Path(argv[1]).is_file()
    assert argv[2:] == ["--module", "rdmldg_hf.launch", "lodo", "--methods", "mtct"]


def test_what_neither_reads_is_an_error_before_anything_is_launched(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"Unknown command-line arguments \['--lerning_rate', '1e-3'\]"):
        launch_argv("sarr", ["--lerning_rate", "1e-3"])
    broken = tmp_path / "sarr.yaml"
    broken.write_text("num_roundz: 2\n")
    assert rdmldg(["train", "sarr", "--config", str(broken)]) == 2
    assert "num_roundz': did you mean 'num_rounds'" in capsys.readouterr().err
    assert rdmldg(["train", "sarr", "--config", "no_such_config.yaml"]) == 2
    assert "the packaged configs are:" in capsys.readouterr().err


@pytest.mark.multiprocess
def test_train_help_lists_the_recipes_without_importing_a_trainer():
    code = (
        "import contextlib, io, json, sys\n"
        "from rdmldg_hf.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['train', '--help'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'rdmldg_hf.trainers', 'rdmldg_hf.training') "
        "if m in sys.modules)\n"
        "print(json.dumps({'help': out.getvalue(), 'heavy': heavy}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    shown = json.loads(done.stdout)
    assert shown["heavy"] == []
    for name, recipe in RECIPES.items():
        assert f"  {name}" in shown["help"] and recipe.help in shown["help"]


def test_a_recipes_help_lists_its_fields_and_says_where_accelerates_options_go(capsys):
    with pytest.raises(SystemExit) as exit:
        rdmldg(["train", "sarr", "--help"])
    shown = capsys.readouterr().out
    assert exit.value.code == 0 and shown.startswith("usage: rdmldg train sarr")
    assert "--num_rounds" in shown and "--test_domain" in shown and "Options of `accelerate launch`" in shown
