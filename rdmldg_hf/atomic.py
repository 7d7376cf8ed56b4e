"""Writes that a kill never leaves half done: a file (text, bytes, JSON) or a whole folder, put in place by a rename.

A file is written under a temporary name beside it (``.<name>.partial-<token>``), flushed and fsynced,
renamed over the file with :func:`os.replace`, and its folder is fsynced: a reader (or a resumed run)
sees the old content or the new one, never part of it. An error while writing removes the temporary
file and leaves the old content. Since the file is replaced, not rewritten, a hard link to the old one
keeps the old content.

A folder is built in a staging folder beside it (``.<name>.partial-<token>``) that replaces it only
once complete. The previous folder is kept aside (``.<name>.previous-<token>``) until then; a kill
between the two renames leaves it there, and the next writer of the folder puts it back.

These helpers make each write whole; they do not make writers take turns (that is
:mod:`rdmldg_hf.locking`). Append-only logs (the teacher store, relabel parts) are another pattern:
whole lines appended and fsynced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["atomic_folder", "atomic_open", "atomic_write", "atomic_write_json", "publish"]

logger = logging.getLogger(__name__)

_MODES = {"w": "x", "wt": "xt", "wb": "xb"}


def _partial(path: Path) -> Path:
    """A fresh hidden name beside ``path`` for what will replace it."""
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")


def _fsync_folder(folder: Path) -> None:
    """Make the renames inside ``folder`` durable, where the system allows a folder to be fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def publish(handle: IO[Any], path: str | os.PathLike) -> Path:
    """Flush, fsync and close ``handle`` (a file opened by name, written under another name), then rename it to
    ``path``, replacing what was there, and fsync the folder; returns ``path``.

    For a file whose final name is known only once it is complete; otherwise use :func:`atomic_open`.
    """
    path = Path(path)
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(handle.name, path)
    _fsync_folder(path.parent)
    return path


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", *, encoding: str = "utf-8", permissions: int = 0o666
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; it replaces ``path`` when the block ends without error.

    Args:
        path: the file (its folder must exist).
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: of a text file.
        permissions: of the new file, before the umask (``0o600``: readable by its owner only).

    Raises:
        ValueError: for another mode.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_open writes a whole file: mode {mode!r} is not one of {', '.join(_MODES)}.")
    path = Path(path)
    tmp = _partial(path)
    handle = open(
        tmp,
        _MODES[mode],
        encoding=None if "b" in mode else encoding,
        opener=lambda name, flags: os.open(name, flags, permissions),
    )
    try:
        yield handle
        publish(handle, path)
    except BaseException:
        handle.close()
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike, data: str | bytes, *, encoding: str = "utf-8", permissions: int = 0o666
) -> Path:
    """Replace ``path`` with ``data`` (text or bytes) in one rename (see :func:`atomic_open`); returns ``path``."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", encoding=encoding, permissions=permissions) as f:
        f.write(data)
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Replace ``path`` with ``data`` as JSON and a final newline, in one rename; returns ``path``.

    ``data`` is serialised first: a value JSON cannot hold raises before the file is touched.
    """
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=default)
    return atomic_write(path, text + "\n")


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder by hard links, else (another file system, links refused) by copying."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (what a rename of it must not outrun)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_folder(Path(root))


def _restore_previous(out: Path) -> None:
    """Put back the previous folder a writer killed between its two renames left aside."""
    if out.exists():
        return
    for previous in sorted(out.parent.glob(f".{out.name}.previous-*")):
        logger.warning("Restoring %s from %s (a write was interrupted while replacing it).", out, previous)
        os.replace(previous, out)
        return


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, keep_contents: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside ``path``; when the block ends without error it replaces ``path``, else it is
    removed and ``path`` stays as it was.

    Args:
        path: the folder (created if missing, with its parents).
        keep_contents: start the staging folder as a copy of ``path`` made of hard links: replace a file there
            (:func:`atomic_write`), never modify one in place, or the folder in use changes too.

    Raises:
        FileExistsError: ``path`` is a file.
    """
    out = Path(path).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{str(path)!r} is a file, not a folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    _restore_previous(out)
    token = uuid.uuid4().hex[:8]
    staging = out.parent / f".{out.name}.partial-{token}"
    if keep_contents and out.exists():
        _link_tree(out, staging)
    else:
        staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = out.parent / f".{out.name}.previous-{token}"
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    _fsync_folder(out.parent)
    shutil.rmtree(previous, ignore_errors=True)
