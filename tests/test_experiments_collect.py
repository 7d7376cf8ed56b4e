"""`rdmldg collect` on per-checkpoint records: DomainBed's three selection methods and its error formula,
re-derived here from DomainBed's definitions (not from the code under test), on a sweep of written records."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.domainbed_selection import NAMES, expected_accs, mean_and_error
from rdmldg_hf.cli import main as rdmldg

ENVS = 4
STEPS = (2, 4, 6)
TRIALS = 3
HPARAMS = 2
ALGORITHMS = ("labels_only", "mtct")


def _accuracy(rng: np.random.Generator) -> float:
    return float(rng.integers(0, 5)) / 4  # quarters: ties between checkpoints and between hparams happen


def write_sweep(out: Path, seed: int = 0) -> list[dict]:
    """A sweep's run folders as `rdmldg sweep` lays them out: every single test env and pair, 2 hparams, 3 trials."""
    rng = np.random.default_rng(seed)
    records = []
    test_env_sets = [[i] for i in range(ENVS)] + [list(p) for p in itertools.combinations(range(ENVS), 2)]
    for algorithm, trial, envs, hparams_seed in itertools.product(
        ALGORITHMS, range(TRIALS), test_env_sets, range(HPARAMS)
    ):
        args = {
            "dataset": "PACS",
            "algorithm": algorithm,
            "test_envs": envs,
            "hparams_seed": hparams_seed,
            "trial_seed": trial,
            "holdout_fraction": 0.2,
        }
        run = out / hashlib.md5(json.dumps(args, sort_keys=True).encode()).hexdigest()
        run.mkdir(parents=True)
        args["output_dir"] = str(run)
        (run / "args.json").write_text(json.dumps(args))
        lines = []
        for step in STEPS:
            record = {"args": args, "hparams": {"learning_rate": 1e-3}, "step": step, "epoch": step / 3}
            for i in range(ENVS):
                record[f"env{i}_in_acc"], record[f"env{i}_out_acc"] = _accuracy(rng), _accuracy(rng)
            for i in envs:
                record[f"env{i}_in_reasoning_acc"] = _accuracy(rng)
            lines.append(json.dumps(record))
            records.append(record)
        (run / "results.jsonl").write_text("\n".join(lines) + "\n")
        (run / "done").write_text("done")
    return records


def _collect_json(capsys, *folders) -> dict:
    assert rdmldg(["collect", *map(str, folders), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_collect_matches_domainbeds_selection_and_error_formula(tmp_path, capsys):
    records = write_sweep(tmp_path / "sweep")
    found = _collect_json(capsys, tmp_path / "sweep")
    assert found["records"] == len(records) and found["refused"] == []
    cells = {(r["selection_method"], r["algorithm"], r["test_env"]): r for r in found["results"]}
    assert len(cells) == len(NAMES) * len(ALGORITHMS) * ENVS
    for (method, name), algorithm, test_env in itertools.product(NAMES.items(), ALGORITHMS, range(ENVS)):
        accs = expected_accs(records, ENVS, TRIALS, method, algorithm, test_env)
        cell = cells[(name, algorithm, test_env)]
        mean, err = mean_and_error(accs)
        assert cell["dataset"] == "PACS" and cell["trials"] == TRIALS
        assert cell["mean"] == pytest.approx(mean, abs=1e-9) and cell["stderr"] == pytest.approx(err, abs=1e-9)
    # The averages table: per trial, the mean over test envs; then mean and error over trials.
    average = next(a for a in found["averages"] if a["selection_method"] == NAMES["iid"] and a["algorithm"] == "mtct")
    per_env = [expected_accs(records, ENVS, TRIALS, "iid", "mtct", e) for e in range(ENVS)]
    per_trial = [sum(accs[t] for accs in per_env) / ENVS for t in range(TRIALS)]
    assert average["mean"] == pytest.approx(100 * sum(per_trial) / TRIALS, abs=1e-9) and average["trials"] == TRIALS


def test_reasoning_test_accuracy_of_the_same_choices(tmp_path, capsys):
    records = write_sweep(tmp_path / "sweep", seed=2)
    assert rdmldg(["collect", str(tmp_path / "sweep"), "--format", "json", "--test_accuracy", "reasoning"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["test_accuracy"] == "reasoning"
    for cell in found["results"]:
        method = next(k for k, name in NAMES.items() if name == cell["selection_method"])
        accs = expected_accs(records, ENVS, TRIALS, method, cell["algorithm"], cell["test_env"], "in_reasoning_acc")
        assert cell["mean"] == pytest.approx(mean_and_error(accs)[0], abs=1e-9)


def test_markdown_and_latex_tables(tmp_path, capsys):
    records = write_sweep(tmp_path / "sweep", seed=1)
    assert rdmldg(["collect", str(tmp_path / "sweep")]) == 0
    text = capsys.readouterr()
    assert f"Total records: {len(records)}" in text.err
    markdown = text.out
    assert "## Model selection: leave-one-domain-out cross-validation" in markdown
    assert "| Algorithm | art_painting | cartoon | photo | sketch | Avg |" in markdown
    accs = expected_accs(records, ENVS, TRIALS, "oracle", "labels_only", 2)
    mean, err = mean_and_error(accs)
    oracle = markdown.split("## Model selection: test-domain validation set (oracle)")[1]
    row = next(line for line in oracle.splitlines() if line.startswith("| labels_only |"))
    assert row.split(" | ")[3] == f"{mean:.1f} ± {err:.1f}"
    assert rdmldg(["collect", str(tmp_path / "sweep"), "--latex", "--output", str(tmp_path / "t.tex")]) == 0
    latex = (tmp_path / "t.tex").read_text()
    assert "\\toprule" in latex and f"{mean:.1f} $\\pm$ {err:.1f}" in latex and "labels\\_only" in latex


def test_records_that_disagree_with_their_run_folder_are_refused(tmp_path, capsys):
    records = write_sweep(tmp_path / "sweep")
    run = Path(records[0]["args"]["output_dir"])
    lines = (run / "results.jsonl").read_text().splitlines()
    moved = json.loads(lines[1])
    moved["args"] = {**moved["args"], "trial_seed": 2}  # a record claiming another trial
    (run / "results.jsonl").write_text("\n".join([lines[0], json.dumps(moved), lines[2]]) + "\n")
    (run / "done").unlink()  # an unfinished run's records count, as in DomainBed, and it is named
    found = _collect_json(capsys, tmp_path / "sweep")
    assert found["unfinished_runs"] == [str(run)]
    assert found["records"] == len(records) - 1
    assert found["refused"] == [
        {"run": str(run), "records": 1, "reason": "their args differ from the run folder's in trial_seed"}
    ]
    assert rdmldg(["collect", str(tmp_path / "sweep")]) == 0
    assert f"REFUSED 1 record(s) of {run}" in capsys.readouterr().err


def test_collect_on_a_folder_without_records_says_so(tmp_path, capsys):
    (tmp_path / "empty" / "some-run").mkdir(parents=True)
    assert rdmldg(["collect", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert "No records in" in error and "none of its 1 subfolders holds a results.jsonl" in error
    assert rdmldg(["collect", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
