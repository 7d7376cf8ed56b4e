"""``rdmldg collect``: per-checkpoint records to results tables, as DomainBed's ``collect_results.py`` makes them.

Records are read from every run folder directly under the given folders (``<dir>/<run>/results.jsonl``,
DomainBed's sweep layout). A record whose ``args`` differ from its run folder's (``args.json``, else
the folder's first record) is refused, counted and named, never merged. For each selection method
(:mod:`.selection`) and dataset, a cell (algorithm x test environment) is the mean and standard error
over trial seeds of the selected test accuracy, in percent: ``mean = 100 * mean(accs)``,
``error = 100 * std(accs / sqrt(n))`` (NumPy's population standard deviation, as DomainBed); a row's
Avg is the mean of its cells (X when one is missing). The averages table averages, per trial seed,
the test environments of a dataset, then reports mean and error over trial seeds.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..benchmarks import BENCHMARKS
from ..methods import METHODS
from .records import ARGS_FILE, DONE_FILE, RESULTS_FILE, domainbed_dataset_name, read_records
from .selection import SELECTION_METHODS, SelectionMethod, environment_count, group_records

__all__ = [
    "REQUIRED_ARGS",
    "LoadedRecords",
    "load_records",
    "format_mean",
    "Cell",
    "results",
    "render_tables",
    "results_json",
]

REQUIRED_ARGS: tuple[str, ...] = ("dataset", "algorithm", "test_envs", "hparams_seed", "trial_seed")
# Datasets in DomainBed's order (then the embedded benchmark), each with its environments.
_DATASET_ORDER: dict[str, tuple[str, ...]] = {domainbed_dataset_name(b): b.domains for b in BENCHMARKS.values()}


@dataclass
class LoadedRecords:
    """Records read from sweep folders, with what was refused and why."""

    records: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)  # {"run": folder, "records": n, "reason": ...}
    without_records: list[str] = field(default_factory=list)  # subfolders holding no results.jsonl
    unfinished: list[str] = field(
        default_factory=list
    )  # runs with records but no done file (counted in, as DomainBed)

    @property
    def refused_count(self) -> int:
        return sum(item["records"] for item in self.refused)

    def summary(self) -> str:
        lines = [f"Total records: {len(self.records)} from {self.runs} runs"]
        if self.unfinished:
            lines.append(
                f"{len(self.unfinished)} of these runs are not done (no done file); their records are included"
            )
        if self.without_records:
            lines.append(f"{len(self.without_records)} folders without records (unfinished or not runs) skipped")
        for item in self.refused:
            lines.append(f"REFUSED {item['records']} record(s) of {item['run']}: {item['reason']}")
        return "\n".join(lines)


def _differing(reference: Mapping[str, Any], args: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(reference) | set(args) if reference.get(k) != args.get(k))


def load_records(folders: Sequence[str | os.PathLike]) -> LoadedRecords:
    """Every record of the run folders directly under ``folders`` (see the module docstring).

    Raises:
        FileNotFoundError: naming a folder that does not exist.
        ValueError: when the folders hold no record at all, saying where it looked.
    """
    loaded = LoadedRecords()
    looked = 0
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{str(folder)!r} is not a folder; give the output_dir of a sweep.")
        for run in sorted(p for p in folder.iterdir() if p.is_dir()):
            looked += 1
            records = read_records(run / RESULTS_FILE)
            if not records:
                loaded.without_records.append(str(run))
                continue
            loaded.runs += 1
            if not (run / DONE_FILE).exists():
                loaded.unfinished.append(str(run))
            args_file = run / ARGS_FILE
            reference = json.loads(args_file.read_text()) if args_file.is_file() else records[0].get("args", {})
            missing = [k for k in REQUIRED_ARGS if k not in reference]
            if missing:
                reason = f"args lack {', '.join(missing)}"
                loaded.refused.append({"run": str(run), "records": len(records), "reason": reason})
                continue
            disagreeing = [r for r in records if r.get("args") != reference]
            if disagreeing:
                keys = sorted({k for r in disagreeing for k in _differing(reference, r.get("args") or {})})
                reason = f"their args differ from the run folder's in {', '.join(keys)}"
                loaded.refused.append({"run": str(run), "records": len(disagreeing), "reason": reason})
            loaded.records += [r for r in records if r.get("args") == reference]
    if not loaded.records:
        where = ", ".join(str(f) for f in folders)
        raise ValueError(
            f"No records in {where}: none of its {looked} subfolders holds a {RESULTS_FILE} with accepted records "
            f"({len(loaded.refused)} refused). Give the output_dir of a sweep (`rdmldg sweep launch ... "
            "--output_dir DIR`) or of runs that wrote records."
        )
    return loaded


def format_mean(data: Sequence[float], latex: bool = False) -> tuple[float | None, float | None, str]:
    """Mean and standard error of accuracies, in percent, and their text (``X`` for no data)."""
    if len(data) == 0:
        return None, None, "X"
    mean = 100 * np.mean(list(data))
    err = 100 * np.std(np.asarray(list(data)) / np.sqrt(len(data)))
    text = f"{mean:.1f} $\\pm$ {err:.1f}" if latex else f"{mean:.1f} ± {err:.1f}"
    return float(mean), float(err), text


@dataclass
class Cell:
    """One table cell: the selected test accuracies over trial seeds."""

    selection_method: type[SelectionMethod]
    dataset: str
    algorithm: str
    test_env: int | None  # None: the dataset average (averages table)
    accs: list[float]


def _ordered_algorithms(records: Iterable[Mapping[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(r["args"]["algorithm"] for r in records))
    return [m for m in METHODS if m in seen] + [a for a in seen if a not in METHODS]


def _ordered_datasets(records: Iterable[Mapping[str, Any]]) -> list[str]:
    seen = {r["args"]["dataset"] for r in records}
    return [d for d in _DATASET_ORDER if d in seen] + sorted(seen - set(_DATASET_ORDER))


def environments_of(dataset: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column labels of a dataset's environments: its domains, or ``env<i>`` for a dataset of no known benchmark."""
    if dataset in _DATASET_ORDER:
        return list(_DATASET_ORDER[dataset])
    count = max(environment_count(r) for r in records if r["args"]["dataset"] == dataset)
    return [f"env{i}" for i in range(count)]


def results(records: Sequence[Mapping[str, Any]], test_accuracy: str = "direct") -> dict[str, Any]:
    """Every table's cells: ``{"datasets": [...], "algorithms": [...], "environments": {dataset: [...]},
    "cells": [Cell, ...]}`` for the three selection methods (per test environment, then dataset averages);
    ``test_accuracy``: the chosen checkpoints' ``direct`` or ``reasoning`` test accuracy."""
    datasets, algorithms = _ordered_datasets(records), _ordered_algorithms(records)
    environments = {d: environments_of(d, records) for d in datasets}
    groups = group_records(records)
    cells: list[Cell] = []
    for method in SELECTION_METHODS:
        # In group order (DomainBed's), so that means sum their terms in the same order.
        scored = [(g, acc) for g in groups if (acc := method.sweep_acc(g.records, test_accuracy)) is not None]
        for dataset in datasets:
            for algorithm in algorithms:
                mine = [(g, acc) for g, acc in scored if (g.dataset, g.algorithm) == (dataset, algorithm)]
                for test_env in range(len(environments[dataset])):
                    cells.append(
                        Cell(method, dataset, algorithm, test_env, [a for g, a in mine if g.test_env == test_env])
                    )
                per_trial: dict[Any, list[float]] = defaultdict(list)
                for g, acc in mine:
                    per_trial[g.trial_seed].append(acc)
                averages = [float(np.mean(values)) for _, values in sorted(per_trial.items())]
                cells.append(Cell(method, dataset, algorithm, None, averages))
    return {
        "datasets": datasets,
        "algorithms": algorithms,
        "environments": environments,
        "cells": cells,
        "test_accuracy": test_accuracy,
    }


def _row_text(cells: Sequence[Cell], latex: bool) -> list[str]:
    formatted = [format_mean(cell.accs, latex) for cell in cells]
    means = [mean for mean, _, _ in formatted]
    avg = "X" if None in means else f"{sum(means) / len(means):.1f}"
    return [text for _, _, text in formatted] + [avg]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], latex: bool) -> list[str]:
    if latex:
        lines = [
            "\\begin{center}",
            "\\adjustbox{max width=\\textwidth}{%",
            "\\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
            "\\toprule",
            " & ".join("\\textbf{" + h.replace("_", "\\_").replace("%", "\\%") + "}" for h in header) + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join(c.replace("_", "\\_") for c in row) + " \\\\" for row in rows]
        return lines + ["\\bottomrule", "\\end{tabular}}", "\\end{center}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_tables(table: Mapping[str, Any], latex: bool = False) -> str:
    """The tables of :func:`results`, per selection method: one per dataset (algorithm x test environment, Avg) and
    the averages table (algorithm x dataset, Avg); Markdown, or LaTeX (booktabs) with ``latex``."""
    out: list[str] = []
    cells = table["cells"]
    if table["test_accuracy"] != "direct":
        out += [f"Test accuracy: {table['test_accuracy']} (the chosen checkpoints' env<i>_in_reasoning_acc).", ""]
    for method in SELECTION_METHODS:
        out.append(
            f"\\subsection{{Model selection: {method.name}}}" if latex else f"## Model selection: {method.name}"
        )
        for dataset in table["datasets"]:
            out += ["", f"\\subsubsection{{{dataset}}}" if latex else f"### Dataset: {dataset}", ""]
            rows = []
            for algorithm in table["algorithms"]:
                mine = [
                    c
                    for c in cells
                    if c.selection_method is method
                    and (c.dataset, c.algorithm) == (dataset, algorithm)
                    and c.test_env is not None
                ]
                rows.append([algorithm, *_row_text(mine, latex)])
            out += _table(["Algorithm", *table["environments"][dataset], "Avg"], rows, latex)
        out += ["", "\\subsubsection{Averages}" if latex else "### Averages", ""]
        rows = []
        for algorithm in table["algorithms"]:
            mine = [
                c
                for dataset in table["datasets"]
                for c in cells
                if c.selection_method is method and (c.dataset, c.algorithm, c.test_env) == (dataset, algorithm, None)
            ]
            rows.append([algorithm, *_row_text(mine, latex)])
        out += _table(["Algorithm", *table["datasets"], "Avg"], rows, latex)
        out.append("")
    return "\n".join(out)


def results_json(table: Mapping[str, Any], loaded: LoadedRecords) -> dict[str, Any]:
    """``{"results": [...], "averages": [...], "records": n, "refused": [...]}``: a cell per (selection method,
    dataset, algorithm, test environment) with ``mean`` and ``stderr`` in percent and the number of ``trials``
    (cells without trials are left out)."""
    out: dict[str, list[dict[str, Any]]] = {"results": [], "averages": []}
    for cell in table["cells"]:
        if not cell.accs:
            continue
        mean, err, _ = format_mean(cell.accs)
        entry = {
            "selection_method": cell.selection_method.name,
            "dataset": cell.dataset,
            "algorithm": cell.algorithm,
            "mean": mean,
            "stderr": err,
            "trials": len(cell.accs),
        }
        if cell.test_env is None:
            out["averages"].append(entry)
        else:
            out["results"].append({**entry, "test_env": cell.test_env})
    return {
        **out,
        "test_accuracy": table["test_accuracy"],
        "records": len(loaded.records),
        "runs": loaded.runs,
        "unfinished_runs": loaded.unfinished,
        "refused": loaded.refused,
    }
