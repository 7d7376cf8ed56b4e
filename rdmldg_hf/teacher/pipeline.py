"""A teacher run: bounded-concurrency requests for every image still missing replies.

``generate_chains(images, benchmark, settings, store_root)`` asks the teacher for what
the store lacks, ``concurrency`` requests at a time, and returns a read-only mapping
image id -> :class:`~rdmldg_hf.data.schema.ChainRecord` decided from the store, with the
run's summary (tokens, cost, acceptance per domain and class) in ``.summary``.
Images are read, resized and encoded only while their requests are in flight.

Every wait is bounded: one attempt of a request gets ``settings.timeout`` seconds in all,
a request ``settings.retry.max_retries`` retries, and the run stops (``ServerFailing``) once
``settings.stop_after_failures`` requests in a row failed after all their retries. Images
whose requests failed are left undecided (``summary["incomplete"]``); rerunning asks again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Sequence

import openai
from tqdm.auto import tqdm

from ..atomic import atomic_write_json
from ..benchmarks import Benchmark
from ..data.schema import ChainRecord, SourceImage
from .accounting import AcceptanceStats, estimate_cost, price_for
from .adaptation import ServerAdaptations, error_details, refusal, refused_parameter
from .client import make_client
from .images import image_data_url
from .rejection import Decision, decide
from .requests import chat_request, custom_id
from .retry import RetriesExhausted, ServerFailing, Transient, call_with_retries
from .settings import TeacherSettings
from .store import MalformedReply, Reply, TeacherStore

__all__ = ["RunCounters", "TeacherRun", "TeacherChains", "generate_chains"]

try:  # the HTTP library the openai client is built on (httpx2 in recent releases, httpx before)
    from httpx2 import Response as _HttpResponse
except ImportError:  # pragma: no cover - older openai releases
    from httpx import Response as _HttpResponse

logger = logging.getLogger(__name__)

INLINE_ENCODE_BYTES = 64 * 1024


@dataclass
class RunCounters:
    """What happened in this run (the progress bar's figures)."""

    done: int = 0
    already_complete: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    malformed_replies: int = 0  # replies of an unexpected shape (each retried like a server error)
    unfinished: int = 0  # images still missing replies after the run (their requests failed)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TeacherRun:
    """Fills the store with the replies the given images still need."""

    def __init__(
        self,
        benchmark: Benchmark,
        settings: TeacherSettings,
        store: TeacherStore,
        client: openai.AsyncOpenAI,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ):
        self.benchmark = benchmark
        self.settings = settings
        self.store = store
        self.client = client
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.counters = RunCounters()
        self.failures: dict[str, str] = {}
        self.stats = AcceptanceStats(benchmark.class_names)
        # Set once a server silently returns fewer choices than n: ask one at a time.
        self.single = settings.sampling.candidates == 1
        # What the server refused (max_completion_tokens, temperature, top_p, n), as recorded in the store.
        self.adaptations = ServerAdaptations.load(store.directory)
        self._price = price_for(settings.sampling.model, settings.price)
        self._bar: tqdm | None = None
        self._failed_in_a_row = 0  # requests given up one after the other, with no reply between them

    def decide(self, image: SourceImage, replies: Sequence[Reply] | None = None) -> Decision:
        """The image's state from its stored replies (or ``replies``, when the caller holds them)."""
        sampling = self.settings.sampling
        return decide(
            self.store.replies(image.image_id) if replies is None else replies,
            self.benchmark,
            image.label,
            sampling.candidates,
            self.settings.max_rounds,
            sampling.model,
        )

    async def run(self, images: Sequence[SourceImage]) -> RunCounters:
        """Process every image with ``concurrency`` workers sharing one iterator.

        When one worker stops the run (``ServerFailing``, a refused request), the requests still in
        flight are cancelled: nothing is stored for them, so the next run sends them again.
        """
        iterator: Iterator[SourceImage] = iter(images)
        self._bar = tqdm(
            total=len(images), unit="img", desc="teacher", disable=not self.settings.progress, dynamic_ncols=True
        )
        workers = [asyncio.ensure_future(self._worker(iterator)) for _ in range(self.settings.concurrency)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            self._bar.close()
        return self.counters

    def tally(self, images: Sequence[SourceImage]) -> None:
        """Count every image's current state without asking for anything (the Batch API mode)."""
        for image in images:
            self._count(image, self.decide(image))

    async def _worker(self, iterator: Iterator[SourceImage]) -> None:
        for image in iterator:
            decision = await self.process(image)
            self._count(image, decision)

    def _count(self, image: SourceImage, decision: Decision) -> None:
        counters = self.counters
        counters.done += 1
        counters.unfinished += not decision.final
        failed = image.image_id in self.failures
        self.stats.add(image.domain, image.label, decision, failed)
        if failed:
            counters.failed += 1
        elif decision.accepted:
            counters.accepted += 1
        else:
            counters.rejected += 1
        if self._bar is not None:
            self._bar.update(1)
            totals = self.store.totals  # the whole build so far, earlier runs included
            cost = estimate_cost(
                totals.prompt_tokens,
                totals.completion_tokens,
                self._price,
                totals.batch_prompt_tokens,
                totals.batch_completion_tokens,
                self.settings.batch_price_factor,
            )
            self._bar.set_postfix(
                accepted=counters.accepted,
                rejected=counters.rejected,
                failed=counters.failed,
                retries=counters.retries,
                tokens=totals.prompt_tokens + totals.completion_tokens,
                cost="?" if cost is None else f"${cost:.2f}",
                refresh=False,
            )

    async def process(self, image: SourceImage) -> Decision:
        """Ask for an image's missing candidates, one request at a time, until it is final."""
        replies = self.store.replies(image.image_id)
        decision = self.decide(image, replies)
        if decision.final:
            self.counters.already_complete += 1
            return decision
        sampling = self.settings.sampling
        url: str | None = None
        while not decision.final:
            assert decision.next_round is not None
            request_id = custom_id(image.image_id, decision.next_round, decision.next_start)
            try:
                if url is None:
                    url = await self._encode(image)
            except (OSError, ValueError) as error:  # the image, not the server
                self._give_up(image.image_id, request_id, error)
                return decision
            n = 1 if self.single or self.adaptations.single else sampling.candidates - decision.next_start
            try:
                replies.append(await self._request(image.image_id, decision.next_round, decision.next_start, n, url))
            except (RetriesExhausted, openai.APIStatusError) as error:
                self._give_up(image.image_id, request_id, error)
                self._failed_in_a_row += 1
                self._stop_if_failing()
                return decision
            decision = self.decide(image, replies)  # the replies just stored, without reading them back
        return decision

    def _give_up(self, image_id: str, request_id: str, error: Exception) -> None:
        """Record a request given up for this run (the next run asks again)."""
        retries = error.retries if isinstance(error, RetriesExhausted) else 0
        message = f"{type(error).__name__}: {error}"[:300]
        self.store.add_failure(image_id, request_id, message, retries)
        self.failures[image_id] = message
        logger.debug("Request %s failed: %s", request_id, message)

    def _stop_if_failing(self) -> None:
        """Stop the run once ``stop_after_failures`` requests in a row failed after all their retries.

        Raises:
            ServerFailing: with the server's last error.
        """
        limit = self.settings.stop_after_failures
        if not limit or self._failed_in_a_row < limit:
            return
        last = next(reversed(self.failures.values()))
        raise ServerFailing(
            f"Stopped early: the last {self._failed_in_a_row} teacher requests all failed after "
            f"{self.settings.retry.max_retries} retries each (--stop-after-failures {limit}). The server's last "
            f"error: {last}. Check the server (--base-url), the network and --timeout, then rerun to continue: "
            f"nothing is lost ({self.store.totals.replies} replies are kept in the store; only the missing "
            "requests are sent)."
        )

    async def _encode(self, image: SourceImage) -> str:
        """The image as a data URL; large files are decoded in a worker thread so that the
        event loop keeps serving the other requests meanwhile."""
        sampling = self.settings.sampling
        data = image.read_bytes()
        args = (data, sampling.image_max_side, sampling.image_format, sampling.image_quality)
        if len(data) <= INLINE_ENCODE_BYTES:  # a thread hand-off costs more than encoding a small file
            return image_data_url(*args)
        return await asyncio.to_thread(image_data_url, *args)

    def _on_retry(self, transient: Transient, wait: float) -> None:
        self.counters.retries += 1
        logger.debug("Retrying in %.3fs after %s", wait, transient.description)

    async def _create(self, body: dict[str, Any]) -> Any:
        """POST the body as it is and return the reply's JSON, within ``settings.timeout`` seconds in all.

        The body is already in wire format (the Batch API sends the same bodies);
        ``chat.completions.create`` would re-walk it and build typed objects, several ms
        per request that a run of thousands of concurrent requests feels. Status errors,
        timeouts and connection errors still come from the ``openai`` client, whose timeout
        bounds each read; the total bound here also stops a server trickling its reply.

        Raises:
            TimeoutError: no complete reply within ``settings.timeout`` seconds.
            MalformedReply: the reply is not JSON.
        """
        timeout = self.settings.timeout
        try:
            response = await asyncio.wait_for(
                self.client.post("/chat/completions", body=body, cast_to=_HttpResponse), timeout
            )
        except asyncio.TimeoutError:
            raise TimeoutError(f"no complete reply within {timeout:g} s (--timeout)") from None
        try:
            return response.json()
        except ValueError as error:
            raise MalformedReply(f"reply is not JSON: {error}; it begins {response.text[:100]!r}") from None

    def _count_malformed(self, error: MalformedReply) -> None:
        self.counters.malformed_replies += 1
        if self.counters.malformed_replies == 1:
            logger.warning("The teacher server sent a malformed reply (asked again; all are counted): %s", error)

    async def _request(self, image_id: str, round_index: int, start: int, n: int, url: str) -> Reply:
        """One request (with retries, and adapted to what the server refuses); its reply is appended
        to the store before returning.

        Raises:
            RequestRefused: a 400/422 that no adaptation fixes (the run stops).
        """
        refused: tuple[dict[str, Any], str] | None = None
        while True:
            n = 1 if self.adaptations.single else n
            body = chat_request(self.benchmark, self.settings.sampling, url, n, self.adaptations)
            if refused is not None and body == refused[0]:
                raise refusal(f"a request ({refused[1][:500]})", self.adaptations)
            self.counters.requests += 1

            async def attempt(body: dict[str, Any] = body, n: int = n) -> Reply:  # malformed replies are retried
                try:
                    return Reply.from_completion(image_id, round_index, start, n, await self._create(body))
                except MalformedReply as error:
                    self._count_malformed(error)
                    raise

            try:
                reply = await call_with_retries(attempt, self.settings.retry, self.sleep, self._on_retry, self.rng)
                break
            except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
                param, message = error_details(error.body)
                message = f"HTTP {error.status_code}: {message}"
                if not self.adaptations.adapt(refused_parameter(param, message), message, body):
                    raise refusal(f"a request ({message[:500]})", self.adaptations) from None
                self.adaptations.record(self.store.directory)
                refused = (body, message)
        if 0 < len(reply.texts) < n:
            self._fall_back_to_single(f"returned {len(reply.texts)} of n={n} choices")
        self.store.add_reply(reply)
        self._failed_in_a_row = 0
        self.counters.prompt_tokens += reply.prompt_tokens
        self.counters.completion_tokens += reply.completion_tokens
        return reply

    def _fall_back_to_single(self, why: str) -> None:
        if not self.single:
            self.single = True
            logger.warning("The teacher server %s: asking for one candidate per request from now on.", why)


class TeacherChains(Mapping):
    """Image id -> :class:`ChainRecord`, decided from the store when looked up.

    Images whose requests failed in this run have a null chain and say so in their
    rejection reasons; the next run asks for them again. ``summary`` is the run's
    build summary (see :func:`summarize`).
    """

    def __init__(self, run: TeacherRun, images: Sequence[SourceImage]):
        self._run = run
        self._images = {image.image_id: image for image in images}  # references only: no pixels held
        self.summary: dict[str, Any] = {}

    def decision(self, image_id: str) -> Decision:
        return self._run.decide(self._images[image_id])

    def __getitem__(self, image_id: str) -> ChainRecord:
        decision = self.decision(image_id)
        record = decision.record
        failure = self._run.failures.get(image_id)
        if not decision.final:
            why = f"request failed: {failure}" if failure else "no complete teacher reply yet"
            record = ChainRecord(
                **{
                    **asdict(record),
                    "rejection_reasons": (*record.rejection_reasons, f"{why} (the next run asks again)"),
                }
            )
        return record

    def __iter__(self) -> Iterator[str]:
        return iter(self._images)

    def __len__(self) -> int:
        return len(self._images)

    @property
    def store(self) -> TeacherStore:
        return self._run.store

    @property
    def failures(self) -> dict[str, str]:
        """Image id -> the error of its request that failed in this run (its chain is undecided)."""
        return dict(self._run.failures)

    def close(self) -> None:
        self._run.store.close()


def _incomplete(run: TeacherRun) -> dict[str, Any] | None:
    """The mark of a run that left images undecided (their requests failed): None when complete."""
    if not run.counters.unfinished:
        return None
    return {
        "images": run.counters.unfinished,
        "first_error": next(iter(run.failures.values()), None),
        "to_finish": "run the same command again: only the missing requests are sent, nothing is lost",
    }


def summarize(chains: TeacherChains, seconds: float) -> dict[str, Any]:
    """The build summary: settings, acceptance per domain and class, tokens and cost (all runs and this one)."""
    run = chains._run
    settings, store, counters, stats = run.settings, run.store, run.counters, run.stats
    price = price_for(settings.sampling.model, settings.price)
    totals = store.totals
    return {
        "teacher": settings.sampling.model,
        "server": "OpenAI API" if not settings.base_url else "OpenAI-compatible server (--base-url)",
        "prompt_version": store.key["prompt_version"],
        "benchmark": run.benchmark.name,
        "sampling": asdict(settings.sampling),
        "max_rounds": settings.max_rounds,
        "server_adaptations": list(run.adaptations.notes),  # parameters the server refused, left out or replaced
        "store": store.directory.name,  # no local paths: the summary goes into the published build report
        "store_skipped_lines": list(store.skipped),  # unreadable or bad records: their requests were sent again
        "acceptance": stats.as_dict(),
        "incomplete": _incomplete(run),
        "requests": totals.replies,
        "models_seen": sorted(totals.models),
        "tokens": {
            "prompt": totals.prompt_tokens,
            "completion": totals.completion_tokens,
            "total": totals.prompt_tokens + totals.completion_tokens,
        },
        "price_usd_per_million_tokens": list(price) if price else None,
        "batch_api_tokens": {"prompt": totals.batch_prompt_tokens, "completion": totals.batch_completion_tokens},
        "estimated_cost_usd": estimate_cost(
            totals.prompt_tokens,
            totals.completion_tokens,
            price,
            totals.batch_prompt_tokens,
            totals.batch_completion_tokens,
            settings.batch_price_factor,
        ),
        "this_run": {
            **asdict(counters),
            "estimated_cost_usd": estimate_cost(counters.prompt_tokens, counters.completion_tokens, price),
            "seconds": round(seconds, 3),
        },
    }


def generate_chains(
    images: Sequence[SourceImage],
    benchmark: Benchmark,
    settings: TeacherSettings,
    store_root: str | Path,
    *,
    http_client: Any | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
    rng: random.Random | None = None,
) -> TeacherChains:
    """Ask the teacher for every image's missing candidates and decide each image's chain.

    Args:
        images: the images (read only while their requests are in flight).
        benchmark: its class names make the question and judge the conclusions.
        settings: sampling, server, concurrency, retries, prices.
        store_root: folder holding one store per key set (``<out>.teacher-store`` from the CLI).
        http_client: an ``httpx2.AsyncClient`` for the ``openai`` client (tests: a mock transport).
        sleep: awaited between retries (default ``asyncio.sleep``).
        rng: draws the backoff jitter.

    Raises:
        ValueError: duplicated image ids, a missing API key.
        TeacherConfigError: the server refused the key, model or URL, or (``RequestRefused``) a request
            for a reason no adaptation fixes (the store keeps all replies so far).
    """
    for name in ("httpx2", "httpx"):  # one INFO line per request would drown the progress bar
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    seen: set[str] = set()
    for image in images:
        if image.image_id in seen:
            raise ValueError(f"Image id {image.image_id!r} appears twice; image ids must be unique.")
        seen.add(image.image_id)
    store = TeacherStore.open(store_root, benchmark, settings.sampling)
    try:
        client = make_client(settings, http_client)
        run = TeacherRun(benchmark, settings, store, client, sleep or asyncio.sleep, rng)
        started = time.perf_counter()

        async def main() -> None:
            try:
                await run.run(images)
            finally:
                await client.close()

        asyncio.run(main())
    except BaseException:
        store.close()
        raise
    chains = TeacherChains(run, images)
    chains.summary = summarize(chains, time.perf_counter() - started)
    atomic_write_json(store.directory / "summary.json", chains.summary)
    return chains
