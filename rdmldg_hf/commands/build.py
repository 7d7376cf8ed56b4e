"""``rdmldg build``: DomainBed image folders (or the embedded benchmark) -> a Hub-layout dataset folder.

rdmldg build --benchmark pacs --images /data/DomainBed --out ./domainbed-reasoning
rdmldg build --benchmark rotdigits --out ./domainbed-reasoning
rdmldg build ... --push-to-hub ORG/NAME [--private]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK
from ..teacher import arguments as teacher_arguments


def _shard_size(value: str) -> int | str:
    """``--max-shard-size``: bytes as an integer, or a size such as ``500MB``."""
    if value.isdigit():
        return int(value)
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        convert_file_size_to_int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a size; give bytes (1000000) or a size such as 500MB."
        ) from None
    return value


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number of pixels (e.g. 89478485).")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rdmldg build``."""
    parser.add_argument(
        "--benchmark",
        required=True,
        help=f"Benchmark config name: {', '.join(BENCHMARKS)} ({EMBEDDED_BENCHMARK!r} is embedded, no download).",
    )
    parser.add_argument(
        "--images",
        help="DomainBed folder: the benchmark folder itself (its subfolders are domains) or the DomainBed data root.",
    )
    parser.add_argument(
        "--out", required=True, help="Output dataset folder (other benchmarks already in it are kept)."
    )
    parser.add_argument(
        "--chains", help="JSON or JSONL file mapping image_id -> chain text (optionally with its source)."
    )
    parser.add_argument("--class-map", help="JSON file mapping class folder names to the benchmark's classes.")
    parser.add_argument("--domain-map", help="JSON file mapping domain folder names to the benchmark's domains.")
    parser.add_argument("--config-name", help="Config name to write (default: the benchmark's name).")
    parser.add_argument(
        "--no-template-chains", action="store_true", help="Embedded benchmark: leave the reasoning column empty."
    )
    parser.add_argument(
        "--max-shard-size", type=_shard_size, help="Largest parquet shard, as in push_to_hub (default 500MB)."
    )
    parser.add_argument(
        "--exclude",
        metavar="FILE",
        help="Text file of image paths relative to the benchmark folder (<domain>/<class>/<file>), one per line, "
        "to leave out; e.g. DomainBed's domain_net_duplicates.txt for DomainNet. The count is reported.",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        metavar="N",
        help="Skip (and report) images with more pixels, read from their header without decoding; it is also "
        "PIL's decompression-bomb limit for this run (default: PIL's Image.MAX_IMAGE_PIXELS, 89,478,485).",
    )
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="Also push the folder to this Hub dataset repo.")
    parser.add_argument("--private", action="store_true", help="Create the Hub repo as private (with --push-to-hub).")
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="Push a dataset marked incomplete (teacher requests failed for some images; see the build report) "
        "all the same. Without it --push-to-hub refuses such a dataset.",
    )
    teacher_arguments.add_teacher_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Build (and optionally push) one benchmark; prints the summary.

    The whole build (teacher included) holds the output folder's lock: a second build of the
    same ``--out`` stops at once, naming this one's process id. Returns 1 when teacher requests
    failed for some images (the dataset is written, marked incomplete).
    """
    from ..locking import FolderBusyError, FolderLock
    from . import CommandError

    stops: tuple[type[Exception], ...] = (FolderBusyError,)
    if args.teacher:
        from ..teacher.retry import TeacherStopped

        # the server refused the key, model or a request, or kept failing: its message, no traceback
        stops += (TeacherStopped,)
    try:
        with FolderLock(args.out, "rdmldg build"):
            return _build(args)
    except stops as error:
        raise CommandError(str(error)) from None


def _build(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..benchmarks import get_benchmark
    from ..data.build import build_dataset
    from ..data.hub_layout import DEFAULT_REPO_ID, check_repo_id

    benchmark = get_benchmark(args.benchmark)
    if args.private and not args.push_to_hub:
        raise ValueError("--private only applies with --push-to-hub ORG/NAME.")
    if args.allow_incomplete and not args.push_to_hub:
        raise ValueError("--allow-incomplete only applies with --push-to-hub ORG/NAME.")
    if args.push_to_hub:
        check_repo_id(args.push_to_hub)
    if args.max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = args.max_pixels  # PIL's own limit follows, so a raised limit is honoured
    images: Any = args.images
    chains: Any = args.chains
    exclude: Any = args.exclude or ()
    report: dict[str, Any] = {}
    if args.teacher:
        if args.chains:
            raise ValueError("Give either --chains FILE or --teacher MODEL, not both.")
        from ..data.build import resolve_images

        images = resolve_images(benchmark, args.images, args.class_map, args.domain_map, exclude=exclude)
        exclude = ()  # applied to the scanned images the teacher and the build share
        chains = teacher_arguments.teacher_chains(args, benchmark, images.images, args.out)
        report["teacher"] = getattr(chains, "summary", None) or {"model": args.teacher}
        if report["teacher"].get("incomplete"):
            report["incomplete"] = report["teacher"]["incomplete"]
    summary = build_dataset(
        benchmark,
        args.out,
        images=images,
        chains=chains,
        class_map=args.class_map,
        domain_map=args.domain_map,
        config_name=args.config_name,
        template_chains=False if args.no_template_chains else None,
        max_shard_size=args.max_shard_size,
        repo_id=args.push_to_hub or DEFAULT_REPO_ID,
        report=report,
        exclude=exclude,
    )
    print(summary.format())
    incomplete = report.get("incomplete")
    if incomplete:
        first = incomplete.get("first_error") or "see the failure records of the teacher store"
        print(
            f"rdmldg build: the teacher requests of {incomplete['images']:,} images failed (the first error: "
            f"{first}). The dataset is written, marked incomplete in {summary.config.report_path} and the card; "
            "rerun the same command to ask for them again: nothing is lost.",
            file=sys.stderr,
        )
    if args.push_to_hub:
        from ..data.hub_layout import push_folder

        commit = push_folder(args.out, args.push_to_hub, private=args.private, allow_incomplete=args.allow_incomplete)
        print(f"Pushed {args.out} to https://huggingface.co/datasets/{args.push_to_hub} ({commit}).")
    return 1 if incomplete else 0
