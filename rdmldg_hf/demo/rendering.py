"""The chain as the page shows it: four collapsible stages and the conclusion, matched to a class."""

from __future__ import annotations

from ..chains import STAGES, stage_texts
from .streaming import ReasoningUpdate

__all__ = ["SECTION_STAGES", "stage_sections", "conclusion_markdown"]

# Stages shown in collapsible sections; the last one (CONCLUSION) is shown as the answer.
SECTION_STAGES: tuple[str, ...] = STAGES[:-1]
_WAITING = "…"


def stage_sections(text: str) -> list[str]:
    """The text so far of each of :data:`SECTION_STAGES` (a placeholder for a stage not begun)."""
    stages = stage_texts(text)
    return [stages.get(stage) or _WAITING for stage in SECTION_STAGES]


def conclusion_markdown(update: ReasoningUpdate) -> str:
    """The answer: the conclusion while it is written, then the class it names or "no valid conclusion" and why."""
    if not update.done:
        return stage_texts(update.text).get(STAGES[-1]) or _WAITING
    if update.label is not None:
        answer = f"**{update.label}**"
    else:
        answer = f"**No valid conclusion**: {update.reason}."
    if update.problems:
        answer += "\n\nFormat problems: " + "; ".join(update.problems) + "."
    return answer
