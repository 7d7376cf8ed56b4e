"""Figures of the analyses: one figure per PNG file, with the plotted numbers beside it.

Every figure is drawn with matplotlib's Agg backend (no display) at a fixed size in
inches and :data:`DPI`, so its pixel size is known in advance (:data:`PANEL` is a
single-column paper figure). Each ``<name>.png`` gets a ``<name>.csv`` holding exactly
the numbers drawn (histogram bins and counts, bar values, line points).
"""

from __future__ import annotations

import csv
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "DPI",
    "PANEL",
    "TALL",
    "FigureFile",
    "write_csv",
    "histogram_figure",
    "bar_figure",
    "line_figure",
    "confusion_figure",
]

DPI = 200
PANEL = (3.5, 2.6)  # inches: one column of a two-column paper -> 700 x 520 px
TALL = (3.5, 3.8)  # inches: bar charts with one labelled bar per row -> 700 x 760 px


@dataclass(frozen=True)
class FigureFile:
    """A written figure: PNG path, the CSV of its numbers, its size in pixels and what it shows."""

    name: str
    png: str
    data: str
    width_px: int
    height_px: int
    title: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (columns: ``columns`` or the first row's keys); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if np.isnan(value) else repr(value)
    return "" if value is None else value


def _figure(size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "legend.fontsize": 6})
    fig, ax = plt.subplots(figsize=size, dpi=DPI)
    return fig, ax


MAX_LABEL = 20


def _short(label: str) -> str:
    """A tick label of at most ``MAX_LABEL`` characters: long (phrase) tokens keep their end."""
    return label if len(label) <= MAX_LABEL else "…" + label[-(MAX_LABEL - 1) :]


def _title(ax: Any, title: str, size: tuple[float, float]) -> None:
    """The title, wrapped to the figure's width."""
    ax.set_title("\n".join(textwrap.wrap(title, width=int(size[0] * 13))))


def _save(
    fig: Any, out_dir: Path, name: str, title: str, rows: list[dict[str, Any]], columns: Sequence[str]
) -> FigureFile:
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png, data = out_dir / f"{name}.png", out_dir / f"{name}.csv"
    fig.tight_layout(pad=0.4)
    fig.savefig(png, dpi=DPI)  # no bbox_inches="tight": the pixel size stays figsize * DPI
    width, height = (round(v) for v in fig.get_size_inches() * DPI)
    plt.close(fig)
    write_csv(data, rows, columns)
    return FigureFile(name, str(png), str(data), width, height, title)


def histogram_figure(
    out_dir: str | Path,
    name: str,
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    title: str,
    bins: int = 20,
    value_range: tuple[float, float] = (0.0, 1.0),
    log_y: bool = False,
    size: tuple[float, float] = PANEL,
) -> FigureFile:
    """Overlaid histograms (fraction of values per bin), one step line per series.

    The CSV holds ``series, bin_left, bin_right, count, fraction, n, mean`` per bin;
    NaN values are left out of the counts (and of ``n``).
    """
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    fig, ax = _figure(size)
    rows: list[dict[str, Any]] = []
    for label, values in series.items():
        array = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
        counts, _ = np.histogram(np.clip(array, value_range[0], value_range[1]), bins=edges)
        fraction = counts / max(len(array), 1)
        mean = float(array.mean()) if len(array) else float("nan")
        ax.stairs(fraction, edges, label=f"{label} (n={len(array)}, mean {mean:.3f})", linewidth=1.2)
        for left, right, count, share in zip(edges[:-1], edges[1:], counts, fraction):
            rows.append(
                {
                    "series": label,
                    "bin_left": float(left),
                    "bin_right": float(right),
                    "count": int(count),
                    "fraction": float(share),
                    "n": len(array),
                    "mean": mean,
                }
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction" + (" (log scale)" if log_y else ""))
    if log_y:
        ax.set_yscale("log")
    ax.set_xlim(*value_range)
    _title(ax, title, size)
    if series:
        ax.legend(frameon=False, loc="best")
    return _save(
        fig, Path(out_dir), name, title, rows, ["series", "bin_left", "bin_right", "count", "fraction", "n", "mean"]
    )


def bar_figure(
    out_dir: str | Path,
    name: str,
    labels: Sequence[str],
    values: Sequence[float],
    xlabel: str,
    title: str,
    extra: Sequence[Mapping[str, Any]] | None = None,
    size: tuple[float, float] = TALL,
) -> FigureFile:
    """Horizontal bars, the first label on top. The CSV holds ``rank, label, value`` (+ ``extra`` columns).

    Tick labels longer than :data:`MAX_LABEL` characters keep their end after "…" (the CSV keeps them whole).
    """
    fig, ax = _figure(size)
    positions = np.arange(len(labels))
    ax.barh(positions, values, color="tab:blue")
    ax.set_yticks(positions, labels=[_short(label) for label in labels])
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel(xlabel)
    _title(ax, title, size)
    rows = [
        {"rank": i + 1, "label": label, "value": float(value), **(dict(extra[i]) if extra else {})}
        for i, (label, value) in enumerate(zip(labels, values))
    ]
    columns = ["rank", "label", "value"] + [
        k for k in (extra[0] if extra else {}) if k not in ("rank", "label", "value")
    ]
    return _save(fig, Path(out_dir), name, title, rows, columns)


def line_figure(
    out_dir: str | Path,
    name: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    size: tuple[float, float] = PANEL,
) -> FigureFile:
    """One line per series of ``(x, y)`` points. The CSV holds ``series, x, y`` per point."""
    fig, ax = _figure(size)
    rows = []
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=2, linewidth=1.1, label=label)
        rows += [{"series": label, "x": float(x), "y": float(y)} for x, y in zip(xs, ys)]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, title, size)
    if series:
        ax.legend(frameon=False, loc="best")
    return _save(fig, Path(out_dir), name, title, rows, ["series", "x", "y"])


def confusion_figure(
    out_dir: str | Path,
    name: str,
    labels: Sequence[int],
    predictions: Sequence[int],
    class_names: Sequence[str],
    title: str,
) -> FigureFile:
    """Confusion matrix: a row per true class, a column per predicted class plus ``invalid`` (prediction -1).

    Cells are counts, coloured by the row's share. The CSV holds ``true, predicted, count`` for every cell.
    """
    columns = list(class_names) + ["invalid"]
    counts = np.zeros((len(class_names), len(columns)), dtype=int)
    for label, prediction in zip(labels, predictions):
        counts[int(label), int(prediction) if prediction >= 0 else len(class_names)] += 1
    side = max(PANEL[0], 0.9 + 0.16 * len(columns))
    size = (side, side)
    fig, ax = _figure(size)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(np.arange(len(columns)), labels=[_short(c) for c in columns], rotation=90)
    ax.set_yticks(np.arange(len(class_names)), labels=[_short(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(columns) <= 16:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                ax.text(
                    column,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=5,
                    color="white" if shares[row, column] > 0.5 else "black",
                )
    _title(ax, title, size)
    rows = [
        {"true": class_names[row], "predicted": columns[column], "count": int(count)}
        for (row, column), count in np.ndenumerate(counts)
    ]
    return _save(fig, Path(out_dir), name, title, rows, ["true", "predicted", "count"])
