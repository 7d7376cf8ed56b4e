"""Tiny, randomly initialised vision-language models built offline, for tests, benchmarks and the embedded default.

``build_tiny_model(out_dir)`` builds a small model of a real transformers architecture, its
processor and a byte-level BPE tokenizer trained on the project's own vocabulary (every
question of every benchmark, class names, five-stage chains), and saves them with
``save_pretrained``; :func:`rdmldg_hf.models.load_model_and_processor` (or
``AutoModelForImageTextToText`` / ``AutoProcessor.from_pretrained``) reloads the folder.
Architectures: ``"llava"`` (CLIP + llama) and ``"qwen2_vl"``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava.processing_llava import LlavaProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK, get_benchmark
from ..chains import render_chain
from ..models import Qwen2VLProcessorNoVideo
from ..prompts import TASKS, question

__all__ = [
    "ARCHITECTURES",
    "TINY_PRESETS",
    "TinyModelSpec",
    "project_corpus",
    "train_tokenizer",
    "chat_template",
    "build_tiny_model",
    "llava_from_language_model",
]

Architecture = Literal["llava", "qwen2_vl"]
ARCHITECTURES: tuple[str, ...] = ("llava", "qwen2_vl")

# the same whether or not they follow the prompt.
_PAD, _END = "<|pad|>", "<|end|>"
_ROLES = ("system", "user", "assistant")
_LLAVA_IMAGE = "<image>"
_QWEN_VISION = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
_SPECIAL_TOKENS = [_PAD, _END, *(f"<|{role}|>" for role in _ROLES), _LLAVA_IMAGE, *_QWEN_VISION]


# --------------------------------------------------------------------------- tokenizer


def chat_template(image_placeholder: str) -> str:
    """A chat template rendering messages as ``<|role|>\\n...<|end|>``.

    Image parts render as ``image_placeholder`` (the processor expands it); assistant
    turns are wrapped in ``{% generation %}`` for assistant-only masks. With
    ``add_generation_prompt`` the prompt ends with ``<|assistant|>\\n``, so a TRL
    prompt-completion pair splits as prompt + ``"<answer><|end|>"``.
    """
    placeholder = json.dumps(image_placeholder)
    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{- content -}}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if part['type'] == 'image' -%}{{- " + placeholder + " -}}"
        "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        "{%- for message in messages -%}"
        "{{- '<|' + message['role'] + '|>\\n' -}}"
        "{%- if message['role'] == 'assistant' -%}"
        "{% generation %}{{- render(message['content']) + '" + _END + "' -}}{% endgeneration %}"
        "{%- else -%}{{- render(message['content']) + '" + _END + "' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
    )


def _template_chain(class_name: str, options: Sequence[str]) -> str:
    return render_chain(
        f"I will look at the image and decide which of the {len(options)} options it shows.",
        f"The image shows a shape whose parts look like a {class_name}.",
        f"The outline, the strokes and the parts match a {class_name} better than the other options.",
        f"Checking again, no other option fits the image as well as {class_name}.",
        class_name,
    )


def project_corpus(embedded_weight: int = 40) -> list[str]:
    """Texts the tiny tokenizer is trained on: every benchmark's questions, class names and chains.

    The embedded benchmark's texts (with its template chains) are repeated ``embedded_weight``
    times so that its class names become single tokens even in a small vocabulary.
    """
    from ..data.embedded import template_chain

    texts: list[str] = []
    for name, benchmark in BENCHMARKS.items():
        names = list(benchmark.class_names)
        block = [question(task, names) for task in TASKS]
        block += names + [" ".join(names)]
        if name == EMBEDDED_BENCHMARK:
            # Class names alone (as answers), in the options list and in the chains.
            texts += (block + names * 4 + [template_chain(c) for c in names]) * embedded_weight
        else:
            texts += block + [_template_chain(c, names) for c in names[:20]]
    return texts


def train_tokenizer(
    vocab_size: int = 1024, texts: Iterable[str] | None = None, phrase_tokens: bool = False
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (default :func:`project_corpus`).

    With ``phrase_tokens`` merges may cross spaces (only punctuation, newlines and stage tags
    split the text first), so recurring phrases of the project's texts become single tokens:
    the embedded template chains shrink about four-fold, which makes tiny CPU runs (training
    and generation alike) several times faster. The texts are unchanged; only tokens differ.

    Raises:
        ValueError: if a class name of the embedded benchmark is not a single token.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"[.,;:\n]|</?[A-Z]+>"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        if phrase_tokens
        else pre_tokenizers.ByteLevel(add_prefix_space=False)
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts) if texts is not None else project_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=_PAD,
        eos_token=_END,
        extra_special_tokens=[t for t in _SPECIAL_TOKENS if t not in (_PAD, _END)],
    )
    fast.padding_side = "right"
    for class_name in get_benchmark(EMBEDDED_BENCHMARK).class_names:
        for form in (class_name, " " + class_name):
            ids = fast.encode(form, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(
                    f"Class name {form!r} is {len(ids)} tokens with vocab_size={vocab_size}; "
                    "use a larger vocab_size or a larger embedded_weight."
                )
    return fast


# --------------------------------------------------------------------------- tiny models


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of a tiny model (vision tower and language model)."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vocab_size: int = 1024
    max_positions: int = 1024
    phrase_tokens: bool = False  # see train_tokenizer


TINY_PRESETS: dict[str, TinyModelSpec] = {
    # The measured prototype of ENVIRONMENT.md: 16 image tokens, ~0.9M parameters.
    "embedded": TinyModelSpec(),
    # For unit tests: a few ten-thousand parameters, same token layout.
    "test": TinyModelSpec(vision_hidden=16, vision_layers=1, text_hidden=32, text_layers=2, text_heads=2, vocab_size=640),
}


def _llava_with_text(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast, text_config: Any) -> tuple[PreTrainedModel, ProcessorMixin]:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=_LLAVA_IMAGE,
        chat_template=chat_template(_LLAVA_IMAGE),
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
        ),
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(_LLAVA_IMAGE),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    return LlavaForConditionalGeneration(config), processor


def _text_sizes(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The language model's sizes of a tiny spec, shared by every architecture."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=2 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=spec.max_positions,
    )


def _llava(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, ProcessorMixin]:
    text_config = LlamaConfig(
        **_text_sizes(spec, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return _llava_with_text(spec, tokenizer, text_config)


def llava_from_language_model(
    language_model: PreTrainedModel,
    tokenizer: Any,
    image_size: int = 32,
    preset: str = "embedded",
    seed: int = 0,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A LLaVA around a pretrained causal language model (weights kept) and a fresh tiny CLIP tower.

    The project's turn and image tokens are added to ``tokenizer`` (embeddings resized) and
    the project's chat template is used, so the result trains and generates like the tiny
    models; e.g. SmolLM2-135M for realistic-size CPU benchmarks.
    """
    tokenizer.add_special_tokens(
        {"pad_token": _PAD, "eos_token": _END, "additional_special_tokens": [t for t in _SPECIAL_TOKENS if t not in (_PAD, _END)]}
    )
    language_model.resize_token_embeddings(len(tokenizer))
    text_config = copy.deepcopy(language_model.config)
    text_config.pad_token_id, text_config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if hasattr(text_config, "quantization_config"):  # e.g. GGUF weights, dequantized on load: plain weights now
        del text_config.quantization_config
    torch.manual_seed(seed)
    spec = replace(TINY_PRESETS[preset], image_size=image_size)
    model, processor = _llava_with_text(spec, tokenizer, text_config)
    model.model.language_model.load_state_dict(language_model.get_decoder().state_dict())
    model.lm_head.load_state_dict(language_model.get_output_embeddings().state_dict())
    model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def _qwen2_vl(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, ProcessorMixin]:
    merge = 2
    patch = spec.patch_size // merge  # same number of image tokens as the LLaVA preset
    pixels = spec.image_size * spec.image_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )
    start, pad, end, video = _QWEN_VISION
    processor = Qwen2VLProcessorNoVideo(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template(start + pad + end),
    )
    head_dim = spec.text_hidden // spec.text_heads
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=dict(
            **_text_sizes(spec, tokenizer),
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        ),
        vision_config=dict(
            depth=spec.vision_layers,
            embed_dim=spec.vision_hidden,
            hidden_size=spec.text_hidden,
            num_heads=spec.vision_heads,
            mlp_ratio=2,
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=2,
        ),
        image_token_id=ids(pad),
        video_token_id=ids(video),
        vision_start_token_id=ids(start),
        vision_end_token_id=ids(end),
    )
    return Qwen2VLForConditionalGeneration(config), processor


_BUILDERS = {"llava": _llava, "qwen2_vl": _qwen2_vl}


def build_tiny_model(
    out_dir: str | Path,
    architecture: Architecture = "llava",
    image_size: int = 32,
    preset: str = "embedded",
    seed: int = 0,
    **sizes: int,
) -> Path:
    """Build, offline, a randomly initialised tiny vision-language model and save it.

    Args:
        out_dir: folder to write (model, processor, tokenizer, chat template).
        architecture: ``"llava"`` (CLIP + llama) or ``"qwen2_vl"``.
        image_size: square input size in pixels (a multiple of the patch size).
        preset: a key of :data:`TINY_PRESETS` (``"embedded"`` ~0.9M parameters, ``"test"`` smaller).
        seed: weight initialisation seed.
        sizes: overrides of :class:`TinyModelSpec` fields.

    Returns:
        ``out_dir`` as a ``Path``; reload with :func:`load_model_and_processor`.
    """
    if architecture not in _BUILDERS:
        raise ValueError(f"Unknown architecture {architecture!r}. Valid architectures: {', '.join(ARCHITECTURES)}.")
    if preset not in TINY_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}. Valid presets: {', '.join(TINY_PRESETS)}.")
    spec = replace(TINY_PRESETS[preset], image_size=image_size, **sizes)
    if spec.image_size % spec.patch_size:
        raise ValueError(f"image_size={spec.image_size} must be a multiple of patch_size={spec.patch_size}.")
    tokenizer = train_tokenizer(spec.vocab_size, phrase_tokens=spec.phrase_tokens)
    torch.manual_seed(seed)
    model, processor = _BUILDERS[architecture](spec, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "tiny_model_spec.json").write_text(json.dumps({"architecture": architecture, **asdict(spec)}, indent=2))
    return out
