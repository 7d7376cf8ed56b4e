"""`rdmldg collect` on per-checkpoint records: DomainBed's three selection methods and its error formula,
re-derived here from DomainBed's definitions (not from the code under test), on a sweep of written records."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

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
            lines.append(json.dumps(record))
            records.append(record)
        (run / "results.jsonl").write_text("\n".join(lines) + "\n")
        (run / "done").write_text("done")
    return records


# ---------------------------------------------------------------- DomainBed's definitions, written out here


def _runs(records, trial, algorithm, envs):
    """hparams_seed -> that run's records (step order) of the run holding out exactly ``envs``."""
    out = {}
    for r in records:
        a = r["args"]
        if (a["trial_seed"], a["algorithm"], sorted(a["test_envs"])) == (trial, algorithm, sorted(envs)):
            out.setdefault(a["hparams_seed"], []).append(r)
    return out


def _best_hparams(scored: dict[int, tuple[float, float]]) -> float:
    """DomainBed sorts runs by validation accuracy (stable, seeds ascending) and reverses: ties go to the highest
    seed."""
    best = max(scored.values(), key=lambda vt: vt[0])[0]
    return scored[max(h for h, (v, _) in scored.items() if v == best)][1]


def expected_accs(records, method: str, algorithm: str, test_env: int) -> list[float]:
    """The selected test accuracy of each trial seed."""
    accs = []
    for trial in range(TRIALS):
        single = _runs(records, trial, algorithm, [test_env])
        scored = {}
        for h, run in single.items():
            if method == "iid":  # argmax over checkpoints of the mean out-accuracy of the training envs (first max)
                best = None
                for r in run:
                    val = sum(r[f"env{i}_out_acc"] for i in range(ENVS) if i != test_env) / (ENVS - 1)
                    if best is None or val > best[0]:
                        best = (val, r[f"env{test_env}_in_acc"])
                scored[h] = best
            elif method == "oracle":  # the last checkpoint; its test env's out part validates
                last = run[-1]
                scored[h] = (last[f"env{test_env}_out_acc"], last[f"env{test_env}_in_acc"])
            else:  # leave one domain out: the other envs' in-accuracy, each in the run holding it out too
                best = None
                for k, step in enumerate(STEPS):
                    others = [j for j in range(ENVS) if j != test_env]
                    pair_accs = [
                        _runs(records, trial, algorithm, [test_env, j])[h][k][f"env{j}_in_acc"] for j in others
                    ]
                    val = sum(pair_accs) / (ENVS - 1)
                    if best is None or val > best[0]:
                        best = (val, run[k][f"env{test_env}_in_acc"])
                scored[h] = best
        accs.append(_best_hparams(scored))
    return accs


NAMES = {
    "iid": "training-domain validation set",
    "loo": "leave-one-domain-out cross-validation",
    "oracle": "test-domain validation set (oracle)",
}


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
        accs = expected_accs(records, method, algorithm, test_env)
        cell = cells[(name, algorithm, test_env)]
        assert cell["dataset"] == "PACS" and cell["trials"] == TRIALS
        assert cell["mean"] == pytest.approx(100 * sum(accs) / len(accs), abs=1e-9)
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5  # population std, as np.std
        assert cell["stderr"] == pytest.approx(100 * std / len(accs) ** 0.5, abs=1e-9)
    # The averages table: per trial, the mean over test envs; then mean and error over trials.
    average = next(a for a in found["averages"] if a["selection_method"] == NAMES["iid"] and a["algorithm"] == "mtct")
    per_env = [expected_accs(records, "iid", "mtct", e) for e in range(ENVS)]
    per_trial = [sum(accs[t] for accs in per_env) / ENVS for t in range(TRIALS)]
    assert average["mean"] == pytest.approx(100 * sum(per_trial) / TRIALS, abs=1e-9) and average["trials"] == TRIALS


def test_markdown_and_latex_tables(tmp_path, capsys):
    records = write_sweep(tmp_path / "sweep", seed=1)
    assert rdmldg(["collect", str(tmp_path / "sweep")]) == 0
    text = capsys.readouterr()
    assert f"Total records: {len(records)}" in text.err
    markdown = text.out
    assert "## Model selection: leave-one-domain-out cross-validation" in markdown
    assert "| Algorithm | art_painting | cartoon | photo | sketch | Avg |" in markdown
    accs = expected_accs(records, "oracle", "labels_only", 2)
    mean, err = 100 * np.mean(accs), 100 * np.std(accs) / np.sqrt(len(accs))
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
    found = _collect_json(capsys, tmp_path / "sweep")
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
