"""A classifier's reasoning chain streamed token by token while it is generated.

:func:`stream_reasoning` runs the ``reasoning`` mode of :func:`rdmldg_hf.evaluation.predict.predict` (the
question, generation settings, decoding and conclusion matching of ``DGClassifier.predict``) on a worker
thread, with a ``TextIteratorStreamer`` handing each new token's text to the caller. Its last update holds
exactly the text and class that ``DGClassifier.predict(..., mode="reasoning")`` returns for the image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from transformers import TextIteratorStreamer

from ..chains import check_chain, extract_conclusion, resolve_conclusion
from ..evaluation.predict import predict
from ..generation import GenerationSettings, ModelBackend

__all__ = ["TokenTextStreamer", "ReasoningUpdate", "stream_reasoning"]


class TokenTextStreamer(TextIteratorStreamer):
    """A ``TextIteratorStreamer`` that hands on every token's text as soon as the token is generated.

    The stock streamer holds text with symbols back until the next space, so a chain's opening tag
    (``<SUMMARY>``) would wait for the first word after it; here only an incomplete character (decoded as
    U+FFFD) waits for the next token. The answer is decoded whole at every token, so the pieces join to
    ``tokenizer.decode`` of the generated tokens.
    """

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError(f"{type(self).__name__} streams one answer at a time; got a batch of {value.shape[0]}.")
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        ready = len(text.rstrip("\ufffd"))
        piece = text[self.print_len : ready]
        self.print_len = max(self.print_len, ready)
        self.on_finalized_text(piece)


class _StreamingBackend(ModelBackend):
    """The model backend of evaluation, generating with a streamer."""

    def __init__(self, model: torch.nn.Module, processor: Any):
        super().__init__(model, processor)
        self.streamer = TokenTextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

    def generation_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        return {**super().generation_kwargs(settings), "streamer": self.streamer}


@dataclass(frozen=True)
class ReasoningUpdate:
    """The chain so far; the last update (``done``) also holds the class its conclusion names, or why none.

    Attributes:
        text: the generated text so far; when ``done``, exactly the text ``predict`` returns.
        done: whether generation has ended.
        label: the class the conclusion names (``done`` only; None for no valid conclusion).
        reason: why there is no class (``done`` and ``label`` None).
        problems: what the chain gets wrong in the five-stage format (``done`` only).
    """

    text: str
    done: bool = False
    label: str | None = None
    reason: str | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)


def stream_reasoning(classifier: Any, image: Any, max_new_tokens: int | None = None) -> Iterator[ReasoningUpdate]:
    """The reasoning chain of ``classifier`` (a :class:`~rdmldg_hf.DGClassifier`) for one decoded image, as it
    is generated: one update per token that adds text, then a final one with the class.

    Generation runs on a worker thread; an error there is raised here. Closing the iterator early waits for
    the generation to end, so one request never overlaps the next on the same model.
    """
    backend = _StreamingBackend(classifier.model, classifier.processor)
    streamer = backend.streamer
    outcome: dict[str, Any] = {}

    def generate() -> None:
        try:
            outcome["predictions"] = predict(
                backend,
                classifier.processor,
                [image],
                classifier.class_names,
                "reasoning",
                max_new_tokens=max_new_tokens,
                aliases=classifier.aliases,
            )
        except BaseException as error:  # handed to the caller, after the stream is closed
            outcome["error"] = error
        finally:
            streamer.end()  # generate ends the stream itself; this ends it when generation failed or never began

    worker = threading.Thread(target=generate, name="rdmldg-demo-generate", daemon=True)
    worker.start()
    try:
        text = ""
        for piece in streamer:
            if piece:
                text += piece
                yield ReasoningUpdate(text)
    finally:
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    predictions = outcome["predictions"]
    final, index = predictions.texts[0] or "", predictions.indices[0]
    match = resolve_conclusion(extract_conclusion(final), classifier.class_names, classifier.aliases)
    yield ReasoningUpdate(
        final,
        done=True,
        label=classifier.classes[index] if index >= 0 else None,
        reason=None if index >= 0 else match.reason,
        problems=check_chain(final).problems,
    )
