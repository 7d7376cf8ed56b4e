"""Loss curves of MTCT / SARR runs from the trainers' logs (paper Fig. 3C).

A run is read from ``trainer_state.json`` files (``log_history`` as ``transformers``
writes it): a SARR output folder holds one per stage under ``stages/<stage>/`` (``mtct``,
``round-1``, ...), in the stage folder itself or in its latest ``checkpoint-*``; an MTCT
output folder holds one directly (or in its checkpoints); a ``trainer_state.json`` file is
read as is. Each stage is one *round* and becomes one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOSS_KEYS", "RoundLog", "read_log_history", "read_run_logs"]

LOSS_KEYS: tuple[str, ...] = ("loss", "cls_loss", "reasoning_loss")
_STATE = "trainer_state.json"


@dataclass
class RoundLog:
    """The logged training steps of one round: ``points`` are ``{"step", "loss", "cls_loss", ...}``."""

    name: str
    source: str
    points: list[dict[str, float]]

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """``(steps, values)`` of one logged key (steps where it was logged)."""
        pairs = [(p["step"], p[key]) for p in self.points if key in p]
        return [s for s, _ in pairs], [v for _, v in pairs]


def _checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def _state_file(folder: Path) -> Path | None:
    """The folder's ``trainer_state.json``, else the one of its latest checkpoint."""
    if (folder / _STATE).is_file():
        return folder / _STATE
    checkpoints = sorted((p for p in folder.glob("checkpoint-*") if (p / _STATE).is_file()), key=_checkpoint_step)
    return checkpoints[-1] / _STATE if checkpoints else None


def read_log_history(path: str | Path, name: str = "run") -> RoundLog:
    """The training-step entries (those with a ``loss``) of one ``trainer_state.json``."""
    path = Path(path)
    history = json.loads(path.read_text()).get("log_history")
    if not isinstance(history, list):
        raise ValueError(f"{path} has no 'log_history' list; it is not a trainer_state.json.")
    points = []
    for entry in history:
        if "loss" in entry and "step" in entry:
            points.append(
                {k: float(entry[k]) for k in ("step", "epoch", *LOSS_KEYS) if isinstance(entry.get(k), (int, float))}
            )
    return RoundLog(name, str(path), points)


def _stage_order(name: str) -> tuple[int, int, str]:
    match = re.fullmatch(r"round-(\d+)", name)
    if name == "mtct":
        return (0, 0, name)
    return (1, int(match.group(1)), name) if match else (2, 0, name)


def read_run_logs(run: str | Path) -> list[RoundLog]:
    """Every round's logged losses of a run folder (or one ``trainer_state.json``), in round order.

    Raises:
        FileNotFoundError: naming the places searched, when no log is found.
    """
    run = Path(run)
    if run.is_file():
        return [read_log_history(run, run.parent.name or "run")]
    if not run.is_dir():
        raise FileNotFoundError(f"No run folder or trainer_state.json at {str(run)!r}.")
    stages = run / "stages"
    rounds: list[RoundLog] = []
    missing: list[str] = []
    if stages.is_dir():
        for folder in sorted((p for p in stages.iterdir() if p.is_dir()), key=lambda p: _stage_order(p.name)):
            state = _state_file(folder)
            if state is None:
                missing.append(folder.name)
            else:
                rounds.append(read_log_history(state, folder.name))
    else:
        state = _state_file(run)
        if state is not None:
            rounds.append(read_log_history(state, run.name or "run"))
    if not rounds:
        where = f"{stages}/<stage>" if stages.is_dir() else str(run)
        raise FileNotFoundError(
            f"No {_STATE} in {where} or its checkpoint-* folders. The losses are read from the trainer's "
            "log_history: save checkpoints (save_strategy) or call trainer.save_state() after training."
        )
    if missing:
        import logging

        logging.getLogger(__name__).warning(
            "No %s for stage(s) %s of %s; they are left out.", _STATE, ", ".join(missing), run
        )
    return rounds
