"""SARR's stage store: what a run has done, in ``<output_dir>/sarr_state.json``, so that a rerun resumes it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from datasets import Dataset

from ..atomic import atomic_write_json

__all__ = ["STATE_FILE", "SARRState", "StageResult", "dataset_digest", "stage_losses"]

STATE_FILE = "sarr_state.json"
_STATE_FORMAT = 1


class SARRState:
    """The run's progress in ``<output_dir>/sarr_state.json`` (written by the main process only).

    ``stages[name]`` holds ``relabel`` (round statistics) once relabeling is done and
    ``done`` with the stage's results once it is trained; ``events`` is the log of
    everything started and finished, in order, across restarts.
    """

    def __init__(self, output_dir: str | os.PathLike, run: Mapping[str, Any], is_main: bool = True):
        self.path = Path(output_dir) / STATE_FILE
        self.is_main = is_main
        self.data: dict[str, Any] = {"format": _STATE_FORMAT, "run": dict(run), "stages": {}, "events": []}

    @classmethod
    def open(
        cls, output_dir: str | os.PathLike, run: Mapping[str, Any], overwrite: bool, resume: bool, is_main: bool = True
    ) -> "SARRState":
        """The state of ``output_dir``: the same run's (to resume), or a new one.

        Raises:
            ValueError: the folder holds another run's state and neither ``overwrite`` nor ``resume`` is set.
        """
        state = cls(output_dir, run, is_main)
        if not state.path.exists():
            return state
        found = json.loads(state.path.read_text())
        differs = sorted(k for k in set(found.get("run", {})) | set(run) if found.get("run", {}).get(k) != run.get(k))
        if differs and not (overwrite or resume):
            raise ValueError(
                f"{str(output_dir)!r} holds another SARR run ({STATE_FILE} differs in: {', '.join(differs)}). "
                "Pass --overwrite to replace it, --resume to continue it anyway, or choose another output_dir."
            )
        if differs and overwrite:
            if is_main:
                shutil.rmtree(output_dir)
            return state
        state.data = found
        if differs:
            state.data["run"] = dict(run)
            state.event("run", "resumed with changed settings: " + ", ".join(differs))
        return state

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {})

    def is_done(self, name: str) -> bool:
        return "done" in self.data["stages"].get(name, {})

    def event(self, stage: str, what: str) -> None:
        self.data["events"].append({"stage": stage, "event": what, "time": round(time.time(), 3)})
        self.save()

    def update(self, name: str, key: str, value: Any) -> None:
        self.stage(name)[key] = value
        self.event(name, f"{key} recorded")

    def result(self, name: str) -> "StageResult":
        """The recorded result of a finished stage."""
        info = self.stage(name)
        done = info["done"]
        return StageResult(name, done["model_dir"], done["losses"], done.get("metrics", {}), info.get("relabel"))

    def save(self) -> None:
        if not self.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data)


@dataclass
class StageResult:
    """One trained stage: where it is saved, its training losses and any extra metrics."""

    name: str
    model_dir: str
    losses: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    relabel: dict[str, Any] | None = None


def dataset_digest(dataset: Dataset) -> str:
    """A short fingerprint of the rows a run trains on (ids, labels, domains, chains)."""
    h = hashlib.sha256()
    for column in ("image_id", "label", "domain", "reasoning"):
        if column in dataset.column_names:
            h.update(json.dumps(list(dataset[column])).encode())
    return h.hexdigest()[:16]


def stage_losses(log_history: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """A stage's ``steps``, first and last logged training losses, and the final train_loss / train_runtime."""
    keys = ("loss", "cls_loss", "reasoning_loss", "mean_token_accuracy")
    logged = [entry for entry in log_history if "loss" in entry]
    out: dict[str, Any] = {"steps": steps}
    for key in keys:
        values = [entry[key] for entry in logged if key in entry]
        if values:
            out[f"first_{key}"], out[f"last_{key}"] = values[0], values[-1]
    for entry in log_history:
        for key in ("train_loss", "train_runtime"):
            if key in entry:
                out[key] = entry[key]
    return out
