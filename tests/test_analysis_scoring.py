"""Teacher-forced scoring: probabilities, entropies and class probabilities against hand computations."""

import math

import pytest
import torch

from helpers.devices import model_inputs
from helpers.mtct import BENCHMARK, load_tiny, tiny_dataset
from rdmldg_hf.analysis import ForcedExample, answer_token_stats, class_probabilities, force_conclusion, teacher_force
from rdmldg_hf.generation import ModelBackend
from rdmldg_hf.prompts import prompt_messages
from rdmldg_hf.trainers.mtct import MTCTDataCollator

NAMES = list(BENCHMARK.class_names)


def _hand_softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _hand_entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def test_stats_on_constructed_logits():
    # vocab of 3; row 0 answers at positions 2 and 3, row 1 at position 3 only (-100 elsewhere).
    ln2 = math.log(2.0)
    logits = torch.tensor(
        [
            [[9.0, 9.0, 9.0], [0.0, 0.0, ln2], [ln2, 0.0, 0.0], [5.0, 5.0, 5.0]],
            [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0]],
        ]
    )
    labels = torch.tensor([[-100, -100, 2, 1], [-100, -100, -100, 0]])
    (ids0, p0, h0), (ids1, p1, h1) = answer_token_stats(logits, labels)
    assert ids0 == [2, 1] and ids1 == [0]
    # position 1 predicts label 2 from [0, 0, ln2] -> probs [1/4, 1/4, 1/2]
    assert p0[0] == pytest.approx(0.5) and h0[0] == pytest.approx(1.5 * ln2)
    # position 2 predicts label 1 from [ln2, 0, 0] -> probs [1/2, 1/4, 1/4]
    assert p0[1] == pytest.approx(0.25) and h0[1] == pytest.approx(1.5 * ln2)
    assert p1[0] == pytest.approx(1 / 3) and h1[0] == pytest.approx(math.log(3))
    # Only the last two positions' logits kept: same numbers.
    kept = answer_token_stats(logits[:, 1:], labels)
    assert kept[0][1] == pytest.approx(p0) and kept[1][2] == pytest.approx(h1)
    with pytest.raises(ValueError, match="before the last"):
        answer_token_stats(logits[:, 2:], labels)


def _examples():
    rows = tiny_dataset(6, without_chain=())
    examples = [ForcedExample(r["image"], r["label"], "reasoning", r["reasoning"]) for r in rows][:3]
    examples += [ForcedExample(r["image"], r["label"]) for r in rows][:3]
    return examples


def test_teacher_force_matches_a_hand_computation_from_full_logits():
    model, processor = load_tiny()
    examples = _examples()
    scores = teacher_force(model, processor, examples, NAMES, batch_size=4)
    # Hand computation: the training collator's batch, full logits, softmax per answer position.
    batch = MTCTDataCollator(processor, NAMES)([e.unit() for e in examples])
    labels = batch.pop("labels")
    model.eval()
    with torch.no_grad():
        logits = model(**model_inputs(batch, model)).logits
    tokenizer = processor.tokenizer
    for row, score in enumerate(scores):
        positions = [t for t in range(1, labels.shape[1]) if labels[row, t] != -100]
        assert score.token_ids == [int(labels[row, t]) for t in positions]
        for k, t in enumerate(positions):
            probs = _hand_softmax(logits[row, t - 1].tolist())
            assert score.probs[k] == pytest.approx(probs[int(labels[row, t])], rel=1e-4)
            assert score.entropies[k] == pytest.approx(_hand_entropy(probs), rel=1e-4)
        assert score.text == tokenizer.decode(score.token_ids)
        assert "".join(score.tokens) == score.text
    # The scored completion is the answer plus the end-of-turn token, as trained.
    assert scores[3].text == NAMES[examples[3].label] + tokenizer.eos_token
    assert scores[0].text == examples[0].answer + tokenizer.eos_token
    # One at a time gives the same numbers.
    single = teacher_force(model, processor, examples, NAMES, batch_size=1)
    for a, b in zip(scores, single):
        assert a.token_ids == b.token_ids
        assert a.probs == pytest.approx(b.probs, rel=1e-4) and a.entropies == pytest.approx(b.entropies, rel=1e-4)


def test_force_conclusion():
    chain = "<SUMMARY>s</SUMMARY>\n<CAPTION>c</CAPTION>\n<CONCLUSION>seven</CONCLUSION>"
    text, start = force_conclusion(chain, "three")
    assert text == "<SUMMARY>s</SUMMARY>\n<CAPTION>c</CAPTION>\n<CONCLUSION>three</CONCLUSION>"
    assert text[start : start + 5] == "three"
    text, start = force_conclusion("<SUMMARY>cut short", "one")
    assert text == "<SUMMARY>cut short\n<CONCLUSION>one</CONCLUSION>" and text[start : start + 3] == "one"
    assert force_conclusion("", "one") == ("<CONCLUSION>one</CONCLUSION>", 12)


def _next_token_probs(model, processor, image, task, suffix=""):
    backend = ModelBackend(model, processor)
    inputs = backend.encode([prompt_messages(task, NAMES)], [image], suffixes=[suffix])
    with torch.no_grad():
        return _hand_softmax(model(**inputs).logits[0, -1].tolist())


def test_class_probabilities_match_next_token_probabilities():
    model, processor = load_tiny()
    rows = tiny_dataset(3, without_chain=(2,))
    images, labels, chains = list(rows["image"]), list(rows["label"]), list(rows["reasoning"])
    model.eval()
    result = class_probabilities(model, processor, images, labels, NAMES, ("direct", "teacher_chain"), chains)
    tokenizer = processor.tokenizer
    for i, label in enumerate(labels):
        (class_id,) = tokenizer.encode(NAMES[label], add_special_tokens=False)
        direct = _next_token_probs(model, processor, images[i], "classification")
        assert result[i].direct == pytest.approx(direct[class_id], rel=1e-4)
        if chains[i] is None:
            assert math.isnan(result[i].teacher_chain)
            continue
        head = chains[i][: chains[i].index("<CONCLUSION>") + len("<CONCLUSION>")]
        after_chain = _next_token_probs(model, processor, images[i], "reasoning", head)
        assert result[i].teacher_chain == pytest.approx(after_chain[class_id], rel=1e-4)
    assert math.isnan(result[0].generated_chain)
    with pytest.raises(ValueError, match="Valid conditions"):
        class_probabilities(model, processor, images, labels, NAMES, ("nope",))


def test_token_pieces_cover_the_text_with_multibyte_characters():
    from rdmldg_hf.analysis import token_pieces

    _, processor = load_tiny()
    tokenizer = processor.tokenizer
    text = "turned 30° — ça marche <|end|>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # characters split over byte tokens
    pieces, offsets, decoded = token_pieces(tokenizer, ids)
    assert decoded == text and "".join(pieces) == text and len(pieces) == len(ids)
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:]))
    assert pieces[-1] == "<|end|>"
