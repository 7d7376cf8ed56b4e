"""The in/out holdout of every training domain, shared by training, evaluation and analyses.

Within each domain, ``int(n * fraction)`` images go to the "out" part (validation for
training-domain model selection), as in DomainBed. Two styles choose which ones:

* ``hash`` (the default): the images whose seeded hash of ``image_id`` is smallest. The
  split depends only on the seed and each image's id, so training, SARR, evaluation and
  analyses validate on the same images whatever order or subset of the other rows they hold.
* ``domainbed``: DomainBed's own split (``domainbed/lib/misc.py`` ``split_dataset`` and
  ``seed_hash``, ``domainbed/train.py``), image for image: each environment's images in
  torchvision ``ImageFolder`` order (class folder, then path) are shuffled by a NumPy
  ``RandomState`` seeded with ``seed_hash(seed, environment index)`` and the first
  ``int(n * fraction)`` are the out part. The environment index is the domain's position among
  the benchmark's domain folders, sorted; ``seed`` plays DomainBed's ``--trial_seed``. It matches
  a DomainBed run when the dataset holds every image ``ImageFolder`` finds in the folders (a
  build that skipped unreadable files shifts the indices of the domain: see its build report).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from datasets import Dataset

from .choices import check_choice

__all__ = [
    "DEFAULT_HOLDOUT_FRACTION",
    "DEFAULT_HOLDOUT_SEED",
    "DEFAULT_HOLDOUT_STYLE",
    "HOLDOUT_STYLES",
    "IMAGEFOLDER_EXTENSIONS",
    "check_holdout_style",
    "domainbed_seed_hash",
    "imagefolder_order",
    "holdout_environments",
    "holdout_ids",
    "split_holdout",
]

DEFAULT_HOLDOUT_FRACTION = 0.2
DEFAULT_HOLDOUT_SEED = 0
HOLDOUT_STYLES: tuple[str, ...] = ("hash", "domainbed")
DEFAULT_HOLDOUT_STYLE = "hash"
# torchvision.datasets.folder.IMG_EXTENSIONS: the only files ImageFolder (hence DomainBed) loads.
IMAGEFOLDER_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _score(image_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).digest()


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1); got {fraction!r}.")


def check_holdout_style(style: str) -> str:
    """The style, if valid.

    Raises:
        ValueError: naming the value and the valid styles.
    """
    return check_choice(style, HOLDOUT_STYLES, "holdout_style")


def domainbed_seed_hash(*args: object) -> int:
    """DomainBed's ``misc.seed_hash``: an integer seed in [0, 2**31) derived from ``args``."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def imagefolder_order(image_ids: Sequence[str]) -> list[str]:
    """The ids (``<domain folder>/<class folder>/.../<file>``) in torchvision ``ImageFolder`` order.

    ``ImageFolder`` walks the sorted class folders, each with ``sorted(os.walk(...))`` (folders by
    path) and sorted file names.

    Raises:
        ValueError: for ids that ``ImageFolder`` would not load (no image extension, or not
            inside a class folder), naming a few.
    """
    bad = [i for i in image_ids if i.count("/") < 2 or not i.lower().endswith(IMAGEFOLDER_EXTENSIONS)]
    if bad:
        raise ValueError(
            f"holdout_style 'domainbed' reproduces torchvision ImageFolder's order, which only loads "
            f"<domain>/<class>/<file> with the extensions {', '.join(IMAGEFOLDER_EXTENSIONS)}; {len(bad)} image ids "
            f"are not such files (e.g. {', '.join(repr(b) for b in bad[:3])}). Rename those files and rebuild, "
            "or use holdout_style 'hash'."
        )

    def key(image_id: str) -> tuple[str, str, str]:
        folder, name = posixpath.split(image_id)
        return image_id.split("/")[1], folder, name

    return sorted(image_ids, key=key)


def holdout_environments(dataset: Dataset) -> list[str]:
    """DomainBed's environment order: the dataset's benchmark's domains (folders sorted), else the domains present."""
    from .domains import match_benchmark

    benchmark = match_benchmark(dataset)
    return list(benchmark.domains) if benchmark is not None else sorted(set(dataset["domain"]))


def _domainbed_out(ids: list[str], fraction: float, seed: int, environment: int) -> list[str]:
    import numpy as np

    ordered = imagefolder_order(ids)
    keys = list(range(len(ordered)))
    np.random.RandomState(domainbed_seed_hash(seed, environment)).shuffle(keys)
    return [ordered[k] for k in keys[: int(len(ordered) * fraction)]]


def holdout_ids(
    image_ids: Iterable[str],
    domains: Iterable[str],
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_HOLDOUT_SEED,
    style: str = DEFAULT_HOLDOUT_STYLE,
    environments: Sequence[str] | None = None,
) -> set[str]:
    """The image ids of the "out" part, per domain (see the module docstring for the styles).

    ``environments`` (``domainbed`` style): every domain of the benchmark in DomainBed's order
    (sorted folder names), held-out domain included; default: the domains present, sorted.

    Raises:
        ValueError: for a fraction outside [0, 1), an unknown style, or a domain missing from ``environments``.
    """
    _check_fraction(fraction)
    check_holdout_style(style)
    by_domain: dict[str, list[str]] = defaultdict(list)
    for image_id, domain in zip(image_ids, domains):
        by_domain[domain].append(image_id)
    order = list(environments) if environments is not None else sorted(by_domain)
    out: set[str] = set()
    for domain, ids in by_domain.items():
        unique = list(dict.fromkeys(ids))
        if style == "hash":
            out.update(sorted(unique, key=lambda image_id: _score(image_id, seed))[: int(len(unique) * fraction)])
            continue
        if domain not in order:
            raise ValueError(
                f"Domain {domain!r} is not among the environments {order}; pass every domain of the benchmark."
            )
        out.update(_domainbed_out(unique, fraction, seed, order.index(domain)))
    return out


def split_holdout(
    dataset: Dataset,
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_HOLDOUT_SEED,
    style: str = DEFAULT_HOLDOUT_STYLE,
    environments: Sequence[str] | None = None,
) -> tuple[Dataset, Dataset]:
    """Split rows (with ``image_id`` and ``domain`` columns) into (in, out) parts, order kept.

    Give whole domains: the split of a domain is computed from the rows given. ``environments``
    defaults to :func:`holdout_environments` of the dataset.
    """
    for column in ("image_id", "domain"):
        if column not in dataset.column_names:
            raise ValueError(f"split_holdout needs an {column!r} column; the dataset has {dataset.column_names}.")
    if style == "domainbed" and environments is None:
        environments = holdout_environments(dataset)
    out_ids = holdout_ids(dataset["image_id"], dataset["domain"], fraction, seed, style, environments)
    is_out = [image_id in out_ids for image_id in dataset["image_id"]]
    in_part = dataset.select([i for i, flag in enumerate(is_out) if not flag])
    out_part = dataset.select([i for i, flag in enumerate(is_out) if flag])
    return in_part, out_part
