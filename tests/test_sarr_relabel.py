"""SARR relabeling with scripted model outputs: acceptance, fallback policies, stored outputs."""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset

from helpers.sarr import BENCHMARK, CLASSES, chain_for, scripted_reply, tiny_rows
from rdmldg_hf.data.hub_layout import write_config
from rdmldg_hf.generation import GenerationSettings
from rdmldg_hf.prompts import PROMPT_VERSION
from rdmldg_hf.testing import ScriptedBackend
from rdmldg_hf.trainers.relabel import RelabelStore, build_round_dataset, judge, relabel

SOURCE = "tiny@sarr-r1"


@pytest.fixture(scope="module")
def rows():
    return tiny_rows(3, domains=("rot0", "rot60", "rot90"))


def script(rows):
    """Per image: right chain, wrong class, broken format, right conclusion but broken format, no class."""
    kinds = ["right", "wrong", "garbage", "right_broken", "no_class", "right"]
    replies, expected = {}, {}
    for i, row in enumerate(rows):
        kind, name = kinds[i % len(kinds)], CLASSES[row["label"]]
        other = CLASSES[(row["label"] + 1) % len(CLASSES)]
        replies[row["image_id"]] = {
            "right": chain_for(name),
            "wrong": chain_for(other),
            "garbage": "the answer is " + name,
            "right_broken": chain_for(name).replace("<SUMMARY>plan</SUMMARY>", ""),
            "no_class": chain_for("a cloud"),
        }[kind]
        expected[row["image_id"]] = kind
    return replies, expected


def test_judge_accepts_the_first_valid_correct_candidate():
    verdict = judge(["junk", chain_for("two"), chain_for("three"), chain_for("three ")], 3, CLASSES)
    assert verdict.accepted == chain_for("three")
    assert (verdict.num_candidates, verdict.num_valid, verdict.num_correct, verdict.num_no_class) == (4, 3, 2, 1)
    assert verdict.reasons[0].startswith("format:") and verdict.reasons[1] == "wrong class: two"
    assert judge([chain_for("nothing")], 0, CLASSES).reasons == ("conclusion: conclusion 'nothing' names no class",)


def test_accepted_chain_is_re_rendered_so_text_after_the_conclusion_is_never_trained_on():
    untidy = chain_for("three").replace("<SUMMARY>", "< summary >").replace(">three</CONC", "> Three. </CONC")
    chatty = "Sure!\n" + untidy + "\nOr maybe it is a two, honestly."
    assert judge([chatty], 3, CLASSES).accepted == chain_for("three")
    assert judge([chatty], 3, CLASSES, strict=True).accepted is None


@pytest.mark.parametrize("fallback", ["teacher", "cls_only", "drop"])
def test_round_keeps_exactly_the_right_chains_and_applies_the_fallback(rows, fallback):
    replies, expected = script(rows)
    outputs = relabel(ScriptedBackend(scripted_reply(rows, replies)), rows, CLASSES, GenerationSettings(batch_size=4))
    assert outputs == [[replies[i]] for i in rows["image_id"]]
    data, stats = build_round_dataset(rows, outputs, 1, fallback, SOURCE, BENCHMARK)
    right = [i for i in rows["image_id"] if expected[i] == "right"]
    wrong = [i for i in rows["image_id"] if expected[i] != "right"]
    by_id = {row["image_id"]: row for row in data}
    for image_id in right:
        row = by_id[image_id]
        assert row["reasoning"] == replies[image_id]
        assert (row["chain_source"], row["prompt_version"], row["num_correct"]) == (SOURCE, PROMPT_VERSION, 1)
    teacher = {row["image_id"]: row for row in rows}
    for image_id in wrong:
        if fallback == "drop":
            assert image_id not in by_id
            continue
        row = by_id[image_id]
        assert row["num_correct"] == 0 and row["rejection_reasons"]
        if fallback == "teacher":
            assert row["reasoning"] == teacher[image_id]["reasoning"] and row["chain_source"] == "template"
        else:
            assert row["reasoning"] is None and row["chain_source"] is None
    assert stats.accepted == len(right) and stats.acceptance == pytest.approx(len(right) / len(rows))
    assert stats.training_images == len(rows) - (len(wrong) if fallback == "drop" else 0)
    assert stats.training_chains == len(right) + (len(wrong) if fallback == "teacher" else 0)
    key = {"teacher": "teacher", "cls_only": "cls_only", "drop": "dropped"}[fallback]
    assert stats.fallbacks == {key: len(wrong)}

    def rate(*kinds: str) -> float:
        return sum(expected[i] in kinds for i in expected) / len(rows)

    assert stats.invalid_format_rate == pytest.approx(rate("garbage", "right_broken"))
    assert stats.no_class_rate == pytest.approx(rate("garbage", "no_class"))
    ids = rows["image_id"]
    domains = ("rot0", "rot60", "rot90")
    per_domain = {d: sum(expected[i] == "right" for i in ids if i.startswith(d)) / 3 for d in domains}
    assert stats.acceptance_per_domain == pytest.approx(per_domain)
    assert set(stats.acceptance_per_class) == {CLASSES[y] for y in rows["label"]}


def test_teacher_fallback_without_teacher_chain_trains_classification_only():
    rows = tiny_rows(2, domains=("rot0",), chains=False)
    outputs = [["junk"]] * len(rows)
    data, stats = build_round_dataset(rows, outputs, 1, "teacher", SOURCE, BENCHMARK)
    assert data["reasoning"] == [None, None] and stats.fallbacks == {"cls_only_no_teacher_chain": 2}
    with pytest.raises(ValueError, match="Valid policies: teacher, cls_only, drop"):
        build_round_dataset(rows, outputs, 1, "keep", SOURCE, BENCHMARK)


def test_stored_batches_are_not_regenerated(rows, tmp_path):
    replies, _ = script(rows)
    settings = GenerationSettings(batch_size=4)
    full = relabel(ScriptedBackend(scripted_reply(rows, replies)), rows, CLASSES, settings)
    store = RelabelStore(tmp_path / "r1")
    # A run killed after its first batch, in the middle of writing the second line.
    store.append(0, rows["image_id"][:4], full[:4])
    with open(store.path, "a") as handle:
        handle.write('{"batch": 1, "image_ids": ["rot0/')
    again = ScriptedBackend(scripted_reply(rows, replies))
    assert relabel(again, rows, CLASSES, settings, store) == full
    assert again.calls == [4, 1]
    lines = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert [line["batch"] for line in lines] == [0, 1, 2]
    assert relabel(ScriptedBackend(lambda m, i: 1 / 0), rows, CLASSES, settings, store) == full


def test_store_refuses_outputs_of_other_images(rows, tmp_path):
    store = RelabelStore(tmp_path)
    store.append(0, ["other/id.png"], [["x"]])
    with pytest.raises(RuntimeError, match="outputs for other images"):
        relabel(ScriptedBackend(lambda m, i: "x"), rows, CLASSES, GenerationSettings(batch_size=4), store)


def test_round_dataset_loads_back_from_the_hub_layout(rows, tmp_path):
    replies, _ = script(rows)
    outputs = [[replies[i]] for i in rows["image_id"]]
    data, _ = build_round_dataset(rows, outputs, 2, "cls_only", "tiny@sarr-r2", BENCHMARK)
    splits = {d: data.filter(lambda row, d=d: row["domain"] == d) for d in ("rot0", "rot60", "rot90")}
    write_config(tmp_path / "data", "rotdigits-sarr-r2", splits, BENCHMARK)
    loaded = load_dataset(str(tmp_path / "data"), "rotdigits-sarr-r2", split="rot60")
    assert loaded["image_id"] == splits["rot60"]["image_id"]
    assert loaded["reasoning"] == splits["rot60"]["reasoning"]
    assert load_dataset(str(tmp_path / "data"), "rotdigits-sarr-r2-rot0", split="train").num_rows == 3
