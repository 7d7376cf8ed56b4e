"""``rdmldg eval``: accuracy of a model, an adapter or an API model on domains of a dataset config.

    rdmldg eval --adapter someone/rdmldg-officehome-art --dataset rdmldg/domainbed-reasoning \\
                --config officehome --domains art --mode reasoning
    rdmldg eval --api gpt-4o --dataset ... --config pacs --domains sketch            # zero-shot API baseline
    rdmldg eval --model ... --icl-shots 4 --icl-demos balanced ...                   # in-context baseline
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..protocol.holdout import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_HOLDOUT_SEED,
    DEFAULT_HOLDOUT_STYLE,
    HOLDOUT_STYLES,
    split_holdout,
)
from ..protocol.subsets import DEFAULT_SAMPLE_SEED, describe_rows, sample_record, stratified_sample
from . import add_device_arguments, device_kwargs

__all__ = ["add_arguments", "run", "format_metrics"]

logger = logging.getLogger(__name__)


PARTS = {"whole": "whole domain", "in": "in part", "out": "out part (validation)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..evaluation.icl import STRATEGIES
    from ..evaluation.predict import MODES
    from ..teacher.arguments import add_request_arguments

    what = parser.add_argument_group("what to evaluate (an adapter, a model, or an API model)")
    what.add_argument(
        "--model", help="Base or full model (folder or Hub id); with --adapter, replaces the adapter's base."
    )
    what.add_argument("--adapter", help="An rdmldg output with a PEFT adapter (folder or Hub id).")
    what.add_argument(
        "--api", metavar="MODEL", help="An OpenAI-compatible chat model id (e.g. gpt-4o): zero-shot baseline."
    )
    api = parser.add_argument_group(
        "--api requests", "How the API model is asked (the same options as `rdmldg build --teacher`)."
    )
    add_request_arguments(api)
    api.add_argument(
        "--store", help="Resumable reply store of --api (default: beside --output, or ./rdmldg-eval-store)."
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="Dataset repo id or local Hub-layout folder.")
    data.add_argument("--config", required=True, help="Dataset config (a benchmark, e.g. officehome).")
    data.add_argument(
        "--benchmark",
        help="The dataset's benchmark (e.g. officehome): needed when its label column is not a ClassLabel of "
        "a benchmark's classes (default: found from the label classes).",
    )
    data.add_argument("--domains", nargs="+", help="Domains (splits) to evaluate (default: all of the config).")
    data.add_argument(
        "--limit", type=int, help="Evaluate a seeded sample of N images per domain, stratified by class (default all)."
    )
    data.add_argument("--sample-seed", type=int, default=DEFAULT_SAMPLE_SEED, help="Seed of the --limit sample.")
    data.add_argument(
        "--split",
        default="whole",
        choices=("whole", "in", "out"),
        help="Part of each domain: whole (default), or the in/out part of the holdout (out = validation images).",
    )
    data.add_argument("--holdout-fraction", type=float, help="Holdout of --split (default: the adapter's, else 0.2).")
    data.add_argument("--holdout-seed", type=int, help="Seed of the holdout (default: the adapter's, else 0).")
    data.add_argument(
        "--holdout-style", choices=HOLDOUT_STYLES, help="Holdout style (default: the adapter's, else hash)."
    )
    how = parser.add_argument_group("how")
    how.add_argument("--mode", default="direct", choices=MODES, help="Prediction mode (default: direct).")
    how.add_argument("--batch-size", type=int, default=16, help="Images per forward pass / generate call.")
    how.add_argument(
        "--max-new-tokens", type=int, help="Generation length (default 16 direct-generate, 256 reasoning)."
    )
    how.add_argument("--icl-shots", type=int, default=0, help="In-context demos per image (0: zero-shot).")
    how.add_argument("--icl-demos", default="random", choices=STRATEGIES, help="How demos are chosen.")
    how.add_argument("--icl-seed", type=int, default=0, help="Seed of the demo draws.")
    add_device_arguments(how)
    parser.add_argument(
        "--output", help="Write the results record (results.json) here, and the per-image predictions beside it."
    )
    parser.add_argument(
        "--confusion-matrix", action="store_true", help="Also draw the confusion matrix (PNG + CSV) beside --output."
    )


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A few lines: accuracy per domain, mean, invalid-output rate, unreadable images."""
    lines = [title] if title else []
    lines.append(f"{'domain':<16} {'images':>7} {'accuracy':>9} {'invalid':>8}")
    for domain, accuracy in metrics["per_domain"].items():
        lines.append(
            f"{domain:<16} {metrics['count_per_domain'][domain]:>7} {100 * accuracy:>8.2f}% "
            f"{100 * metrics['invalid_per_domain'][domain]:>7.2f}%"
        )
    lines.append(
        f"{'mean':<16} {sum(metrics['count_per_domain'].values()):>7} "
        f"{100 * metrics['mean_accuracy']:>8.2f}% {100 * metrics['invalid_rate']:>7.2f}%"
    )
    if metrics.get("unlabeled"):
        lines.append(
            f"{metrics['unlabeled']} images without a label (-1) left out of the accuracy: "
            f"{metrics['unlabeled_per_domain']}"
        )
    if metrics.get("unreadable"):
        lines.append(
            f"{metrics['unreadable']} images could not be decoded (scored as wrong): "
            f"{metrics['unreadable_per_domain']}"
        )
    if metrics.get("failed"):
        lines.append(
            f"{metrics['failed']} requests failed after all their retries (left out of the accuracy): "
            f"{metrics['failed_per_domain']}; the first error: {metrics['first_failure']}"
        )
    return "\n".join(lines)


def _check_sources(args: argparse.Namespace) -> None:
    if args.api and (args.model or args.adapter):
        raise ValueError("--api evaluates an API model; do not combine it with --model or --adapter.")
    if not (args.api or args.model or args.adapter):
        raise ValueError("Nothing to evaluate: give --adapter, --model or --api.")
    if args.api and args.icl_shots:
        raise ValueError("--icl-shots is for local models; the --api baseline is zero-shot.")
    if args.api and (args.device, args.dtype, args.use_kernels) != ("auto", "auto", False):
        raise ValueError("--device, --dtype and --use-kernels place a local model; drop them with --api.")
    if args.api and args.mode != "reasoning":
        logger.info("--api asks the reasoning question of the teacher; mode set to 'reasoning'.")
        args.mode = "reasoning"
    if args.icl_shots < 0:
        raise ValueError(f"--icl-shots must be 0 or more; got {args.icl_shots}.")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be 1 or more images per domain; got {args.limit}.")
    if args.confusion_matrix and not args.output:
        raise ValueError("--confusion-matrix draws beside the results file: give --output too.")
    given = [f"--holdout-{k}" for k in ("fraction", "seed", "style") if getattr(args, f"holdout_{k}") is not None]
    if given and args.split == "whole":
        raise ValueError(f"{', '.join(given)} set the holdout of --split in/out; add --split out or in, or drop them.")


def _holdout(args: argparse.Namespace, run_config: Any) -> dict[str, Any]:
    """The holdout of ``--split``: the flags, else the adapter's record, else the defaults."""
    recorded = run_config.settings if run_config is not None else {}
    defaults = {"fraction": DEFAULT_HOLDOUT_FRACTION, "seed": DEFAULT_HOLDOUT_SEED, "style": DEFAULT_HOLDOUT_STYLE}
    values = {}
    for key, default in defaults.items():
        flag = getattr(args, f"holdout_{key}")
        values[f"holdout_{key}"] = flag if flag is not None else recorded.get(f"holdout_{key}", default)
    if not values["holdout_fraction"]:
        raise ValueError(
            "--split in/out needs a holdout, but the holdout fraction is 0 (the adapter trained on every image): "
            "give --holdout-fraction, or use --split whole."
        )
    return values


def _rows(
    args: argparse.Namespace, dataset: Any, domains: list[str], run_config: Any, benchmark: Any
) -> tuple[Any, dict[str, Any], dict[str, int]]:
    """The rows to score (part of each domain, those with a label, then the --limit sample), what the record says
    about them, and the images per domain left out for having no label."""
    from datasets import concatenate_datasets

    from ..evaluation.rows import split_unlabeled

    rows = concatenate_datasets([dataset[d] for d in domains])
    about: dict[str, Any] = {}
    if args.split != "whole":
        holdout = _holdout(args, run_config)
        in_part, out_part = split_holdout(
            rows, holdout["holdout_fraction"], holdout["holdout_seed"], holdout["holdout_style"]
        )
        rows = in_part if args.split == "in" else out_part
        about["holdout"] = holdout
    rows, unlabeled = split_unlabeled(rows, benchmark)
    available = dict(Counter(rows["domain"]))
    if args.limit:
        rows = stratified_sample(rows, args.limit, args.sample_seed)
    about["rows"] = sample_record(Counter(rows["domain"]), available, args.sample_seed, PARTS[args.split])
    trained = sorted(set(domains) & set(run_config.domains if run_config is not None else ()))
    if trained and args.split != "out":
        about["trained_domains_scored"] = trained
        logger.warning(
            "The adapter trained on %s: the %s holds its training images. Use --split out to score its validation "
            "images only.",
            ", ".join(trained),
            PARTS[args.split],
        )
    return rows, about, unlabeled


def _beside(output: Path, name: str) -> Path:
    """``<folder>/<name>`` beside a ``results.json``, else ``<stem>.<name>``."""
    return output.with_name(name if output.name == "results.json" else f"{output.stem}.{name}")


def run(args: argparse.Namespace) -> int:
    from datasets import load_dataset

    from ..evaluation.classifier import DGClassifier
    from ..evaluation.icl import ICLSettings
    from ..evaluation.predict import PREDICTIONS_NAME, write_predictions
    from ..evaluation.rows import check_same_benchmark, evaluate_rows, split_unlabeled, undecoded
    from ..models import describe_placement
    from ..protocol import check_domains, find_benchmark, merge_domains

    _check_sources(args)
    placement = device_kwargs(args) if not args.api else {}
    dataset = load_dataset(args.dataset, args.config)
    benchmark = find_benchmark(dataset, args.benchmark)
    domains = check_domains(args.domains, list(dataset), args.config)
    clf = DGClassifier.from_pretrained(args.adapter, model=args.model, **placement) if args.adapter else None
    if clf is not None:
        check_same_benchmark(clf.benchmark, benchmark, f"The adapter {args.adapter!r}")
    rows, about, unlabeled = _rows(args, dataset, domains, clf.run_config if clf is not None else None, benchmark)
    rows = undecoded(rows)
    record: dict[str, Any] = {
        "dataset": args.dataset,
        "config": args.config,
        "benchmark": benchmark.name,
        "domains": domains,
        "model": args.model,
        "adapter": args.adapter,
        "api": args.api,
        **about,
    }
    if args.api:
        predictions = _predict_api(args, rows, benchmark, record, unlabeled)
    else:
        if clf is not None:
            model, processor = clf.model, clf.processor
        else:
            from ..models import load_model_and_processor

            model, processor = load_model_and_processor(args.model, **placement)
        record["runs_on"] = describe_placement(model)
        icl = ICLSettings(args.icl_shots, args.icl_demos, args.icl_seed) if args.icl_shots else None
        train_domains = [d for d in dataset if d not in domains]
        pool = split_unlabeled(merge_domains(dataset), benchmark)[0] if icl else None  # demos need a class
        outcome = evaluate_rows(
            model,
            processor,
            rows,
            benchmark,
            args.mode,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            icl=icl,
            demo_pool=pool,
            train_domains=train_domains,
            unlabeled=unlabeled,
        )
        record = outcome.record(**record)
        predictions = outcome.predictions
    title = f"{args.api or args.adapter or args.model} on {args.config} ({record['mode']})"
    print(format_metrics(record["metrics"], title))
    print(f"Images: {describe_rows(record['rows'])}.")
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output, record)
        written = [
            output,
            write_predictions(
                _beside(output, PREDICTIONS_NAME), predictions.records(rows["image_id"], rows["domain"], rows["label"])
            ),
        ]
        if args.confusion_matrix:
            from ..analysis.plots import confusion_figure

            name = _beside(output, "confusion_matrix").name
            labels, names = rows["label"], benchmark.class_names
            figure = confusion_figure(output.parent, name, labels, predictions.indices, names, title)
            written += [Path(figure.png), Path(figure.data)]
        print("Wrote " + ", ".join(str(path) for path in written))
    if predictions.failed:
        print(
            f"rdmldg eval: {len(predictions.failed)} of {len(predictions.indices)} requests failed after all their "
            "retries: rerun the same command to ask for them again (the other replies are kept in the store).",
            file=sys.stderr,
        )
        return 1
    return 0


def _predict_api(
    args: argparse.Namespace, rows: Any, benchmark: Any, record: dict[str, Any], unlabeled: dict[str, int]
) -> Any:
    """Ask the API model (``--api``) about every row; the store and metrics go into ``record``."""
    from ..evaluation.api import api_settings, predict_api
    from ..evaluation.rows import score_predictions
    from ..teacher.arguments import request_settings
    from ..teacher.retry import TeacherStopped
    from . import CommandError

    beside_output = str(Path(args.output).with_suffix("")) + ".api-store" if args.output else None
    store = args.store or beside_output or "rdmldg-eval-store"
    settings = api_settings(args.api, max_tokens=args.max_new_tokens or 1024, **request_settings(args))
    try:
        predictions = predict_api(
            rows["image"],
            rows["label"],
            rows["domain"],
            rows["image_id"],
            benchmark,
            settings,
            store,
            dataset_folder=args.dataset if Path(args.dataset).is_dir() else None,
        )
    except TeacherStopped as error:  # the key or model refused, or the server kept failing: its message
        raise CommandError(str(error)) from None
    record.update(mode="reasoning", icl=None, store=store, metrics=score_predictions(predictions, rows, unlabeled))
    return predictions
