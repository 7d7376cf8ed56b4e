"""Tiny model factory: offline build, save/reload round trips, tokenizer, LoRA targets."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaProcessor

from helpers.mtct import IMAGE_TOKENS
from rdmldg_hf.benchmarks import BENCHMARKS, get_benchmark
from rdmldg_hf.models import (
    LORA_TARGET_MODULES,
    InternVLProcessorNoVideo,
    Qwen2_5_VLProcessorNoVideo,
    Qwen2VLProcessorNoVideo,
    default_lora_config,
    load_model_and_processor,
    lora_target_names,
)
from rdmldg_hf.prompts import training_example
from rdmldg_hf.testing import ARCHITECTURES, build_tiny_model

EXPECTED_PROCESSOR = {
    "llava": LlavaProcessor,
    "qwen2_vl": Qwen2VLProcessorNoVideo,
    "qwen2_5_vl": Qwen2_5_VLProcessorNoVideo,
    "internvl": InternVLProcessorNoVideo,
}
# Shaped like released checkpoints: Qwen2-style turns, class names are not single tokens.
CHATML = ("qwen2_5_vl", "internvl")


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny(request, tiny_model):
    return request.param, tiny_model(request.param)


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8))


def test_reload_gives_real_classes_and_same_outputs(tiny):
    architecture, path = tiny
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    assert type(processor) is EXPECTED_PROCESSOR[architecture]
    assert json.loads((path / "tiny_model_spec.json").read_text())["architecture"] == architecture
    messages = training_example("classification", get_benchmark("rotdigits").class_names, "seven")
    text = processor.apply_chat_template(messages["prompt"] + messages["completion"], tokenize=False)
    batch = processor(images=[_image()], text=[text], return_tensors="pt")
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert (batch["input_ids"] == image_token).sum() == IMAGE_TOKENS[architecture]
    again, _ = load_model_and_processor(path)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, again.eval()(**batch).logits)


def test_tokenizer_class_names_and_template(tiny):
    architecture, path = tiny
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    officehome = get_benchmark("officehome").class_names
    lengths = [len(tokenizer.encode(" " + name, add_special_tokens=False)) for name in officehome]
    if architecture in CHATML:  # as with real checkpoints, multi-token names are the normal case
        assert len(tokenizer.encode("alarm clock", add_special_tokens=False)) > 1
        assert len(tokenizer.encode("the eiffel tower", add_special_tokens=False)) > 2
        assert sum(length > 1 for length in lengths) > len(lengths) / 2
    else:
        for name in get_benchmark("rotdigits").class_names:
            assert len(tokenizer.encode(name, add_special_tokens=False)) == 1
            assert len(tokenizer.encode(" " + name, add_special_tokens=False)) == 1
    # Every benchmark's text round-trips through the byte-level tokenizer.
    for benchmark in BENCHMARKS.values():
        text = ", ".join(benchmark.class_names)
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "seven"}]},
    ]
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    answer = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"]) if m]
    assert tokenizer.decode(answer) == "seven" + tokenizer.eos_token
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    turn_end = "\n" if architecture in CHATML else ""
    assert full.startswith(prompt) and full[len(prompt) :] == "seven" + tokenizer.eos_token + turn_end
    if architecture in CHATML:
        assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")


def test_lora_targets_vision_and_language(tiny):
    _, path = tiny
    model = AutoModelForImageTextToText.from_pretrained(path)
    names = lora_target_names(model)
    assert any("language_model" in n for n in names)
    assert any("visual" in n or "vision_tower" in n for n in names)
    assert not any("lm_head" in n or "projector" in n or "merger" in n for n in names)
    from peft import get_peft_model

    peft_model = get_peft_model(model, default_lora_config(r=4))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_regex_matches_other_architectures():
    import re

    pattern = re.compile(LORA_TARGET_MODULES)
    for name in (
        "model.vision_model.encoder.layers.0.self_attn.q_proj",  # Idefics3 / SmolVLM
        "model.text_model.layers.3.mlp.down_proj",
        "model.vision_tower.encoder.layer.0.attention.q_proj",  # InternVL
        "model.language_model.layers.0.self_attn.o_proj",
        "model.visual.blocks.1.attn.qkv",  # Qwen2/2.5-VL
    ):
        assert pattern.fullmatch(name), name
    for name in ("lm_head", "model.multi_modal_projector.linear_1", "model.language_model.embed_tokens"):
        assert not pattern.fullmatch(name), name


def test_lora_coverage_needs_a_vision_tower_and_a_language_model():
    """A model without a vision tower to find: the coverage check says so instead of passing."""
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from rdmldg_hf.models import check_lora_covers_both_towers

    sizes = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    text = LlamaForCausalLM(LlamaConfig(**sizes))
    with pytest.raises(ValueError, match="Cannot find the vision tower of LlamaForCausalLM"):
        check_lora_covers_both_towers(get_peft_model(text, default_lora_config(r=2, target_modules=["q_proj"])))


def test_unknown_architecture_and_preset(tmp_path):
    with pytest.raises(ValueError, match="qwen2_vl"):
        build_tiny_model(tmp_path, "gpt")
    with pytest.raises(ValueError, match="embedded"):
        build_tiny_model(tmp_path, preset="huge")


@pytest.mark.parametrize("architecture", ["qwen2_vl", "qwen2_5_vl", "internvl"])
def test_processor_registration(tmp_path, architecture):
    """Without the registration a no-video processor's folder loads as a bare tokenizer; with it, its processor."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    from rdmldg_hf.models import register_processors

    path = build_tiny_model(tmp_path, architecture, preset="test")
    expected = EXPECTED_PROCESSOR[architecture]
    registered = {k: v for k, v in PROCESSOR_MAPPING._extra_content.items() if v is expected}
    try:
        for key in registered:
            del PROCESSOR_MAPPING._extra_content[key]
        assert not isinstance(AutoProcessor.from_pretrained(path), expected)
    finally:
        register_processors()
    loaded = AutoProcessor.from_pretrained(path)
    assert type(loaded) is expected and loaded.video_processor is None and loaded.chat_template
    register_processors()  # idempotent
    assert list(PROCESSOR_MAPPING._extra_content.values()).count(expected) == 1


def test_llava_around_a_pretrained_language_model():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rdmldg_hf.testing import llava_from_language_model

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(
        ["a small text model", "seven eight nine"],
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw)
    torch.manual_seed(0)
    text = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            tie_word_embeddings=True,
        )
    )
    original = {k: v.clone() for k, v in text.model.state_dict().items()}
    model, processor = llava_from_language_model(text, tokenizer, preset="test")
    assert isinstance(processor, LlavaProcessor) and processor.tokenizer.eos_token == "<|end|>"
    kept = model.model.language_model.state_dict()
    vocab = original["embed_tokens.weight"].shape[0]
    torch.testing.assert_close(kept["embed_tokens.weight"][:vocab], original["embed_tokens.weight"])
    torch.testing.assert_close(kept["layers.1.mlp.down_proj.weight"], original["layers.1.mlp.down_proj.weight"])
    messages = training_example("classification", ["seven", "eight"], "seven")
    batch = processor(
        images=[_image()],
        text=[processor.apply_chat_template(messages["prompt"] + messages["completion"], tokenize=False)],
        return_tensors="pt",
    )
    assert model(**batch).logits.shape[-1] == len(processor.tokenizer)
