"""SARRTrainer used as a TRL user would: LODO split, train, one continuous log with the
round, round events, resume, push (adapter, round datasets as configs, TRL's cards for SARR and MTCT)."""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset
from huggingface_hub import ModelCard
from transformers import TrainerCallback
from transformers.integrations import integration_utils
from trl import TrlParser

from helpers.analysis import dataset_dir, recipe_args
from helpers.hub import FakeHub
from helpers.sarr import sarr_test_config
from rdmldg_hf.models import default_lora_config, load_model_and_processor
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.trainers import SARRConfig, SARRTrainer
from rdmldg_hf.trainers.sarr_callbacks import SARRCallback
from rdmldg_hf.training import SARR, run_sarr

REPO = "rdmldg-tests/sarr-rotdigits-rot30"
STAGES = ["mtct", "round-1", "round-2", "round-3"]


class Recorder(SARRCallback):
    """What callbacks see: every on_log's (step, logs) and every round boundary."""

    def __init__(self):
        self.logs, self.events = [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))

    def on_round_begin(self, args, state, control, **kwargs):
        self.events.append(("begin", kwargs["round"], kwargs["stage"], state.global_step))

    def on_round_end(self, args, state, control, **kwargs):
        self.events.append(("end", kwargs["round"], kwargs["stage"], state.global_step, kwargs["relabel"] is not None))


class Reporter(TrainerCallback):
    """A ``report_to`` integration (as TensorBoard's): one instance per run, its writes keyed by the step."""

    made: list["Reporter"] = []

    def __init__(self):
        self.trainings, self.steps = 0, []
        Reporter.made.append(self)

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainings += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.steps.append(state.global_step)


class StepsOnly(TrainerCallback):
    """A plain TrainerCallback (no round hooks): given to every stage, never called for rounds."""


@pytest.fixture(scope="module")
def model_dir(tiny_phrase_model):
    return tiny_phrase_model


def sarr_config(out, **overrides) -> SARRConfig:
    settings = dict(
        num_rounds=3,
        push_to_hub=True,
        hub_model_id=REPO,
        per_device_train_batch_size=8,
        relabel_batch_size=16,
        relabel_max_new_tokens=4,
        save_strategy="steps",
        save_steps=2,
    )
    return sarr_test_config(out, **{**settings, **overrides})


@pytest.mark.slow
def test_a_trl_style_run_trains_logs_one_stream_resumes_and_pushes(tmp_path, model_dir, monkeypatch):
    monkeypatch.setitem(integration_utils.INTEGRATION_TO_CALLBACK, "rdmldg-test-reporter", Reporter)
    Reporter.made.clear()
    splits = lodo_split(load_dataset(str(dataset_dir()), "rotdigits"), test_domain="rot30")
    model, processor = load_model_and_processor(model_dir)
    recorder = Recorder()
    trainer = SARRTrainer(
        model=model,
        args=sarr_config(tmp_path / "out", report_to=["rdmldg-test-reporter"]),
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=processor,
        peft_config=default_lora_config(r=2),
        split_record=splits.record(),
        callbacks=[recorder, StepsOnly],
    )
    with pytest.raises(ValueError, match="call train"):
        trainer.push_to_hub()
    results = trainer.train()
    assert [r.name for r in results] == STAGES

    # One log stream: the step keeps counting across stages, every log names its round.
    steps = [step for step, _ in recorder.logs]
    assert steps == sorted(steps) and steps[-1] == trainer.state.global_step == 2 * len(STAGES)
    training = [(step, logs["round"]) for step, logs in recorder.logs if "loss" in logs]
    assert training == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 3), (8, 3)]
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == list(range(1, 9))
    (reporter,) = Reporter.made  # report_to: one integration for the whole run, fed every stage's logs
    assert reporter.trainings == len(STAGES) and reporter.steps == steps
    stage_log = json.loads((tmp_path / "out" / "stages" / "round-1" / "trainer_state.json").read_text())["log_history"]
    assert [(e["step"], e["round"]) for e in stage_log if "loss" in e] == [(1, 1), (2, 1)]  # a round is one curve
    assert recorder.events == [
        event
        for k, stage in enumerate(STAGES)
        for event in (("begin", k, stage, 2 * k), ("end", k, stage, 2 * k + 2, k > 0))
    ]

    # Resumable: a finished run is read back, nothing retrained; a bad checkpoint path is refused.
    model, processor = load_model_and_processor(model_dir)  # the same command again, in a new process
    again = SARRTrainer(
        model=model,
        args=sarr_config(tmp_path / "out"),
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=processor,
        peft_config=default_lora_config(r=2),
        split_record=splits.record(),
    )
    with pytest.raises(ValueError, match=r"not a stage checkpoint of this run; expected .*/<stage>/checkpoint-<N>"):
        again.train(resume_from_checkpoint=str(tmp_path / "elsewhere" / "checkpoint-2"))
    assert [r.losses for r in again.train(resume_from_checkpoint=True)] == [r.losses for r in results]
    assert again.state.global_step == 8 and len(again.state.log_history) == len(trainer.state.log_history)
    state = json.loads((tmp_path / "out" / "sarr_state.json").read_text())
    assert sum(e["event"] == "done recorded" for e in state["events"]) == len(STAGES)
    fresh = SARRTrainer(
        model=model,
        args=sarr_config(tmp_path / "fresh"),
        train_dataset=splits.train,
        processing_class=processor,
    )
    with pytest.raises(ValueError, match="holds no SARR run to resume"):
        fresh.train(resume_from_checkpoint=True)

    with FakeHub(tmp_path / "hub") as hub:
        trainer.push_to_hub(dataset_name="rdmldg/domainbed-reasoning")
    model_repo, rounds_repo = hub.repo(REPO), hub.repo(f"{REPO}-rounds")
    pushed = sorted(p.relative_to(model_repo).as_posix() for p in model_repo.rglob("*") if p.is_file())
    assert {"adapter_config.json", "adapter_model.safetensors", "rdmldg_config.json", "README.md"} <= set(pushed)
    assert not [p for p in pushed if p.startswith(("stages/", "relabel/", "dataset/", "checkpoint-"))]
    assert json.loads((model_repo / "rdmldg_config.json").read_text())["test_domain"] == "rot30"
    for k in (1, 2, 3):
        rows = load_dataset(str(rounds_repo), f"rotdigits-sarr-r{k}")
        assert sum(len(split) for split in rows.values()) == len(splits.train)  # fallback 'teacher' keeps all

    card = ModelCard.load(model_repo / "README.md")
    assert {"trl", "sarr", "mtct", "rdmldg"} <= set(card.data.tags) and card.data.library_name == "peft"
    assert "trained with SARR, a method introduced in" in card.text and "2602.23777" in card.text
    assert "| round-3 | 0.0% |" in card.text and card.data.datasets == ["rdmldg/domainbed-reasoning"]
    stage_card = ModelCard.load(tmp_path / "out" / "stages" / "round-1" / "README.md")  # MTCTTrainer's, at its save
    assert "trained with MTCT, a method introduced in" in stage_card.text and "mtct" in stage_card.data.tags


def test_the_sarr_recipe_pushes_when_push_to_hub_is_set(tmp_path):
    """`push_to_hub: true` in a recipe's config pushes the run (model repo and round datasets) at the end."""
    parser = TrlParser(SARR.argument_types)
    script, args, model = parser.parse_args_and_config(
        args=recipe_args(
            tmp_path / "out",
            0.34,
            *("--max_steps", "1", "--num_rounds", "1", "--round_max_steps", "1", "--eval_reasoning", "never"),
            *("--per_device_train_batch_size", "4", "--eval_batch_size", "12", "--relabel_batch_size", "12"),
            *("--relabel_max_new_tokens", "4", "--push_to_hub", "true", "--hub_model_id", REPO),
        )
    )
    with FakeHub(tmp_path / "hub") as hub:
        run_sarr(script, args, model)
    pushed = {p.relative_to(hub.repo(REPO)).as_posix() for p in hub.repo(REPO).rglob("*") if p.is_file()}
    assert {"model.safetensors", "rdmldg_config.json", "results.json", "predictions.jsonl", "README.md"} <= pushed
    rounds = load_dataset(str(hub.repo(f"{REPO}-rounds")), "rotdigits-sarr-r1")
    assert sum(len(split) for split in rounds.values()) == 12  # 3 training domains x 4 in-part images
