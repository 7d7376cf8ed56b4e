"""Kill-and-resume: SIGKILL during round 2's relabeling, then during its training; the same
command finishes with every stage done exactly once and the same data and weights as an
uninterrupted run. Also: 2-process relabeling equals 1-process relabeling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers.launch import cpu_launch
from helpers.scripts import SARR_WORKER

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


STAGES = ["mtct", "round-1", "round-2"]
ROUNDS = str(len(STAGES) - 1)


@pytest.fixture(scope="module")
def model_dir(tiny_phrase_model):
    return str(tiny_phrase_model)


def run(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = (launcher or [sys.executable]) + [str(SARR_WORKER), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def relabel_outputs(out: Path) -> dict[str, dict[int, list]]:
    result: dict[str, dict[int, list]] = {}
    for stage in STAGES[1:]:
        parts = sorted((out / "relabel" / stage).glob("part-*.jsonl"))
        lines = [json.loads(line) for path in parts for line in path.read_text().splitlines()]
        batches = [line["batch"] for line in lines]
        assert len(batches) == len(set(batches)), f"{stage}: a relabel batch was generated twice: {batches}"
        result[stage] = {line["batch"]: line["outputs"] for line in lines}
    return result


def weights(out: Path, stage: str) -> dict:
    return load_file(str(out / "stages" / stage / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_dir):
    """The uninterrupted run, in this process (same code and thread count as the worker)."""
    from helpers.scripts import sarr_worker

    out = tmp_path_factory.mktemp("reference") / "run"
    sarr_worker.run_sarr(str(out), model_dir, None, int(ROUNDS))
    return out


def test_killed_twice_in_round_2_resumes_to_the_same_result(tmp_path, model_dir, reference):
    out = tmp_path / "run"
    killed = run(str(out), model_dir, "--kill", "relabel", "--rounds", ROUNDS)
    assert killed.returncode == -signal.SIGKILL
    part = out / "relabel" / "round-2" / "part-0.jsonl"
    written = [json.loads(line)["batch"] for line in part.read_text().splitlines()]
    assert written == [0, 1]
    killed = run(str(out), model_dir, "--kill", "train", "--rounds", ROUNDS)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "stages" / "round-2" / "checkpoint-2").is_dir()
    finished = run(str(out), model_dir, "--rounds", ROUNDS)
    assert finished.returncode == 0, finished.stderr[-3000:]

    state = json.loads((out / "sarr_state.json").read_text())
    done = Counter(e["stage"] for e in state["events"] if e["event"] == "done recorded")
    assert done == Counter(STAGES)  # every stage trained to the end exactly once
    relabeled = Counter(e["stage"] for e in state["events"] if e["event"] == "relabel recorded")
    assert relabeled == Counter(STAGES[1:])
    round_2 = [e["event"] for e in state["events"] if e["stage"] == "round-2"]
    starts = [event for event in round_2 if event.startswith("training started")]
    assert starts == ["training started (checkpoint: none)", "training started (checkpoint: checkpoint-2)"]
    resumed = [e["event"] for e in state["events"] if e["stage"] == "run"]
    assert resumed == ["started", "resumed after round-1", "resumed after round-1"]

    assert relabel_outputs(out) == relabel_outputs(reference)
    for stage in STAGES:
        mine, theirs = weights(out, stage), weights(reference, stage)
        assert all((mine[k] == theirs[k]).all() for k in theirs), f"{stage} weights differ after resume"
    for k in range(1, len(STAGES)):
        ours = json.loads((out / "dataset" / "reports" / f"rotdigits-sarr-r{k}.json").read_text())["splits"]
        theirs = json.loads((reference / "dataset" / "reports" / f"rotdigits-sarr-r{k}.json").read_text())["splits"]
        assert ours == theirs
    config = json.loads((out / "rdmldg_config.json").read_text())
    assert config["method"] == "sarr" and len(config["settings"]["rounds"]) == len(STAGES) - 1


def test_two_process_relabel_equals_one_process(tmp_path, model_dir):
    single = run(str(tmp_path / "one"), model_dir, "--relabel-only")
    assert single.returncode == 0, single.stderr[-3000:]
    double = run(str(tmp_path / "two"), model_dir, "--relabel-only", launcher=cpu_launch(2))
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "outputs.json").read_text())
    two = json.loads((tmp_path / "two" / "outputs.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["outputs"] == one["outputs"] and len(one["outputs"]) == 16
    parts = sorted(p.name for p in (tmp_path / "two" / "store").glob("part-*.jsonl"))
    assert parts == ["part-0.jsonl", "part-1.jsonl"]
    store = tmp_path / "two" / "store"
    batches = [json.loads(line)["batch"] for p in parts for line in (store / p).read_text().splitlines()]
    assert sorted(batches) == list(range(6))  # 16 images in batches of 3: each batch once, none lost
