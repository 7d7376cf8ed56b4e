"""``rdmldg collect``: results tables from per-checkpoint records, as DomainBed's ``collect_results.py``.

    rdmldg collect OUT                    # Markdown: per selection method, a table per dataset and the averages
    rdmldg collect OUT --latex            # the same in LaTeX (booktabs)
    rdmldg collect OUT --test_accuracy reasoning   # the chosen checkpoints' accuracy with generated chains
    rdmldg collect OUT --format json      # {"results": [{"selection_method", "dataset", "algorithm", "test_env",
                                          #   "mean", "stderr", "trials"}, ...], "averages": [...], ...}

Reads ``OUT/<run>/results.jsonl`` (several folders may be given); records whose ``args`` disagree with their run
folder's are refused and listed.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..atomic import atomic_write

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="+", metavar="DIR", help="Sweep output folder(s): one run folder each.")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown", help="Output format.")
    parser.add_argument("--latex", action="store_true", help="LaTeX tables instead of Markdown.")
    parser.add_argument(
        "--test_accuracy",
        choices=("direct", "reasoning"),
        default="direct",
        help="The chosen checkpoints' test accuracy reported: direct answers (env<i>_in_acc, DomainBed's) or "
        "generated chains (env<i>_in_reasoning_acc, recorded with --eval_reasoning_every).",
    )
    parser.add_argument("--output", help="Also write the output to this file.")


def run(args: argparse.Namespace) -> int:
    from ..experiments.collect import load_records, render_tables, results, results_json

    loaded = load_records(args.folders)
    table = results(loaded.records, args.test_accuracy)
    if args.format == "json":
        text = json.dumps(results_json(table, loaded), indent=2)
    else:
        text = render_tables(table, latex=args.latex)
    print(loaded.summary(), file=sys.stderr)
    print(text)
    if args.output:
        atomic_write(args.output, text + "\n")
    return 0
