"""recipes/build_dataset.py: `rdmldg build` options from YAML, command line overriding them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from helpers.teacher import pixel_teacher, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.testing import LoopbackServer

REPO = Path(__file__).resolve().parents[1]
PACS = get_benchmark("pacs")


def recipe():
    spec = importlib.util.spec_from_file_location("build_dataset_recipe", REPO / "recipes" / "build_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_paper_config_sets_the_teacher_options():
    args = recipe().parse_args(
        ["--config", str(REPO / "recipes/configs/build_officehome_gpt4o.yaml"), "--images", "/x"]
    )
    assert (args.benchmark, args.teacher, args.candidates, args.max_rounds, args.concurrency) == (
        "officehome",
        "gpt-4o",
        4,
        2,
        32,
    )
    assert args.images == "/x" and args.api_key_env == "OPENAI_API_KEY" and args.base_url is None


def test_unknown_config_keys_are_named(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("benchmark: pacs\nout: x\ncandidate: 3\n")
    with pytest.raises(ValueError, match=rf"{config}.*candidate; .*did you mean 'candidates'"):
        recipe().parse_args(["--config", str(config)])


def test_a_build_from_a_config(tmp_path, capsys):
    write_images(tmp_path / "PACS", PACS, 28)
    with LoopbackServer(pixel_teacher(PACS)) as server:
        config = tmp_path / "build.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "benchmark": "pacs",
                    "images": str(tmp_path / "PACS"),
                    "out": str(tmp_path / "out"),
                    "teacher": "gpt-4o",
                    "base_url": server.base_url,
                    "candidates": 3,
                    "max_rounds": 0,
                    "teacher_progress": False,
                    "image_max_side": 32,
                }
            )
        )
        assert recipe().main(["--config", str(config), "--candidates", "2"]) == 0
        assert {body["n"] for body in server.requests} == {2}  # the command line overrides the config
    (store,) = (tmp_path / "out.teacher-store").iterdir()
    summary = json.loads((store / "summary.json").read_text())
    assert summary["acceptance"]["accepted"] == 14 and summary["sampling"]["candidates"] == 2
    assert "28 rows, 14 with a chain" in capsys.readouterr().out


def test_a_build_stopped_by_a_dead_server_is_an_error_message(tmp_path, capsys):
    from rdmldg_hf.testing import Scripted

    write_images(tmp_path / "PACS", PACS, 4, classes=1)
    with LoopbackServer(lambda body: Scripted(500, {"error": {"message": "down"}})) as server:
        arguments = ["--benchmark", "pacs", "--images", str(tmp_path / "PACS"), "--out", str(tmp_path / "out")]
        arguments += ["--teacher", "gpt-4o", "--base-url", server.base_url, "--max-retries", "0"]
        assert recipe().main([*arguments, "--stop-after-failures", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "build_dataset.py: error: Stopped early: the last 2 teacher requests all failed" in err
