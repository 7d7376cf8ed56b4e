"""Direct class scoring: one prefill per image, every class name scored from its cache.

The library's scores are compared with an independent reference kept here: each (image, class)
continuation scored as its own full sequence (the algorithm scoring used before the shared prefix).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.utils import convert_outputs_to_fp32
from PIL import Image
from transformers import LlavaForConditionalGeneration

from helpers.devices import model_inputs
from helpers.mtct import tiny_model_dir
from helpers.sarr import CLASSES
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.training_rows import CLASSIFICATION, TASKS_COLUMN
from rdmldg_hf.generation import ModelBackend
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.prompts import icl_messages, prompt_messages
from rdmldg_hf.scoring import AnswerTree, answer_token_ids, score_classes
from rdmldg_hf.testing import ARCHITECTURES
from rdmldg_hf.trainers.mtct import MTCTDataCollator

OFFICEHOME = list(get_benchmark("officehome").class_names)
DOMAINNET = list(get_benchmark("domainnet").class_names)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny(request, tiny_model):
    model, processor = load_model_and_processor(tiny_model(request.param))
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
    assert [shape.numel() for shape in head_positions] == [3]  # the prefill's last positions, nothing recomputed
    prompt = prompt_messages("classification", names)
    reference = torch.stack([reference_logprobs(model, processor, prompt, image, names) for image in images])
    assert torch.allclose(scores, torch.softmax(reference, dim=-1), atol=1e-4, rtol=0)


def test_head_work_follows_answer_positions_not_prompt_length_with_a_150k_vocabulary(tiny_model):
    """With a 150k vocabulary, the largest logits scoring holds are one position per image, as in a
    ``logits_to_keep=1`` forward pass, and a three times longer prompt adds no head work."""
    model, processor = load_model_and_processor(tiny_model("llava"))
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
    # Positions: the prefill's last one and each trie node, per image (the head check recomputes nothing).
    assert short[1] == long[1] == 2 * (1 + tree.num_nodes)
    assert tree.num_nodes < inputs["input_ids"].shape[1]


def test_eager_attention_gives_the_same_numbers(tiny_model):
    model, processor = load_model_and_processor(tiny_model("qwen2_vl"), attn_implementation="eager")
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


# LLaVA-1.5-hf's chat template in shape: "USER: <image>\n<question> ASSISTANT:" asks, and an answer is written
# as "ASSISTANT: <answer> </s>" (the end-of-sequence token after a space).
LLAVA_15_TEMPLATE = (
    "{%- for message in messages -%}{{- message['role'].upper() + ': ' -}}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] + ' ' -}}{%- endfor -%}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def tiny_llava(template: str | None = None, model_class=None):
    """A fresh tiny LLaVA (its own weights, safe to change), optionally with another chat template or class."""
    model, processor = load_model_and_processor(tiny_model_dir("llava"))
    if model_class is not None:
        model = model_class.from_pretrained(tiny_model_dir("llava"), use_kernels=False)
    if template is not None:
        processor.chat_template = template
    return model.eval(), processor


def test_scored_answers_are_the_trained_tokens_with_a_llava_15_template():
    """Scoring reads the tokens training trains: with LLaVA-1.5's template ' zero </s>', not 'prompt + zero'."""
    model, processor = tiny_llava(LLAVA_15_TEMPLATE)
    tokenizer = processor.tokenizer
    names = list(CLASSES)
    answers = answer_token_ids(processor, names)
    assert tokenizer.convert_ids_to_tokens(answers[0]) == ["Ġzero", "Ġ"]  # prompt + name scored ['zero']
    image = random_images(1, seed=5)[0]
    units = [{"image": image, "label": label, TASKS_COLUMN: [CLASSIFICATION]} for label in range(len(names))]
    batch = MTCTDataCollator(processor, names)(units)
    trained = [row[row != -100].tolist() for row in batch["labels"]]
    assert trained == [ids + [tokenizer.eos_token_id] for ids in answers]
    # The probabilities are those of the trained answer tokens, read from a forward pass over the training batch.
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(**model_inputs(batch, model)).logits.float(), dim=-1)
    reference = []
    for row, ids in enumerate(answers):
        first = int((batch["labels"][row] != -100).nonzero()[0])  # the completion's first token
        reference.append(sum(logprobs[row, first + k - 1, token] for k, token in enumerate(ids)))
    reference = torch.stack(reference)
    scores = score_classes(model, processor, [image], names)
    assert torch.allclose(scores[0], torch.softmax(reference, dim=-1), atol=1e-5, rtol=0)  # fp32 model


def test_a_template_that_rewrites_its_generation_prompt_is_refused():
    template = LLAVA_15_TEMPLATE.replace("{{- 'ASSISTANT:' -}}", "{{- 'ASSISTANT:\\n' -}}")
    _, processor = tiny_llava(template)
    with pytest.raises(ValueError, match="does not write the answer 'zero' after its generation prompt"):
        answer_token_ids(processor, list(CLASSES))


def autocast_bf16(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap the forward as accelerate does for a model prepared with bf16 mixed precision (as Trainer leaves it)."""
    model.forward = convert_outputs_to_fp32(torch.autocast("cpu", dtype=torch.bfloat16)(model.forward))
    return model


@pytest.mark.parametrize("precision", ["bf16 weights", "fp32 weights under bf16 autocast"])
def test_bf16_models_are_scored(precision):
    model, processor = tiny_llava()
    images, names = random_images(2, seed=6), OFFICEHOME[:12]
    fp32 = score_classes(model, processor, images, names)
    model = model.to(torch.bfloat16) if precision == "bf16 weights" else autocast_bf16(model)
    scores = score_classes(model, processor, images, names)
    assert scores.dtype == torch.float32 and torch.allclose(scores.sum(dim=-1), torch.ones(2))
    # bf16 keeps 8 significant bits: probabilities of 12 classes move by well under one percent of their size.
    assert torch.allclose(scores, fp32, rtol=2e-2, atol=1e-3)


class SoftCappedLlava(LlavaForConditionalGeneration):
    """A LLaVA whose logits are soft-capped after its head (as Gemma 2's are)."""

    cap = 1.0

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = self.cap * torch.tanh(output.logits / self.cap)
        return output


@pytest.mark.parametrize("autocast", [False, True])
def test_a_model_that_transforms_its_logits_is_refused_in_any_precision(autocast):
    model, processor = tiny_llava(model_class=SoftCappedLlava)
    model = autocast_bf16(model) if autocast else model
    with pytest.raises(ValueError, match="SoftCappedLlava transforms its head's logits"):
        score_classes(model, processor, random_images(1), OFFICEHOME[:12])
