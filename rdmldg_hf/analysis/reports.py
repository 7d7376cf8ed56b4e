"""The four analyses end to end: data and models in, figures + numbers + a manifest out.

Each ``*_report`` function writes its PNG figures (one per file, see :mod:`.plots`), the
CSV of every figure's plotted numbers, the per-item numbers behind them, and
``manifest.json`` listing everything, then returns the :class:`Report`. Models are given
as ``(label, loader)`` pairs and loaded one at a time, so large checkpoints are never
held together.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..generation import GenerationSettings
from .entropy import entropy_changes, marked_examples, stage_changes, top_reductions
from .losses import read_run_logs
from .plots import FigureFile, bar_figure, histogram_figure, line_figure, write_csv
from .probabilities import CONDITIONS, chain_token_scores, class_probabilities, self_chains

__all__ = [
    "CHAIN_SOURCES",
    "ModelLoader",
    "AnalysisData",
    "load_analysis_data",
    "Report",
    "class_probs_report",
    "token_probs_report",
    "entropy_report",
    "losses_report",
]

logger = logging.getLogger(__name__)

CHAIN_SOURCES: tuple[str, ...] = ("teacher", "self")
ModelLoader = tuple[str, Callable[[], tuple[Any, Any]]]  # (label, () -> (model, processor))

_CONDITION_TITLES = {
    "direct": "direct question",
    "teacher_chain": "after the teacher chain",
    "generated_chain": "after the generated chain",
}


@dataclass
class AnalysisData:
    """The images an analysis runs on, with what is known about each."""

    images: list[Any]
    labels: list[int]
    domains: list[str]
    image_ids: list[str]
    groups: list[str]
    chains: list[str | None]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def select(self, indices: Sequence[int]) -> "AnalysisData":
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return AnalysisData(
            pick(self.images),
            pick(self.labels),
            pick(self.domains),
            pick(self.image_ids),
            pick(self.groups),
            pick(self.chains),
            list(self.class_names),
        )


def load_analysis_data(
    dataset: Any,
    class_names: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    test_domain: str | None = None,
    holdout_fraction: float = 0.0,
    holdout_seed: int | None = None,
    max_images: int | None = None,
    seed: int = 0,
    holdout_style: str = "hash",
) -> AnalysisData:
    """Images of a benchmark (``Dataset`` or ``DatasetDict`` of domain splits) grouped as source / target.

    ``test_domain``'s images are the ``target`` group; the other domains' images are the
    ``source`` group, restricted to the training (in) part of the run's holdout
    (``holdout_fraction``, ``holdout_seed``, ``holdout_style``, computed on whole domains) when
    ``holdout_fraction > 0``. Without a ``test_domain`` every image is in group ``all``.
    ``max_images`` caps each domain (a seeded sample stratified by class).
    """
    from datasets import DatasetDict, concatenate_datasets

    from ..benchmarks import display_name, normalize_name
    from ..protocol.holdout import DEFAULT_HOLDOUT_SEED, split_holdout
    from ..protocol.subsets import stratified_sample

    wanted = [normalize_name(d) for d in domains] if domains else None
    if isinstance(dataset, DatasetDict):
        names = list(dataset)
        unknown = [d for d in wanted or [] if d not in names]
        if unknown:
            raise ValueError(f"Unknown domain(s) {unknown}. Valid domains: {', '.join(names)}.")
        dataset = concatenate_datasets([dataset[n] for n in names])
    if class_names is None:
        class_names = [display_name(c) for c in dataset.features["label"].names]
    test = normalize_name(test_domain) if test_domain else None
    if test is not None and holdout_fraction > 0:
        seed_of_split = DEFAULT_HOLDOUT_SEED if holdout_seed is None else holdout_seed
        trained = set(split_holdout(dataset, holdout_fraction, seed_of_split, holdout_style)[0]["image_id"])
        dataset = dataset.filter(lambda d, i: d == test or i in trained, input_columns=["domain", "image_id"])
    parts = []
    for domain in sorted(set(dataset["domain"]) & set(wanted or dataset["domain"])):
        part = dataset.filter(lambda d, domain=domain: d == domain, input_columns="domain")
        if max_images is not None and len(part) > max_images:
            part = stratified_sample(part, max_images, seed)
        parts.append(part)
    if not parts or sum(len(p) for p in parts) == 0:
        raise ValueError("No images to analyse: check --domains and --max-images.")
    rows = concatenate_datasets(parts)
    row_domains = list(rows["domain"])
    has_chain = "reasoning" in rows.column_names
    return AnalysisData(
        images=list(rows["image"]),
        labels=[int(label) for label in rows["label"]],
        domains=row_domains,
        image_ids=list(rows["image_id"]) if "image_id" in rows.column_names else [str(i) for i in range(len(rows))],
        groups=["all" if test is None else ("target" if d == test else "source") for d in row_domains],
        chains=list(rows["reasoning"]) if has_chain else [None] * len(rows),
        class_names=list(class_names),
    )


@dataclass
class Report:
    """What an analysis wrote: figures (with their CSVs), other files, and a summary."""

    out_dir: str
    figures: list[FigureFile] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def write_manifest(self, analysis: str) -> Path:
        path = Path(self.out_dir) / "manifest.json"
        manifest = {
            "analysis": analysis,
            "figures": [f.to_dict() for f in self.figures],
            "files": self.files,
            "summary": self.summary,
        }
        path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
        self.files.append(str(path))
        return path

    def format(self) -> str:
        """Lines naming every written file (the CLI prints them)."""
        lines = [f"Figures in {self.out_dir}:"]
        lines += [
            f"  {f.png}  ({f.width_px}x{f.height_px} px; numbers: {os.path.basename(f.data)})" for f in self.figures
        ]
        lines += [f"  {path}" for path in self.files]
        return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def class_probs_report(
    models: Sequence[ModelLoader],
    data: AnalysisData,
    out_dir: str | Path,
    conditions: Sequence[str] = CONDITIONS,
    generation: GenerationSettings | None = None,
    batch_size: int = 16,
    bins: int = 20,
) -> Report:
    """Histograms of the correct class's probability, one figure per condition and image group, models overlaid."""
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for label, load in models:
        model, processor = load()
        probs = class_probabilities(
            model,
            processor,
            data.images,
            data.labels,
            data.class_names,
            conditions,
            data.chains,
            generation,
            batch_size,
        )
        for i, p in enumerate(probs):
            row = {
                "model": label,
                "image_id": data.image_ids[i],
                "domain": data.domains[i],
                "group": data.groups[i],
                "label": data.class_names[data.labels[i]],
            }
            row.update({f"p_{c}": _clean(p.get(c)) for c in CONDITIONS})
            if p.generated_prediction is not None:
                row["generated_prediction"] = (
                    data.class_names[p.generated_prediction] if p.generated_prediction >= 0 else ""
                )
                row["generated_valid"] = p.generated_valid
            rows.append(row)
        del model
    report = Report(str(out))
    columns = [
        "model",
        "image_id",
        "domain",
        "group",
        "label",
        *(f"p_{c}" for c in CONDITIONS),
        "generated_prediction",
        "generated_valid",
    ]
    report.files.append(str(write_csv(out / "class_probs.csv", rows, columns)))
    labels = [label for label, _ in models]
    summary: dict[str, Any] = {}
    for condition in conditions:
        for group in sorted(set(data.groups)):
            series = {
                m: [
                    r[f"p_{condition}"]
                    for r in rows
                    if r["model"] == m and r["group"] == group and r[f"p_{condition}"] is not None
                ]
                for m in labels
            }
            title = f"p(correct class), {_CONDITION_TITLES[condition]}; {group} images"
            report.figures.append(
                histogram_figure(
                    out, f"class_probs_{condition}_{group}", series, "probability of the correct class", title, bins
                )
            )
            for m, values in series.items():
                summary.setdefault(m, {}).setdefault(condition, {})[group] = {"n": len(values), "mean": _mean(values)}
    report.summary = {"mean_probability": summary, "images": len(data)}
    report.write_manifest("class-probs")
    return report


def _chains_for(
    source: str, models: Sequence[ModelLoader], data: AnalysisData, keep: str, generation: GenerationSettings | None
) -> tuple[AnalysisData, list[str], dict[str, Any]]:
    """The images and chains of a chain source: the dataset's chains, or the last model's own."""
    if source == "teacher":
        indices = [i for i, c in enumerate(data.chains) if c and c.strip()]
        info = {"images": len(data), "with_chain": len(indices)}
        return data.select(indices), [data.chains[i] for i in indices], info
    if source == "self":
        label, load = models[-1]
        model, processor = load()
        kept, counts = self_chains(model, processor, data.images, data.labels, data.class_names, keep, generation)
        del model
        return (
            data.select([c.index for c in kept]),
            [c.text for c in kept],
            {"written_by": label, "keep": keep, **counts},
        )
    raise ValueError(f"Unknown chain source {source!r}. Valid: {', '.join(CHAIN_SOURCES)}.")


def token_probs_report(
    models: Sequence[ModelLoader],
    data: AnalysisData,
    out_dir: str | Path,
    sources: Sequence[str] = ("teacher",),
    keep: str = "correct",
    generation: GenerationSettings | None = None,
    batch_size: int = 16,
    bins: int = 20,
) -> Report:
    """Distributions of the teacher-forced probability of every chain token.

    ``self`` chains are written by the last model of ``models`` (the fine-tuned one) and
    scored by every model, so models are compared on the same tokens. One figure per
    chain source (models overlaid) and, with several sources, one per model (sources overlaid).
    """
    out = Path(out_dir)
    chain_sets = {s: _chains_for(s, models, data, keep, generation) for s in sources}
    probs: dict[tuple[str, str], list[float]] = {}
    token_rows: list[dict[str, Any]] = []
    for label, load in models:
        model, processor = load()
        for source, (subset, chains, _) in chain_sets.items():
            scores = (
                chain_token_scores(
                    model, processor, subset.images, subset.labels, chains, data.class_names, batch_size
                )
                if chains
                else []
            )
            probs[(label, source)] = [p for s in scores for p in s.probs]
            for i, score in enumerate(scores):
                for position, (piece, p, h) in enumerate(zip(score.tokens, score.probs, score.entropies)):
                    token_rows.append(
                        {
                            "model": label,
                            "chains": source,
                            "image_id": subset.image_ids[i],
                            "position": position,
                            "token": piece,
                            "prob": p,
                            "entropy": h,
                        }
                    )
        del model
    report = Report(str(out))
    report.files.append(
        str(
            write_csv(
                out / "token_probs.csv",
                token_rows,
                ["model", "chains", "image_id", "position", "token", "prob", "entropy"],
            )
        )
    )
    labels = [label for label, _ in models]
    for source in sources:
        series = {m: probs[(m, source)] for m in labels}
        report.figures.append(
            histogram_figure(
                out,
                f"token_probs_{source}",
                series,
                "token probability (teacher-forced)",
                f"All tokens of {source} chains",
                bins,
                log_y=True,
            )
        )
    if len(sources) > 1:
        for m in labels:
            series = {f"{s} chains": probs[(m, s)] for s in sources}
            report.figures.append(
                histogram_figure(
                    out,
                    f"token_probs_{_slug(m)}",
                    series,
                    "token probability (teacher-forced)",
                    f"All chain tokens, {m}",
                    bins,
                    log_y=True,
                )
            )
    report.summary = {
        "chains": {s: info for s, (_, _, info) in chain_sets.items()},
        "mean_token_probability": {f"{m} / {s}": _mean(v) for (m, s), v in probs.items()},
        "tokens": {f"{m} / {s}": len(v) for (m, s), v in probs.items()},
    }
    report.write_manifest("token-probs")
    return report


def entropy_report(
    before: ModelLoader,
    after: ModelLoader,
    data: AnalysisData,
    out_dir: str | Path,
    source: str = "teacher",
    top: int = 15,
    min_count: int = 3,
    examples: int = 3,
    keep: str = "correct",
    generation: GenerationSettings | None = None,
    batch_size: int = 16,
) -> Report:
    """Entropy reduction (before - after) per token type and per chain stage, on the same chains.

    Figures: the ``top`` types with the largest mean reduction (types with at least
    ``min_count`` occurrences), and the mean reduction per stage. ``entropy_examples.md``
    shows where the top types occur, marked in their chains.
    """
    out = Path(out_dir)
    subset, chains, info = _chains_for(source, [before, after], data, keep, generation)
    if not chains:
        raise ValueError(f"No {source} chains to score ({info}); use other images or --chains teacher.")
    scores = []
    for label, load in (before, after):
        model, processor = load()
        scores.append(
            chain_token_scores(model, processor, subset.images, subset.labels, chains, data.class_names, batch_size)
        )
        del model
    changes = entropy_changes(*scores)
    ranked = top_reductions(changes, top, min_count)
    stages = stage_changes(*scores)
    report = Report(str(out))
    all_rows = [c.to_dict() for c in sorted(changes, key=lambda c: (-c.reduction, -c.count, c.group))]
    report.files.append(
        str(write_csv(out / "entropy_by_token.csv", all_rows, ["group", "count", "before", "after", "reduction"]))
    )
    pair = f"{before[0]} -> {after[0]}"
    for name, groups, title in (
        ("entropy_top_tokens", ranked, f"Top {len(ranked)} tokens, {pair}"),
        ("entropy_by_stage", stages, f"Entropy reduction per stage, {pair}"),
    ):
        report.figures.append(
            bar_figure(
                out,
                name,
                [c.group for c in groups],
                [c.reduction for c in groups],
                "mean entropy reduction (nats)",
                title,
                extra=[{"count": c.count, "before": c.before, "after": c.after} for c in groups],
            )
        )
    lines = [f"# Where the tokens with the largest entropy reduction occur ({pair}, {source} chains)", ""]
    for rank, change in enumerate(ranked, 1):
        lines.append(
            f"## {rank}. `{change.group}`: {change.before:.3f} -> {change.after:.3f} nats over {change.count} tokens"
        )
        lines += [f"- {line}" for line in marked_examples(change.group, *scores, max_examples=examples)]
        lines.append("")
    examples_path = out / "entropy_examples.md"
    examples_path.write_text("\n".join(lines))
    report.files.append(str(examples_path))
    tokens = sum(c.count for c in changes)
    report.summary = {
        "chains": info,
        "tokens": tokens,
        "mean_entropy_before": sum(c.before * c.count for c in changes) / max(tokens, 1),
        "mean_entropy_after": sum(c.after * c.count for c in changes) / max(tokens, 1),
        "top": [c.to_dict() for c in ranked],
        "stages": [c.to_dict() for c in stages],
    }
    report.write_manifest("entropy")
    return report


def losses_report(run: str | Path, out_dir: str | Path) -> Report:
    """Classification and reasoning loss per step, one line per round (and the total loss)."""
    out = Path(out_dir)
    rounds = read_run_logs(run)
    report = Report(str(out))
    rows = [{"round": r.name, **point} for r in rounds for point in r.points]
    report.files.append(
        str(write_csv(out / "losses.csv", rows, ["round", "step", "epoch", "loss", "cls_loss", "reasoning_loss"]))
    )
    titles = {"cls_loss": "Classification loss", "reasoning_loss": "Reasoning loss", "loss": "Total loss"}
    for key, title in titles.items():
        series = {r.name: r.series(key) for r in rounds if r.series(key)[0]}
        if series:
            ylabel = f"{title.lower()} ({key})"
            report.figures.append(
                line_figure(out, f"losses_{key}", series, "step (within the round)", ylabel, f"{title} per round")
            )
    report.summary = {
        "rounds": [
            {
                "round": r.name,
                "source": r.source,
                "steps": len(r.points),
                **{f"first_{k}": r.series(k)[1][0] for k in titles if r.series(k)[1]},
                **{f"last_{k}": r.series(k)[1][-1] for k in titles if r.series(k)[1]},
            }
            for r in rounds
        ]
    }
    report.write_manifest("losses")
    return report
