"""Build DomainBed-Reasoning: images (+ chains) -> one config of a Hub-layout dataset folder.

``build_dataset("rotdigits", out_dir)`` builds the embedded benchmark; for a DomainBed
benchmark pass ``images=`` a folder (the benchmark folder or the DomainBed data root) or a
list of :class:`SourceImage`. Rows are streamed: images are read one at a time into an
on-disk Arrow cache, never all held in memory.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from datasets import Dataset

from ..benchmarks import Benchmark, get_benchmark
from .build_paths import check_folder_option, check_separate_folders
from .chain_import import ChainImport, import_chains
from .domainbed import ScanResult, SkippedFile, load_class_map, load_domain_map, load_exclude_list, scan_domainbed
from .hub_layout import DEFAULT_REPO_ID, ConfigSummary, write_config
from .schema import ChainRecord, SourceImage, dataset_features

__all__ = [
    "BuildSummary",
    "build_dataset",
    "build_embedded_once",
    "resolve_images",
    "source_rows",
    "without_local_paths",
]

# Rows per Arrow record batch while streaming images into the cache (bounds memory).
_WRITER_BATCH_SIZE = 100


@dataclass
class BuildSummary:
    """What a build wrote and everything it left out (skipped files, rejected chains)."""

    config: ConfigSummary
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    chain_import: ChainImport | None = None
    chains_unmatched: list[str] = field(default_factory=list)
    excluded: int = 0
    exclude_unmatched: list[str] = field(default_factory=list)

    @property
    def out_dir(self) -> str:
        return self.config.out_dir

    @property
    def rows_per_domain(self) -> dict[str, int]:
        return {split.name: split.rows for split in self.config.splits}

    def format(self) -> str:
        """A few human-readable lines (the CLI prints them)."""
        config = self.config
        lines = [
            f"Built config {config.config_name!r} in {config.out_dir}: {config.rows:,} "
            f"rows, {config.with_chain:,} with a chain."
        ]
        for split in config.splits:
            lines.append(f"  {split.name:<16} {split.rows:>8,} rows  {split.with_chain:>8,} chains")
        if self.ignored:
            lines.append(
                f"Ignored {len(self.ignored)} entries beside the domain folders: {', '.join(self.ignored[:5])}"
            )
        if self.excluded or self.exclude_unmatched:
            lines.append(f"Excluded {self.excluded:,} images named in the exclude list.")
        if self.exclude_unmatched:
            more = " ..." if len(self.exclude_unmatched) > 5 else ""
            lines.append(
                f"{len(self.exclude_unmatched):,} exclude-list entries matched no image "
                f"(listed in {config.report_path}): {', '.join(self.exclude_unmatched[:5])}{more}"
            )
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} files (listed in {config.report_path}):")
            lines.extend(f"  {item.path}: {item.reason}" for item in self.skipped[:10])
            if len(self.skipped) > 10:
                lines.append(f"  ... and {len(self.skipped) - 10} more")
        if self.chain_import is not None:
            lines.append(self.chain_import.format(config.report_path))
        if self.chains_unmatched:
            lines.append(
                f"{len(self.chains_unmatched)} chains name an image id not in the images "
                f"(e.g. {self.chains_unmatched[0]!r}; listed in {config.report_path})."
            )
        return "\n".join(lines)


def source_rows(
    images: Iterable[SourceImage], chains: Mapping[str, ChainRecord] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of the DomainBed-Reasoning schema, one image read at a time."""
    empty = ChainRecord()
    for image in images:
        record = (chains or {}).get(image.image_id, empty)
        yield {
            "image": {"bytes": image.read_bytes(), "path": image.filename},
            "label": image.label,
            "domain": image.domain,
            "image_id": image.image_id,
            **record.columns(),
        }


def _split_datasets(
    benchmark: Benchmark, images: Sequence[SourceImage], chains: Mapping[str, ChainRecord] | None, cache_dir: str
) -> dict[str, Dataset]:
    """One on-disk Dataset per domain (in the benchmark's domain order)."""
    by_domain: dict[str, list[SourceImage]] = {}
    for image in images:
        by_domain.setdefault(benchmark.domain(image.domain), []).append(image)
    features = dataset_features(benchmark)
    splits = {}
    for domain in benchmark.domains:
        if domain not in by_domain:
            continue
        splits[domain] = Dataset.from_generator(
            source_rows,
            features=features,
            cache_dir=cache_dir,
            gen_kwargs={"images": by_domain[domain], "chains": chains},
            split=domain,
            fingerprint=uuid.uuid4().hex,
            writer_batch_size=_WRITER_BATCH_SIZE,
        )
    return splits


def resolve_images(
    benchmark: Benchmark | str,
    images: str | os.PathLike | Sequence[SourceImage] | ScanResult | None,
    class_map: Mapping[str, str] | str | os.PathLike | None = None,
    domain_map: Mapping[str, str] | str | os.PathLike | None = None,
    *,
    exclude: Iterable[str] | str | os.PathLike = (),
    max_pixels: int | None = None,
) -> ScanResult:
    """The images of a build: the embedded benchmark's (``images=None``), a scanned folder, or a list.

    ``exclude`` (paths relative to the benchmark folder, or an ``--exclude`` file) and ``max_pixels``
    apply to a scanned folder (see :func:`~rdmldg_hf.data.domainbed.scan_domainbed`).
    """
    benchmark = get_benchmark(benchmark)
    if isinstance(exclude, (str, os.PathLike)):
        exclude = load_exclude_list(exclude)
    exclude = list(exclude)
    if exclude and not isinstance(images, (str, os.PathLike)):
        raise ValueError("An exclude list applies to an image folder: pass --images with the benchmark's folder.")
    if isinstance(class_map, (str, os.PathLike)):
        class_map = load_class_map(class_map)
    if isinstance(domain_map, (str, os.PathLike)):
        domain_map = load_domain_map(domain_map)
    if isinstance(images, ScanResult):
        return images
    if images is None:
        if not benchmark.embedded:
            raise ValueError(
                f"Benchmark {benchmark.name!r} needs its images: pass --images with the DomainBed folder "
                f"(<data root>/{benchmark.folder}/<domain>/<class>/<image>)."
            )
        from ..embedded.benchmark import embedded_source_images

        return ScanResult(images=embedded_source_images(), root="<embedded>")
    if isinstance(images, (str, os.PathLike)):
        return scan_domainbed(
            benchmark, images, class_map=class_map, domain_map=domain_map, exclude=exclude, max_pixels=max_pixels
        )
    return ScanResult(images=list(images), root="<given>")


def without_local_paths(value: Any, folders: Iterable[str | os.PathLike]) -> Any:
    """``value`` (a report: nested dicts, lists, strings) with the location of each folder (its parent's
    absolute path, as given and resolved) cut from its strings: ``/home/me/data/PACS/x.jpg`` -> ``PACS/x.jpg``."""
    parents = {Path(folder).absolute().parent for folder in folders}
    locations = {str(parent) for parent in parents} | {os.path.realpath(parent) for parent in parents}
    prefixes = sorted((location + os.sep for location in locations if location != os.sep), key=len, reverse=True)

    def cut(item: Any) -> Any:
        if isinstance(item, str):
            for prefix in prefixes:
                item = item.replace(prefix, "")
            return item
        if isinstance(item, Mapping):
            return {key: cut(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [cut(inner) for inner in item]
        return item

    return cut(value)


def build_dataset(
    benchmark: Benchmark | str,
    out_dir: str | os.PathLike,
    images: str | os.PathLike | Sequence[SourceImage] | ScanResult | None = None,
    chains: str | os.PathLike | Mapping[str, ChainRecord] | None = None,
    class_map: Mapping[str, str] | str | os.PathLike | None = None,
    *,
    domain_map: Mapping[str, str] | str | os.PathLike | None = None,
    config_name: str | None = None,
    template_chains: bool | None = None,
    max_shard_size: int | str | None = None,
    repo_id: str = DEFAULT_REPO_ID,
    report: Mapping[str, Any] | None = None,
    exclude: Iterable[str] | str | os.PathLike = (),
    max_pixels: int | None = None,
) -> BuildSummary:
    """Build one benchmark into ``out_dir`` as config ``config_name`` (default: the benchmark's name).

    Args:
        benchmark: a registry name (``"pacs"``, ``"rotdigits"``) or a :class:`Benchmark`.
        out_dir: the dataset folder; other configs already in it are kept.
        images: a DomainBed folder (benchmark folder or data root), a list of
            :class:`SourceImage`, a :class:`ScanResult`, or None for the embedded benchmark.
        chains: a chains file (JSON/JSONL, validated) or ``image_id -> ChainRecord``.
        class_map: folder name -> class (a mapping or a JSON file) for non-standard class folders.
        domain_map: folder name -> domain (a mapping or a JSON file) for non-standard domain folders.
        template_chains: fill chains from the template writer (default: for the embedded
            benchmark when no ``chains`` are given).
        max_shard_size: parquet shard size, as in ``push_to_hub``.
        repo_id: the repo id the card's usage example names.
        report: extra JSON-serialisable entries for ``reports/<config>.json`` (e.g. a teacher summary).
        exclude: image paths relative to the benchmark folder (or a file of them) to leave out.
        max_pixels: images with more pixels are skipped unread (default PIL's ``Image.MAX_IMAGE_PIXELS``).

    Raises:
        ValueError: ``out_dir`` is a file, or it is, holds or lies inside the benchmark folder of ``images``
            (beside it in a DomainBed data root is fine); a bad folder, chains file or map (naming it).
    """
    benchmark = get_benchmark(benchmark)
    check_folder_option("--out", out_dir)
    scan = resolve_images(benchmark, images, class_map, domain_map, exclude=exclude, max_pixels=max_pixels)
    scanned = [scan.root] if os.path.isdir(scan.root) else []  # the benchmark folder, when a folder was given
    if scanned:
        check_separate_folders({"--out": out_dir, "--images": scan.root})
    build_report: dict[str, Any] = {
        **dict(report or {}),
        "images_root": Path(scan.root).name,
        "skipped": [item.to_dict() for item in scan.skipped],
        "ignored": list(scan.ignored),
        "excluded": scan.excluded,
        "exclude_unmatched": list(scan.exclude_unmatched),
    }
    chain_result: ChainImport | None = None
    records: Mapping[str, ChainRecord] | None
    if isinstance(chains, (str, os.PathLike)):
        chain_result = import_chains(chains, scan.images, benchmark)
        records = chain_result.records
        build_report["chain_import"] = chain_result.to_dict()
    else:
        records = chains
        if records is not None:
            known = {image.image_id for image in scan.images}
            build_report["chains_unmatched"] = sorted(image_id for image_id in records if image_id not in known)
    if records is None and (template_chains if template_chains is not None else benchmark.embedded):
        from ..embedded.benchmark import embedded_chains

        records = embedded_chains(scan.images, benchmark)
    parent = Path(out_dir).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rdmldg-build-cache-", dir=parent) as cache_dir:
        splits = _split_datasets(benchmark, scan.images, records, cache_dir)
        config = write_config(
            out_dir,
            config_name or benchmark.name,
            splits,
            benchmark,
            report=without_local_paths(build_report, [out_dir, *scanned]),
            max_shard_size=max_shard_size,
            repo_id=repo_id,
        )
        del splits
    return BuildSummary(
        config=config,
        skipped=list(scan.skipped),
        ignored=list(scan.ignored),
        chain_import=chain_result,
        chains_unmatched=build_report.get("chains_unmatched", []),
        excluded=scan.excluded,
        exclude_unmatched=list(scan.exclude_unmatched),
    )


def build_embedded_once(out_dir: str | os.PathLike) -> BuildSummary | None:
    """Build the embedded benchmark into ``out_dir`` unless it holds it already; returns the summary when built.

    Under ``accelerate launch`` the main process builds while the others wait, then every process finds it.
    """
    from ..benchmarks import EMBEDDED_BENCHMARK
    from ..generation import process_state

    state, summary = process_state(), None
    with state.main_process_first():
        if state.is_main_process and not (Path(out_dir) / EMBEDDED_BENCHMARK).is_dir():
            summary = build_dataset(EMBEDDED_BENCHMARK, out_dir)
    return summary
