"""The OpenAI Batch API mode: the same label-blind requests, sent as JSONL batch files.

One run: collect the batches that finished (their replies go into the same store as the
synchronous mode's, under the same request ids, and through the same rejection
sampling), then write the requests still missing into batch files (streamed, split by
the API's limits), upload and submit them, and record each batch in the store. With
``wait`` it polls until every image is decided. A batch is found again after a crash
between its creation and its record by the shard id in its metadata.

Nothing uploaded names an image: a request's ``custom_id`` is its opaque
:func:`~rdmldg_hf.teacher.requests.wire_id`, mapped back to the image through the batch's
record in the store, and the shard id (file name, metadata) is a digest of those ids.
Batches recorded by earlier versions, whose ids were the store keys themselves, are
collected as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import openai

from ..atomic import atomic_write_json, publish
from ..benchmarks import Benchmark
from ..data.schema import SourceImage
from .adaptation import ServerAdaptations, error_details, refusal, refused_parameter
from .client import make_client
from .images import image_data_url
from .pipeline import TeacherChains, TeacherRun, summarize
from .rejection import decide
from .requests import chat_request, custom_id, parse_custom_id, wire_id
from .settings import BatchLimits, TeacherSettings
from .store import Reply, TeacherStore

__all__ = [
    "BatchLimits",
    "Shard",
    "BatchReport",
    "write_shards",
    "submit_shard",
    "collect_batches",
    "run_batches",
    "generate_chains_batch",
]

logger = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
FINAL_STATUSES = ("completed", "expired", "failed", "cancelled")
SHARD_KEY = "rdmldg_shard"


@dataclass(frozen=True)
class Shard:
    """A batch file written to disk: its id (a hash of its opaque request ids), path and size.

    Beside it, ``keys_path`` (never uploaded) holds the store keys of its requests, in file order.
    """

    shard_id: str
    path: Path
    requests: int

    @property
    def keys_path(self) -> Path:
        return self.path.with_suffix(".keys")

    def request_keys(self) -> list[str]:
        """The store keys of the requests, in file order."""
        with open(self.keys_path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    def wire_ids(self) -> list[str]:
        """The opaque ids the requests are sent under, in file order."""
        with open(self.path, "rb") as handle:
            return [json.loads(line)["custom_id"] for line in handle if line.strip()]

    def unlink(self) -> None:
        self.path.unlink()
        self.keys_path.unlink()


@dataclass
class BatchReport:
    """What one batch-mode run did."""

    submitted: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    replies: int = 0
    failed_requests: int = 0
    unknown_ids: int = 0
    malformed_lines: list[str] = field(default_factory=list)
    lost_batches: list[str] = field(default_factory=list)
    unreadable_images: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # request key -> failures in this run
    adapted_requests: int = 0  # refused for a parameter now adapted: asked again
    refusals: list[str] = field(default_factory=list)  # 400s no adaptation fixes: the run stops


class _ShardWriter:
    """Appends request lines to numbered files, starting a new one at the limits."""

    def __init__(self, folder: Path, limits: BatchLimits):
        self.folder, self.limits = folder, limits
        self.shards: list[Shard] = []
        self._handle: Any = None
        self._keys: Any = None
        self._count = self._bytes = 0
        self._hash = hashlib.sha256()

    def add(self, request_key: str, request_id: str, line: bytes) -> None:
        if self._handle is not None and (
            self._count >= self.limits.max_requests or self._bytes + len(line) > self.limits.max_bytes
        ):
            self.close()
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.folder / "shard.partial", "wb")
            self._keys = open(self.folder / "shard.partial-keys", "w", encoding="utf-8")
        self._handle.write(line)
        self._count += 1
        self._bytes += len(line)
        self._hash.update(request_id.encode() + b"\n")
        self._keys.write(json.dumps(request_key) + "\n")

    def close(self) -> None:
        if self._handle is None:
            return
        shard_id = self._hash.hexdigest()[:20]
        shard = Shard(shard_id, self.folder / f"shard-{shard_id}.jsonl", self._count)
        publish(self._keys, shard.keys_path)
        publish(self._handle, shard.path)
        self.shards.append(shard)
        self._handle, self._keys, self._count, self._bytes, self._hash = None, None, 0, 0, hashlib.sha256()


def write_shards(
    images: Sequence[SourceImage],
    benchmark: Benchmark,
    settings: TeacherSettings,
    store: TeacherStore,
    folder: Path,
    limits: BatchLimits = BatchLimits(),
    report: BatchReport | None = None,
    adaptations: ServerAdaptations | None = None,
) -> list[Shard]:
    """Batch files with the next request of every undecided image not already in a batch.

    Lines are ``{"custom_id", "method", "url", "body"}`` with exactly the synchronous mode's
    body (``n`` = the candidates still missing in the round, adapted to what the server
    refused) and an opaque ``custom_id``; images are read one at a time.
    """
    sampling = settings.sampling
    adaptations = adaptations or ServerAdaptations.load(store.directory)
    secret = store.request_id_secret()
    pending = store.pending_ids()
    writer = _ShardWriter(folder, limits)
    for image in images:
        decision = decide(
            store.replies(image.image_id),
            benchmark,
            image.label,
            sampling.candidates,
            settings.max_rounds,
            sampling.model,
        )
        if decision.final:
            continue
        request_id = custom_id(image.image_id, decision.next_round, decision.next_start)
        if request_id in pending:
            continue
        if report is not None and report.failures.get(request_id, 0) > settings.retry.max_retries:
            continue  # given up for this run, like a synchronous request after its retries
        try:
            url = image_data_url(
                image.read_bytes(), sampling.image_max_side, sampling.image_format, sampling.image_quality
            )
        except (OSError, ValueError) as error:
            store.add_failure(image.image_id, request_id, f"{type(error).__name__}: {error}"[:300], 0)
            if report is not None:
                report.unreadable_images += 1
            continue
        n = 1 if adaptations.single else sampling.candidates - decision.next_start
        body = chat_request(benchmark, sampling, url, n, adaptations)
        line = {"custom_id": wire_id(secret, request_id), "method": "POST", "url": ENDPOINT, "body": body}
        writer.add(request_id, line["custom_id"], (json.dumps(line, separators=(",", ":")) + "\n").encode())
    writer.close()
    return writer.shards


async def _find_submitted(client: openai.AsyncOpenAI, shard_id: str, known: set[str]) -> Any | None:
    """A batch carrying this shard id that the store does not know (created just before a crash)."""
    async for batch in client.batches.list(limit=100):
        if (batch.metadata or {}).get(SHARD_KEY) == shard_id and batch.id not in known:
            return batch
    return None


async def submit_shard(client: openai.AsyncOpenAI, store: TeacherStore, shard: Shard, limits: BatchLimits) -> str:
    """Upload a batch file and create its batch (or adopt the one a crashed run created); record it."""
    batch = await _find_submitted(client, shard.shard_id, set(store.batches))
    if batch is None:
        with open(shard.path, "rb") as handle:
            uploaded = await client.files.create(file=(shard.path.name, handle), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint=ENDPOINT,
            completion_window=limits.completion_window,
            metadata={SHARD_KEY: shard.shard_id},
        )
    store.add_batch(batch.id, shard.shard_id, batch.input_file_id, shard.request_keys(), shard.wire_ids())
    return batch.id


async def collect_batches(
    client: openai.AsyncOpenAI,
    store: TeacherStore,
    candidates: int,
    report: BatchReport,
    adaptations: ServerAdaptations | None = None,
) -> None:
    """Store the results of every recorded batch that reached a final status.

    A request refused for a parameter the server does not take adapts ``adaptations`` (and is
    asked again with the next files).

    Raises:
        RequestRefused: after storing every collected result, when a request was refused (HTTP 400)
            for a reason no adaptation fixes.
    """
    adaptations = adaptations or ServerAdaptations.load(store.directory)
    for batch_id, record in list(store.batches.items()):
        if record["done"] is not None:
            continue
        try:
            batch = await client.batches.retrieve(batch_id)
        except openai.NotFoundError:
            logger.warning(
                "The server no longer knows batch %s: its %d requests are submitted again.",
                batch_id,
                len(record["custom_ids"]),
            )
            report.lost_batches.append(batch_id)
            store.add_batch_done(batch_id, "unknown")
            continue
        if batch.status not in FINAL_STATUSES:
            continue
        # opaque id -> store key (batches of earlier versions were sent under the store keys)
        expected = dict(zip(record.get("wire_ids") or record["custom_ids"], record["custom_ids"]))
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await client.files.content(file_id)
                _store_results(store, batch_id, file_id, content.text, expected, candidates, report, adaptations)
        store.add_batch_done(batch_id, batch.status)
        report.collected.append(batch_id)
    adaptations.record(store.directory)
    if report.refusals:
        raise refusal(f"{len(report.refusals)} batch request(s), e.g. {report.refusals[0][:500]}", adaptations)


def _store_results(
    store: TeacherStore,
    batch_id: str,
    file_id: str,
    text: str,
    expected: dict[str, str],
    candidates: int,
    report: BatchReport,
    adaptations: ServerAdaptations,
) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            sent_id = item["custom_id"]
        except (ValueError, KeyError, TypeError):
            report.malformed_lines.append(f"{file_id} line {number}")
            logger.warning("Batch %s: line %d of %s is not a result line: %r", batch_id, number, file_id, line[:80])
            continue
        request_id = expected.get(sent_id) if isinstance(sent_id, str) else None
        if request_id is None:
            report.unknown_ids += 1
            logger.warning("Batch %s: result for unknown request id %r (ignored).", batch_id, sent_id)
            continue
        image_id, round_index, start = parse_custom_id(request_id)
        if any(reply.batch and reply.custom_id == request_id for reply in store.replies(image_id)):
            continue  # collected before a crash interrupted this batch's collection
        response = item.get("response") or {}
        if response.get("status_code") in (400, 422) and not item.get("error"):
            param, message = error_details(response.get("body"))
            message = f"HTTP {response['status_code']}: {message}"
            before = adaptations.as_dict()
            if adaptations.adapt(refused_parameter(param, message), message):
                report.adapted_requests += 1
                if adaptations.as_dict() == before:  # adapted already: count it, so that a loop ends
                    report.failures[request_id] = report.failures.get(request_id, 0) + 1
            else:
                report.refusals.append(message)
            store.add_failure(image_id, request_id, f"batch {batch_id}: {message}"[:300], 0)
            continue
        try:
            if item.get("error") or response.get("status_code") != 200:
                raise ValueError(json.dumps(item.get("error") or response.get("body"))[:200])
            reply = Reply.from_completion(
                image_id, round_index, start, candidates - start, response.get("body"), batch=True
            )
        except ValueError as error:
            store.add_failure(image_id, request_id, f"batch {batch_id}: {error}", 0)
            report.failed_requests += 1
            report.failures[request_id] = report.failures.get(request_id, 0) + 1
            continue
        store.add_reply(reply)
        report.replies += 1


async def run_batches(
    images: Sequence[SourceImage],
    benchmark: Benchmark,
    settings: TeacherSettings,
    store: TeacherStore,
    client: openai.AsyncOpenAI,
    folder: Path,
    limits: BatchLimits = BatchLimits(),
    wait: bool = False,
    poll_interval: float = 30.0,
    max_polls: int = 10_000,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> BatchReport:
    """Collect finished batches, submit what is missing; with ``wait``, repeat until nothing is pending."""
    report = BatchReport()
    adaptations = ServerAdaptations.load(store.directory)
    for poll in range(max_polls):
        await collect_batches(client, store, settings.sampling.candidates, report, adaptations)
        for shard in write_shards(images, benchmark, settings, store, folder, limits, report, adaptations):
            report.submitted.append(await submit_shard(client, store, shard, limits))
            shard.unlink()
        if not wait or not store.pending_ids():
            break
        await sleep(poll_interval)
    return report


def generate_chains_batch(
    images: Sequence[SourceImage],
    benchmark: Benchmark,
    settings: TeacherSettings,
    store_root: str | Path,
    *,
    limits: BatchLimits = BatchLimits(),
    wait: bool = False,
    poll_interval: float = 30.0,
    http_client: Any | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> tuple[TeacherChains | None, BatchReport]:
    """One Batch API mode run over the store of ``store_root`` (shared with the synchronous mode).

    Returns ``(chains, report)``: ``chains`` as :func:`~rdmldg_hf.teacher.pipeline.generate_chains`
    gives them once no batch is pending, else None (run again later, or pass ``wait``).
    """
    store = TeacherStore.open(store_root, benchmark, settings.sampling)
    client = make_client(settings, http_client)
    started = time.perf_counter()

    async def main() -> BatchReport:
        try:
            return await run_batches(
                images,
                benchmark,
                settings,
                store,
                client,
                store.directory / "batch-files",
                limits,
                wait,
                poll_interval,
                sleep=sleep or asyncio.sleep,
            )
        finally:
            await client.close()

    try:
        report = asyncio.run(main())
    except BaseException:
        store.close()
        raise
    if store.pending_ids():
        store.close()
        return None, report
    run = TeacherRun(benchmark, settings, store, client)
    run.tally(images)
    chains = TeacherChains(run, images)
    chains.summary = summarize(chains, time.perf_counter() - started)
    chains.summary["mode"] = "batch"
    chains.summary["this_run"]["batches"] = {key: value for key, value in asdict(report).items() if key != "failures"}
    atomic_write_json(store.directory / "summary.json", chains.summary)
    return chains, report
