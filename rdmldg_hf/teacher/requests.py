"""Label-blind request bodies and the ids that name them.

A body holds the image and the reasoning question with the benchmark's class options,
and nothing else that depends on the image: the label never reaches this module. The
same bodies serve the synchronous API and (as JSONL lines) the Batch API.

A request is known in the store by its key (:func:`custom_id`: image id, round, first
candidate), which names the image's folders and file and so never leaves the machine; the
Batch API sees only :func:`wire_id`, a keyed digest of it that nobody without the store's
secret can link to an image.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ..benchmarks import Benchmark
from ..prompts import api_messages
from .adaptation import ServerAdaptations
from .settings import SamplingSettings

__all__ = ["chat_request", "custom_id", "parse_custom_id", "wire_id"]


def chat_request(
    benchmark: Benchmark,
    sampling: SamplingSettings,
    image_url: str,
    n: int,
    adaptations: ServerAdaptations | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``chat.completions.create`` (and the Batch API ``body``) for one image.

    ``n`` is sent when above 1; ``adaptations`` leave out what the server refused.
    """
    adapted = adaptations or ServerAdaptations()
    body: dict[str, Any] = {
        "model": sampling.model,
        "messages": api_messages("reasoning", benchmark.class_names, [image_url], detail=sampling.image_detail),
    }
    if n > 1:
        body["n"] = n
    for name, value in (("temperature", sampling.temperature), ("top_p", sampling.top_p)):
        if value is not None and name not in adapted.omitted:
            body[name] = value
    body[adapted.token_field] = sampling.max_tokens
    if sampling.reasoning_effort is not None:
        body["reasoning_effort"] = sampling.reasoning_effort
    return body


def custom_id(image_id: str, round_index: int, start: int) -> str:
    """Store key of the request for candidates ``start..`` of round ``round_index`` of an image (never sent)."""
    return f"{image_id}|r{round_index}|s{start}"


def wire_id(secret: bytes, request_key: str) -> str:
    """The opaque id a request is sent under (a Batch API ``custom_id``): HMAC-SHA256 of its key."""
    return "rq-" + hmac.new(secret, request_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def parse_custom_id(value: str) -> tuple[str, int, int]:
    """``(image_id, round, start)`` of a :func:`custom_id`.

    Raises:
        ValueError: naming the value when it is not such an id.
    """
    try:
        image_id, round_part, start_part = value.rsplit("|", 2)
        if not (round_part.startswith("r") and start_part.startswith("s")):
            raise ValueError
        return image_id, int(round_part[1:]), int(start_part[1:])
    except ValueError:
        raise ValueError(f"Not a teacher request id: {value!r} (expected '<image_id>|r<round>|s<start>').") from None
