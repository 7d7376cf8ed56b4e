"""Scan a DomainBed image folder ``<FOLDER>/<domain>/<class>/<image>`` into :class:`SourceImage` s.

The folder given may be the benchmark folder itself (its subfolders are domains) or the
DomainBed data root (then the registry's folder name, e.g. ``office_home``, is used).
Real folders are messy: files beside the domain folders are ignored, unreadable or
non-image files are skipped with a reason, unknown domain or class folders are errors
that name the folder and what is expected.

Below a domain folder only regular files are opened (a FIFO or device named like an image
would block ``open()``), a symlink is followed only when it points inside the benchmark
folder (or the domain folder's own location), a folder reached twice is scanned once, and a
name that is not valid UTF-8 is skipped (a dataset's strings must be Unicode); each of these is
reported with its reason, the name shown with its undecodable bytes escaped.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from PIL import UnidentifiedImageError

from ..benchmarks import Benchmark, get_benchmark, normalize_name
from .build_paths import read_option_file
from .pixel_limit import OversizedImageError, open_image
from .schema import SourceImage

__all__ = [
    "ScanResult",
    "SkippedFile",
    "scan_domainbed",
    "load_class_map",
    "load_domain_map",
    "load_exclude_list",
    "resolve_benchmark_folder",
]


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the dataset and why (paths relative to the benchmark folder)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class ScanResult:
    """The images of a folder (paths, not bytes), the files skipped and the entries ignored.

    ``excluded`` counts the images left out because an exclude list names them;
    ``exclude_unmatched`` lists that list's entries that matched no file.
    """

    images: list[SourceImage]
    root: str
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    excluded: int = 0
    exclude_unmatched: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Images per domain."""
        counts: dict[str, int] = {}
        for image in self.images:
            counts[image.domain] = counts.get(image.domain, 0) + 1
        return counts


def _layout(benchmark: Benchmark) -> str:
    return (
        f"expected <data root>/{benchmark.folder}/<domain>/<class>/<image> with domains "
        f"{', '.join(benchmark.domain_folders)}"
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")


def _display_name(name: str) -> str:
    """``name`` as printable Unicode: bytes of a file name that are not UTF-8 shown escaped (``caf\\xe9.jpg``)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    return _display_name(name) == name


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _domain_of(benchmark: Benchmark, name: str, domain_map: Mapping[str, str] | None = None) -> str | None:
    key = normalize_name((domain_map or {}).get(name, name))
    return key if key in benchmark.domains else None


def resolve_benchmark_folder(
    benchmark: Benchmark | str, root: str | os.PathLike, domain_map: Mapping[str, str] | None = None
) -> Path:
    """The benchmark folder under ``root`` (``root`` itself, or ``root/<FOLDER>``).

    Raises:
        FileNotFoundError: if ``root`` does not exist.
        ValueError: if neither ``root`` nor ``root/<FOLDER>`` holds domain folders.
    """
    benchmark = get_benchmark(benchmark)
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--images {str(root)!r} is not a folder; {_layout(benchmark)}.")
    for candidate in (path, path / benchmark.folder):
        if candidate.is_dir() and any(_domain_of(benchmark, p.name, domain_map) for p in _subfolders(candidate)):
            return candidate
    for child in _subfolders(path):
        if child.name.lower() == benchmark.folder.lower():
            return child
    found = ", ".join(p.name for p in _subfolders(path)[:10]) or "no subfolders"
    raise ValueError(
        f"--images {str(root)!r} holds no domain folder of {benchmark.name!r} (found: {found}); "
        f"{_layout(benchmark)}. Give the benchmark folder itself or the DomainBed data root."
    )


def _load_name_map(path: str | os.PathLike, option: str, target: str) -> dict[str, str]:
    text = read_option_file(option, path, f"a JSON file mapping folder name -> {target}")
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{option} {str(path)!r}: invalid JSON at line {error.lineno}: {error.msg}.") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ValueError(f"{option} {str(path)!r} must be a JSON object mapping folder name -> {target}.")
    return mapping


def load_class_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``--class-map`` JSON file: ``{"folder name": "class", ...}``.

    Raises:
        FileNotFoundError / ValueError: naming the file and what is expected.
    """
    return _load_name_map(path, "--class-map", "class name")


def load_domain_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``--domain-map`` JSON file: ``{"folder name": "domain", ...}``.

    Raises:
        FileNotFoundError / ValueError: naming the file and what is expected.
    """
    return _load_name_map(path, "--domain-map", "domain name")


def _class_resolver(benchmark: Benchmark, class_map: Mapping[str, str] | None) -> Callable[[str, str], int]:
    """A function folder name -> class index, checking every class-map target up front."""
    mapping = dict(class_map or {})
    for folder, target in mapping.items():
        try:
            benchmark.class_index(target)
        except ValueError as error:
            raise ValueError(f"--class-map maps folder {folder!r} to {target!r}: {error}") from None

    def resolve(folder: str, where: str) -> int:
        try:
            return benchmark.class_index(mapping.get(folder, folder))
        except ValueError:
            raise ValueError(
                f"Class folder {folder!r} (in {where}) is not a class of {benchmark.name!r}. "
                f"Valid classes: {', '.join(benchmark.classes)}. If it names one of them differently, "
                f'pass --class-map FILE with a JSON object such as {{"{folder}": "{benchmark.classes[0]}"}}.'
            ) from None

    return resolve


def load_exclude_list(path: str | os.PathLike) -> list[str]:
    """Read an ``--exclude`` file: image paths relative to the benchmark folder, one per line.

    Blank lines and lines starting with ``#`` are ignored; ``\\`` separators and a leading
    ``./`` are accepted (DomainBed's ``domain_net_duplicates.txt`` reads as it is).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is a folder or not UTF-8 text (naming it).
    """
    text = read_option_file(
        "--exclude",
        path,
        "a text file of image paths relative to the benchmark folder (<domain>/<class>/<file>), one per line",
    )
    entries = []
    for line in text.splitlines():
        entry = line.strip().replace("\\", "/")
        if entry and not entry.startswith("#"):
            entries.append(entry[2:] if entry.startswith("./") else entry)
    return entries


def _check_image(path: Path, max_pixels: int | None = None) -> str | None:
    """None if ``path`` is a readable image within the pixel limit, else the reason it is not."""
    try:
        with open_image(path, max_pixels) as image:
            image.draft(image.mode, (1, 1))  # JPEG: decode at reduced scale, still reading the whole stream
            image.load()  # decodes the pixels: also catches truncated JPEGs, which verify() lets through
    except OversizedImageError as error:
        return str(error)
    except UnidentifiedImageError:
        return "not an image file"
    except (OSError, SyntaxError, ValueError) as error:
        detail = error.strerror if isinstance(error, OSError) and error.filename else str(error)  # no local path
        return f"unreadable image ({type(error).__name__}: {str(detail)[:80]})"
    return None


def scan_domainbed(
    benchmark: Benchmark | str,
    root: str | os.PathLike,
    class_map: Mapping[str, str] | None = None,
    verify: bool = True,
    domain_map: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    max_pixels: int | None = None,
) -> ScanResult:
    """List the images of a DomainBed folder; every skipped file comes with its reason.

    Args:
        benchmark: the benchmark whose domains and classes the folder must hold.
        root: the benchmark folder or the DomainBed data root.
        class_map: class folder name -> class (folder or display name) for non-standard folders.
        domain_map: domain folder name -> domain (folder or split name) for non-standard folders.
        verify: decode every image to skip unreadable ones (reads each file once more).
        exclude: image paths relative to the benchmark folder to leave out (e.g. DomainBed's list of
            DomainNet duplicates); counted in ``excluded``, entries matching nothing in ``exclude_unmatched``.
        max_pixels: images with more pixels are skipped unread (default PIL's ``Image.MAX_IMAGE_PIXELS``).

    Raises:
        FileNotFoundError, ValueError: bad layout, unknown domain/class folder, empty domain.
    """
    benchmark = get_benchmark(benchmark)
    for folder_name, target in (domain_map or {}).items():
        try:
            benchmark.domain(target)
        except ValueError as error:
            raise ValueError(f"--domain-map maps folder {folder_name!r} to {target!r}: {error}") from None
    folder = resolve_benchmark_folder(benchmark, root, domain_map)
    class_of = _class_resolver(benchmark, class_map)
    result = ScanResult(images=[], root=str(folder))
    unmatched = dict.fromkeys(exclude)
    seen_domains: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_dir() or _is_hidden(entry.name):
            result.ignored.append(_display_name(entry.name))
            continue
        domain = _domain_of(benchmark, entry.name, domain_map)
        if domain is None:
            raise ValueError(
                f"Domain folder {entry.name!r} in {str(folder)!r} is not a domain of {benchmark.name!r}. "
                f"Valid domains: {', '.join(benchmark.domain_folders)}. Move or remove it, or if it names one "
                f"of them differently, pass --domain-map FILE with a JSON object such as "
                f'{{"{entry.name}": "{benchmark.domain_folders[0]}"}}.'
            )
        if domain in seen_domains:
            raise ValueError(
                f"Folders {seen_domains[domain]!r} and {entry.name!r} are the same domain {domain!r}; keep one."
            )
        seen_domains[domain] = entry.name
        count = _scan_domain(entry, domain, class_of, result, verify, unmatched, max_pixels)
        if count == 0:
            raise ValueError(
                f"Domain folder {entry.name!r} holds no readable image; {_layout(benchmark)} "
                f"(see the {len(result.skipped)} skipped files: {', '.join(s.path for s in result.skipped[:3])})."
            )
    missing = [d for d in benchmark.domain_folders if normalize_name(d) not in seen_domains]
    if missing:
        raise ValueError(f"{str(folder)!r} lacks the domain folders {', '.join(missing)}; {_layout(benchmark)}.")
    result.exclude_unmatched = [entry for entry, matched in unmatched.items() if not matched]
    return result


def _scan_domain(
    folder: Path,
    domain: str,
    class_of: Callable[[str, str], int],
    result: ScanResult,
    verify: bool,
    exclude: dict[str, bool | None],
    max_pixels: int | None,
) -> int:
    """Add the images of one domain folder to ``result`` (marking the ``exclude`` entries met); the number added."""
    count = 0
    base = folder.parent
    walk = _FolderWalk(result, inside=(base.resolve(), folder.resolve()))
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        relative = f"{folder.name}/{entry.name}"
        if _is_hidden(entry.name):
            result.skipped.append(SkippedFile(_display_name(relative), "hidden file"))
            continue
        kind = walk.kind(entry, relative)
        if kind == "file":
            walk.skip(relative, "file beside the class folders (not in a class folder)")
        if kind != "folder":
            continue
        label = class_of(entry.name, f"{folder.name}/")
        for path, image_id in walk.class_files(entry.path, relative):
            if image_id in exclude:
                exclude[image_id] = True
                result.excluded += 1
                continue
            reason = _check_image(Path(path), max_pixels) if verify else None
            if reason is not None:
                result.skipped.append(SkippedFile(image_id, reason))
                continue
            result.images.append(SourceImage(image_id=image_id, domain=domain, label=label, path=path))
            count += 1
    return count


_FILE_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class _FolderWalk:
    """The regular files under the class folders of one domain; every other entry is skipped with its reason.

    A symlink is followed only when its target lies inside one of the folders ``inside`` (the benchmark
    folder and the domain folder, resolved); within a class folder, a folder reached twice (a symlink
    loop, a second link, a link to the domain folder) is scanned once.
    """

    def __init__(self, result: ScanResult, inside: tuple[Path, ...]):
        self.result = result
        self.inside = inside
        self.visited: set[str] = set()

    def skip(self, relative: str, reason: str) -> None:
        self.result.skipped.append(SkippedFile(_display_name(relative), reason))

    def followed(self, entry: os.DirEntry) -> bool:
        """Whether a symlink's target lies inside the benchmark (or domain) folder."""
        target = Path(os.path.realpath(entry.path))
        return any(target.is_relative_to(folder) for folder in self.inside)

    def kind(self, entry: os.DirEntry, relative: str) -> str:
        """``"folder"``, ``"file"`` (regular) or ``"skipped"`` (reported here, with its reason)."""
        if entry.is_symlink() and not self.followed(entry):
            what = "folder" if entry.is_dir() else "file"
            self.skip(relative, f"symlink to a {what} outside the benchmark folder (not followed)")
            return "skipped"
        try:
            mode = entry.stat().st_mode
        except OSError as error:  # a broken symlink, a symlink loop
            what = "broken symlink" if entry.is_symlink() else "unreadable"
            self.skip(relative, f"{what} ({error.strerror or type(error).__name__})")
            return "skipped"
        if stat.S_ISDIR(mode):
            return "folder"
        if stat.S_ISREG(mode):
            return "file"
        self.skip(relative, f"not a regular file ({_FILE_KINDS.get(stat.S_IFMT(mode), 'special file')})")
        return "skipped"

    def class_files(self, folder: str, relative: str) -> Iterator[tuple[str, str]]:
        """(path, image id) of the regular files under a class folder, in sorted order (``relative``: its id)."""
        self.visited = {str(path) for path in self.inside}  # a link back up is not followed either
        yield from self._files(folder, relative)

    def _files(self, folder: str, relative: str) -> Iterator[tuple[str, str]]:
        real = os.path.realpath(folder)
        if real in self.visited:
            self.skip(relative, "folder already scanned through another link (not scanned twice)")
            return
        self.visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as error:  # e.g. no permission to list it
            self.skip(relative, f"unreadable folder ({error.strerror or type(error).__name__})")
            return
        for entry in entries:
            image_id = f"{relative}/{entry.name}"
            if not _is_utf8(entry.name):
                self.skip(image_id, "name is not valid UTF-8 (rename the file to include it)")
                continue
            if _is_hidden(entry.name):
                self.skip(image_id, "hidden folder (not scanned)" if entry.is_dir() else "hidden file")
                continue
            kind = self.kind(entry, image_id)
            if kind == "folder":
                yield from self._files(entry.path, image_id)
            elif kind == "file":
                yield entry.path, image_id
