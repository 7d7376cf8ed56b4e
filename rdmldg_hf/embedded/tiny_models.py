"""Tiny, randomly initialised vision-language models built offline, for tests, benchmarks and the embedded default.

``build_tiny_model(out_dir)`` builds a small model of a real transformers architecture, its
processor and a byte-level BPE tokenizer trained on the project's own vocabulary (every
question of every benchmark, class names, five-stage chains), and saves them with
``save_pretrained``; :func:`rdmldg_hf.models.load_model_and_processor` (or
``AutoModelForImageTextToText`` / ``AutoProcessor.from_pretrained``) reloads the folder.
Architectures: ``"llava"`` (CLIP + llama) and ``"qwen2_vl"`` use the project's own turn tokens
and a tokenizer holding the embedded benchmark's class names as single tokens;
``"qwen2_5_vl"`` and ``"internvl"`` (InternVL3-shaped: InternViT + Qwen2) are shaped like the
released checkpoints: Qwen2-style ``<|im_start|>role ... <|im_end|>`` turns, their real
image-token schemes, and a byte-level BPE trained on generic text, so class names are
usually several tokens.
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
    InternVLConfig,
    InternVLForConditionalGeneration,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
from transformers.models.llava.processing_llava import LlavaProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK, get_benchmark
from ..chains import render_chain
from ..models import InternVLProcessorNoVideo, Qwen2_5_VLProcessorNoVideo, Qwen2VLProcessorNoVideo
from ..prompts import TASKS, question
from .benchmark import template_chain

__all__ = [
    "ARCHITECTURES",
    "TINY_PRESETS",
    "TinyModelSpec",
    "project_corpus",
    "train_tokenizer",
    "chat_template",
    "chatml_template",
    "check_tiny_model",
    "build_tiny_model",
    "llava_from_language_model",
]

Architecture = Literal["llava", "qwen2_vl", "qwen2_5_vl", "internvl"]
ARCHITECTURES: tuple[str, ...] = ("llava", "qwen2_vl", "qwen2_5_vl", "internvl")

# the same whether or not they follow the prompt.
_PAD, _END = "<|pad|>", "<|end|>"
_ROLES = ("system", "user", "assistant")
_LLAVA_IMAGE = "<image>"
_QWEN_VISION = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
_SPECIAL_TOKENS = [_PAD, _END, *(f"<|{role}|>" for role in _ROLES), _LLAVA_IMAGE, *_QWEN_VISION]
# Qwen2-style tokenizers (Qwen2.5-VL, and InternVL3 whose language model is Qwen2.5): pad, end of turn,
# start of turn; InternVL adds <img> <IMG_CONTEXT>... </img> and names them for its processor.
_QWEN_PAD, _IM_END, _IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
_INTERNVL_IMAGE = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
_CHATML_SPECIAL_TOKENS = [_QWEN_PAD, _IM_END, _IM_START, *_QWEN_VISION, *_INTERNVL_IMAGE.values()]
_QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."


# --------------------------------------------------------------------------- tokenizer


def _render_macro(image_placeholder: str) -> str:
    """A Jinja macro ``render(content)``: text parts as they are, image parts as ``image_placeholder``."""
    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{- content -}}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if part['type'] == 'image' -%}{{- " + json.dumps(image_placeholder) + " -}}"
        "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
    )


def chat_template(image_placeholder: str) -> str:
    """A chat template rendering messages as ``<|role|>\\n...<|end|>``.

    Image parts render as ``image_placeholder`` (the processor expands it); assistant
    turns are wrapped in ``{% generation %}`` for assistant-only masks. With
    ``add_generation_prompt`` the prompt ends with ``<|assistant|>\\n``, so a TRL
    prompt-completion pair splits as prompt + ``"<answer><|end|>"``.
    """
    return (
        _render_macro(image_placeholder) + "{%- for message in messages -%}"
        "{{- '<|' + message['role'] + '|>\\n' -}}"
        "{%- if message['role'] == 'assistant' -%}"
        "{% generation %}{{- render(message['content']) + '" + _END + "' -}}{% endgeneration %}"
        "{%- else -%}{{- render(message['content']) + '" + _END + "' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
    )


def chatml_template(image_placeholder: str, default_system: str | None = None) -> str:
    """A Qwen2-style chat template, the shape of Qwen2.5-VL's and InternVL3's.

    Turns render as ``<|im_start|>role\\n...<|im_end|>\\n``; image parts as ``image_placeholder``;
    a conversation without a system turn starts with ``default_system`` when given. Assistant
    contents and their ``<|im_end|>`` are wrapped in ``{% generation %}``; the generation
    prompt is ``<|im_start|>assistant\\n``.
    """
    system = (
        "{%- if messages[0]['role'] != 'system' -%}"
        "{{- '" + _IM_START + "system\\n' + " + json.dumps(default_system) + " + '" + _IM_END + "\\n' -}}"
        "{%- endif -%}"
        if default_system
        else ""
    )
    return (
        _render_macro(image_placeholder) + system + "{%- for message in messages -%}"
        "{{- '" + _IM_START + "' + message['role'] + '\\n' -}}"
        "{%- if message['role'] == 'assistant' -%}"
        "{% generation %}{{- render(message['content']) + '" + _IM_END + "' -}}{% endgeneration %}{{- '\\n' -}}"
        "{%- else -%}{{- render(message['content']) + '" + _IM_END + "\\n' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '" + _IM_START + "assistant\\n' -}}{%- endif -%}"
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
    vocab_size: int = 1024, texts: Iterable[str] | None = None, phrase_tokens: bool = False, chatml: bool = False
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``.

    By default it has the project's turn tokens and is trained on :func:`project_corpus`, whose
    weighting makes every class name of the embedded benchmark a single token. With ``chatml``
    it has Qwen2-style special tokens (``<|im_start|>``, ``<|im_end|>``, the Qwen and InternVL
    image tokens, the latter named for ``InternVLProcessor``) and is trained on the project's
    texts without that weighting (default ``project_corpus(embedded_weight=1)``), so class
    names are mostly several tokens, as with real checkpoints.

    With ``phrase_tokens`` merges may cross spaces (only punctuation, newlines and stage tags
    split the text first), so recurring phrases of the project's texts become single tokens:
    the embedded template chains shrink about four-fold, which makes tiny CPU runs (training
    and generation alike) several times faster. The texts are unchanged; only tokens differ.

    Raises:
        ValueError: without ``chatml``, if a class name of the embedded benchmark is not a single token.
    """
    special_tokens, pad, eos = (
        (_CHATML_SPECIAL_TOKENS, _QWEN_PAD, _IM_END) if chatml else (_SPECIAL_TOKENS, _PAD, _END)
    )
    if texts is None:
        texts = project_corpus(embedded_weight=1) if chatml else project_corpus()
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
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    named = {"extra_special_tokens": _INTERNVL_IMAGE} if chatml else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad, eos_token=eos, **named)
    fast.add_special_tokens(
        {"additional_special_tokens": [t for t in special_tokens if t not in (pad, eos)]},
        replace_extra_special_tokens=False,
    )
    fast.padding_side = "right"
    if chatml:
        return fast
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
    # The measured CPU prototype: 16 image tokens, ~0.9M parameters.
    "embedded": TinyModelSpec(),
    # For unit tests: a few ten-thousand parameters, same token layout.
    "test": TinyModelSpec(
        vision_hidden=16, vision_layers=1, text_hidden=32, text_layers=2, text_heads=2, vocab_size=640
    ),
}


def _llava_with_text(
    spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast, text_config: Any
) -> tuple[PreTrainedModel, ProcessorMixin]:
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
        vision_config=CLIPVisionConfig(**_vit_sizes(spec), image_size=spec.image_size, patch_size=spec.patch_size),
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(_LLAVA_IMAGE),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    return LlavaForConditionalGeneration(config), processor


def _vit_sizes(spec: TinyModelSpec) -> dict[str, int]:
    """The vision tower's sizes of a tiny spec, for ViT configs (CLIP, InternViT)."""
    return dict(
        hidden_size=spec.vision_hidden,
        intermediate_size=2 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
    )


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
        {
            "pad_token": _PAD,
            "eos_token": _END,
            "additional_special_tokens": [t for t in _SPECIAL_TOKENS if t not in (_PAD, _END)],
        }
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


def _qwen_text_config(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """A Qwen2-VL / Qwen2.5-VL text config: the shared sizes and a multimodal rotary split of the head."""
    half = spec.text_hidden // spec.text_heads // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    return dict(
        **_text_sizes(spec, tokenizer),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


_QWEN_MERGE = 2


def _qwen_image_processor(spec: TinyModelSpec) -> Qwen2VLImageProcessorPil:
    """Qwen2-VL's image processor at the spec's size, as many image tokens as the LLaVA preset."""
    pixels = spec.image_size * spec.image_size
    return Qwen2VLImageProcessorPil(
        patch_size=spec.patch_size // _QWEN_MERGE,
        merge_size=_QWEN_MERGE,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )


def _qwen_vision_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The ids of Qwen's image, video and vision start/end tokens, as Qwen2-VL / Qwen2.5-VL configs name them."""
    start, pad, end, video = (tokenizer.convert_tokens_to_ids(token) for token in _QWEN_VISION)
    return dict(image_token_id=pad, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)


def _qwen2_vl(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, ProcessorMixin]:
    start, pad, end, _ = _QWEN_VISION
    processor = Qwen2VLProcessorNoVideo(
        image_processor=_qwen_image_processor(spec),
        tokenizer=tokenizer,
        chat_template=chat_template(start + pad + end),
    )
    config = Qwen2VLConfig(
        text_config=_qwen_text_config(spec, tokenizer),
        vision_config=dict(
            depth=spec.vision_layers,
            embed_dim=spec.vision_hidden,
            hidden_size=spec.text_hidden,
            num_heads=spec.vision_heads,
            mlp_ratio=2,
            patch_size=spec.patch_size // _QWEN_MERGE,
            spatial_merge_size=_QWEN_MERGE,
            temporal_patch_size=2,
        ),
        **_qwen_vision_token_ids(tokenizer),
    )
    return Qwen2VLForConditionalGeneration(config), processor


def _qwen2_5_vl(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Qwen2.5-VL: windowed-attention ViT (last block full attention) and a Qwen2 language model."""
    patch = spec.patch_size // _QWEN_MERGE
    start, pad, end, _ = _QWEN_VISION
    processor = Qwen2_5_VLProcessorNoVideo(
        image_processor=_qwen_image_processor(spec),
        tokenizer=tokenizer,
        chat_template=chatml_template(start + pad + end, default_system=_QWEN_DEFAULT_SYSTEM),
    )
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(spec, tokenizer),
        vision_config=dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.text_hidden,
            patch_size=patch,
            spatial_merge_size=_QWEN_MERGE,
            temporal_patch_size=2,
            window_size=2 * _QWEN_MERGE * patch,  # windows of 2x2 merged patches
            fullatt_block_indexes=[spec.vision_layers - 1],
        ),
        **_qwen_vision_token_ids(tokenizer),
        tie_word_embeddings=False,
    )
    return Qwen2_5_VLForConditionalGeneration(config), processor


def _internvl(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, ProcessorMixin]:
    """InternVL3: InternViT, a pixel-shuffle MLP projector and a Qwen2 language model; images tiled."""
    downsample = 0.5
    grid = spec.image_size // spec.patch_size
    if grid % 2:
        raise ValueError(
            f"internvl needs an even number of patches per side (pixel shuffle halves it); "
            f"image_size={spec.image_size} / patch_size={spec.patch_size} = {grid}."
        )
    image_seq_length = int((grid * downsample) ** 2)
    processor = InternVLProcessorNoVideo(
        # Tiles of image_size as InternVL's processor does (it crops to patches by default), at most 4 + a thumbnail.
        image_processor=GotOcr2ImageProcessorPil(
            size={"height": spec.image_size, "width": spec.image_size}, max_patches=4
        ),
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=chatml_template(_INTERNVL_IMAGE["context_image_token"] + "\n"),
    )
    config = InternVLConfig(
        vision_config=dict(**_vit_sizes(spec), image_size=[spec.image_size] * 2, patch_size=[spec.patch_size] * 2),
        text_config=dict(
            model_type="qwen2",
            **_text_sizes(spec, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=image_seq_length,
        downsample_ratio=downsample,
        tie_word_embeddings=False,
    )
    return InternVLForConditionalGeneration(config), processor


_BUILDERS = {"llava": _llava, "qwen2_vl": _qwen2_vl, "qwen2_5_vl": _qwen2_5_vl, "internvl": _internvl}
# Architectures shaped like released checkpoints: Qwen2-style turns and a generic tokenizer.
_CHATML_ARCHITECTURES = ("qwen2_5_vl", "internvl")


def check_tiny_model(architecture: str, preset: str) -> None:
    """Refuse an architecture or a preset :func:`build_tiny_model` does not know.

    Raises:
        ValueError: naming the unknown value and the valid ones.
    """
    if architecture not in _BUILDERS:
        raise ValueError(f"Unknown architecture {architecture!r}. Valid architectures: {', '.join(ARCHITECTURES)}.")
    if preset not in TINY_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}. Valid presets: {', '.join(TINY_PRESETS)}.")


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
        architecture: one of :data:`ARCHITECTURES`: ``"llava"`` (CLIP + llama), ``"qwen2_vl"``,
            ``"qwen2_5_vl"`` or ``"internvl"`` (InternVL3-shaped).
        image_size: square input size in pixels (a multiple of the patch size).
        preset: a key of :data:`TINY_PRESETS` (``"embedded"`` ~0.9M parameters, ``"test"`` smaller).
        seed: weight initialisation seed.
        sizes: overrides of :class:`TinyModelSpec` fields.

    Returns:
        ``out_dir`` as a ``Path``; reload with :func:`load_model_and_processor`.
    """
    check_tiny_model(architecture, preset)
    spec = replace(TINY_PRESETS[preset], image_size=image_size, **sizes)
    if spec.image_size % spec.patch_size:
        raise ValueError(f"image_size={spec.image_size} must be a multiple of patch_size={spec.patch_size}.")
    tokenizer = train_tokenizer(
        spec.vocab_size, phrase_tokens=spec.phrase_tokens, chatml=architecture in _CHATML_ARCHITECTURES
    )
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
