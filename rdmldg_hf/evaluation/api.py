"""Zero-shot baseline of an OpenAI-compatible chat model (the paper's GPT-4o row).

Requests go through the teacher's label-blind client (:func:`rdmldg_hf.teacher.pipeline.generate_chains`):
the same reasoning question, bounded concurrency, retries and the resumable reply store,
with one greedy candidate per image and no further rounds. Each reply's conclusion is
mapped to a class; a reply with none, or a request that failed for good, is an invalid
output (``-1``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from ..benchmarks import Benchmark
from ..chains import extract_conclusion, match_class
from ..data.schema import SourceImage
from ..teacher.pipeline import generate_chains
from ..teacher.settings import RetryPolicy, SamplingSettings, TeacherSettings
from .predict import Predictions, decode_images

__all__ = ["api_settings", "predict_api"]


def api_settings(
    model: str,
    base_url: str | None = None,
    *,
    max_tokens: int = 1024,
    concurrency: int = 8,
    image_max_side: int = 512,
    api_key_env: str = "OPENAI_API_KEY",
    retry: RetryPolicy | None = None,
    timeout: float = 120.0,
) -> TeacherSettings:
    """Teacher settings for zero-shot evaluation: one candidate at temperature 0, no extra rounds."""
    return TeacherSettings(
        sampling=SamplingSettings(
            model=model,
            candidates=1,
            temperature=0.0,
            max_tokens=max_tokens,
            image_max_side=image_max_side,
            image_format="png",
        ),
        retry=retry or RetryPolicy(),
        base_url=base_url,
        api_key_env=api_key_env,
        timeout=timeout,
        concurrency=concurrency,
        max_rounds=0,
        progress=False,
    )


def _png_bytes(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def predict_api(
    images: Sequence[Any],
    labels: Sequence[int],
    domains: Sequence[str],
    image_ids: Sequence[str],
    benchmark: Benchmark,
    settings: TeacherSettings,
    store_root: str | Path,
    *,
    http_client: Any | None = None,
    sleep: Any | None = None,
) -> Predictions:
    """Ask the API model the reasoning question for every readable image; resumable through the store.

    ``labels`` only let the teacher store record acceptance after the reply; they are never sent.
    """
    decoded, unreadable = decode_images(images)
    sources = [
        SourceImage(image_id=image_ids[i], domain=domains[i], label=int(labels[i]), data=_png_bytes(image))
        for i, image in enumerate(decoded)
        if image is not None
    ]
    chains = generate_chains(sources, benchmark, settings, store_root, http_client=http_client, sleep=sleep)
    indices = [-1] * len(decoded)
    texts: list[str | None] = [None] * len(decoded)
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    try:
        for source in sources:
            replies = chains.store.replies(source.image_id)
            text = next((t for reply in replies for t in reply.texts if t), None)
            i = position[source.image_id]
            texts[i] = text
            index = match_class(
                extract_conclusion(text) if text else None, benchmark.class_names, benchmark.class_aliases
            )
            indices[i] = -1 if index is None else index
    finally:
        chains.close()
    return Predictions("reasoning", indices, texts, None, unreadable)
