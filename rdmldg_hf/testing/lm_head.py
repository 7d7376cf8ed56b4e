"""A probe of where a model's LM head is applied: the shape of each of its inputs inside a ``with`` block."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LMHeadCalls"]


class LMHeadCalls:
    """Records the input shape of every call of ``model.get_output_embeddings()`` while the block runs.

    ``shapes[i][:-1]`` are the positions call ``i`` computed logits for (e.g. ``(batch, 1)`` for
    one decoding step); :attr:`positions` counts them all, the rows of ``[..., vocab]`` logits made.
    """

    def __init__(self, model: torch.nn.Module):
        self.head = model.get_output_embeddings()
        self.shapes: list[tuple[int, ...]] = []

    @property
    def positions(self) -> int:
        return sum(math.prod(shape[:-1]) for shape in self.shapes)

    def _record(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.shapes.append(tuple(args[0].shape))

    def __enter__(self) -> "LMHeadCalls":
        self._handle = self.head.register_forward_pre_hook(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
