"""A generation backend whose outputs come from a function: relabeling, evaluation and SARR without a model.

Pass it wherever rdmldg_hf takes a model to generate with (``generate``, ``relabel``, ``predict``,
``SARRTrainer(backend=...)``)::

    backend = ScriptedBackend(lambda messages, image: "CONCLUSION: dog")
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..generation import GenerationSettings, Messages

__all__ = ["ScriptedBackend"]


class ScriptedBackend:
    """A backend whose outputs come from a function, for tests and dry runs (a ``GenerationBackend``).

    ``reply(messages, image)`` returns one text or a list of texts (one per candidate;
    a single text is repeated). Every call is recorded in ``calls`` as the batch size.
    """

    def __init__(self, reply: Callable[[Messages, Any], str | Sequence[str]]):
        self.reply = reply
        self.calls: list[int] = []

    def generate_texts(
        self,
        messages_batch: Sequence[Messages],
        images: Sequence[Any],
        settings: GenerationSettings,
        batch_index: int = 0,
    ) -> list[list[str]]:
        self.calls.append(len(messages_batch))
        outputs = []
        for messages, image in zip(messages_batch, images):
            texts = self.reply(messages, image)
            texts = [texts] * settings.num_candidates if isinstance(texts, str) else list(texts)
            if len(texts) != settings.num_candidates:
                raise ValueError(f"Scripted reply gave {len(texts)} texts; {settings.num_candidates} expected.")
            outputs.append(texts)
        return outputs
