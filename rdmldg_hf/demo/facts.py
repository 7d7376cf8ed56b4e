"""What the demo shows beside a model: its base model, benchmark, held-out domain and accuracy there.

Read from the model folder: ``rdmldg_config.json`` (the run record), ``results.json`` (a training run's
``final`` metrics or an ``rdmldg eval`` record's per-domain accuracies) and the model card's metadata
(``README.md``: the dataset it names, and the base model when the run record has none).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from huggingface_hub import ModelCard

from ..benchmarks import get_benchmark
from ..evaluation.sharing import RESULTS_NAME, domain_accuracies, is_repo_id
from ..models import RunConfig

__all__ = ["ModelFacts", "held_out_accuracy", "card_datasets"]

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"


def card_datasets(card_data: Any) -> list[str]:
    """The datasets a model card's metadata names (its ``datasets:``, a name or a list)."""
    names = getattr(card_data, "datasets", None) or []
    return [names] if isinstance(names, str) else [str(name) for name in names]


def held_out_accuracy(results: Mapping[str, Any], test_domain: str | None) -> dict[str, float]:
    """Answer mode -> accuracy (a fraction) on the held-out domain, from a ``results.json`` record.

    A training run's record holds ``final.heldout_direct`` / ``final.heldout_reasoning``; an ``rdmldg eval``
    record holds ``metrics.per_domain`` (scored in its ``mode``). Anything else gives ``{}``.
    """
    final = results.get("final")
    if isinstance(final, Mapping):
        found = {mode: final.get(f"heldout_{mode}") for mode in ("direct", "reasoning")}
        return {mode: float(value) for mode, value in found.items() if value is not None}
    try:
        per_domain = domain_accuracies(results)
    except ValueError:
        return {}
    if test_domain in per_domain:
        return {str(results.get("mode", "direct")): per_domain[test_domain]}
    return {}


@dataclass(frozen=True)
class ModelFacts:
    """The facts of a trained model that the demo shows and the Space's metadata names.

    Attributes:
        model: the model as the user named it (folder or Hub repo id).
        method: the stage that produced it (``mtct``, ``sarr``).
        base_model: the base model (an adapter's), or None for full weights of unknown origin.
        benchmark: the benchmark's registry name (None for a custom dataset).
        test_domain: the held-out domain (None when none was held out).
        classes: the class labels.
        accuracy: answer mode -> accuracy on the held-out domain (empty when not recorded).
        dataset: the dataset the model card names (Hub id or folder), if any.
    """

    model: str
    method: str
    base_model: str | None
    benchmark: str | None
    test_domain: str | None
    classes: tuple[str, ...]
    accuracy: dict[str, float] = field(default_factory=dict)
    dataset: str | None = None

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, model: str | None = None) -> "ModelFacts":
        """The facts of an rdmldg output folder (or a downloaded Hub repo); ``model`` is how to name it."""
        folder = Path(folder)
        run = RunConfig.load(folder)
        card_data: Any = None
        if (folder / CARD_NAME).is_file():
            card_data = ModelCard.load(folder / CARD_NAME).data
        accuracy: dict[str, float] = {}
        if (folder / RESULTS_NAME).is_file():
            accuracy = held_out_accuracy(json.loads((folder / RESULTS_NAME).read_text()), run.test_domain)
        datasets = card_datasets(card_data)
        return cls(
            model=model or str(folder),
            method=run.method,
            base_model=run.base_model or getattr(card_data, "base_model", None),
            benchmark=run.benchmark,
            test_domain=run.test_domain,
            classes=tuple(run.classes),
            accuracy=accuracy,
            dataset=datasets[0] if datasets else None,
        )

    @property
    def hub_dataset(self) -> str | None:
        """The dataset as a Hub repo id, when it is one (a Space's ``datasets:`` metadata)."""
        return self.dataset if is_repo_id(self.dataset) else None

    @property
    def hub_model(self) -> str | None:
        """The model as a Hub repo id, when it is one."""
        return self.model if is_repo_id(self.model) else None

    def markdown(self) -> str:
        """The facts as a Markdown list (the demo's side panel)."""
        benchmark = get_benchmark(self.benchmark).title if self.benchmark else "a custom dataset"
        accuracy = ", ".join(f"{100 * value:.1f}% ({mode})" for mode, value in self.accuracy.items())
        lines = [
            f"- **Model**: `{self.model}` ({self.method.upper()})",
            f"- **Base model**: `{self.base_model or 'unknown'}`",
            f"- **Benchmark**: {benchmark}, {len(self.classes)} classes",
            f"- **Held-out domain**: {self.test_domain or 'none'}",
            f"- **Accuracy on it**: {accuracy or 'not recorded (no results.json with held-out accuracy)'}",
        ]
        if self.dataset:
            lines.append(f"- **Dataset**: `{self.dataset}`")
        return "\n".join(lines)
