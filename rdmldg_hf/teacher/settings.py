"""Settings of a teacher run: what is sampled (part of the store key) and how it is fetched.

:class:`SamplingSettings` changes the requests or their replies, so it is part of the
store key (a change starts a separate store). :class:`TeacherSettings` adds how the
replies are fetched (server, concurrency, retries, prices), which never changes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..benchmarks import Benchmark
from ..prompts import PROMPT_VERSION, reasoning_question

__all__ = ["SamplingSettings", "RetryPolicy", "TeacherSettings", "store_key", "store_name"]

IMAGE_FORMATS = ("jpeg", "png", "webp")
IMAGE_DETAILS = ("low", "high", "auto")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


@dataclass(frozen=True)
class SamplingSettings:
    """What the teacher is asked, and how its replies are sampled.

    Attributes:
        model: teacher model id sent with every request (``"gpt-4o"``).
        candidates: chains asked per image and round (``n=K``).
        temperature: sampling temperature.
        top_p: nucleus sampling; omitted from requests when None.
        max_tokens: most tokens per chain.
        image_max_side: images are resized so that their longest side is at most this.
        image_format: encoding of the re-encoded image (``jpeg``, ``png``, ``webp``).
        image_quality: JPEG/WebP quality.
        image_detail: OpenAI ``detail`` of the image part; omitted when None.
        reasoning_effort: ``reasoning_effort`` of reasoning models (o-series, GPT-5); omitted when None.
    """

    model: str = "gpt-4o"
    candidates: int = 4
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int = 1024
    image_max_side: int = 512
    image_format: str = "jpeg"
    image_quality: int = 90
    image_detail: str | None = None
    reasoning_effort: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 2):
            raise ValueError(
                f"--temperature must be a number from 0 to 2 (the OpenAI API's range); got {self.temperature}."
            )
        if self.top_p is not None and not (math.isfinite(self.top_p) and 0 <= self.top_p <= 1):
            raise ValueError(f"--top-p must be a number from 0 to 1; got {self.top_p}.")
        if not 1 <= self.image_quality <= 100:
            raise ValueError(f"--image-quality must be from 1 to 100; got {self.image_quality}.")
        if self.candidates < 1:
            raise ValueError(f"--candidates must be at least 1; got {self.candidates}.")
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1; got {self.max_tokens}.")
        if self.image_max_side < 8:
            raise ValueError(f"--image-max-side must be at least 8 pixels; got {self.image_max_side}.")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"Unknown image format {self.image_format!r}. Valid formats: {', '.join(IMAGE_FORMATS)}.")
        if self.image_detail is not None and self.image_detail not in IMAGE_DETAILS:
            raise ValueError(f"Unknown image detail {self.image_detail!r}. Valid values: {', '.join(IMAGE_DETAILS)}.")
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(
                f"Unknown reasoning effort {self.reasoning_effort!r}. Valid values: {', '.join(REASONING_EFFORTS)}."
            )


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one request on 429, 5xx, timeouts, connection errors and unreadable replies.

    The wait before retry ``i`` (0-based) is ``min(max_delay, base_delay * 2**i)`` minus a
    random fraction up to ``jitter`` of it; a 429's ``Retry-After`` is used instead when
    given (capped at ``max_retry_after``). After ``max_retries`` retries the image is
    recorded as failed for this run.
    """

    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 120.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        delays = (self.base_delay, self.max_delay, self.max_retry_after)
        if self.max_retries < 0 or not all(0 <= delay < math.inf for delay in delays) or not 0 <= self.jitter <= 1:
            raise ValueError(
                "Retry settings (--max-retries, --backoff-base, --backoff-max) must be non-negative finite numbers "
                "and jitter within [0, 1]; "
                f"got max_retries={self.max_retries}, base_delay={self.base_delay}, "
                f"max_delay={self.max_delay}, jitter={self.jitter}."
            )

    def backoff(self, retry: int, fraction: float) -> float:
        """Wait before retry number ``retry``; ``fraction`` in [0, 1) draws the jitter."""
        delay = min(self.max_delay, self.base_delay * (2**retry))
        return delay * (1.0 - self.jitter * fraction)


@dataclass(frozen=True)
class TeacherSettings:
    """Everything a teacher run needs besides the images.

    Attributes:
        sampling: what is asked (the store key).
        retry: retry policy of one request.
        base_url: an OpenAI-compatible server; None for the OpenAI API.
        api_key_env: environment variable holding the API key (never printed or stored).
        timeout: seconds one attempt of a request may take in all (connect, send, wait, read the whole
            reply); a slower attempt is cut off and counts as a timeout (retried like one).
        concurrency: requests in flight at once.
        max_rounds: further rounds of K candidates for an image with no accepted chain.
        price: (input, output) USD per million tokens; None looks the model up in the price table.
        batch_price_factor: the Batch API's price as a fraction of ``price``.
        progress: show a progress bar.
        stop_after_failures: stop the run once this many requests in a row failed after all their
            retries (0: never stop); the store keeps every reply, so rerunning continues.
    """

    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    concurrency: int = 8
    max_rounds: int = 2
    price: tuple[float, float] | None = None
    batch_price_factor: float = 0.5
    progress: bool = True
    stop_after_failures: int = 8

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1; got {self.concurrency}.")
        if self.max_rounds < 0:
            raise ValueError(f"--max-rounds must be 0 or more; got {self.max_rounds}.")
        if not 0 < self.timeout < math.inf:
            raise ValueError(f"--timeout must be a positive, finite number of seconds; got {self.timeout}.")
        if self.stop_after_failures < 0:
            raise ValueError(f"--stop-after-failures must be 0 (never stop) or more; got {self.stop_after_failures}.")
        if self.batch_price_factor < 0:
            raise ValueError(f"--batch-price-factor must be 0 or more; got {self.batch_price_factor}.")


def store_key(benchmark: Benchmark, sampling: SamplingSettings) -> dict[str, Any]:
    """The settings a store is keyed by: teacher, prompt version and text, benchmark, sampling.

    ``reasoning_effort`` counts only when set, so stores made before it existed keep their key.
    """
    question = reasoning_question(benchmark.class_names)
    sampled = asdict(sampling)
    if sampled["reasoning_effort"] is None:
        del sampled["reasoning_effort"]
    return {
        "benchmark": benchmark.name,
        "prompt_version": PROMPT_VERSION,
        "question_sha256": hashlib.sha256(question.encode()).hexdigest(),
        **sampled,
    }


def store_name(key: dict[str, Any]) -> str:
    """Folder name of a store: readable teacher and prompt version, then a hash of the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{key['model']}-{key['prompt_version']}").strip("-")
    return f"{key['benchmark']}-{slug}-{digest}"
