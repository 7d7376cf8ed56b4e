"""rdmldg_hf.evaluation.stages: a run's results.json and predictions.jsonl across reruns, and its summary table."""

from __future__ import annotations

import json

import pytest

from rdmldg_hf.evaluation.stages import StageEvaluation, summary_table, write_run_results


def _results(wall: float, last_stage: str = "round-1") -> dict:
    relabel = {"acceptance": 0.75, "invalid_format_rate": 0.125, "fallbacks": {"teacher": 3}, "seconds": 4.0}
    return {
        "test_domain": "rot30",
        "chance": 0.1,
        "stages": [
            {"stage": "mtct", "relabel": None, "losses": {"train_runtime": 9.4}, "metrics": {"heldout_direct": 0.5}},
            {
                "stage": last_stage,
                "relabel": relabel,
                "losses": {"train_runtime": 2.0},
                "metrics": {"heldout_direct": 0.625, "heldout_reasoning": 0.25, "source_holdout_direct": 1.0},
            },
        ],
        "timing": {"wall_seconds": wall, "relabel_seconds": 4.0, "training_seconds": 11.4, "evaluation_seconds": 1.0},
    }


def test_a_rerun_that_redid_nothing_keeps_the_timing_and_the_predictions(tmp_path):
    write_run_results(tmp_path, _results(100.0), [{"image_id": "a", "prediction": 3}])
    write_run_results(tmp_path, _results(2.0), [])  # every stage found done: nothing computed again
    assert json.loads((tmp_path / "results.json").read_text())["timing"]["wall_seconds"] == 100.0
    assert json.loads((tmp_path / "predictions.jsonl").read_text()) == {"image_id": "a", "prediction": 3}
    write_run_results(tmp_path, _results(50.0, "round-2"), [{"image_id": "b", "prediction": 1}])  # new stages
    assert json.loads((tmp_path / "results.json").read_text())["timing"]["wall_seconds"] == 50.0
    assert json.loads((tmp_path / "predictions.jsonl").read_text())["image_id"] == "b"


def test_summary_table_has_a_row_per_stage_and_where_the_time_went():
    lines = summary_table(_results(100.0)).splitlines()
    assert lines[0].split()[:2] == ["stage", "accepted"] and set(lines[1]) <= {"-", " "}
    assert lines[3].split() == ["round-1", "75.0%", "12.5%", "teacher:3", "62.5%", "25.0%", "100.0%", "4", "2"]
    assert lines[2].split()[:5] == ["mtct", "-", "-", "-", "50.0%"]
    assert lines[-1] == ("test domain rot30 (chance 10%); wall 100 s: relabel 4 s, training 11 s, evaluation 1 s")


def test_an_unknown_reasoning_evaluation_is_refused():
    with pytest.raises(ValueError, match="Unknown eval_reasoning 'always'. Valid: final, every_stage, never"):
        StageEvaluation(None, None, None, None, "round-1", reasoning="always")
