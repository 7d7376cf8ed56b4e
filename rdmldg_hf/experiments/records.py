"""Per-checkpoint records in DomainBed's format: ``results.jsonl``, ``done`` and the callback that writes them.

A run folder holds ``results.jsonl``: one JSON line per checkpoint, as DomainBed's
``domainbed/scripts/train.py`` writes it and ``domainbed/lib/reporting.py`` reads it::

    {"args": {"dataset": "PACS", "algorithm": "mtct", "test_envs": [0], "hparams_seed": 0, "trial_seed": 0,
              "holdout_fraction": 0.2, ...}, "hparams": {...}, "step": 200, "epoch": 1.6,
     "env0_in_acc": 0.61, "env0_out_acc": 0.63, "env1_in_acc": ..., ...}

with ``env{i}_in_acc`` / ``env{i}_out_acc`` for **every** environment (DomainBed's order), held-out ones
included: a test environment's in part is its test set, its out part the oracle's validation set
(:mod:`rdmldg_hf.protocol.environments`). Accuracies are direct answers (class-name likelihood, one
prefill per image) through :func:`rdmldg_hf.evaluation.rows.evaluate_rows`. ``env{i}_in_reasoning_acc``
(a generated chain's conclusion) is added for the test environments when asked. ``args.json`` holds
the run's ``args`` (what every record must repeat) and ``done`` marks a finished run.

:class:`CheckpointCallback` calls a function at each checkpoint of a ``Trainer`` (every N steps, each
epoch, or the end) and of every stage of a SARR run (steps keep counting across stages);
:class:`RecordsCallback` is the one that writes records, and can feed a
:class:`~rdmldg_hf.protocol.selection.CheckpointSelector` with each record's training-domain validation
accuracy, so that a run's in-training choice is the one ``rdmldg collect`` makes from its records.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from datasets import concatenate_datasets

from ..atomic import atomic_write, atomic_write_json
from ..benchmarks import Benchmark
from ..evaluation.rows import evaluate_rows
from ..generation import process_state
from ..protocol.environments import EnvironmentSplit
from ..protocol.selection import CheckpointSelector
from ..protocol.subsets import stratified_sample
from ..trainers.sarr_callbacks import SARRCallback
from .selection import training_domain_validation

__all__ = [
    "RESULTS_FILE",
    "DONE_FILE",
    "ARGS_FILE",
    "domainbed_dataset_name",
    "accuracy_key",
    "record_args",
    "read_records",
    "write_json_atomic",
    "mark_done",
    "RecordWriter",
    "CheckpointCallback",
    "RecordsCallback",
]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"
ARGS_FILE = "args.json"


def domainbed_dataset_name(benchmark: Benchmark) -> str:
    """The dataset's name in records: DomainBed's (``PACS``, ``VLCS``, ``OfficeHome``, ``TerraIncognita``,
    ``DomainNet``); the embedded benchmark's own (``RotatedDigits``)."""
    return benchmark.title


def accuracy_key(env: int, part: str, kind: str = "acc") -> str:
    """``env{env}_{part}_{kind}``: DomainBed's key of an environment part's accuracy."""
    return f"env{env}_{part}_{kind}"


def record_args(
    benchmark: Benchmark,
    algorithm: str,
    test_envs: Sequence[int],
    *,
    hparams_seed: int,
    trial_seed: int,
    holdout_fraction: float,
    **rest: Any,
) -> dict[str, Any]:
    """A run's ``args`` as records carry them: DomainBed's keys (``dataset`` spelled as DomainBed spells it,
    ``algorithm``, ``test_envs``, ``hparams_seed``, ``trial_seed``, ``holdout_fraction``), then ``rest``, as JSON."""
    args = {
        "dataset": domainbed_dataset_name(benchmark),
        "algorithm": algorithm,
        "test_envs": [int(i) for i in test_envs],
        "hparams_seed": int(hparams_seed),
        "trial_seed": int(trial_seed),
        "holdout_fraction": float(holdout_fraction),
        **rest,
    }
    return json.loads(json.dumps(args, default=str))


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``results.jsonl`` (none when the file is missing).

    Raises:
        ValueError: naming the file and line that is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON record ({error}).") from error
    return records


def write_json_atomic(path: Path, text: str) -> None:
    """Deprecated: :func:`rdmldg_hf.atomic.atomic_write` (the same, for text or bytes)."""
    warnings.warn(
        "rdmldg_hf.experiments.records.write_json_atomic is deprecated; use rdmldg_hf.atomic.atomic_write.",
        FutureWarning,
        stacklevel=2,
    )
    atomic_write(path, text)


def mark_done(run_dir: str | os.PathLike) -> None:
    """Write the ``done`` file of a finished run (as DomainBed's train.py)."""
    atomic_write(Path(run_dir) / DONE_FILE, "done")


class RecordWriter:
    """Scores every environment part of ``split`` at each checkpoint and appends the record to ``results.jsonl``.

    Args:
        run_dir: the run folder (created).
        args: the run's arguments (``dataset``, ``algorithm``, ``test_envs``, ``hparams_seed``, ``trial_seed``,
            ``holdout_fraction``, ...), repeated in every record and saved as ``args.json``.
        hparams: the run's hyperparameters.
        split: the environments' in and out parts.
        processor, benchmark: the model's processor and the benchmark (class names).
        batch_size: images per forward pass when scoring.
        reasoning_limit: a stratified sample of this many test images per test environment when measuring
            reasoning accuracy (None: all).
        max_new_tokens: most tokens generated per chain.

    A folder already holding records of the same ``args`` (a resumed run) keeps them up to the step where
    writing resumes; records of other ``args`` are replaced. In a run of several processes each scores (their
    selectors agree) and the main one writes.

    Raises:
        ValueError: when an environment part holds no image (naming it), before any training.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        args: Mapping[str, Any],
        hparams: Mapping[str, Any],
        split: EnvironmentSplit,
        processor: Any,
        benchmark: Benchmark,
        *,
        batch_size: int = 64,
        reasoning_limit: int | None = None,
        max_new_tokens: int = 256,
        sample_seed: int = 0,
    ):
        self.run_dir = Path(run_dir)
        self.args = {**json.loads(json.dumps(dict(args), default=str)), "output_dir": str(self.run_dir)}
        self.hparams = json.loads(json.dumps(dict(hparams), default=str))
        self.processor, self.benchmark, self.batch_size = processor, benchmark, batch_size
        self.max_new_tokens = max_new_tokens
        self.test_envs = list(split.test_envs)
        parts = split.parts()
        empty = [f"env{i}_{part} ({split.environments[i]})" for i, part, rows in parts if len(rows) == 0]
        if empty:
            raise ValueError(
                f"Environment parts {', '.join(empty)} hold no image (holdout_fraction {split.holdout_fraction}); "
                "every environment needs in and out images for per-checkpoint records. Raise holdout_fraction "
                "or use more images per domain."
            )
        # One scoring pass over every part: the "domain" column names each row's part (env<i>_<in|out>_acc).
        self.rows = concatenate_datasets(
            [
                rows.remove_columns("domain").add_column("domain", [accuracy_key(i, part)] * len(rows))
                for i, part, rows in parts
            ]
        )
        self.reasoning_rows = {
            i: stratified_sample(rows, reasoning_limit, sample_seed) if reasoning_limit else rows
            for i, part, rows in parts
            if part == "in" and i in self.test_envs
        }
        self.writes = process_state().is_main_process
        self.path = self.run_dir / RESULTS_FILE
        args_path = self.run_dir / ARGS_FILE
        earlier = json.loads(args_path.read_text()) if args_path.is_file() else None
        self.records = read_records(self.path) if earlier == self.args else []
        if earlier != self.args and self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args_path, self.args, sort_keys=True)
            self.path.unlink(missing_ok=True)

    def accuracies(self, model: Any) -> dict[str, float]:
        """``env{i}_{in,out}_acc`` of ``model`` on every environment part (direct answers)."""
        outcome = evaluate_rows(model, self.processor, self.rows, self.benchmark, "direct", batch_size=self.batch_size)
        per_part = outcome.metrics["per_domain"]
        return {key: float(per_part[key]) for key in sorted(per_part, key=_env_order)}

    def reasoning_accuracies(self, model: Any) -> dict[str, float]:
        """``env{i}_in_reasoning_acc`` of ``model`` on the test environments' in parts (generated chains)."""
        out = {}
        for env, rows in self.reasoning_rows.items():
            outcome = evaluate_rows(
                model,
                self.processor,
                rows,
                self.benchmark,
                "reasoning",
                batch_size=self.batch_size,
                max_new_tokens=self.max_new_tokens,
            )
            out[accuracy_key(env, "in", "reasoning_acc")] = float(outcome.metrics["accuracy"])
        return out

    def write(self, model: Any, step: int, epoch: float, *, reasoning: bool = False, **extra: Any) -> dict[str, Any]:
        """Score ``model`` and append its record (replacing earlier records at this step or later); returns it."""
        record: dict[str, Any] = {"step": int(step), "epoch": float(epoch), **extra, **self.accuracies(model)}
        if reasoning:
            record.update(self.reasoning_accuracies(model))
        record.update(args=self.args, hparams=self.hparams)
        stale = [r for r in self.records if r["step"] >= record["step"]]
        self.records = [r for r in self.records if r["step"] < record["step"]] + [record]
        if stale:
            self._rewrite()
        elif self.writes:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        return record

    def add_reasoning(self, model: Any, step: int) -> dict[str, Any]:
        """Measure reasoning accuracy of ``model`` (the weights of checkpoint ``step``) into that step's record."""
        record = next(r for r in self.records if r["step"] == step)
        record.update(self.reasoning_accuracies(model))
        self._rewrite()
        return record

    def _rewrite(self) -> None:
        if self.writes:
            atomic_write(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))


def _env_order(key: str) -> tuple[int, str]:
    env, part = key[3:].split("_", 1)
    return int(env), part


class CheckpointCallback(SARRCallback):
    """Calls ``on_checkpoint(model, step, epoch, where)`` at every checkpoint of a training run.

    ``every``: a number of steps, ``"epoch"`` (each epoch's end) or ``"final"``; the end of training is
    always a checkpoint. In a SARR run (the callback given to ``SARRTrainer(callbacks=...)``), each stage's
    end is a checkpoint and steps count on across stages.
    """

    def __init__(self, every: int | str, on_checkpoint: Callable[[Any, int, float, str], Any]):
        if not (every in ("epoch", "final") or (isinstance(every, int) and not isinstance(every, bool) and every > 0)):
            raise ValueError(f"Checkpoints are every N > 0 steps, 'epoch' or 'final'; got {every!r}.")
        self.every, self.on_checkpoint = every, on_checkpoint
        self.offset = 0

    def on_round_begin(self, args, state, control, **kwargs):
        self.offset = state.global_step

    def _fire(self, model: Any, state: Any, where: str | None = None) -> None:
        step = self.offset + state.global_step
        self.on_checkpoint(model, step, float(state.epoch or 0.0), where or f"step-{step}")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        steps = isinstance(self.every, int) and state.global_step % self.every == 0
        if steps and state.global_step < state.max_steps:
            self._fire(model, state)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.every == "epoch" and state.global_step < state.max_steps:
            step = self.offset + state.global_step
            self._fire(model, state, f"epoch-{round(state.epoch)} (step-{step})")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._fire(model, state)


class RecordsCallback(CheckpointCallback):
    """Writes a record (:class:`RecordWriter`) at every checkpoint; with a ``selector``, the selector checks each
    checkpoint with the record's training-domain validation accuracy (DomainBed's, see
    :func:`~rdmldg_hf.experiments.selection.training_domain_validation`).

    ``reasoning_every``: also measure reasoning accuracy at checkpoints whose step is a multiple of it (0: none;
    :meth:`RecordWriter.add_reasoning` adds it to the selected checkpoint afterwards).
    """

    def __init__(
        self,
        writer: RecordWriter,
        every: int | str,
        selector: CheckpointSelector | None = None,
        reasoning_every: int = 0,
    ):
        super().__init__(every, self.record)
        self.writer, self.selector, self.reasoning_every = writer, selector, reasoning_every
        self.steps: dict[str, int] = {}  # checkpoint name -> step

    def record(self, model: Any, step: int, epoch: float, where: str) -> dict[str, Any]:
        """Write the record of checkpoint ``where`` (and let the selector check it); returns the record."""
        reasoning = bool(self.reasoning_every) and step % self.reasoning_every == 0
        record = self.writer.write(model, step, epoch, reasoning=reasoning)
        self.steps[where] = step
        if self.selector is not None:
            self.selector.check(model, where, training_domain_validation(record))
        return record

    def selected_step(self) -> int | None:
        """The step of the selector's choice (None without a selector or a checkpoint)."""
        return self.steps.get(self.selector.best_at) if self.selector is not None else None
