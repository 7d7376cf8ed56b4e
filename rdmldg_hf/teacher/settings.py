"""Settings of a teacher run: what is sampled (part of the store key) and how it is fetched.

:class:`SamplingSettings` changes the requests or their replies, so it is part of the
store key (a change starts a separate store). :class:`TeacherSettings` adds how the
replies are fetched (server, concurrency, retries, prices), which never changes them;
:class:`BatchLimits` bounds the files of the Batch API mode.

A field that a command-line option sets carries the option's help in ``metadata={"help": ...}``
(as TRL's configs do); :mod:`rdmldg_hf.teacher.arguments` makes the options from it.
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

__all__ = ["SamplingSettings", "RetryPolicy", "TeacherSettings", "BatchLimits", "store_key", "store_name"]

IMAGE_FORMATS = ("jpeg", "png", "webp")
IMAGE_DETAILS = ("low", "high", "auto")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


@dataclass(frozen=True)
class SamplingSettings:
    """What the teacher is asked, and how its replies are sampled.

    Each field's ``help`` says what it does (it is also the help of its ``rdmldg build`` option); ``top_p``,
    ``image_detail`` and ``reasoning_effort`` are left out of the requests when None.
    """

    model: str = field(
        default="gpt-4o",
        metadata={"help": "Teacher model id (e.g. gpt-4o). Without it no chains are generated.", "metavar": "MODEL"},
    )
    candidates: int = field(
        default=4, metadata={"help": "Chains per image and round, asked as n=K (default %(default)s).", "metavar": "K"}
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (default %(default)s)."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling top_p (not sent by default)."})
    max_tokens: int = field(
        default=1024,
        metadata={
            "help": "Most tokens per chain, sent as max_completion_tokens (max_tokens to a server that only "
            "takes that; default %(default)s). Reasoning models count their hidden reasoning in it."
        },
    )
    image_max_side: int = field(
        default=512,
        metadata={"help": "Images are resized to this longest side before sending (default %(default)s)."},
    )
    image_format: str = field(
        default="jpeg",
        metadata={"help": "Encoding of the images sent (default %(default)s).", "choices": IMAGE_FORMATS},
    )
    image_quality: int = field(default=90, metadata={"help": "JPEG/WebP quality (default %(default)s)."})
    image_detail: str | None = field(
        default=None, metadata={"help": "OpenAI image detail (not sent by default).", "choices": IMAGE_DETAILS}
    )
    reasoning_effort: str | None = field(
        default=None,
        metadata={
            "help": "reasoning_effort of reasoning models (o-series, GPT-5; not sent by default). "
            "Parameters a model refuses (temperature, top_p, n) are left out automatically and reported.",
            "choices": REASONING_EFFORTS,
        },
    )

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

    max_retries: int = field(
        default=6,
        metadata={
            "help": "Retries of a request on 429/5xx/timeouts/malformed replies before the image is marked failed "
            "for this run (default %(default)s)."
        },
    )
    base_delay: float = field(
        default=1.0, metadata={"help": "First backoff wait in seconds, doubled per retry (default %(default)s)."}
    )
    max_delay: float = field(default=60.0, metadata={"help": "Longest backoff wait (default %(default)s)."})
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
    """Everything a teacher run needs besides the images: what is asked (``sampling``, the store key), the
    ``retry`` policy of one request, and how replies are fetched and priced (each field's ``help``, also the
    help of its ``rdmldg build`` option). The API key is read from ``api_key_env``, never printed or stored.
    """

    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    base_url: str | None = field(
        default=None,
        metadata={"help": "An OpenAI-compatible server (vLLM, transformers serve, ...); default: the OpenAI API."},
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "Environment variable holding the API key (default %(default)s). The key is never printed or "
            "stored, and is redacted from anything the server sends back.",
            "metavar": "VAR",
        },
    )
    timeout: float = field(
        default=120.0,
        metadata={
            "help": "Seconds one attempt of a request may take in all: connecting, sending, waiting and reading the "
            "whole reply (a server trickling its reply is cut off too). A slower attempt is a timeout, retried like "
            "one (default %(default)s)."
        },
    )
    concurrency: int = field(default=8, metadata={"help": "Requests in flight at once (default %(default)s)."})
    max_rounds: int = field(
        default=2,
        metadata={"help": "Further rounds of K candidates for images with no accepted chain (default %(default)s)."},
    )
    price: tuple[float, float] | None = field(
        default=None,
        metadata={
            "help": "USD per million input,output tokens for the cost estimate (default: built-in table).",
            "metavar": "IN,OUT",
        },
    )
    batch_price_factor: float = field(
        default=0.5,
        metadata={"help": "Batch API price as a fraction of --teacher-price or the table's (default %(default)s)."},
    )
    progress: bool = field(
        default=True, metadata={"help": "The progress bar of the requests (--no-progress hides it)."}
    )
    stop_after_failures: int = field(
        default=8,
        metadata={
            "help": "Stop once N requests in a row have failed after all their retries, with the server's last "
            "error (default %(default)s; 0: never stop). A dead server costs one round of timeouts, not one per "
            "image; rerun to continue: nothing is lost.",
            "metavar": "N",
        },
    )

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


@dataclass(frozen=True)
class BatchLimits:
    """Limits of one Batch API file (defaults: OpenAI's documented 50,000 requests and 200 MB)."""

    max_requests: int = field(
        default=50_000, metadata={"help": "Batch mode: requests per batch file (default %(default)s)."}
    )
    max_bytes: int = field(
        default=200 * 1024 * 1024, metadata={"help": "Batch mode: bytes per batch file (default %(default)s)."}
    )
    completion_window: str = "24h"


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
