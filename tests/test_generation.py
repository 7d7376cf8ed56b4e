"""Batched generation and class scoring: scripted backend, real tiny models, resume hooks."""

from __future__ import annotations

import pytest
import torch

from rdmldg_hf.generation import (
    GenerationSettings,
    ModelBackend,
    ScriptedBackend,
    batch_indices,
    generate,
    run_batches,
)
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.testing import build_tiny_model
from rdmldg_hf.prompts import prompt_messages
from rdmldg_hf.scoring import (
    _score_rows,
    accuracy,
    answer_token_ids,
    predict_direct,
    predict_reasoning,
    score_classes,
)
from sarr_support import CLASSES, chain_for, tiny_rows


@pytest.fixture(scope="module")
def rows():
    return tiny_rows(3)


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def tiny(request, tmp_path_factory):
    folder = build_tiny_model(tmp_path_factory.mktemp(request.param), architecture=request.param, preset="test")
    return load_model_and_processor(folder)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="batch_size"):
        GenerationSettings(batch_size=0)
    with pytest.raises(ValueError, match="do_sample=True"):
        GenerationSettings(num_candidates=3)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(do_sample=True, temperature=0.0)
    assert GenerationSettings(num_candidates=2, do_sample=True).to_dict()["num_candidates"] == 2


def test_batches_cover_every_item_once():
    assert batch_indices(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batch_indices(0, 4) == []


def test_scripted_generation_keeps_order_and_batches():
    backend = ScriptedBackend(lambda messages, image: [f"a{image}", f"b{image}"])
    settings = GenerationSettings(batch_size=4, num_candidates=2, do_sample=True)
    out = generate(backend, None, [[]] * 10, list(range(10)), settings)
    assert out == [[f"a{i}", f"b{i}"] for i in range(10)]
    assert backend.calls == [4, 4, 2]


def test_generate_needs_one_image_per_prompt():
    with pytest.raises(ValueError, match="one image per prompt"):
        generate(ScriptedBackend(lambda m, i: "x"), None, [[]] * 3, [0, 1], GenerationSettings())


def test_run_batches_skips_done_batches_and_reports_new_ones():
    seen: list[int] = []
    written: dict[int, list[int]] = {}

    def square(indices, batch_index):
        seen.append(batch_index)
        return [i * i for i in indices]

    result = run_batches(square, 7, 3, done={1: [-1, -1, -1]}, on_batch=lambda b, idx, res: written.update({b: res}))
    assert result == [0, 1, 4, -1, -1, -1, 36]
    assert seen == [0, 2] and written == {0: [0, 1, 4], 2: [36]}


def test_batched_greedy_equals_one_at_a_time(tiny, rows):
    model, processor = tiny
    images = list(rows["image"])[:7]
    messages = [prompt_messages("reasoning", CLASSES)] * len(images)
    batched = generate(model, processor, messages, images, GenerationSettings(batch_size=4, max_new_tokens=12))
    single = generate(model, processor, messages, images, GenerationSettings(batch_size=1, max_new_tokens=12))
    assert batched == single
    assert all(len(texts) == 1 and texts[0] for texts in batched)


def test_sampling_gives_k_candidates_reproducibly(tiny, rows):
    model, processor = tiny
    images = list(rows["image"])[:3]
    messages = [prompt_messages("reasoning", CLASSES)] * 3
    settings = GenerationSettings(batch_size=2, max_new_tokens=6, num_candidates=3, do_sample=True, temperature=1.5)
    first = generate(model, processor, messages, images, settings)
    assert [len(texts) for texts in first] == [3, 3, 3]
    assert first == generate(model, processor, messages, images, settings)


def test_generation_restores_training_mode(tiny, rows):
    model, processor = tiny
    model.train()
    generate(model, processor, [prompt_messages("reasoning", CLASSES)], [rows[0]["image"]], GenerationSettings(max_new_tokens=2))
    assert model.training
    model.eval()


def test_class_scores_are_probabilities_and_match_per_class_rows(tiny, rows):
    model, processor = tiny
    images = list(rows["image"])[:5]
    probs = score_classes(model, processor, images, CLASSES, batch_size=2)
    assert probs.shape == (5, len(CLASSES))
    assert torch.allclose(probs.sum(dim=-1), torch.ones(5), atol=1e-5)
    answers = answer_token_ids(processor, CLASSES)
    assert all(len(ids) == 1 for ids in answers)
    with torch.inference_mode():
        rows_logprobs = _score_rows(ModelBackend(model, processor), prompt_messages("classification", CLASSES), images, CLASSES, answers)
    assert torch.allclose(probs, torch.softmax(rows_logprobs, dim=-1), atol=1e-5)
    assert predict_direct(model, processor, images, CLASSES, batch_size=4) == probs.argmax(-1).tolist()


def test_multi_token_class_names_are_scored_by_summed_likelihood(tiny, rows):
    model, processor = tiny
    names = ["zero", "seven one", "nine nine nine"]
    answers = answer_token_ids(processor, names)
    assert [len(ids) for ids in answers] == [1, 2, 3]
    probs = score_classes(model, processor, list(rows["image"])[:3], names, batch_size=2)
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)


def test_reasoning_predictions_parse_conclusions(rows):
    replies = iter([chain_for("three"), "no tags at all", chain_for("seven") + "<CONCLUSION>one</CONCLUSION>"])
    backend = ScriptedBackend(lambda messages, image: next(replies))
    predictions = predict_reasoning(backend, None, list(rows["image"])[:3], CLASSES)
    assert [p.prediction for p in predictions] == [3, -1, -1]
    assert [p.valid_format for p in predictions] == [True, False, False]
    assert accuracy([p.prediction for p in predictions], [3, 1, 7]) == pytest.approx(1 / 3)
