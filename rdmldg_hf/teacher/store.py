"""The resumable store of teacher replies: one append-only JSONL file per key set.

A store lives in ``<root>/<store_name(key)>/``: ``settings.json`` holds the key (teacher,
prompt version and text, benchmark, sampling settings; never the API key or the server)
and ``replies.jsonl`` one record per line, written with a single ``write`` per record and
flushed as it arrives:

- ``{"kind": "reply", "custom_id": ..., "image_id": ..., "round": r, "start": s, "n": n,
  "choices": [{"text": ..., "finish_reason": ...}], "usage": {...}, "model": ...}``: one
  answered request (from the chat API, or later from the Batch API: the ids are the same);
- ``{"kind": "failure", "custom_id": ..., "image_id": ..., "error": ..., "retries": k}``:
  a request given up for this run (the next run asks again);
- ``{"kind": "batch", "batch_id": ..., "shard": ..., "input_file_id": ..., "custom_ids": [...],
  "wire_ids": [...]}`` and ``{"kind": "batch_done", "batch_id": ..., "status": ...}``: a Batch
  API job submitted with these requests (``wire_ids``: the opaque ids they were sent under;
  absent in batches of earlier versions, sent under the ``custom_ids``), and collected (its
  replies and failures are recorded before it).

``custom_id`` here is the store's request key (image id, round, first candidate): it never
leaves the machine. ``request-id-secret`` keys the opaque ids; ``writer.lock`` is held by the
one process appending (a second one stops at once).

Everything else (which chain is accepted, what is missing) is derived from the replies,
so a run killed at any moment resumes by asking only for what has no reply. A torn last
line (a kill in the middle of a write) is cut off when the store is opened; other kinds
of record are kept and skipped, so later modes can add their own.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..benchmarks import Benchmark
from ..locking import FolderLock
from .requests import custom_id, parse_custom_id
from .settings import SamplingSettings, store_key, store_name

__all__ = ["Reply", "TeacherStore"]

logger = logging.getLogger(__name__)

_LENGTH_BITS = 32  # a record is shorter than 4 GiB
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1


@dataclass(frozen=True)
class Reply:
    """One answered request: candidates ``start..`` of round ``round`` of an image."""

    image_id: str
    round: int
    start: int
    n: int
    texts: tuple[str | None, ...]
    finish_reasons: tuple[str | None, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    batch: bool = False  # answered through the Batch API (billed at its price)

    @property
    def custom_id(self) -> str:
        return custom_id(self.image_id, self.round, self.start)

    @property
    def covered(self) -> int:
        """Candidate slots this reply settles: all ``n`` asked, or only those returned when a
        server silently returned fewer (the rest are asked again); a reply with no choices
        settles all ``n`` (as rejected) so that a broken server cannot loop forever."""
        return len(self.texts) if 0 < len(self.texts) < self.n else self.n

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "reply",
            "custom_id": self.custom_id,
            "image_id": self.image_id,
            "round": self.round,
            "start": self.start,
            "n": self.n,
            "choices": [
                {"text": text, "finish_reason": reason}
                for text, reason in zip(self.texts, self.finish_reasons or (None,) * len(self.texts))
            ],
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "model": self.model,
            **({"batch": True} if self.batch else {}),
        }

    @classmethod
    def from_completion(
        cls, image_id: str, round_index: int, start: int, n: int, completion: Any, batch: bool = False
    ) -> "Reply":
        """The reply held in a chat-completion JSON body (from the chat API or a Batch API output line).

        Raises:
            ValueError: when the body is not a chat completion.
        """
        if not isinstance(completion, dict) or not isinstance(completion.get("choices", []), list):
            raise ValueError(f"reply is not a chat completion: {str(completion)[:100]!r}")
        choices = sorted(
            (choice for choice in completion.get("choices") or [] if isinstance(choice, dict)),
            key=lambda choice: choice.get("index") or 0,
        )
        usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else {}
        return cls(
            image_id=image_id,
            round=round_index,
            start=start,
            n=n,
            texts=tuple(_content((choice.get("message") or {}).get("content")) for choice in choices),
            finish_reasons=tuple(choice.get("finish_reason") for choice in choices),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            model=completion.get("model") if isinstance(completion.get("model"), str) else None,
            batch=batch,
        )

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "Reply":
        choices = record.get("choices") or []
        usage = record.get("usage") or {}
        return cls(
            image_id=record["image_id"],
            round=int(record["round"]),
            start=int(record["start"]),
            n=int(record["n"]),
            texts=tuple(choice.get("text") for choice in choices),
            finish_reasons=tuple(choice.get("finish_reason") for choice in choices),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            model=record.get("model"),
            batch=bool(record.get("batch")),
        )


def _content(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict)) or None
    return str(content)


@dataclass
class _Totals:
    replies: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_prompt_tokens: int = 0  # ... of which through the Batch API
    batch_completion_tokens: int = 0
    models: set[str] = field(default_factory=set)

    def add(self, reply: Reply) -> None:
        self.replies += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        if reply.batch:
            self.batch_prompt_tokens += reply.prompt_tokens
            self.batch_completion_tokens += reply.completion_tokens
        if reply.model:
            self.models.add(reply.model)


class TeacherStore:
    """Append-only store of the replies of one key set (see the module docstring).

    Only an index (image id -> byte ranges of its replies) is held in memory; replies are
    read back from the file when asked for.
    """

    REPLIES = "replies.jsonl"
    SETTINGS = "settings.json"
    LOCK = "writer.lock"  # held by the one process appending (see rdmldg_hf.locking)

    def __init__(
        self, directory: str | os.PathLike, key: dict[str, Any], fsync: bool = False, read_only: bool = False
    ):
        self.directory = Path(directory)
        self.key = dict(key)
        self.fsync = fsync
        self.read_only = read_only  # for status readers: never writes, never cuts a line a running build is writing
        self._lock: FolderLock | None = None
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = FolderLock(self.directory, "teacher run", lock_file=self.directory / self.LOCK).acquire()
            self._check_settings()
        self.path = self.directory / self.REPLIES
        # image id -> packed (offset, length) of its reply lines: one int, or a list when several
        self._index: dict[str, int | list[int]] = {}
        self.totals = _Totals()
        self.batches: dict[str, dict[str, Any]] = {}  # batch id -> its record; custom ids dropped once done
        self.repaired_bytes = 0
        self.corrupt_lines = 0
        self._load()
        if read_only:
            self._append_fd = -1
            self._read_fd = os.open(self.path, os.O_RDONLY)
            self._size = os.fstat(self._read_fd).st_size
        else:
            self._append_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._read_fd = os.open(self.path, os.O_RDONLY)
            self._size = os.fstat(self._append_fd).st_size

    @classmethod
    def open(
        cls, root: str | os.PathLike, benchmark: Benchmark, sampling: SamplingSettings, **kwargs: Any
    ) -> "TeacherStore":
        """The store of this benchmark and sampling settings under ``root`` (created if new)."""
        key = store_key(benchmark, sampling)
        return cls(Path(root) / store_name(key), key, **kwargs)

    def _check_settings(self) -> None:
        path = self.directory / self.SETTINGS
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != self.key:
                raise ValueError(
                    f"The teacher store {self.directory} was made with other settings ({stored}); "
                    f"expected {self.key}. Point --teacher-store elsewhere or remove that folder."
                )
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.key, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def _load(self) -> None:
        """Index the replies on disk; cut a torn last line off the file."""
        if not self.path.exists():
            return
        good_end = 0
        with open(self.path, "rb") as handle:
            offset = 0
            for line in handle:
                start, offset = offset, offset + len(line)
                record = self._parse(line)
                if record is None:
                    if line.endswith(b"\n") and handle.peek(1):
                        self.corrupt_lines += 1
                        logger.warning("Skipping unreadable line at byte %d of %s.", start, self.path)
                        good_end = offset
                    continue
                good_end = offset
                self._register(record, start, len(line))
        size = self.path.stat().st_size
        if good_end < size and not self.read_only:
            self.repaired_bytes = size - good_end
            logger.warning("Cutting a torn last record (%d bytes) off %s.", self.repaired_bytes, self.path)
            os.truncate(self.path, good_end)

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any] | None:
        if not line.endswith(b"\n"):
            return None
        try:
            record = json.loads(line)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def _register(self, record: dict[str, Any], offset: int, length: int) -> None:
        kind = record.get("kind")
        if kind == "reply":  # a request answered twice is kept (its tokens were paid); decisions use the first
            self._remember(record["image_id"], offset, length)
            self.totals.add(Reply.from_json(record))
        elif kind == "failure":
            self.totals.failures += 1
        elif kind == "batch":
            self.batches[record["batch_id"]] = {**record, "done": None}
        elif kind == "batch_done" and record.get("batch_id") in self.batches:
            batch = self.batches[record["batch_id"]]
            batch["done"], batch["custom_ids"] = record.get("status"), len(batch["custom_ids"])
            batch.pop("wire_ids", None)

    def _remember(self, image_id: str, offset: int, length: int) -> None:
        packed = (offset << _LENGTH_BITS) | length
        known = self._index.get(image_id)
        if known is None:
            self._index[image_id] = packed
        elif isinstance(known, list):
            known.append(packed)
        else:
            self._index[image_id] = [known, packed]

    def _append(self, record: dict[str, Any]) -> tuple[int, int]:
        if self.read_only:
            raise ValueError(f"The teacher store {self.directory} was opened read-only.")
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        offset = self._size
        written = os.write(self._append_fd, line)
        while written < len(line):  # a short write: finish it before anything else
            written += os.write(self._append_fd, line[written:])
        if self.fsync:
            os.fsync(self._append_fd)
        self._size += len(line)
        return offset, len(line)

    def add_reply(self, reply: Reply) -> None:
        """Append an answered request (flushed before returning)."""
        offset, length = self._append(reply.to_json())
        self._remember(reply.image_id, offset, length)  # the caller's id string: nothing copied per image
        self.totals.add(reply)

    def add_failure(self, image_id: str, request_id: str, error: str, retries: int) -> None:
        """Append a request given up for this run."""
        record = {"kind": "failure", "custom_id": request_id, "image_id": image_id, "error": error, "retries": retries}
        self._append(record)
        self.totals.failures += 1

    def add_batch(
        self, batch_id: str, shard: str, input_file_id: str, custom_ids: list[str], wire_ids: list[str] | None = None
    ) -> None:
        """Record a submitted Batch API job, the store keys of its requests and the opaque ids they were sent under."""
        record = {
            "kind": "batch",
            "batch_id": batch_id,
            "shard": shard,
            "input_file_id": input_file_id,
            "custom_ids": custom_ids,
        }
        if wire_ids is not None:
            if len(wire_ids) != len(custom_ids):
                raise ValueError(f"Batch {batch_id}: {len(wire_ids)} opaque ids for {len(custom_ids)} requests.")
            record["wire_ids"] = wire_ids
        self._append(record)
        self._register(record, 0, 0)

    def add_batch_done(self, batch_id: str, status: str) -> None:
        """Record that a batch's results (replies and failures) are all in the store."""
        record = {"kind": "batch_done", "batch_id": batch_id, "status": status}
        self._append(record)
        self._register(record, 0, 0)

    def request_id_secret(self) -> bytes:
        """The store's random key of opaque request ids (created on first use, readable by its owner only)."""
        path = self.directory / "request-id-secret"
        if not path.exists():
            if self.read_only:
                raise ValueError(f"The teacher store {self.directory} has no request id secret (opened read-only).")
            fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            os.replace(path.with_suffix(".tmp"), path)
        return bytes.fromhex(path.read_text().strip())

    def pending_ids(self) -> set[str]:
        """Request ids inside submitted batches not collected yet."""
        return {cid for batch in self.batches.values() if batch["done"] is None for cid in batch["custom_ids"]}

    def replies(self, image_id: str) -> list[Reply]:
        """The stored replies of an image, in the order they arrived."""
        known = self._index.get(image_id)
        if known is None:
            return []
        out = []
        for packed in known if isinstance(known, list) else (known,):
            offset, length = packed >> _LENGTH_BITS, packed & _LENGTH_MASK
            out.append(Reply.from_json(json.loads(os.pread(self._read_fd, length, offset))))
        return out

    def image_ids(self) -> Iterator[str]:
        """Ids of the images with at least one reply."""
        return iter(self._index)

    def has_reply(self, request_id: str) -> bool:
        """Whether the request ``request_id`` (a :func:`custom_id`) has a stored reply."""
        image_id, _, _ = parse_custom_id(request_id)
        return any(reply.custom_id == request_id for reply in self.replies(image_id))

    def close(self) -> None:
        for fd in (self._append_fd, self._read_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._append_fd = self._read_fd = -1
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "TeacherStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
