"""SARR's round builder: relabel the training images with the current model, keep the right chains,
save the round's rows as config ``<benchmark>-sarr-r<k>`` of a Hub-layout dataset folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..benchmarks import Benchmark
from ..generation import GenerationBackend, GenerationSettings, process_state
from .relabel import RelabelStore, build_round_dataset, relabel
from .sarr_state import SARRState

__all__ = ["RoundBuilder", "round_config_name"]

logger = logging.getLogger(__name__)


def round_config_name(benchmark: str, round_index: int) -> str:
    """Dataset config name of a round's rows: ``officehome-sarr-r2``."""
    return f"{benchmark}-sarr-r{round_index}"


@dataclass
class RoundBuilder:
    """Builds round ``k``'s training rows from ``rows`` (the training images and their teacher chains).

    Relabel outputs go to ``<relabel_dir>/round-<k>`` batch by batch (a rerun regenerates nothing already
    written); the round's rows go to ``dataset_dir`` and its statistics to the run state, once.
    """

    rows: Dataset
    benchmark: Benchmark
    settings: GenerationSettings
    fallback: str
    strict_chains: bool
    model_name: str
    relabel_dir: Path
    dataset_dir: Path

    def build(self, k: int, backend: GenerationBackend, state: SARRState) -> Dataset:
        """Relabel with ``backend``, judge the chains, save round ``k`` (first time only); returns its rows."""
        name, dist = f"round-{k}", process_state()
        state.event(name, "relabel started")
        store = RelabelStore(self.relabel_dir / name, dist.process_index)
        start = time.time()
        outputs = relabel(backend, self.rows, self.benchmark.class_names, self.settings, store)
        seconds = time.time() - start
        rows, stats = build_round_dataset(
            self.rows,
            outputs,
            k,
            self.fallback,
            self.chain_source(k),
            self.benchmark,
            self.benchmark.class_aliases,
            self.strict_chains,
        )
        if "relabel" not in state.stage(name):
            record: dict[str, Any] = stats.to_dict()
            record["seconds"] = round(seconds, 2)
            record["dataset_config"] = round_config_name(self.benchmark.name, k)
            if dist.is_main_process:
                self.save(k, rows)
            state.update(name, "relabel", record)
        dist.wait_for_everyone()
        logger.info(
            "SARR %s: %d/%d chains accepted (%.1f%%)", name, stats.accepted, stats.images, 100 * stats.acceptance
        )
        return rows

    def chain_source(self, k: int) -> str:
        """``chain_source`` of the chains the model wrote in round ``k``: ``"<model>@sarr-r<k>"``."""
        return f"{self.model_name}@sarr-r{k}"

    def save(self, k: int, rows: Dataset) -> None:
        """Write round ``k``'s rows, one split per domain, as a config of ``dataset_dir``."""
        from ..data.hub_layout import write_config

        domains = sorted(set(rows["domain"]))
        splits = {d: rows.filter(lambda x, d=d: x == d, input_columns="domain") for d in domains}
        write_config(
            self.dataset_dir,
            round_config_name(self.benchmark.name, k),
            splits,
            self.benchmark,
            description=f"SARR round {k}: chains written by {self.model_name} for its own training images "
            f"(fallback {self.fallback!r}).",
        )
