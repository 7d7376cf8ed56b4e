"""`rdmldg sweep` on a 4-domain PACS-format folder with a tiny LLaVA: its runs and folders, the hparams registry,
bad input, the parallel launcher killed and launched again, the submitit launcher, and collect on the result."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from trl import ModelConfig

from helpers.domainbed_selection import NAMES, expected_accs, mean_and_error
from helpers.mtct import tiny_model_dir
from helpers.pacs import build_pacs
from rdmldg_hf.cli import main as rdmldg
from rdmldg_hf.experiments.hparams import run_hparams
from rdmldg_hf.experiments.sweep import Sweep, SweepArguments
from rdmldg_hf.recipe_setup import parse_recipe_args
from rdmldg_hf.trainers import SARRConfig


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Path:
    return build_pacs(tmp_path_factory.mktemp("pacs"))


def sweep_args(pacs: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("--dataset_name", str(pacs), "--dataset_config", "pacs", "--model_name_or_path", str(tiny_model_dir())),
        *("--methods", "mtct", "--max_steps", "2", "--checkpoint_every", "1", "--per_device_train_batch_size", "4"),
        *("--learning_rate", "5e-3", "--eval_batch_size", "32", "--max_new_tokens", "8", "--output_dir", str(out)),
        *extra,
    ]


def _sweep(argv: list[str]) -> Sweep:
    return Sweep(*parse_recipe_args((SweepArguments, SARRConfig, ModelConfig), argv))


def _md5(args: dict) -> str:
    return hashlib.md5(json.dumps(args, sort_keys=True).encode("utf-8")).hexdigest()


def _files(out: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``out``: (mtime in ns, SHA-1 of its bytes)."""
    return {
        str(p): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_runs_are_every_test_env_pair_hparams_and_trial_each_in_a_folder_named_by_its_args(pacs, tmp_path):
    out = tmp_path / "sweep"
    sweep = _sweep(sweep_args(pacs, out, "--test_envs", "0", "sketch", "--test_env_pairs", "--n_hparams", "2"))
    jobs = sweep.jobs()
    sets = {tuple(job.args["test_envs"]) for job in jobs}
    assert sets == {(0,), (3,), (0, 1), (0, 2), (0, 3), (1, 3), (2, 3)}
    assert len(jobs) == len(sets) * 2 * 3  # 2 hparams seeds x 3 trials (the default)
    job = jobs[0]
    assert job.run_dir == out / _md5(job.args) and job.run_dir.parent == out
    assert job.args["dataset"] == "PACS" and job.args["training"] == {
        "learning_rate": 5e-3,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
    }
    assert len({j.run_dir for j in jobs}) == len(jobs)
    assert sweep.status(jobs)[1] == {"done": 0, "running": 0, "incomplete": 0, "not launched": len(jobs)}


def test_hparams_seed_0_is_the_config_and_others_draw_from_documented_distributions():
    config = {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "weight_decay": 0.0, "lora_r": 8}
    assert run_hparams(config, 0, 2) == config
    drawn = run_hparams(config, 3, 1)
    seed = int(hashlib.md5(str((3, 1)).encode()).hexdigest(), 16) % 2**31  # DomainBed's seed_hash(hparams, trial)

    def state(name):
        return np.random.RandomState(int(hashlib.md5(str((seed, name)).encode()).hexdigest(), 16) % 2**31)

    assert drawn["learning_rate"] == 10 ** state("learning_rate").uniform(-4, -2.5)
    assert drawn["per_device_train_batch_size"] == int(2 ** state("per_device_train_batch_size").uniform(3, 5))
    assert drawn["weight_decay"] == 10 ** state("weight_decay").uniform(-6, -2)
    assert drawn["lora_r"] in (4, 8, 16)
    assert run_hparams(config, 3, 2) != drawn  # each trial draws its own, as DomainBed
    assert "lora_r" not in run_hparams({**config, "lora_r": None}, 3, 1)  # full fine-tuning: no rank to draw
    many = [run_hparams(config, h, 0)["learning_rate"] for h in range(1, 200)]
    assert 1e-4 <= min(many) and max(many) <= 1e-3 * math.sqrt(10)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--methods", "mtct", "clip"], r"Unknown methods \['clip'\]. Valid methods: labels_only, reasoning_only"),
        (["--dataset_config", "cifar"], r"Unknown dataset 'cifar'. Valid datasets: pacs, vlcs, officehome"),
        (["--test_envs", "7"], r"Unknown test environment '7'. Valid environments: 0 \(art_painting\), 1 \(cartoon\)"),
        (["--learnin_rate", "1e-3"], r"Unknown command-line arguments \['--learnin_rate', '1e-3'\]"),
        (["--mode", "mixed"], r"mode='mixed': a sweep sets each run's MTCT mode from its method"),
    ],
)
def test_bad_input_stops_before_any_run(pacs, tmp_path, capsys, extra, message):
    out = tmp_path / "sweep"
    assert rdmldg(["sweep", "launch", *sweep_args(pacs, out), *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_more_parallel_jobs_than_gpus_stops_before_any_run(pacs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = tmp_path / "sweep"
    assert rdmldg(["sweep", "launch", *sweep_args(pacs, out), "--launcher", "parallel", "--jobs", "2"]) == 2
    assert "--jobs 2 runs at once, one per GPU, but 1 GPU(s) are visible (0). Use --jobs 1" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_parallel_sweep_killed_then_launched_again_runs_only_the_unfinished_and_collects(pacs, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = sweep_args(pacs, out, "--test_envs", "0", "--test_env_pairs", "--n_trials", "1")
    command = [sys.executable, "-m", "rdmldg_hf.cli", "sweep", "launch", *argv, "--launcher", "parallel"]
    command += ["--jobs", "2"]
    runs = [job.run_dir for job in _sweep(argv).jobs()]
    assert len(runs) == 4  # [0], [0, 1], [0, 2], [0, 3]
    with open(tmp_path / "launcher.log", "w") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    sweep = _sweep(argv)
    deadline = time.monotonic() + 300
    while True:  # until one run is done and another is running
        states = [job.state for job in sweep.jobs()]
        if "done" in states and "running" in states:
            break
        assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"no run finished in time: {states}"
        time.sleep(0.2)
    children = psutil.Process(launcher.pid).children(recursive=True)
    assert children
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, f"runs still alive after their launcher was killed: {alive}"
    finished = [run for run in runs if (run / "done").exists()]
    unfinished = [run for run in runs if run not in finished]
    assert finished and unfinished
    before = _files(out)
    time.sleep(1.0)
    assert _files(out) == before  # nothing writes any more

    capsys.readouterr()
    assert rdmldg(["sweep", "launch", *argv, "--launcher", "parallel", "--jobs", "2"]) == 0
    assert f"Launching {len(unfinished)} runs (parallel)" in capsys.readouterr().out
    after = _files(out)
    for run in finished:  # finished runs' files unchanged
        assert {k: v for k, v in after.items() if k.startswith(str(run))} == {
            k: v for k, v in before.items() if k.startswith(str(run))
        }
    assert all((run / "done").exists() for run in runs)

    # Collect: DomainBed's three selection methods on the real records, re-derived here.
    records = [json.loads(line) for run in runs for line in (run / "results.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records} == {1, 2} and all(r["args"]["output_dir"] in map(str, runs) for r in records)
    assert all(f"env{i}_{part}_acc" in r for r in records for i in range(4) for part in ("in", "out"))
    single = [r for r in records if r["args"]["test_envs"] == [0]]
    assert sum("env0_in_reasoning_acc" in r for r in single) == 1  # on the checkpoint selected during training
    assert rdmldg(["collect", str(out), "--format", "json"]) == 0
    found = {(r["selection_method"], r["test_env"]): r for r in json.loads(capsys.readouterr().out)["results"]}
    assert set(found) == {(name, 0) for name in NAMES.values()}
    for method, name in NAMES.items():
        mean, err = mean_and_error(expected_accs(records, 4, 1, method, "mtct", 0))
        assert found[(name, 0)]["mean"] == pytest.approx(mean, abs=1e-9) and found[(name, 0)]["trials"] == 1

    # A second launch runs nothing and changes no file.
    assert rdmldg(["sweep", "launch", *argv]) == 0
    assert "Launching 0 runs" in capsys.readouterr().out
    assert _files(out) == after


@pytest.mark.slow
@pytest.mark.multiprocess
def test_submitit_local_executor_runs_the_job_array(pacs, tmp_path):
    out = tmp_path / "sweep"
    argv = sweep_args(pacs, out, "--test_envs", "1", "--n_trials", "1", "--launcher", "submitit")
    argv += ["--submitit_cluster", "local", "--submitit_gpus_per_node", "0", "--submitit_timeout_min", "10"]
    assert rdmldg(["sweep", "launch", *argv]) == 0
    (run,) = [job.run_dir for job in _sweep(argv).jobs()]
    assert (run / "done").exists() and len((run / "results.jsonl").read_text().splitlines()) == 2
    assert list((out / "submitit").glob("*_result.pkl"))  # the result came back through submitit


def test_delete_incomplete_removes_unfinished_runs_only(pacs, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = sweep_args(pacs, out, "--test_envs", "0", "1", "--n_trials", "1")
    done_run, incomplete_run = [job.run_dir for job in _sweep(argv).jobs()]
    for run in (done_run, incomplete_run):
        run.mkdir(parents=True)
        (run / "args.json").write_text("{}")
    (done_run / "done").write_text("done")
    assert rdmldg(["sweep", "status", *argv]) == 0
    assert "2 runs: 1 done, 0 running, 1 incomplete, 0 not launched." in capsys.readouterr().out
    assert rdmldg(["sweep", "delete_incomplete", *argv]) == 0
    assert "Deleted 1 incomplete runs." in capsys.readouterr().out
    assert done_run.is_dir() and not incomplete_run.exists()
