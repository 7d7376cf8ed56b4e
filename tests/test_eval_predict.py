"""Prediction modes, the evaluate metric, in-context demos and the LODO split, on tiny models and rows."""

import evaluate
import pytest
import torch
from datasets import Dataset, Image

from helpers.evaluation import png, rows
from helpers.mtct import load_tiny
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.evaluation.dg_metric import compute_dg_metrics, metric_path
from rdmldg_hf.evaluation.icl import ICLSettings, build_demos, select_demos
from rdmldg_hf.evaluation.predict import Predictions, predict
from rdmldg_hf.evaluation.rows import check_same_benchmark, evaluate_rows, score_predictions
from rdmldg_hf.protocol import check_domains, lodo_split
from rdmldg_hf.scoring import score_classes
from rdmldg_hf.testing import ScriptedBackend

DIGITS = get_benchmark("rotdigits")
NAMES = DIGITS.class_names


def test_metric_loads_offline_and_scores_per_domain():
    metric = evaluate.load(metric_path())
    result = metric.compute(
        predictions=[1, -1, 2, 3, 0], references=[1, 0, 2, 1, 0], domains=["a", "a", "b", "b", "b"]
    )
    assert result["per_domain"] == {"a": 0.5, "b": pytest.approx(2 / 3)}
    assert result["mean_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["invalid_rate"] == pytest.approx(1 / 5)
    assert result["invalid_per_domain"] == {"a": 0.5, "b": 0.0}
    assert compute_dg_metrics([1], [1], ["a"])["count_per_domain"] == {"a": 1}


def test_rows_without_a_label_are_left_out_of_the_accuracy_and_counted():
    rows = Dataset.from_dict({"label": [1, -1, 2, -1, 0], "domain": ["a", "a", "a", "b", "b"]})
    predictions = Predictions("direct", [1, -1, 0, -1, 0], [None] * 5)  # an invalid output on an unlabeled row too
    metrics = score_predictions(predictions, rows)
    assert metrics["per_domain"] == {"a": 0.5, "b": 1.0} and metrics["count_per_domain"] == {"a": 2, "b": 1}
    assert metrics["unlabeled"] == 2 and metrics["unlabeled_per_domain"] == {"a": 1, "b": 1}
    assert score_predictions(predictions, rows, {"b": 3})["unlabeled_per_domain"] == {"a": 1, "b": 4}
    with pytest.raises(ValueError, match="No image to score: all 2 have label -1"):
        score_predictions(Predictions("direct", [0, 0], [None] * 2), rows.select([1, 3]))


def test_direct_scores_every_class_and_agrees_with_scoring():
    model, processor = load_tiny()
    data = rows(6)
    result = predict(model, processor, data["image"], NAMES, "direct", batch_size=4)
    assert all(len(p) == 10 and abs(sum(p) - 1) < 1e-4 for p in result.probabilities)
    assert result.indices == score_classes(model, processor, data["image"], NAMES).argmax(dim=-1).tolist()
    assert result.invalid == [] and result.texts == [None] * 6


def test_generating_modes_count_invalid_outputs_as_wrong():
    answers = iter(["three", "not a digit", "Seven.", "", "seven or three"] * 2)
    direct = predict(ScriptedBackend(lambda m, i: next(answers)), None, rows(5)["image"], NAMES, "direct-generate")
    assert direct.indices == [3, -1, 7, -1, -1] and direct.invalid == [1, 3, 4]
    assert direct.invalid_rate == pytest.approx(3 / 5)
    chains = iter(
        [render_chain("p", "c", "r", "f", "two"), "<CONCLUSION>nine", render_chain("p", "c", "r", "f", "nine")]
    )
    reasoning = predict(ScriptedBackend(lambda m, i: next(chains)), None, rows(3)["image"], NAMES, "reasoning")
    assert reasoning.indices == [2, -1, 9] and reasoning.texts[1] == "<CONCLUSION>nine"


def test_unreadable_images_are_counted_not_fatal():
    model, processor = load_tiny()
    data = rows(4).cast_column("image", Image(decode=False))
    items = data.to_list()
    items[1]["image"] = {"bytes": b"not an image", "path": None}
    outcome = evaluate_rows(model, processor, Dataset.from_list(items, features=data.features), DIGITS)
    assert outcome.predictions.unreadable == [1] and outcome.predictions.indices[1] == -1
    assert outcome.metrics["unreadable"] == 1 and sum(outcome.metrics["unreadable_per_domain"].values()) == 1
    assert outcome.metrics["invalid_rate"] == pytest.approx(0.25)


def _pool():
    return rows(40)


@pytest.mark.parametrize("strategy", ["random", "balanced", "same_domain", "other_domain"])
def test_demo_strategies(strategy):
    pool = _pool()
    test = pool.filter(lambda d: d == "rot30", input_columns="domain")
    train_domains = ["rot0", "rot60", "rot90"]
    settings = ICLSettings(3, strategy, seed=1)
    picked = select_demos(pool, test["domain"], test["image_id"], train_domains, settings)
    assert picked == select_demos(pool, test["domain"][::-1], test["image_id"][::-1], train_domains, settings)[::-1]
    for image_id, indices in zip(test["image_id"], picked):
        assert len(indices) == 3 and len(set(indices)) == 3
        demo_domains = {pool[i]["domain"] for i in indices}
        assert image_id not in {pool[i]["image_id"] for i in indices}
        if strategy == "same_domain":
            assert demo_domains == {"rot30"}
        else:
            assert "rot30" not in demo_domains
        if strategy == "balanced":
            assert len({pool[i]["label"] for i in indices}) == 3


def test_icl_prompts_hold_the_demos_then_the_test_image():
    pool = _pool()
    test = pool.select(range(2))
    picked = select_demos(
        pool, test["domain"], test["image_id"], ["rot60", "rot90"], ICLSettings(2, "random"), "reasoning"
    )
    demos = build_demos(pool, picked, NAMES, "reasoning")
    seen = []

    def reply(messages, images):
        seen.append((messages, images))
        return render_chain("p", "c", "r", "f", "one")

    result = predict(ScriptedBackend(reply), None, test["image"], NAMES, "reasoning", demos=demos)
    assert result.indices == [1, 1]
    messages, images = seen[0]
    assert len(images) == 3 and [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"][0]["text"] == pool[picked[0][0]]["reasoning"]
    model, processor = load_tiny()
    direct_demos = build_demos(pool, picked, NAMES, "direct")
    assert direct_demos[0][0].answer == NAMES[pool[picked[0][0]]["label"]]
    scored = predict(model, processor, test["image"], NAMES, "direct", demos=direct_demos)
    zero_shot = predict(model, processor, test["image"], NAMES, "direct")
    assert len(scored.probabilities) == 2 and scored.probabilities != zero_shot.probabilities


def test_too_many_shots_says_how_many_there_are():
    pool = _pool()
    with pytest.raises(ValueError, match=r"--icl-shots 12 is larger than the \d+ demos available"):
        select_demos(pool, ["rot30"], ["rot30/x"], ["rot0"], ICLSettings(12, "same_domain"))
    with pytest.raises(ValueError, match="Unknown demo strategy 'nearest'. Valid strategies: random, balanced"):
        ICLSettings(2, "nearest")


def test_lodo_split_and_domain_checks():
    data = rows(40)
    split = lodo_split(data, "rot60", holdout_fraction=0.2)
    assert set(split.test["domain"]) == {"rot60"} and len(split.test) == 10
    assert split.train_domains == ["rot0", "rot30", "rot90"]
    train, val = set(split.train["image_id"]), set(split.validation["image_id"])
    assert not train & val and len(train | val) == 30 and len(val) == 6  # int(10 * 0.2) per domain
    with pytest.raises(ValueError, match="Domain 'sketch' is not in the config 'rotdigits'. Its domains: rot0, rot30"):
        check_domains(["sketch"], DIGITS.domains, "rotdigits")
    with pytest.raises(ValueError, match="trained on benchmark 'pacs' but the dataset is 'rotdigits'"):
        check_same_benchmark("pacs", DIGITS)


def test_direct_is_one_forward_pass_per_batch():
    model, processor = load_tiny()
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        predict(model, processor, [png((i, 0, 0)) for i in range(8)], NAMES, "direct", batch_size=4)
    finally:
        handle.remove()
    assert len(calls) == 2
    assert torch.get_num_threads() == 1
