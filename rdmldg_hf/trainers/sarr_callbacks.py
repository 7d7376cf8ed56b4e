"""Round events of :class:`~rdmldg_hf.trainers.sarr.SARRTrainer` for ``transformers`` callbacks.

Any callback given to ``SARRTrainer(callbacks=[...])`` that defines ``on_round_begin`` /
``on_round_end`` has them called at each round boundary, with the usual
``(args, state, control, **kwargs)``: ``args`` is the run's ``SARRConfig``, ``state`` a
``TrainerState`` of the whole run (``global_step`` counts every stage's steps so far,
``log_history`` holds every stage's logs), and the keyword arguments are ``round`` (0 for the
MTCT stage, k for round k), ``stage`` (``"mtct"``, ``"round-<k>"``), ``model`` and, at the end,
``relabel`` (the round's acceptance statistics, None for the MTCT stage) and ``metrics`` (what
``stage_callback`` returned). Subclass :class:`SARRCallback` to get both hooks as no-ops.
"""

from __future__ import annotations

from typing import Any, Iterable

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

__all__ = ["ROUND_EVENTS", "SARRCallback", "call_round_event"]

ROUND_EVENTS: tuple[str, ...] = ("on_round_begin", "on_round_end")


class SARRCallback(TrainerCallback):
    """A ``TrainerCallback`` with SARR's round hooks (see the module docstring)."""

    def on_round_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        """Called before a stage starts (before relabeling, for a SARR round)."""

    def on_round_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        """Called once a stage is trained and saved (and ``stage_callback`` has run)."""


def call_round_event(
    callbacks: Iterable[Any],
    event: str,
    args: TrainingArguments,
    state: TrainerState,
    control: TrainerControl,
    **kwargs: Any,
) -> TrainerControl:
    """Call ``event`` on every callback defining it, as ``transformers``' ``CallbackHandler`` does.

    Returns:
        The control, as the last callback that returned one left it.
    """
    if event not in ROUND_EVENTS:
        raise ValueError(f"Unknown SARR event {event!r}. Valid: {', '.join(ROUND_EVENTS)}.")
    for callback in callbacks:
        hook = getattr(callback, event, None)
        if hook is not None:
            result = hook(args, state, control, **kwargs)
            if result is not None:
                control = result
    return control
