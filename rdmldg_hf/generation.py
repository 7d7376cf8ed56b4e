"""Batched generation shared by SARR relabeling and evaluation.

One processor call per batch, left padding, KV cache (dynamic, or static: fixed-size, which
transformers compiles the decoding step for on a GPU), greedy by default (sampling with
``num_candidates`` outputs per prompt optional). Batches are consecutive items, or consecutive
items of an ``order`` (e.g. longest prompt first, :func:`length_order`), so that prompts of
similar length share a batch; results always come back in item order. Generation goes through
a small backend protocol (:class:`GenerationBackend`) so tests can script model outputs
(:class:`rdmldg_hf.testing.ScriptedBackend`) while real runs use :class:`ModelBackend`.

Under ``accelerate launch`` with N processes, :func:`run_batches` forms the batches once,
globally, and deals whole batches to processes in turn; results are gathered with
accelerate's ``gather_object``. Batch composition (hence padding) does not depend on the
number of processes, so greedy outputs equal those of a 1-process run.

Example::

    settings = GenerationSettings(batch_size=16, max_new_tokens=256)
    outputs = generate(model, processor, [prompt_messages("reasoning", names)] * len(images), images, settings)
    outputs[i][0]   # the (first) generated text of image i
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, TypeVar

import torch
from datasets import Column
from transformers.generation.configuration_utils import ALL_CACHE_IMPLEMENTATIONS

__all__ = [
    "Messages",
    "GenerationSettings",
    "GenerationBackend",
    "ModelBackend",
    "as_backend",
    "batch_indices",
    "length_order",
    "run_batches",
    "generate",
    "eval_mode",
    "process_state",
]

Messages = list[dict[str, Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate: batch size, length, and greedy (default) or sampled candidates.

    Attributes:
        batch_size: prompts per processor call and ``generate`` call.
        max_new_tokens: the most tokens generated per output.
        num_candidates: outputs per prompt; more than one needs ``do_sample=True``.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (sampling only).
        top_p: nucleus sampling threshold (sampling only).
        seed: sampling seed; batch ``b`` is seeded with ``seed + b`` so that results do
            not depend on how batches are dealt to processes.
        cache_implementation: transformers' KV cache, e.g. ``"static"`` (allocated once at its full
            length; on a GPU transformers then compiles the decoding step); None: the model's default
            (dynamic). Greedy outputs are the same with either.
    """

    batch_size: int = 16
    max_new_tokens: int = 256
    num_candidates: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    cache_implementation: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "num_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"GenerationSettings.{name} must be >= 1; got {getattr(self, name)!r}.")
        if self.num_candidates > 1 and not self.do_sample:
            raise ValueError(
                f"num_candidates={self.num_candidates} with greedy decoding would repeat one output; "
                "set do_sample=True (and a temperature) or num_candidates=1."
            )
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"Sampling needs temperature > 0; got {self.temperature!r}.")
        if self.cache_implementation is not None and self.cache_implementation not in ALL_CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"Unknown cache_implementation {self.cache_implementation!r}; transformers knows "
                f"{', '.join(ALL_CACHE_IMPLEMENTATIONS)} (or leave it unset for the model's default)."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GenerationBackend(Protocol):
    """Anything that turns a batch of (chat messages, image) into texts."""

    def generate_texts(
        self, messages_batch: Sequence[Messages], images: Sequence[Any], settings: GenerationSettings, batch_index: int
    ) -> list[list[str]]:
        """``settings.num_candidates`` texts for each prompt of the batch, in order."""
        ...


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put a model in eval mode (no dropout) for the block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class ModelBackend:
    """Generation with a transformers vision-language model and its processor."""

    def __init__(self, model: torch.nn.Module, processor: Any):
        self.model = model
        self.processor = processor

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def encode(self, messages_batch: Sequence[Messages], images: Sequence[Any], suffixes: Sequence[str] | None = None):
        """One processor call: chat-rendered prompts (plus optional answer suffixes), left padded."""
        texts = [
            self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for messages in messages_batch
        ]
        if suffixes is not None:
            texts = [text + suffix for text, suffix in zip(texts, suffixes)]
        batch = self.processor(
            text=texts,
            images=[_rgb(image) for image in images],
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        return batch.to(self.model.device)

    def image_tokens(self, sizes: Sequence[tuple[int, int]]) -> list[int]:
        """Prompt tokens the processor makes of images of these ``(height, width)`` sizes (their pixels where the
        processor cannot say): the part of a prompt's length that differs from image to image."""
        count = getattr(self.processor, "_get_num_multimodal_tokens", None)
        if count is not None:
            try:
                return list(count(image_sizes=[list(size) for size in sizes]).num_image_tokens)
            except (AttributeError, NotImplementedError, TypeError):
                pass
        return [height * width for height, width in sizes]

    def generation_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "num_return_sequences": settings.num_candidates,
            "do_sample": settings.do_sample,
            "use_cache": True,
        }
        if settings.cache_implementation is not None:
            kwargs["cache_implementation"] = settings.cache_implementation
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.tokenizer.pad_token_id is not None:
            kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        return kwargs

    def generate_texts(
        self,
        messages_batch: Sequence[Messages],
        images: Sequence[Any],
        settings: GenerationSettings,
        batch_index: int = 0,
    ) -> list[list[str]]:
        inputs = self.encode(messages_batch, images)
        if settings.do_sample:
            torch.manual_seed(settings.seed + batch_index)
        with eval_mode(self.model), torch.inference_mode():
            output = self.model.generate(**inputs, **self.generation_kwargs(settings))
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        k = settings.num_candidates
        return [[text.strip() for text in texts[i * k : (i + 1) * k]] for i in range(len(messages_batch))]


def _take(images: Sequence[Any], indices: list[int]) -> list[Any]:
    """``images[i]`` for each index: one read of a datasets ``Column`` (it takes a list), else one at a time."""
    return list(images[indices]) if isinstance(images, Column) else [images[i] for i in indices]


def as_backend(model_or_backend: Any, processor: Any = None) -> GenerationBackend:
    """A backend as is, or a :class:`ModelBackend` for a model and its processor."""
    if hasattr(model_or_backend, "generate_texts"):
        return model_or_backend
    if processor is None:
        raise ValueError("Generation with a model needs its processor; pass processor=... .")
    return ModelBackend(model_or_backend, processor)


def _rgb(image: Any) -> Any:
    return image.convert("RGB") if hasattr(image, "convert") and getattr(image, "mode", "RGB") != "RGB" else image


def process_state() -> Any:
    """accelerate's ``PartialState``; on a machine without accelerator, the CPU one, so that
    ``accelerate launch --multi_gpu --num_processes N`` gives N connected processes (gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=True) if not torch.accelerator.is_available() else PartialState()


def batch_indices(num_items: int, batch_size: int, order: Sequence[int] | None = None) -> list[list[int]]:
    """Batches of item indices: batch ``b`` holds items ``order[b*batch_size ...]`` (default order: 0, 1, ...).

    Raises:
        ValueError: ``order`` is not a permutation of the items.
    """
    order = list(range(num_items)) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(num_items)):
        raise ValueError(f"order must hold each of the {num_items} item indices once; got {len(order)} indices.")
    return [order[start : start + batch_size] for start in range(0, num_items, batch_size)]


def length_order(lengths: Sequence[int]) -> list[int]:
    """Item indices, longest first (ties in item order): batches of similar lengths pad little, and the
    largest batch comes first, so that running out of memory happens at once if it happens."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def run_batches(
    fn: Callable[[list[int], int], Sequence[T]],
    num_items: int,
    batch_size: int,
    done: Mapping[int, Sequence[T]] | None = None,
    on_batch: Callable[[int, list[int], Sequence[T]], None] | None = None,
    order: Sequence[int] | None = None,
) -> list[T]:
    """Apply ``fn(indices, batch_index)`` to every batch, spread over the accelerate processes.

    Batches are formed globally (see :func:`batch_indices`, ``order`` included) and the ones not in ``done``
    (batch index -> results already computed, e.g. read back after a crash) are dealt to
    processes round robin. ``on_batch(batch_index, indices, results)`` runs in the process
    that computed a batch, right after it (to write results incrementally). Every process
    returns the full list of per-item results, in item order.
    """
    from accelerate.utils import gather_object

    state = process_state()
    done = dict(done or {})
    batches = batch_indices(num_items, batch_size, order)
    todo = [b for b in range(len(batches)) if b not in done]
    mine = todo[state.process_index :: state.num_processes]
    computed: list[tuple[int, list[T]]] = []
    for b in mine:
        results = list(fn(batches[b], b))
        if len(results) != len(batches[b]):
            raise RuntimeError(f"Batch {b} gave {len(results)} results for {len(batches[b])} items.")
        if on_batch is not None:
            on_batch(b, batches[b], results)
        computed.append((b, results))
    if state.num_processes > 1:
        computed = gather_object(computed)
    merged: dict[int, Sequence[T]] = {**done, **dict(computed)}
    missing = [b for b in range(len(batches)) if b not in merged]
    if missing:
        raise RuntimeError(f"Batches {missing[:10]} were computed by no process.")
    results: list[Any] = [None] * num_items
    for b, indices in enumerate(batches):
        for i, result in zip(indices, merged[b]):
            results[i] = result
    return results


def generate(
    model: Any,
    processor: Any,
    messages_batch: Sequence[Messages],
    images: Sequence[Any],
    settings: GenerationSettings | None = None,
    done: Mapping[int, Sequence[list[str]]] | None = None,
    on_batch: Callable[[int, list[int], Sequence[list[str]]], None] | None = None,
    order: Sequence[int] | None = None,
) -> list[list[str]]:
    """Generate ``settings.num_candidates`` texts for each (messages, image) pair.

    Args:
        model: a vision-language model, or any :class:`GenerationBackend` (then ``processor`` is unused).
        processor: the model's processor (chat template, tokenizer, image processor).
        messages_batch: the chat messages of each prompt (e.g. ``prompts.prompt_messages``).
        images: one image per prompt; any sequence with ``len`` and indexing (read lazily).
        settings: batch size, length, greedy or sampling (default: greedy, batches of 16).
        done, on_batch: resume support, see :func:`run_batches`.
        order: the order in which items are batched (e.g. :func:`length_order`); default: item order.

    Returns:
        For each prompt, in order, the list of its generated texts (special tokens removed).
    """
    settings = settings or GenerationSettings()
    if len(messages_batch) != len(images):
        raise ValueError(f"{len(messages_batch)} prompts but {len(images)} images; pass one image per prompt.")
    backend = as_backend(model, processor)

    def one_batch(indices: list[int], batch_index: int) -> list[list[str]]:
        messages = [messages_batch[i] for i in indices]
        return backend.generate_texts(messages, _take(images, indices), settings, batch_index)

    return run_batches(one_batch, len(images), settings.batch_size, done=done, on_batch=on_batch, order=order)
