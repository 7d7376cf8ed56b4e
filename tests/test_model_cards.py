"""One model card for every shared model: an MTCT run, a SARR run and `rdmldg push` of an adapter with its
results.json carry the same metadata keys, the same metric (type, names, percent) and the same usage section."""

from __future__ import annotations

import copy
import json
import logging
import re

import pytest
from huggingface_hub import ModelCard

from helpers.evaluation import BASE_REPO
from helpers.hub import FakeHub
from helpers.mtct import BENCHMARK, config, load_tiny, lodo_trainer, tiny_dataset
from helpers.sarr import CLASSES, chain_for, sarr_test_config, scripted_reply, tiny_rows
from rdmldg_hf.evaluation.rows import evaluate_rows
from rdmldg_hf.evaluation.sharing import model_card, push_adapter
from rdmldg_hf.evaluation.stages import StageEvaluation, write_run_results
from rdmldg_hf.models import RunConfig, accuracy_result, default_lora_config
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.testing import ScriptedBackend
from rdmldg_hf.trainers import SARRTrainer
from rdmldg_hf.trainers.sarr_report import sarr_model_card
from rdmldg_hf.trainers.sarr_state import StageResult

DATASET = "rdmldg/domainbed-reasoning"
MTCT_REPO = "rdmldg-tests/mtct-rotdigits-rot30"
SARR_REPO = "rdmldg-tests/sarr-rotdigits-rot30"
SHAPE = {"base_model", "datasets", "library_name", "tags", "pipeline_tag", "metrics", "rdmldg", "model-index"}
METRIC_NAMES = {"Accuracy (direct)", "Accuracy (reasoning)"}


def _card(path) -> ModelCard:
    return ModelCard.load(path)


def _from_the_hub(model):
    """``model`` as ``from_pretrained(BASE_REPO)`` would have returned it (its config and PEFT read the id)."""
    model.config._name_or_path = model.name_or_path = BASE_REPO
    return model


def _mtct_run(tmp):
    """A LoRA MTCT run on a base model loaded "from the Hub", evaluated on every domain (its results.json)."""
    model, processor = load_tiny()
    model = _from_the_hub(model)
    out = tmp / "mtct"
    args = config(out, hub_model_id=MTCT_REPO)
    trainer = lodo_trainer(model, processor, args, tiny_dataset(24), peft_config=default_lora_config(r=4))
    trainer.train()
    trainer.save_model(str(out))
    record = evaluate_rows(trainer.model, processor, tiny_dataset(24), BENCHMARK).record(
        dataset=DATASET, config=BENCHMARK.name
    )
    (out / "results.json").write_text(json.dumps(record))
    trainer.create_model_card(dataset_name=DATASET)
    return trainer, record


def _sarr_run(tmp):
    """A LoRA SARR run (one scripted relabel round) with the recipes' stage evaluation and its results.json."""
    model, processor = load_tiny()
    model = _from_the_hub(model)
    rows = tiny_rows(4)
    split = lodo_split(rows, "rot30", holdout_fraction=0.0)
    replies = {r["image_id"]: chain_for(CLASSES[r["label"]]) for r in rows}
    args = sarr_test_config(tmp / "sarr", hub_model_id=SARR_REPO, max_steps=1, relabel_batch_size=12)
    trainer = SARRTrainer(
        model,
        args,
        train_dataset=split.train,
        processing_class=processor,
        peft_config=default_lora_config(r=4),
        split_record=split.record(),
        backend=ScriptedBackend(scripted_reply(rows, replies)),
    )
    evaluation = StageEvaluation(processor, trainer.benchmark, split.test, None, trainer.stages[-1], max_new_tokens=8)
    trainer.stage_callback = evaluation
    stages = trainer.train()
    out = trainer.save_model()
    write_run_results(out, trainer.results_summary(stages), evaluation.predictions)
    trainer.create_model_card(dataset_name=DATASET)
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three cards, read when written: MTCT's, `rdmldg push` of that run's folder, SARR's; and the
    push of the SARR run's folder (its results.json is a run summary, not an evaluation record)."""
    tmp = tmp_path_factory.mktemp("cards")
    mtct, record = _mtct_run(tmp)
    sarr = _sarr_run(tmp)
    with FakeHub(tmp / "hub") as hub:
        push_adapter(mtct.args.output_dir, MTCT_REPO)
        push_adapter(sarr.args.output_dir, "rdmldg-tests/sarr-pushed")
    cards = {
        "mtct": _card(tmp / "mtct" / "README.md"),
        "push": _card(hub.repo(MTCT_REPO) / "README.md"),
        "sarr": _card(tmp / "sarr" / "README.md"),
        "sarr-push": _card(hub.repo("rdmldg-tests/sarr-pushed") / "README.md"),
    }
    return {"mtct": mtct, "sarr": sarr, "record": record, "cards": cards}


def _percent(fraction: float) -> float:
    return round(100 * fraction, 2)


def test_three_cards_carry_the_same_metadata_keys_and_metric(runs):
    cards = {name: runs["cards"][name] for name in ("mtct", "push", "sarr")}
    keys = {name: set(card.data.to_dict()) for name, card in cards.items()}
    assert keys["mtct"] == keys["push"] == keys["sarr"] and SHAPE <= keys["mtct"]
    for name, card in cards.items():
        data = card.data
        assert (data.base_model, data.library_name, data.pipeline_tag) == (BASE_REPO, "peft", "image-text-to-text")
        assert data.datasets == [DATASET] and data.metrics == ["accuracy"], name
        assert {"trl", "rdmldg", "domain-generalization", "lora", "peft", "mtct"} <= set(data.tags), name
        assert data.rdmldg["benchmark"] == "rotdigits" and data.rdmldg["test_domain"] == "rot30", name
        assert data.eval_results, name
        for result in data.eval_results:
            assert (result.task_type, result.metric_type, result.dataset_type) == (
                "image-classification",
                "accuracy",
                DATASET,
            )
            assert result.metric_name in METRIC_NAMES and 0 <= result.metric_value <= 100
    assert "sarr" in cards["sarr"].data.tags and cards["sarr"].data.rdmldg["method"] == "sarr"
    assert cards["mtct"].data.rdmldg["method"] == cards["push"].data.rdmldg["method"] == "mtct"


def test_every_accuracy_is_in_percent_of_what_was_measured(runs):
    per_domain = runs["record"]["metrics"]["per_domain"]
    expected = {(domain, "Accuracy (direct)"): _percent(value) for domain, value in per_domain.items()}
    for name in ("mtct", "push"):
        card = runs["cards"][name]
        assert {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results} == expected
    final = runs["sarr"].stage_results[-1].metrics
    sarr = {(r.dataset_split, r.metric_name): r.metric_value for r in runs["cards"]["sarr"].data.eval_results}
    assert sarr == {
        ("rot30", "Accuracy (direct)"): _percent(final["heldout_direct"]),
        ("rot30", "Accuracy (reasoning)"): _percent(final["heldout_reasoning"]),
    }


def test_push_of_a_sarr_run_reports_the_accuracies_of_the_sarr_card(runs):
    """`rdmldg push` of a SARR output folder reads its results.json (a run summary) into the same model-index."""

    def index(card):
        return [(r.dataset_split, r.metric_name, r.metric_value, r.task_name) for r in card.data.eval_results]

    assert index(runs["cards"]["sarr-push"]) == index(runs["cards"]["sarr"])


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^{re.escape(heading)}$.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no {heading!r} section"
    return match.group(0)


def test_three_cards_share_one_usage_section_instead_of_trls_text_generation(runs):
    usage = {
        name: _section(runs["cards"][name].text, "## How to use").replace(repo, "REPO")
        for name, repo in (("mtct", MTCT_REPO), ("push", MTCT_REPO), ("sarr", SARR_REPO))
    }
    assert usage["mtct"] == usage["push"] == usage["sarr"]
    assert 'DGClassifier.from_pretrained("REPO")' in usage["mtct"]
    assert f'AutoModelForImageTextToText.from_pretrained("{BASE_REPO}")' in usage["mtct"]
    for name in ("mtct", "push", "sarr"):
        text = runs["cards"][name].text
        assert "## Quick start" not in text and '"text-generation"' not in text, name
        assert "| rot30 (held out) | direct |" in text, name
    assert "trained with MTCT, a method introduced in" in runs["cards"]["push"].text
    assert "trained with SARR, a method introduced in" in runs["cards"]["sarr"].text
    assert "### RD-MLDG stages" in runs["cards"]["sarr"].text


def test_the_same_fraction_is_the_same_percent_in_every_card(runs, tmp_path, monkeypatch):
    """One accuracy of 0.875 on the held-out domain (and 0.5 on the source holdout for SARR) reads 87.5 in the
    model-index of each builder: MTCT's card, the push card, SARR's card."""
    mtct = runs["mtct"]
    monkeypatch.setattr(mtct.args, "output_dir", str(tmp_path))
    mtct.create_model_card(results={"metrics": {"per_domain": {"rot30": 0.875}}})
    mtct_card = _card(tmp_path / "README.md")
    run = RunConfig("sarr", "rotdigits", list(CLASSES), list(CLASSES), ["rot0", "rot60", "rot90"], "rot30", "v")
    push_card = model_card(run, "me/sarr-rot30", BASE_REPO, {"metrics": {"per_domain": {"rot30": 0.875}}})
    sarr = copy.copy(runs["sarr"])
    metrics = {"heldout_direct": 0.875, "source_holdout_direct": 0.5}
    sarr.stage_results = [StageResult("round-1", str(tmp_path), {}, metrics)]
    sarr_card = sarr_model_card(sarr, "sarr-rot30", "me/sarr-rot30")
    assert {r.dataset_split: r.metric_value for r in sarr_card.data.eval_results} == {
        "rot30": 87.5,
        "source-holdout": 50.0,
    }
    for card in (mtct_card, push_card):
        assert [(r.dataset_split, r.metric_value, r.metric_name) for r in card.data.eval_results] == [
            ("rot30", 87.5, "Accuracy (direct)")
        ]
    assert all(r.metric_type == "accuracy" for c in (mtct_card, push_card, sarr_card) for r in c.data.eval_results)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]; got 87.5"):
        accuracy_result(87.5)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]; got 87.5"):
        model_card(run, "me/x", BASE_REPO, {"metrics": {"per_domain": {"rot30": 87.5}}})


def test_no_secret_reaches_a_card(runs, tmp_path, monkeypatch, caplog):
    env_token, args_token, push_token = "hf_EnvTokenAbcdefgh123", "hf_ArgsTokenAbcdefg456", "hf_PushTokenAbcdef789"
    plain_secret = "my-plain-secret"  # a token of no known shape: redacted because it is the push's token
    monkeypatch.setenv("HF_TOKEN", env_token)
    mtct, sarr = runs["mtct"], runs["sarr"]
    adapter = mtct.args.output_dir
    monkeypatch.setattr(mtct.args, "hub_token", args_token)
    monkeypatch.setattr(mtct.args, "output_dir", str(tmp_path / "mtct"))
    monkeypatch.setattr(sarr.args, "hub_token", args_token)
    monkeypatch.setattr(sarr, "output_dir", tmp_path / "sarr")
    (tmp_path / "sarr").mkdir()
    with caplog.at_level(logging.WARNING, logger="rdmldg_hf.cards"):
        # A user's tag or model name that holds a token must not carry it into the card.
        mtct.create_model_card(model_name=f"m-{args_token}", tags=[env_token, "ok"], results=runs["record"])
        sarr.create_model_card(model_name=f"s-{env_token}", tags=[args_token])
        with FakeHub(tmp_path / "hub") as hub:
            push_adapter(adapter, MTCT_REPO, token=push_token)
        record = {key: value for key, value in runs["record"].items() if key != "dataset"}
        run = RunConfig.load(adapter)
        (tmp_path / "card.md").write_text(
            str(model_card(run, "me/x", BASE_REPO, record, f"org/{plain_secret}", plain_secret))
        )
    written = [tmp_path / "mtct" / "README.md", tmp_path / "sarr" / "README.md", tmp_path / "card.md"]
    for path in [*written, hub.repo(MTCT_REPO) / "README.md"]:
        text = path.read_text()
        assert not [s for s in (env_token, args_token, push_token, plain_secret) if s in text], path
        assert ModelCard(text).data.eval_results, path  # still a valid card with its model-index
    assert all("[redacted]" in path.read_text() for path in written)
    assert "ok" in _card(written[0]).data.tags and _card(written[2]).data.datasets == ["org/[redacted]"]
    assert "redacted from the model card" in caplog.text
    assert not [s for s in (env_token, args_token, push_token, plain_secret) if s in caplog.text]


def test_results_that_are_no_results_are_refused_with_the_fix(runs, tmp_path):
    folder = runs["mtct"].args.output_dir
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"results.json' is not valid JSON .*give the results.json a run wrote"):
        push_adapter(folder, MTCT_REPO, results=bad)
    bad.write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    with pytest.raises(ValueError, match=r"holds no per-domain accuracies .*rdmldg eval --output"):
        push_adapter(folder, MTCT_REPO, results=bad)
