"""The teacher's argument group of ``rdmldg build`` and the call the builder makes.

:mod:`rdmldg_hf.commands.build` calls :func:`add_teacher_arguments` in its ``add_arguments`` and, when
``args.teacher`` is set, :func:`teacher_chains` in its ``run``; the mapping it returns
fills the dataset's chain columns, and its ``.summary`` belongs in the build summary and
the card's creation section. How requests reach the server (server, key, concurrency, time
limits, retries, progress) is a group of its own, :func:`add_request_arguments`, which
``rdmldg eval --api`` shares.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..benchmarks import Benchmark, get_benchmark
from ..data.schema import ChainRecord, SourceImage
from .settings import IMAGE_DETAILS, IMAGE_FORMATS, REASONING_EFFORTS, RetryPolicy, SamplingSettings, TeacherSettings

__all__ = [
    "add_teacher_arguments",
    "add_request_arguments",
    "request_settings",
    "teacher_chains",
    "settings_from_args",
    "default_store_root",
]

STORE_SUFFIX = ".teacher-store"


def default_store_root(out_dir: str | os.PathLike) -> Path:
    """``<out>.teacher-store``: beside the dataset folder, so that pushing the folder never uploads it."""
    out = Path(out_dir).absolute()
    return out.parent / f"{out.name}{STORE_SUFFIX}"


def _price(value: str) -> tuple[float, float]:
    try:
        prompt, completion = (float(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--teacher-price takes 'INPUT,OUTPUT' in USD per million tokens, e.g. 2.5,10; got {value!r}."
        ) from None
    return prompt, completion


def add_request_arguments(group: argparse._ActionsContainer) -> None:
    """Add how requests reach an OpenAI-compatible server (``rdmldg build --teacher``, ``rdmldg eval --api``)."""
    retry, settings = RetryPolicy(), TeacherSettings()
    group.add_argument(
        "--base-url",
        default=None,
        help="An OpenAI-compatible server (vLLM, transformers serve, ...); default: the OpenAI API.",
    )
    group.add_argument(
        "--api-key-env",
        default=settings.api_key_env,
        metavar="VAR",
        help="Environment variable holding the API key (default %(default)s). The key is never printed or stored, "
        "and is redacted from anything the server sends back.",
    )
    group.add_argument(
        "--concurrency",
        type=int,
        default=settings.concurrency,
        help="Requests in flight at once (default %(default)s).",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=settings.timeout,
        help="Seconds one attempt of a request may take in all: connecting, sending, waiting and reading the "
        "whole reply (a server trickling its reply is cut off too). A slower attempt is a timeout, retried like "
        "one (default %(default)s).",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        default=retry.max_retries,
        help="Retries of a request on 429/5xx/timeouts/malformed replies before the image is marked failed "
        "for this run (default %(default)s).",
    )
    group.add_argument(
        "--backoff-base",
        type=float,
        default=retry.base_delay,
        help="First backoff wait in seconds, doubled per retry (default %(default)s).",
    )
    group.add_argument(
        "--backoff-max", type=float, default=retry.max_delay, help="Longest backoff wait (default %(default)s)."
    )
    group.add_argument(
        "--stop-after-failures",
        type=int,
        default=settings.stop_after_failures,
        metavar="N",
        help="Stop once N requests in a row have failed after all their retries, with the server's last error "
        "(default %(default)s; 0: never stop). A dead server costs one round of timeouts, not one per image; "
        "rerun to continue: nothing is lost.",
    )
    group.add_argument(
        "--no-progress",
        "--no-teacher-progress",
        dest="teacher_progress",
        action="store_false",
        help="Hide the progress bar of the requests.",
    )


def request_settings(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`TeacherSettings` fields from parsed :func:`add_request_arguments` options."""
    return {
        "retry": RetryPolicy(max_retries=args.max_retries, base_delay=args.backoff_base, max_delay=args.backoff_max),
        "base_url": args.base_url,
        "api_key_env": args.api_key_env,
        "timeout": args.timeout,
        "concurrency": args.concurrency,
        "stop_after_failures": args.stop_after_failures,
        "progress": args.teacher_progress,
    }


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the teacher's options (a group of its own) to a build parser."""
    defaults, settings = SamplingSettings(), TeacherSettings()
    group = parser.add_argument_group(
        "teacher", "Label-blind chains from an OpenAI-compatible API, rejection-sampled against the label."
    )
    group.add_argument(
        "--teacher",
        metavar="MODEL",
        default=None,
        help="Teacher model id (e.g. gpt-4o). Without it no chains are generated.",
    )
    add_request_arguments(group)
    group.add_argument(
        "--candidates",
        type=int,
        default=defaults.candidates,
        metavar="K",
        help="Chains per image and round, asked as n=K (default %(default)s).",
    )
    group.add_argument(
        "--max-rounds",
        type=int,
        default=settings.max_rounds,
        help="Further rounds of K candidates for images with no accepted chain (default %(default)s).",
    )
    group.add_argument(
        "--temperature", type=float, default=defaults.temperature, help="Sampling temperature (default %(default)s)."
    )
    group.add_argument("--top-p", type=float, default=None, help="Nucleus sampling top_p (not sent by default).")
    group.add_argument(
        "--max-tokens",
        type=int,
        default=defaults.max_tokens,
        help="Most tokens per chain, sent as max_completion_tokens (max_tokens to a server that only "
        "takes that; default %(default)s). Reasoning models count their hidden reasoning in it.",
    )
    group.add_argument(
        "--reasoning-effort",
        choices=REASONING_EFFORTS,
        default=None,
        help="reasoning_effort of reasoning models (o-series, GPT-5; not sent by default). "
        "Parameters a model refuses (temperature, top_p, n) are left out automatically and reported.",
    )
    group.add_argument(
        "--image-max-side",
        type=int,
        default=defaults.image_max_side,
        help="Images are resized to this longest side before sending (default %(default)s).",
    )
    group.add_argument(
        "--image-format",
        choices=IMAGE_FORMATS,
        default=defaults.image_format,
        help="Encoding of the images sent (default %(default)s).",
    )
    group.add_argument(
        "--image-quality", type=int, default=defaults.image_quality, help="JPEG/WebP quality (default %(default)s)."
    )
    group.add_argument(
        "--image-detail", choices=IMAGE_DETAILS, default=None, help="OpenAI image detail (not sent by default)."
    )
    group.add_argument(
        "--teacher-price",
        type=_price,
        default=None,
        metavar="IN,OUT",
        help="USD per million input,output tokens for the cost estimate (default: built-in table).",
    )
    group.add_argument(
        "--teacher-store",
        default=None,
        metavar="DIR",
        help=f"Folder of the resumable reply stores (default: <out>{STORE_SUFFIX}, beside the dataset folder).",
    )
    group.add_argument(
        "--mode",
        choices=("sync", "batch"),
        default="sync",
        help="sync: chat requests now; batch: OpenAI Batch API files (about half the price; "
        "run the same command again to collect). Both share the store (default %(default)s).",
    )
    group.add_argument("--wait", action="store_true", help="Batch mode: poll until every batch is collected.")
    group.add_argument(
        "--poll-interval", type=float, default=30.0, help="Batch mode: seconds between polls (default %(default)s)."
    )
    group.add_argument(
        "--batch-max-requests",
        type=int,
        default=50_000,
        help="Batch mode: requests per batch file (default %(default)s).",
    )
    group.add_argument(
        "--batch-max-bytes",
        type=int,
        default=200 * 1024 * 1024,
        help="Batch mode: bytes per batch file (default %(default)s).",
    )
    group.add_argument(
        "--batch-price-factor",
        type=float,
        default=settings.batch_price_factor,
        help="Batch API price as a fraction of --teacher-price or the table's (default %(default)s).",
    )


def settings_from_args(args: argparse.Namespace) -> TeacherSettings:
    """:class:`TeacherSettings` from parsed :func:`add_teacher_arguments` options."""
    if not args.teacher:
        raise ValueError("No teacher model: pass --teacher MODEL (e.g. --teacher gpt-4o).")
    return TeacherSettings(
        sampling=SamplingSettings(
            model=args.teacher,
            candidates=args.candidates,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            image_max_side=args.image_max_side,
            image_format=args.image_format,
            image_quality=args.image_quality,
            image_detail=args.image_detail,
            reasoning_effort=getattr(args, "reasoning_effort", None),
        ),
        max_rounds=args.max_rounds,
        price=args.teacher_price,
        batch_price_factor=args.batch_price_factor,
        **request_settings(args),
    )


def teacher_chains(
    args: argparse.Namespace,
    benchmark: Benchmark | str,
    images: Sequence[SourceImage],
    out_dir: str | os.PathLike,
) -> Mapping[str, ChainRecord]:
    """Chains for ``images`` from the teacher named in ``args`` (resuming the store of ``out_dir``).

    Returns a mapping image id -> :class:`ChainRecord` for every image (null chains for
    images with none accepted or whose requests failed); ``.summary`` holds the build
    summary (acceptance per domain and class, tokens, estimated cost).
    """
    from .pipeline import generate_chains

    settings = settings_from_args(args)
    store_root = Path(args.teacher_store) if args.teacher_store else default_store_root(out_dir)
    if getattr(args, "mode", "sync") != "batch":
        return generate_chains(images, get_benchmark(benchmark), settings, store_root)
    from .batch import BatchLimits, generate_chains_batch

    limits = BatchLimits(max_requests=args.batch_max_requests, max_bytes=args.batch_max_bytes)
    chains, report = generate_chains_batch(
        images,
        get_benchmark(benchmark),
        settings,
        store_root,
        limits=limits,
        wait=args.wait,
        poll_interval=args.poll_interval,
    )
    if report.submitted:
        print(f"Submitted {len(report.submitted)} batch(es): {', '.join(report.submitted)}")
    if report.collected:
        print(
            f"Collected {len(report.collected)} batch(es): {report.replies} replies, "
            f"{report.failed_requests} failed requests."
        )
    if report.adapted_requests:
        print(
            f"{report.adapted_requests} requests were refused for a parameter the model does not take; they are "
            "asked again without it (see server_adaptations in the build report)."
        )
    for problem, count, where in (
        ("results for unknown request ids (ignored)", report.unknown_ids, []),
        (
            "malformed result lines (their requests are asked again)",
            len(report.malformed_lines),
            report.malformed_lines,
        ),
        (
            "batches the server no longer knows (their requests are asked again)",
            len(report.lost_batches),
            report.lost_batches,
        ),
    ):
        if count:
            print(f"Warning: {count} {problem}{': ' + ', '.join(where[:10]) if where else ''}.")
    if chains is None:
        print("Batches are still running: run the same command again later to collect them (or add --wait).")
        raise SystemExit(0)
    return chains
