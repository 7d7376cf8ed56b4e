"""``rdmldg build``: DomainBed image folders (or the embedded benchmark) -> a Hub-layout dataset folder.

rdmldg build --benchmark pacs --images /data/DomainBed --out ./domainbed-reasoning
rdmldg build --benchmark rotdigits --out ./domainbed-reasoning
rdmldg build ... --push-to-hub ORG/NAME [--private]
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from pathlib import Path
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
    same ``--out`` stops at once, naming this one's process id. A full disk stops it with the
    folder to free (a rerun then loses nothing). Returns 1 when teacher requests failed for some
    images (the dataset is written, marked incomplete).
    """
    from datasets.exceptions import DatasetGenerationError

    from ..locking import FolderBusyError, FolderLock
    from . import CommandError

    _check_arguments(args)
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
    except (OSError, DatasetGenerationError) as error:
        full = _disk_full(error)
        if full is None:
            raise
        raise CommandError(_disk_full_message(full, args)) from error


def _store_root(args: argparse.Namespace) -> Path | None:
    """The teacher store's folder of a build with a teacher (None without one)."""
    if not args.teacher:
        return None
    return Path(args.teacher_store) if args.teacher_store else teacher_arguments.default_store_root(args.out)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before anything is read, written or sent, the options a build would fail on later.

    Raises:
        ValueError: a folder option that is a file, folders inside one another, sampling values out of range,
            a bad ``--push-to-hub`` repo id or ``--private`` without it.
        CommandError: ``--push-to-hub`` while huggingface_hub is offline.
    """
    from ..data.build_paths import check_folder_option, check_separate_folders

    check_folder_option("--out", args.out)
    store = _store_root(args)
    if store is not None:
        check_folder_option("--teacher-store", store)
    images = None
    if args.images:  # the benchmark folder scanned: a data root may hold --out beside it
        from ..data.domainbed import load_domain_map, resolve_benchmark_folder

        domain_map = load_domain_map(args.domain_map) if args.domain_map else None
        images = resolve_benchmark_folder(args.benchmark, args.images, domain_map)
    check_separate_folders({"--out": args.out, "--images": images, "--teacher-store": store})
    if args.teacher:
        teacher_arguments.settings_from_args(args)  # sampling values are checked here, not after the scan
    if args.private and not args.push_to_hub:
        raise ValueError("--private only applies with --push-to-hub ORG/NAME.")
    if args.allow_incomplete and not args.push_to_hub:
        raise ValueError("--allow-incomplete only applies with --push-to-hub ORG/NAME.")
    if args.push_to_hub:
        import huggingface_hub

        from ..data.hub_layout import check_repo_id
        from . import hub_offline_error

        check_repo_id(args.push_to_hub)
        if huggingface_hub.is_offline_mode():
            raise hub_offline_error("--push-to-hub")


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(error: BaseException) -> OSError | None:
    """The "no space left on device" (or "quota exceeded") error behind ``error``, following its causes."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _disk_full_message(error: OSError, args: argparse.Namespace) -> str:
    """Which folder is full (with the free space where the build writes) and why a rerun loses nothing."""
    from tqdm import tqdm

    out = Path(args.out).absolute()
    store = _store_root(args)
    folders = [out.parent, *([store.absolute()] if store is not None else [])]
    if error.filename:
        folders = [Path(os.fsdecode(error.filename)).absolute().parent]
    free = []
    for folder in folders:
        existing = next(path for path in (folder, *folder.parents) if path.exists())
        free.append(f"{tqdm.format_sizeof(shutil.disk_usage(existing).free, 'B', 1024)} free in {folder}")
    kept = f"the replies already received stay in the teacher store {store}, only missing requests are sent; "
    return (
        f"No space left on device while writing in {' or '.join(map(str, folders))} ({', '.join(free)}). "
        "Free some space there and run the same command again: nothing is lost ("
        f"{kept if store is not None else ''}the dataset folder {out} is only replaced by a complete build)."
    )


def _build(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..benchmarks import get_benchmark
    from ..data.build import build_dataset
    from ..data.hub_layout import DEFAULT_REPO_ID

    benchmark = get_benchmark(args.benchmark)
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
