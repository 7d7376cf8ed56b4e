"""Which request errors are worth retrying, how long to wait, and the retry loop itself.

The ``openai`` client's own retries are switched off (``max_retries=0``) so that every
retry is counted, its wait is ours (``Retry-After`` on 429, exponential backoff with
jitter otherwise) and tests can make the waits instant.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import openai

from .settings import RetryPolicy

__all__ = [
    "Transient",
    "RetriesExhausted",
    "TeacherStopped",
    "TeacherConfigError",
    "ServerFailing",
    "classify_error",
    "retry_after_seconds",
    "call_with_retries",
]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]


class RetriesExhausted(Exception):
    """A request still failed after the last retry; ``error`` says how, ``retries`` how often it was retried."""

    def __init__(self, error: str, retries: int):
        self.error = error
        self.retries = retries
        super().__init__(f"{error} (gave up after {retries} retries)")


class TeacherStopped(Exception):
    """A teacher run stopped early; every reply so far is kept in the store (rerunning continues)."""


class TeacherConfigError(TeacherStopped):
    """The server refused the key, the model or the route: retrying cannot help, fix the settings."""


class ServerFailing(TeacherStopped):
    """Request after request failed after all its retries: the server is down, unreachable or broken."""


@dataclass(frozen=True)
class Transient:
    """A retryable error: a description and, for 429, the server's ``Retry-After`` in seconds."""

    description: str
    retry_after: float | None = None


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _status_text(error: openai.APIStatusError) -> str:
    message = getattr(error, "message", "") or ""
    return f"HTTP {error.status_code}: {message[:200]}"


def classify_error(error: BaseException) -> Transient | None:
    """A :class:`Transient` for errors worth retrying, None for the others.

    Retried: 429 (with its ``Retry-After``), 408, 409, 5xx, timeouts (a read that waited too long,
    or a whole request over its time: ``TimeoutError``), connection errors, replies that are not
    valid JSON or not a chat completion of the expected shape.

    Raises:
        TeacherConfigError: for 401, 403 and 404 (key, permission, model or URL wrong).
    """
    if isinstance(error, openai.APITimeoutError):
        return Transient("timeout")
    if isinstance(error, TimeoutError):
        return Transient(f"timeout: {error}" if str(error) else "timeout")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return Transient(f"connection error: {type(cause).__name__}: {str(cause)[:160]}")
    if isinstance(error, openai.RateLimitError):
        return Transient(_status_text(error), retry_after_seconds(error.response.headers))
    if isinstance(error, openai.APIStatusError):
        if error.status_code in (401, 403, 404):
            raise TeacherConfigError(
                f"The teacher server refused the request ({_status_text(error)}). Check the API key "
                "environment variable (--api-key-env), --teacher (the model id) and --base-url."
            ) from error
        if error.status_code in (408, 409) or error.status_code >= 500:
            return Transient(_status_text(error))
        return None
    if isinstance(error, (openai.APIResponseValidationError, ValueError)):
        return Transient(f"unreadable reply: {type(error).__name__}: {str(error)[:160]}")
    return None


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Sleep,
    on_retry: Callable[[Transient, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Await ``call()`` until it succeeds, retrying transient errors per ``policy``.

    Raises:
        RetriesExhausted: after ``policy.max_retries`` retries of transient errors.
        openai.APIStatusError: non-retryable status errors (e.g. 400), unchanged.
        TeacherConfigError: see :func:`classify_error`.
    """
    rng = rng or random.Random()
    retries = 0
    while True:
        try:
            return await call()
        except Exception as error:  # noqa: BLE001 - classified below, unknown errors re-raised
            transient = classify_error(error)
            if transient is None:
                raise
            if retries >= policy.max_retries:
                raise RetriesExhausted(transient.description, retries) from error
            if transient.retry_after is not None:
                wait = min(transient.retry_after, policy.max_retry_after)
            else:
                wait = policy.backoff(retries, rng.random())
            retries += 1
            if on_retry is not None:
                on_retry(transient, wait)
            await sleep(wait)
