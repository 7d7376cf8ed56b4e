"""Model selection after the fact, on per-checkpoint records: DomainBed's three methods, exactly.

Records are grouped as DomainBed's ``reporting.get_grouped_records`` groups them: by (trial seed,
dataset, algorithm, test environment), a record with two test environments belonging to both groups.
In a group, each method scores every run (one per ``hparams_seed``) with ``run_acc`` (a validation
and a test accuracy), keeps the hyperparameters whose run has the highest validation accuracy and
reports that run's test accuracy (``sweep_acc``):

* **training-domain validation set** (:class:`TrainingDomainValidation`): among the checkpoints of
  the run with this single test environment, the one with the highest mean of the other
  environments' out-part accuracies; its test accuracy is the test environment's in-part accuracy.
* **leave-one-domain-out cross-validation** (:class:`LeaveOneDomainOut`): needs the runs that hold
  out this environment and one other (``--test_env_pairs``); at each step, the validation accuracy
  is the mean over the other environments ``j`` of the in-part accuracy of ``j`` in the run holding
  out {test, j}; the step with the highest one is chosen.
* **test-domain validation set (oracle)** (:class:`Oracle`): the last checkpoint of the run (no early
  stopping), with its test environment's out-part accuracy as validation accuracy.

Ties go as in DomainBed: the first maximal checkpoint in record order (steps ascend), and among
hyperparameter seeds of equal validation accuracy the highest seed. ``test_accuracy="reasoning"`` reports the
chosen checkpoint's ``env{i}_in_reasoning_acc`` instead of its direct ``env{i}_in_acc`` (selection unchanged;
a chosen checkpoint without it leaves the cell empty).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "SelectionMethod",
    "TrainingDomainValidation",
    "LeaveOneDomainOut",
    "Oracle",
    "SELECTION_METHODS",
    "TEST_ACCURACIES",
    "RecordGroup",
    "group_records",
    "environment_count",
    "training_domain_validation",
]

Record = Mapping[str, Any]


def environment_count(record: Record) -> int:
    """How many environments a record scores (``env0_out_acc``, ``env1_out_acc``, ... until one is missing)."""
    return next(i for i in itertools.count() if f"env{i}_out_acc" not in record)


def training_domain_validation(record: Record) -> float:
    """A record's training-domain validation accuracy: the mean out-part accuracy of the environments that are not
    among its ``test_envs`` (DomainBed's ``IIDAccuracySelectionMethod`` for one test environment)."""
    held_out = set(record["args"]["test_envs"])
    keys = [f"env{i}_out_acc" for i in range(environment_count(record)) if i not in held_out]
    return float(np.mean([record[key] for key in keys]))


TEST_ACCURACIES: dict[str, str] = {"direct": "env{}_in_acc", "reasoning": "env{}_in_reasoning_acc"}


def _test_acc(record: Record, env: int, test_accuracy: str) -> float | None:
    return record.get(TEST_ACCURACIES[test_accuracy].format(env))


def _single_test_env(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if len(r["args"]["test_envs"]) == 1]


def _first_max(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(scored, key=lambda x: x["val_acc"])


class SelectionMethod:
    """A way of choosing (hyperparameters, checkpoint) from the records of one (trial, dataset, algorithm,
    test environment) group; ``name`` is DomainBed's."""

    name: str = ""
    short_name: str = ""

    @classmethod
    def run_acc(cls, run_records: Sequence[Record], test_accuracy: str = "direct") -> dict[str, Any] | None:
        """``{"val_acc", "test_acc", "record"}`` of the checkpoint chosen among one run's records, or None."""
        raise NotImplementedError

    @classmethod
    def hparams_accs(
        cls, records: Sequence[Record], test_accuracy: str = "direct"
    ) -> list[tuple[dict[str, Any], list[Record]]]:
        """Per ``hparams_seed``: the chosen checkpoint and the records, best validation accuracy first."""
        by_seed: dict[Any, list[Record]] = defaultdict(list)
        for record in records:
            by_seed[record["args"]["hparams_seed"]].append(record)
        scored = []
        for seed in sorted(by_seed):
            chosen = cls.run_acc(by_seed[seed], test_accuracy)
            if chosen is not None:
                scored.append((chosen, by_seed[seed]))
        scored.sort(key=lambda pair: _nan_last(pair[0]["val_acc"]))  # stable: ascending, seeds ascending
        return scored[::-1]

    @classmethod
    def sweep_acc(cls, records: Sequence[Record], test_accuracy: str = "direct") -> float | None:
        """The test accuracy of the best hyperparameters' chosen checkpoint (None when no run qualifies)."""
        best = cls.choose(records, test_accuracy)
        return None if best is None else best["test_acc"]

    @classmethod
    def choose(cls, records: Sequence[Record], test_accuracy: str = "direct") -> dict[str, Any] | None:
        """The chosen checkpoint of the best hyperparameters: ``{"val_acc", "test_acc", "record"}``, or None."""
        ranked = cls.hparams_accs(records, test_accuracy)
        return ranked[0][0] if ranked and ranked[0][0]["test_acc"] is not None else None


def _nan_last(value: float) -> float:
    return float("-inf") if isinstance(value, float) and np.isnan(value) else value


class TrainingDomainValidation(SelectionMethod):
    name = "training-domain validation set"
    short_name = "training_domain"

    @classmethod
    def run_acc(cls, run_records, test_accuracy="direct"):
        candidates = _single_test_env(run_records)
        if not candidates:
            return None
        scored = []
        for record in candidates:
            test_env = record["args"]["test_envs"][0]
            keys = [f"env{i}_out_acc" for i in range(environment_count(record)) if i != test_env]
            scored.append(
                {
                    "val_acc": np.mean([record[key] for key in keys]),
                    "test_acc": _test_acc(record, test_env, test_accuracy),
                    "record": record,
                }
            )
        return _first_max(scored)


class LeaveOneDomainOut(SelectionMethod):
    name = "leave-one-domain-out cross-validation"
    short_name = "leave_one_out"

    @classmethod
    def _step_acc(cls, records: Sequence[Record], test_accuracy: str) -> dict[str, Any] | None:
        tests = _single_test_env(records)
        if len(tests) != 1:
            return None
        test_env = tests[0]["args"]["test_envs"][0]
        n_envs = environment_count(records[0])
        val_accs = np.zeros(n_envs) - 1
        for record in records:
            if len(record["args"]["test_envs"]) == 2:
                other = (set(record["args"]["test_envs"]) - {test_env}).pop()
                val_accs[other] = record[f"env{other}_in_acc"]
        others = list(val_accs[:test_env]) + list(val_accs[test_env + 1 :])
        if any(v == -1 for v in others):
            return None
        return {
            "val_acc": np.sum(others) / (n_envs - 1),
            "test_acc": _test_acc(tests[0], test_env, test_accuracy),
            "record": tests[0],
        }

    @classmethod
    def run_acc(cls, run_records, test_accuracy="direct"):
        by_step: dict[Any, list[Record]] = defaultdict(list)
        for record in run_records:
            by_step[record["step"]].append(record)
        steps = [cls._step_acc(by_step[step], test_accuracy) for step in sorted(by_step)]
        scored = [acc for acc in steps if acc is not None]
        return _first_max(scored) if scored else None


class Oracle(SelectionMethod):
    name = "test-domain validation set (oracle)"
    short_name = "oracle"

    @classmethod
    def run_acc(cls, run_records, test_accuracy="direct"):
        candidates = _single_test_env(run_records)
        if not candidates:
            return None
        test_env = candidates[0]["args"]["test_envs"][0]
        last = sorted(candidates, key=lambda r: r["step"])[-1]
        return {
            "val_acc": last[f"env{test_env}_out_acc"],
            "test_acc": _test_acc(last, test_env, test_accuracy),
            "record": last,
        }


# In DomainBed's collect_results order.
SELECTION_METHODS: tuple[type[SelectionMethod], ...] = (TrainingDomainValidation, LeaveOneDomainOut, Oracle)


@dataclass
class RecordGroup:
    """The records of one (trial seed, dataset, algorithm, test environment)."""

    trial_seed: Any
    dataset: str
    algorithm: str
    test_env: int
    records: list[Record]


def group_records(records: Iterable[Record]) -> list[RecordGroup]:
    """Group records by (trial seed, dataset, algorithm, test environment); a record with several test
    environments is in each of their groups (DomainBed's ``get_grouped_records``)."""
    groups: dict[tuple[Any, str, str, int], list[Record]] = defaultdict(list)
    for record in records:
        args = record["args"]
        for test_env in args["test_envs"]:
            groups[(args["trial_seed"], args["dataset"], args["algorithm"], test_env)].append(record)
    return [RecordGroup(*key, members) for key, members in groups.items()]
