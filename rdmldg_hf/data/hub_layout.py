"""The Hub layout of DomainBed-Reasoning: one config per benchmark, one split per domain.

A folder written here is what ``DatasetDict.push_to_hub(repo, config_name=...)`` writes:
parquet shards ``<config>/<split>-00000-of-0000N.parquet`` (image bytes embedded) and a
README.md whose YAML holds ``configs:`` and ``dataset_info`` (through datasets'
``MetadataConfigs`` / ``DatasetInfosDict`` and huggingface_hub's ``DatasetCard``). Each
split is also a config of its own (``<config>-<split>``, split ``train``) pointing at the
same files. A build report per config lives in ``reports/<config>.json``; a build whose teacher
requests failed for some images marks its report (and the card) ``incomplete``, and
:func:`push_folder` refuses such a folder unless told to push it anyway.

Every write goes to a staging folder beside the output folder, which replaces the output
folder only when complete (README last), so an interrupted build never leaves a folder
that loads as if complete.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetInfo, Features, SplitDict, SplitInfo
from datasets import config as datasets_config
from datasets.arrow_writer import get_writer_batch_size_from_data_size, get_writer_batch_size_from_features
from datasets.info import DatasetInfosDict
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData

from ..atomic import atomic_folder, atomic_write, atomic_write_json
from ..benchmarks import Benchmark, get_benchmark
from ..locking import FolderLock
from .schema import dataset_features

__all__ = [
    "CARD_TEMPLATE",
    "DEFAULT_REPO_ID",
    "REPORTS_DIR",
    "ConfigSummary",
    "SplitSummary",
    "staged_folder",
    "write_config",
    "render_card",
    "read_reports",
    "incomplete_configs",
    "push_folder",
    "check_repo_id",
]

logger = logging.getLogger(__name__)

DEFAULT_REPO_ID = "rdmldg/domainbed-reasoning"
REPORTS_DIR = "reports"
PRETTY_NAME = "DomainBed-Reasoning"
CARD_TEMPLATE = "domainbed_reasoning_card.md"
_CARD_METADATA: dict[str, Any] = {
    "license": "other",
    "license_name": "domainbed-reasoning",
    "task_categories": ["image-classification", "visual-question-answering"],
    "language": ["en"],
    "tags": ["domain-generalization", "domainbed", "reasoning", "chain-of-thought", "multimodal", "rd-mldg"],
    "pretty_name": PRETTY_NAME,
}
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # the split names datasets accepts
_STATS_COLUMNS = ("reasoning", "chain_source", "num_candidates", "num_valid", "num_correct")


@dataclass
class SplitSummary:
    """Counts of one written split."""

    name: str
    rows: int
    with_chain: int
    files: list[str] = field(default_factory=list)
    chain_sources: dict[str, int] = field(default_factory=dict)
    candidates: int = 0
    valid: int = 0
    correct: int = 0


@dataclass
class ConfigSummary:
    """What :func:`write_config` wrote: the config, its splits and the output folder."""

    config_name: str
    benchmark: str
    out_dir: str
    splits: list[SplitSummary]
    domain_configs: list[str]
    report_path: str

    @property
    def rows(self) -> int:
        return sum(split.rows for split in self.splits)

    @property
    def with_chain(self) -> int:
        return sum(split.with_chain for split in self.splits)


# --------------------------------------------------------------------------- staging


_THREAD_TURNS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging copy of ``out_dir``; on success it replaces ``out_dir``, on error it is removed.

    One process writes a folder at a time (its lock file ``.<name>.lock`` beside it); threads of
    that process take turns.

    Raises:
        FileExistsError: if ``out_dir`` exists but is a file.
        FolderBusyError: another process is writing ``out_dir``.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out_dir)!r} is a file; give a folder (it is created if missing).")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Writers of one folder take turns, so none loses the other's config.
    with _THREAD_TURNS.setdefault(str(out), threading.Lock()), FolderLock(out, "build"):
        with atomic_folder(out, keep_contents=True) as staging:
            yield staging


# --------------------------------------------------------------------------- parquet shards


def _check_features(dataset: Dataset, features: Features, config_name: str, split: str) -> Dataset:
    """Cast a split to the benchmark's features (columns must match)."""
    if not _SPLIT_NAME.match(split):
        raise ValueError(
            f"Split name {split!r} of config {config_name!r} is invalid: use letters, digits and _ (a domain name)."
        )
    if dataset.features == features:
        return dataset
    label = dataset.features.get("label")
    if getattr(label, "names", None) not in (None, features["label"].names):
        raise ValueError(
            f"Split {split!r} of config {config_name!r} labels rows with other classes ({label.names[:5]}...) "
            f"than the benchmark ({features['label'].names[:5]}...); build it with the benchmark's ClassLabel."
        )
    if set(dataset.column_names) != set(features):
        raise ValueError(
            f"Split {split!r} of config {config_name!r} has columns {sorted(dataset.column_names)}; "
            f"the DomainBed-Reasoning schema needs {sorted(features)}."
        )
    return dataset.select_columns(list(features)).cast(features)


def _write_shards(
    dataset: Dataset, folder: Path, data_dir: str, split: str, max_shard_size: int | str | None
) -> tuple[list[str], int, int]:
    """Write one split as parquet shards the way ``push_to_hub`` does; (paths, bytes on disk, arrow bytes)."""
    # The size estimate push_to_hub uses (it discounts the path column and counts external files).
    estimate = getattr(dataset, "_estimate_nbytes", None)
    nbytes = int(estimate()) if callable(estimate) else dataset.data.nbytes
    num_shards = int(nbytes / convert_file_size_to_int(max_shard_size or datasets_config.MAX_SHARD_SIZE)) + 1
    batch_size = get_writer_batch_size_from_features(dataset.features) or get_writer_batch_size_from_data_size(
        len(dataset), nbytes
    )
    paths: list[str] = []
    written = 0
    with _quiet_progress():
        for index in range(num_shards):
            path_in_repo = f"{data_dir}/{split}-{index:05d}-of-{num_shards:05d}.parquet"
            written += _write_shard(dataset, folder, path_in_repo, index, num_shards, batch_size)
            paths.append(path_in_repo)
    return paths, written, nbytes


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide datasets' progress bars of the per-shard steps (restored afterwards)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _write_shard(
    dataset: Dataset, folder: Path, path_in_repo: str, index: int, num_shards: int, batch_size: int
) -> int:
    """Write shard ``index`` of ``num_shards`` with embedded files, as push_to_hub does; its size in bytes."""
    shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
    shard = shard.with_format("arrow").map(
        embed_table_storage, batched=True, batch_size=batch_size, keep_in_memory=True
    )
    target = folder / path_in_repo
    shard.with_format(None).to_parquet(str(target), batch_size=batch_size)
    return target.stat().st_size


def _split_stats(dataset: Dataset, name: str, files: list[str]) -> SplitSummary:
    """Row, chain-source and acceptance counts of one split (reads only the small columns)."""
    summary = SplitSummary(name=name, rows=len(dataset), with_chain=0, files=files)
    columns = [c for c in _STATS_COLUMNS if c in dataset.column_names]
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=50_000):
        assert isinstance(batch, pa.Table)
        summary.with_chain += len(batch) - batch.column("reasoning").null_count
        for item in pc.value_counts(batch.column("chain_source")).to_pylist():
            if item["values"] is not None:
                summary.chain_sources[item["values"]] = summary.chain_sources.get(item["values"], 0) + item["counts"]
        for column, attribute in (
            ("num_candidates", "candidates"),
            ("num_valid", "valid"),
            ("num_correct", "correct"),
        ):
            total = pc.sum(batch.column(column)).as_py() if column in batch.column_names else None
            setattr(summary, attribute, getattr(summary, attribute) + int(total or 0))
    return summary


# --------------------------------------------------------------------------- README


def _load_card_data(folder: Path) -> DatasetCardData:
    readme = folder / datasets_config.REPOCARD_FILENAME
    if not readme.exists():
        return DatasetCardData()
    return DatasetCard(readme.read_text(encoding="utf-8")).data


def _drop_configs(card_data: DatasetCardData, names: set[str]) -> None:
    """Remove configs (and their ``dataset_info``) from card data."""
    configs = card_data.get("configs") or []
    card_data["configs"] = [c for c in configs if c.get("config_name") not in names] or None
    infos = card_data.get("dataset_info")
    if isinstance(infos, dict):
        infos = [infos]
    kept = [i for i in infos or [] if i.get("config_name", "default") not in names]
    card_data["dataset_info"] = (kept[0] if len(kept) == 1 else kept) or None
    if card_data["configs"] is None:
        card_data.pop("configs", None)
    if card_data["dataset_info"] is None:
        card_data.pop("dataset_info", None)


def _configs_reading(card_data: DatasetCardData, data_dir: str) -> set[str]:
    """Names of the configs whose data files all lie in ``data_dir``."""
    names = set()
    for name, meta in MetadataConfigs.from_dataset_card_data(card_data).items():
        files = meta.get("data_files") or []
        paths = [p for entry in files for p in ([entry["path"]] if isinstance(entry["path"], str) else entry["path"])]
        if paths and all(p.startswith(f"{data_dir}/") for p in paths):
            names.add(name)
    return names


def _dataset_info(config_name: str, features: Features, splits: list[tuple[SplitInfo, int]]) -> DatasetInfo:
    """The ``dataset_info`` push_to_hub records: features, splits, download and dataset sizes."""
    info = DatasetInfo(config_name=config_name, features=features, splits=SplitDict(), download_size=0, dataset_size=0)
    for split_info, uploaded in splits:
        info.splits.add(split_info)
        info.download_size += uploaded
        info.dataset_size += split_info.num_bytes
    info.size_in_bytes = info.download_size + info.dataset_size
    return info


def read_reports(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The build reports of a folder, by config name."""
    reports = {}
    for path in sorted(Path(folder, REPORTS_DIR).glob("*.json")):
        reports[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return reports


def incomplete_configs(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Config name -> the ``incomplete`` mark of its build report, for configs built with missing chains."""
    return {name: report["incomplete"] for name, report in read_reports(folder).items() if report.get("incomplete")}


def _config_section(name: str, report: Mapping[str, Any]) -> dict[str, Any]:
    """Template variables describing one config in the card body."""
    splits = report.get("splits", [])
    sources: dict[str, int] = {}
    for split in splits:
        for source, count in split.get("chain_sources", {}).items():
            sources[source] = sources.get(source, 0) + count
    acceptance = {key: sum(s.get(key, 0) for s in splits) for key in ("candidates", "valid", "correct")}
    chain_import = report.get("chain_import")
    return {
        "name": name,
        "title": report.get("title"),
        "description": report.get("description"),
        "splits": splits,
        "rows": sum(s["rows"] for s in splits),
        "with_chain": sum(s["with_chain"] for s in splits),
        "chain_sources": sorted(sources.items()),
        "acceptance": acceptance if acceptance["candidates"] else None,
        "skipped": len(report.get("skipped", [])),
        "chain_import": (
            {
                "accepted": chain_import.get("accepted", 0),
                "invalid": len(chain_import.get("invalid", [])),
                "unmatched": len(chain_import.get("unmatched", [])),
            }
            if chain_import
            else None
        ),
        "report": f"{REPORTS_DIR}/{name}.json",
        "incomplete": report.get("incomplete"),
        "teacher": report.get("teacher")
        if isinstance(report.get("teacher"), dict) and "acceptance" in report["teacher"]
        else None,
    }


def _size_category(rows: int) -> str:
    """The Hub's ``size_categories`` tag of a row count (``1K<n<10K``)."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    return next((tag for bound, tag in bounds if rows < bound), "1M<n<10M")


def render_card(folder: str | os.PathLike, card_data: DatasetCardData, repo_id: str = DEFAULT_REPO_ID) -> DatasetCard:
    """Render the DomainBed-Reasoning card of a folder from its card data and build reports."""
    for key, value in _CARD_METADATA.items():
        card_data[key] = value
    reports = read_reports(folder)
    sections = [_config_section(name, report) for name, report in reports.items()]
    if sections:
        card_data["size_categories"] = [_size_category(max(section["rows"] for section in sections))]
    first = sections[0] if sections else {"name": "pacs", "splits": [{"name": "photo", "domain_config": "pacs-photo"}]}
    first_split = first["splits"][0] if first["splits"] else {"name": "train", "domain_config": first["name"]}
    template = resources.files("rdmldg_hf") / "templates" / CARD_TEMPLATE
    return DatasetCard.from_template(
        card_data,
        template_str=template.read_text(encoding="utf-8"),
        pretty_name=PRETTY_NAME,
        repo_id=repo_id,
        config_sections=sections,
        example_config=first["name"],
        example_split=first_split["name"],
        example_domain_config=first_split.get("domain_config") or first["name"],
    )


# --------------------------------------------------------------------------- one config


def write_config(
    out_dir: str | os.PathLike,
    config_name: str,
    splits: Mapping[str, Dataset],
    benchmark: Benchmark | str,
    *,
    domain_configs: bool = True,
    report: Mapping[str, Any] | None = None,
    description: str | None = None,
    max_shard_size: int | str | None = None,
    repo_id: str = DEFAULT_REPO_ID,
) -> ConfigSummary:
    """Write (or replace) one config of a DomainBed-Reasoning folder.

    Args:
        out_dir: the dataset folder (created if missing; other configs in it are kept).
        config_name: e.g. ``"officehome"`` or ``"officehome-sarr-r2"``.
        splits: split name (a domain) -> rows with the benchmark's schema (a ``DatasetDict`` works).
        benchmark: the benchmark whose ``ClassLabel`` the rows use.
        domain_configs: also declare ``<config_name>-<split>`` configs (split ``train``).
        report: extra entries for ``reports/<config_name>.json`` (skipped files, chain import, ...).
        description: one line about the config for the card (default: the benchmark's).
        max_shard_size: as in ``push_to_hub`` (default 500MB).
        repo_id: the repo the card's usage example names.
    """
    benchmark = get_benchmark(benchmark)
    if config_name in ("data", "default", REPORTS_DIR) or "/" in config_name or not config_name.strip():
        raise ValueError(f"Invalid config name {config_name!r}: use a plain name such as {benchmark.name!r}.")
    if not splits:
        raise ValueError(f"Config {config_name!r} has no splits; give at least one domain's rows.")
    features = dataset_features(benchmark)
    checked = {split: _check_features(ds, features, config_name, split) for split, ds in splits.items()}
    with staged_folder(out_dir) as folder:
        data_dir = folder / config_name
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        summaries: list[SplitSummary] = []
        infos: list[tuple[SplitInfo, int]] = []
        for split, dataset in checked.items():
            files, written, nbytes = _write_shards(dataset, folder, config_name, split, max_shard_size)
            infos.append((SplitInfo(name=split, num_bytes=nbytes, num_examples=len(dataset)), written))
            summary = _split_stats(dataset, split, files)
            summaries.append(summary)

        card_data = _load_card_data(folder)
        _drop_configs(card_data, _configs_reading(card_data, config_name))
        configs = {config_name: {"data_files": [{"split": s, "path": f"{config_name}/{s}-*"} for s in checked]}}
        dataset_infos = {config_name: _dataset_info(config_name, features, infos)}
        domain_names = [f"{config_name}-{split_info.name}" for split_info, _ in infos] if domain_configs else []
        for name, (split_info, uploaded) in zip(domain_names, infos):
            configs[name] = {"data_files": [{"split": "train", "path": f"{config_name}/{split_info.name}-*"}]}
            train = SplitInfo(name="train", num_bytes=split_info.num_bytes, num_examples=split_info.num_examples)
            dataset_infos[name] = _dataset_info(name, features, [(train, uploaded)])
        taken = set(MetadataConfigs.from_dataset_card_data(card_data)) & set(configs)
        if taken:
            raise ValueError(
                f"Config names {', '.join(sorted(taken))} already name other data in {str(out_dir)!r}; "
                f"choose another config name than {config_name!r}."
            )
        DatasetInfosDict(dataset_infos).to_dataset_card_data(card_data)
        MetadataConfigs(configs).to_dataset_card_data(card_data)

        split_entries = []
        for summary in summaries:
            entry = summary.__dict__.copy()
            entry["domain_config"] = f"{config_name}-{summary.name}" if domain_configs else None
            split_entries.append(entry)
        report_path = folder / REPORTS_DIR / f"{config_name}.json"
        report_path.parent.mkdir(exist_ok=True)
        full_report = {
            "config_name": config_name,
            "benchmark": benchmark.name,
            "title": benchmark.title if config_name == benchmark.name else None,
            "description": description if description is not None else benchmark.description,
            **dict(report or {}),
            "splits": split_entries,
        }
        atomic_write_json(report_path, full_report, ensure_ascii=False)  # a new file: the old one is hard-linked
        card = render_card(folder, card_data, repo_id=repo_id)
        atomic_write(folder / datasets_config.REPOCARD_FILENAME, str(card))
    out = Path(out_dir).absolute()
    return ConfigSummary(
        config_name=config_name,
        benchmark=benchmark.name,
        out_dir=str(out),
        splits=summaries,
        domain_configs=domain_names,
        report_path=str(out / REPORTS_DIR / f"{config_name}.json"),
    )


# --------------------------------------------------------------------------- push


def _data_dirs(folder: Path) -> set[str]:
    """The top-level folders holding data files of the folder's configs."""
    card_data = _load_card_data(folder)
    dirs = set()
    for meta in MetadataConfigs.from_dataset_card_data(card_data).values():
        for entry in meta.get("data_files") or []:
            for path in [entry["path"]] if isinstance(entry["path"], str) else entry["path"]:
                dirs.add(path.split("/", 1)[0])
    return dirs


def check_repo_id(repo_id: str) -> str:
    """Check a Hub repo id is ``ORG/NAME``.

    Raises:
        ValueError: naming the value and the expected form.
    """
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise ValueError(f"--push-to-hub {repo_id!r}: give the repo as ORG/NAME, e.g. {DEFAULT_REPO_ID!r}.")
    return repo_id


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload DomainBed-Reasoning",
    allow_incomplete: bool = False,
) -> str:
    """Push a built folder to a Hub dataset repo with ``HfApi.upload_folder``; returns the commit URL.

    The repo is created if missing. Remote files in the folder's data directories that the folder
    no longer holds (shards of an older build) are deleted in the same upload (``delete_patterns``),
    as ``push_to_hub`` does. One commit, unless huggingface_hub splits a very large folder into
    several (its resumable Xet upload). The token comes from ``token`` or the usual HF sources
    (``HF_TOKEN``, ``hf auth login``) and is never printed.

    Raises:
        FileNotFoundError: the folder holds no README.md (it was not built).
        ValueError: a config of the folder is marked incomplete (and ``allow_incomplete`` is not set);
            the repo holds configs the folder lacks (their data would vanish from the card).
    """
    from huggingface_hub import HfApi

    root = Path(folder)
    if not (root / datasets_config.REPOCARD_FILENAME).is_file():
        raise FileNotFoundError(f"{str(folder)!r} holds no README.md; build it with `rdmldg build` before pushing.")
    check_repo_id(repo_id)
    incomplete = incomplete_configs(root)
    if incomplete and not allow_incomplete:
        marks = ", ".join(f"{name} ({mark.get('images', '?')} images)" for name, mark in sorted(incomplete.items()))
        raise ValueError(
            f"{str(folder)!r} is marked incomplete: teacher requests failed for some images of {marks}, which have "
            "no chain. Not pushed. Rerun the build to ask for them again (nothing is lost), or pass "
            "--allow-incomplete to push it as it is."
        )
    api = HfApi(token=token, library_name="rdmldg_hf")
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    data_dirs = _data_dirs(root)
    remote = api.list_repo_files(repo_id, repo_type="dataset")
    remote_only = sorted({p.split("/", 1)[0] for p in remote if p.endswith(".parquet") and "/" in p} - data_dirs)
    if remote_only:
        raise ValueError(
            f"The Hub repo {repo_id!r} holds data of configs this folder lacks ({', '.join(remote_only)}); "
            f"pushing the folder's README would drop them from the card. Download the repo first "
            f"(huggingface_hub.snapshot_download(repo_id={repo_id!r}, repo_type='dataset', local_dir=...)), "
            f"build into that folder, then push it."
        )
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=root,
        repo_type="dataset",
        commit_message=commit_message,
        delete_patterns=[f"{glob.escape(name)}/*" for name in sorted(data_dirs)],
    )
    return str(getattr(info, "commit_url", info))
