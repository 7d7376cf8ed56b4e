"""Direct class scoring: one prefill per image, every class name scored from its cache.

The library's scores are compared with an independent reference kept here: each (image, class)
continuation scored as its own full sequence (the algorithm scoring used before the shared prefix).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.generation import ModelBackend
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.prompts import icl_messages, prompt_messages
from rdmldg_hf.scoring import AnswerTree, answer_token_ids, score_classes
from rdmldg_hf.testing import ARCHITECTURES, build_tiny_model
from sarr_support import CLASSES

OFFICEHOME = list(get_benchmark("officehome").class_names)
DOMAINNET = list(get_benchmark("domainnet").class_names)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny(request, tmp_path_factory):
    folder = build_tiny_model(tmp_path_factory.mktemp(request.param), architecture=request.param, preset="test")
    model, processor = load_model_and_processor(folder)
    return model.eval(), processor


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]


def reference_logprobs(model, processor, prompt, image, class_names, rows_per_pass: int = 24) -> torch.Tensor:
    """Each (prompt, class name) as its own left-padded sequence: the class's summed answer log-probs."""
    backend = ModelBackend(model, processor)
    answers = answer_token_ids(processor, class_names)
    scores = []
    with torch.inference_mode():
        for start in range(0, len(class_names), rows_per_pass):
            names = class_names[start : start + rows_per_pass]
            inputs = backend.encode([prompt] * len(names), [image] * len(names), suffixes=names)
            logits = model(**inputs, logits_to_keep=0).logits
            ids = inputs["input_ids"]
            for row, ans in enumerate(answers[start : start + rows_per_pass]):
                positions = torch.arange(ids.shape[1] - len(ans), ids.shape[1])
                logprobs = torch.log_softmax(logits[row, positions - 1].float(), dim=-1)
                scores.append(logprobs[torch.arange(len(ans)), ids[row, positions]].sum())
    return torch.stack(scores)


def some_classes(processor, class_names: list[str], count: int = 8) -> list[int]:
    """The longest answers (most tokens) and evenly spread others: a cheap sample to check log-prob ratios on."""
    lengths = [len(ids) for ids in answer_token_ids(processor, class_names)]
    longest = sorted(range(len(class_names)), key=lambda i: -lengths[i])[: count // 2]
    spread = [i for i in range(0, len(class_names), len(class_names) // count) if i not in longest]
    return longest + spread[: count - len(longest)]


def assert_same_ratios(probabilities: torch.Tensor, logprobs: torch.Tensor, classes: list[int]) -> None:
    """Probabilities over all classes agree with log-likelihoods of some of them: log p_i - log p_j = l_i - l_j."""
    log_ratios = probabilities[classes].log() - probabilities[classes[0]].log()
    assert torch.allclose(log_ratios, logprobs - logprobs[0], atol=1e-4, rtol=0)


def test_answer_tree_feeds_shared_prefixes_once():
    tree = AnswerTree.from_answers([[1, 2, 3], [1, 2, 4], [1, 5], [6]])
    assert tree.first_tokens.tolist() == [1, 1, 1, 6]
    assert tree.node_tokens.tolist() == [1, 2] and tree.node_depths.tolist() == [0, 1]
    assert tree.visible.tolist() == [[True, False], [True, True]]
    pairs = list(zip(tree.pair_nodes.tolist(), tree.pair_tokens.tolist()))
    assert pairs == [(0, 2), (0, 5), (1, 3), (1, 4)] and tree.pair_starts == [0, 2, 4]
    # "1 2 3" = first token 1, then 2 after node (1), then 3 after node (1, 2).
    assert tree.membership.tolist() == [[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="at least one token"):
        AnswerTree.from_answers([[1], []])


def test_officehome_names_with_in_context_prompts_equal_the_reference(tiny):
    """65 multi-token names; a 1-image and a 2-image (one-shot) prompt in one batch: left padding, shared prefixes."""
    model, processor = tiny
    images = random_images(3)
    messages = [icl_messages("classification", OFFICEHOME, OFFICEHOME[3:k]) for k in (3, 4)]
    prompt_images = [images[:1], images[1:3]]
    assert max(len(ids) for ids in answer_token_ids(processor, OFFICEHOME)) > 1
    scores = score_classes(model, processor, prompt_images, OFFICEHOME, batch_size=2, messages=messages)
    assert scores.shape == (2, 65)
    reference = torch.softmax(reference_logprobs(model, processor, messages[0], prompt_images[0], OFFICEHOME), dim=-1)
    assert torch.allclose(scores[0], reference, atol=1e-4, rtol=0)
    classes = some_classes(processor, OFFICEHOME)
    names = [OFFICEHOME[i] for i in classes]
    assert_same_ratios(scores[1], reference_logprobs(model, processor, messages[1], prompt_images[1], names), classes)
    alone = score_classes(model, processor, prompt_images[1:], OFFICEHOME, messages=messages[1:])
    assert torch.allclose(alone, scores[1:], atol=1e-5, rtol=0)


def test_domainnet_names_equal_the_reference(tiny):
    model, processor = tiny
    image = random_images(1, seed=1)[0]
    scores = score_classes(model, processor, [image], DOMAINNET)
    assert scores.shape == (1, 345) and torch.allclose(scores.sum(), torch.tensor(1.0))
    classes = some_classes(processor, DOMAINNET)
    prompt = prompt_messages("classification", DOMAINNET)
    reference = reference_logprobs(model, processor, prompt, image, [DOMAINNET[i] for i in classes])
    assert_same_ratios(scores[0], reference, classes)


def test_single_token_names_take_one_position_per_image(tiny):
    model, processor = tiny
    names = [name for name in [*CLASSES, *"abcdefgh"] if len(answer_token_ids(processor, [name])[0]) == 1][:6]
    assert len(names) == 6
    images = random_images(3, seed=2)
    head_positions = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: head_positions.append(out.shape[:-1]))
    try:
        scores = score_classes(model, processor, images, names, batch_size=3)
    finally:
        handle.remove()
    assert [shape.numel() for shape in head_positions] == [3, 1]  # the prefill's last positions, one checked again
    prompt = prompt_messages("classification", names)
    reference = torch.stack([reference_logprobs(model, processor, prompt, image, names) for image in images])
    assert torch.allclose(scores, torch.softmax(reference, dim=-1), atol=1e-4, rtol=0)


def test_head_work_follows_answer_positions_not_prompt_length_with_a_150k_vocabulary(tmp_path):
    """With a 150k vocabulary, the largest logits scoring holds are one position per image, as in a
    ``logits_to_keep=1`` forward pass, and a three times longer prompt adds no head work."""
    model, processor = load_model_and_processor(build_tiny_model(tmp_path, "llava", preset="test"))
    model.resize_token_embeddings(150_000)
    model.eval()
    names = OFFICEHOME[:8]
    tree = AnswerTree.from_answers(answer_token_ids(processor, names))
    images = random_images(6, seed=3)
    head_outputs: list[torch.Size] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: head_outputs.append(out.shape))

    def head_work(messages, prompt_images):
        head_outputs.clear()
        score_classes(model, processor, prompt_images, names, batch_size=2, messages=messages)
        return max(shape.numel() for shape in head_outputs), sum(shape[:-1].numel() for shape in head_outputs)

    try:
        short = head_work([prompt_messages("classification", names)] * 2, [images[:1], images[1:2]])
        long = head_work([icl_messages("classification", names, names[:2])] * 2, [images[:3], images[3:6]])
        inputs = ModelBackend(model, processor).encode([prompt_messages("classification", names)] * 2, images[:2])
        head_outputs.clear()
        with torch.inference_mode():
            model(**inputs, logits_to_keep=1)
    finally:
        handle.remove()
    one_forward = head_outputs[0].numel()
    assert one_forward == 2 * 150_000
    assert short[0] == long[0] == one_forward
    # Positions: the prefill's last one and each trie node, per image; one image's last position checked again.
    assert short[1] == long[1] == 2 * (1 + tree.num_nodes) + 1
    assert tree.num_nodes < inputs["input_ids"].shape[1]


def test_eager_attention_gives_the_same_numbers(tmp_path):
    model, processor = load_model_and_processor(
        build_tiny_model(tmp_path, "qwen2_vl", preset="test"), attn_implementation="eager"
    )
    model.eval()
    names = OFFICEHOME[:10]
    image = random_images(1, seed=4)[0]
    scores = score_classes(model, processor, [image], names)
    reference = reference_logprobs(model, processor, prompt_messages("classification", names), image, names)
    assert torch.allclose(scores[0], torch.softmax(reference, dim=-1), atol=1e-4, rtol=0)


def test_attention_without_custom_masks_is_refused_before_any_forward_pass(tiny):
    model, processor = tiny
    config = model.config.get_text_config()
    implementation = config._attn_implementation
    config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' takes no custom attention mask"):
            score_classes(model, processor, random_images(1), OFFICEHOME)
    finally:
        config._attn_implementation = implementation


def test_answers_are_the_tokens_that_follow_the_whole_prompt(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template(
        prompt_messages("classification", OFFICEHOME), add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for name, ids in zip(OFFICEHOME, answer_token_ids(processor, OFFICEHOME)):
        assert prompt_ids + ids == tokenizer(prompt + name, add_special_tokens=False)["input_ids"]
