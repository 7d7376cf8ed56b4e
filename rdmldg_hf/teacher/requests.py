"""Label-blind request bodies and the ids that name them.

A body holds the image and the reasoning question with the benchmark's class options,
and nothing else that depends on the image: the label never reaches this module. The
same bodies serve the synchronous API and (as JSONL lines) the Batch API.
"""

from __future__ import annotations

from typing import Any

from ..benchmarks import Benchmark
from ..prompts import api_messages
from .settings import SamplingSettings

__all__ = ["chat_request", "custom_id", "parse_custom_id"]


def chat_request(benchmark: Benchmark, sampling: SamplingSettings, image_url: str, n: int) -> dict[str, Any]:
    """Keyword arguments of ``chat.completions.create`` (and the Batch API ``body``) for one image."""
    body: dict[str, Any] = {
        "model": sampling.model,
        "messages": api_messages("reasoning", benchmark.class_names, [image_url], detail=sampling.image_detail),
        "n": n,
        "temperature": sampling.temperature,
        "max_tokens": sampling.max_tokens,
    }
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    return body


def custom_id(image_id: str, round_index: int, start: int) -> str:
    """Id of the request for candidates ``start..`` of round ``round_index`` of an image."""
    return f"{image_id}|r{round_index}|s{start}"


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
