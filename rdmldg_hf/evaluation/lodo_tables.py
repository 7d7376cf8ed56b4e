"""The tables of a leave-one-domain-out run: accuracy per method and held-out domain, and ``results.md``."""

from __future__ import annotations

from typing import Any, Mapping

from ..benchmarks import Benchmark
from ..methods import METHODS
from ..protocol import describe_rows

__all__ = ["results_table", "render_results_md"]


def results_table(results: Mapping[str, Any], benchmark: Benchmark) -> dict[str, dict[str, dict[str, float]]]:
    """mode -> method -> {domain: accuracy %, "avg": mean over the domains done}."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method, runs in results["runs"].items():
        for domain in benchmark.domains:
            for mode, metrics in (runs.get(domain) or {}).get("test", {}).items():
                table.setdefault(mode, {}).setdefault(method, {})[domain] = round(100 * metrics["accuracy"], 2)
    for methods in table.values():
        for row in methods.values():
            row["avg"] = round(sum(row.values()) / len(row), 2)
    return table


def _protocol_line(settings: Mapping[str, Any]) -> str:
    """How the pairs were split and selected, in one line (from the run's settings)."""
    train = settings.get("max_train_images_per_domain")
    sample = (
        f"a stratified sample of {train} in-part images per training domain (seed {settings.get('sample_seed', 0)})"
        if train
        else "their whole in-part"
    )
    return (
        f"Protocol: holdout {settings.get('holdout_style', 'hash')} (fraction {settings.get('holdout_fraction')}, "
        f"seed {settings.get('holdout_seed')}); training on {sample}; selection on the "
        f"{'unweighted mean of per-domain' if settings.get('selection_rule', 'mean') == 'mean' else 'pooled'} "
        f"validation accuracy, checked at select_every={settings.get('select_every')}."
    )


def _test_images_line(results: Mapping[str, Any], mode: str, order: list[str], domains: list[str]) -> str:
    """What each held-out domain's test rows were in ``mode`` (whole domain, in-part, or a sample of them)."""
    seen: dict[str, str] = {}
    for method in order:
        for domain in domains:
            about = ((results["runs"][method].get(domain) or {}).get("test", {}).get(mode) or {}).get("rows")
            if about is not None:
                seen.setdefault(domain, f"{describe_rows(about)} ({sum(about['images_per_domain'].values())} images)")
    return "Test images: " + "; ".join(f"{domain}: {text}" for domain, text in seen.items()) + "."


def render_results_md(results: Mapping[str, Any], benchmark: Benchmark) -> str:
    """Paper-shaped tables: one per prediction mode, a row per method, a column per held-out domain + Avg.

    Each table says which test images it scored (the whole held-out domain, its in-part, or a seeded sample).
    """
    table = results_table(results, benchmark)
    domains = [d for d in benchmark.domains if any(d in r for m in table.values() for r in m.values())]
    protocol = _protocol_line(results.get("settings", {}))
    lines = [f"# Leave-one-domain-out on {benchmark.title} (accuracy %)", "", protocol, ""]
    order = [m for m in METHODS if m in results["runs"]]
    for mode, methods in table.items():
        lines += [
            f"## Prediction mode: {mode}",
            "",
            _test_images_line(results, mode, order, domains),
            "",
            "| Method | " + " | ".join(domains) + " | Avg |",
            "|---|" + "---|" * (len(domains) + 1),
        ]
        for method in order:
            if method not in methods:
                continue
            row = methods[method]
            cells = [f"{row[d]:.2f}" if d in row else "-" for d in domains]
            lines.append(f"| {METHODS[method].title} | " + " | ".join(cells) + f" | {row['avg']:.2f} |")
        lines.append("")
    lines += [
        "## Runs",
        "",
        "| Method | Held out | Train images | Selected | Validation acc. | Invalid (reasoning) | Seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in order:
        for domain in benchmark.domains:
            run = results["runs"][method].get(domain)
            if not run:
                continue
            invalid = run["test"].get("reasoning", {}).get("invalid_rate")
            invalid_text = "-" if invalid is None else f"{100 * invalid:.2f}"
            lines.append(
                f"| {METHODS[method].title} | {domain} | {run['train_images']} | {run['selected']} | "
                f"{100 * run['validation_accuracy']:.2f} | {invalid_text} | {run['seconds']} |"
            )
    return "\n".join(lines) + "\n"
