"""One writer per folder: an exclusive OS lock on a lock file ``.<name>.lock`` beside the folder.

A build's dataset folder and teacher store, a SARR output folder and a LODO output folder are
each written by one process at a time. The lock is ``fcntl.flock`` on the lock file, so the
operating system releases it when the holder exits or is killed: a crashed run never blocks
the next one. A second process asking for a held folder stops at once with a
:class:`FolderBusyError` naming the folder and the holder's process id. Inside one process
the lock is re-entrant (a build holds its output folder and then writes it).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["FolderBusyError", "FolderLock", "lock_path"]

# Lock file path -> [file descriptor, holders in this process].
_HELD: dict[str, list[int]] = {}
_REGISTRY = threading.Lock()


class FolderBusyError(RuntimeError):
    """Another process is writing the folder."""


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` in its parent (it survives the folder's replacement)."""
    folder = Path(os.path.realpath(folder))  # one lock file however the folder is named (.., symlinks)
    return folder.parent / f".{folder.name}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown (it is starting)"


class FolderLock:
    """The exclusive lock of one folder for this process (see the module docstring).

    Use it as a context manager, or call :meth:`acquire` and keep it for the life of a
    long-lived object (released by :meth:`release`, when the object is collected, or when the
    process ends).

    Args:
        folder: the folder written (it need not exist yet; its parent is created).
        what: what writes it, for the error message (``"rdmldg build"``, ``"SARR run"``).
        lock_file: the lock file, when not :func:`lock_path` (e.g. one inside a folder never replaced).
    """

    def __init__(
        self, folder: str | os.PathLike, what: str = "another run", lock_file: str | os.PathLike | None = None
    ):
        self.folder = Path(folder).absolute()
        self.what = what
        self.path = Path(os.path.realpath(lock_file)) if lock_file is not None else lock_path(self.folder)
        self.held = False

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise :class:`FolderBusyError` at once if another process holds it."""
        if self.held:
            return self
        key = str(self.path)
        with _REGISTRY:
            entry = _HELD.get(key)
            if entry is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise FolderBusyError(
                        f"{self.folder} is being written by another process ({_holder(self.path)}, lock file "
                        f"{self.path}). Wait for it to finish (or stop it), or give this {self.what} another folder."
                    ) from None
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                entry = _HELD[key] = [fd, 0]
            entry[1] += 1
        self.held = True
        return self

    def release(self) -> None:
        """Give the lock back (the OS lock goes once every holder in this process released it)."""
        if not self.held:
            return
        self.held = False
        key = str(self.path)
        with _REGISTRY:
            entry = _HELD.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[key]
                os.ftruncate(entry[0], 0)
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the OS releases the lock anyway
            pass
