"""Zero-shot baseline of an OpenAI-compatible chat model (the paper's GPT-4o row).

Requests go through the teacher's label-blind client (:func:`rdmldg_hf.teacher.pipeline.generate_chains`):
the same reasoning question, bounded concurrency, time limits, retries, early stop and the
resumable reply store, with one greedy candidate per image and no further rounds. Each reply's
conclusion is mapped to a class; a reply with none is an invalid output (``-1``). A request that
failed after all its retries has no answer: it is counted in ``Predictions.failed``, not scored.

Every image scored is uploaded to the server, so an image given only as a local path (no
bytes) is read only from inside the dataset's folder.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from ..benchmarks import Benchmark
from ..chains import extract_conclusion, match_class
from ..data.schema import SourceImage
from ..teacher.pipeline import generate_chains
from ..teacher.settings import SamplingSettings, TeacherSettings
from .predict import Predictions, decode_images

__all__ = ["api_settings", "predict_api", "local_images_inside"]


def api_settings(
    model: str,
    base_url: str | None = None,
    *,
    max_tokens: int = 1024,
    image_max_side: int = 512,
    **request: Any,
) -> TeacherSettings:
    """Teacher settings for zero-shot evaluation: one candidate at temperature 0, no extra rounds.

    ``request``: how requests are sent, as :class:`TeacherSettings` fields (``concurrency``, ``timeout``,
    ``retry``, ``api_key_env``, ``stop_after_failures``, ``progress``: off unless given).
    """
    if request.get("retry") is None:
        request.pop("retry", None)
    request.setdefault("progress", False)
    return TeacherSettings(
        sampling=SamplingSettings(
            model=model,
            candidates=1,
            temperature=0.0,
            max_tokens=max_tokens,
            image_max_side=image_max_side,
            image_format="png",
        ),
        base_url=base_url,
        max_rounds=0,
        **request,
    )


def _png_bytes(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _local_path(value: Any) -> str | None:
    """The local path of an image given only by its path (a ``datasets`` image dict without bytes, or a path)."""
    if isinstance(value, Mapping):
        return value.get("path") if value.get("bytes") is None else None
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None


def local_images_inside(
    images: Sequence[Any], image_ids: Sequence[str], folder: str | os.PathLike | None
) -> list[Any]:
    """``images`` with each one given only as a local path resolved inside ``folder`` (relative paths are
    relative to it, symbolic links followed); other images unchanged.

    Raises:
        ValueError: naming the first image whose path lies outside ``folder`` (any path when ``folder``
            is None: a dataset that is not a local folder has no local files to read), and the fix.
    """
    root = os.path.realpath(folder) if folder is not None else None
    out: list[Any] = []
    outside: list[tuple[str, str]] = []
    for image_id, value in zip(image_ids, images):
        path = _local_path(value)
        if path is None:
            out.append(value)
            continue
        resolved = os.path.realpath(os.path.join(root, path)) if root is not None else None
        if resolved is None or os.path.commonpath([root, resolved]) != root:
            outside.append((image_id, path))
        out.append({"bytes": None, "path": resolved})
    if outside:
        image_id, path = outside[0]
        where = f"outside the dataset folder {root}" if root is not None else "on this machine (no dataset folder)"
        raise ValueError(
            f"{len(outside)} image(s) are given only as a local file {where}, e.g. image {image_id!r} at {path!r}. "
            "`rdmldg eval --api` uploads every image it scores to the API server, so it reads local files only "
            "inside the dataset's own folder. Embed the image bytes in the dataset (as `rdmldg build` does) or "
            "move the files into the dataset folder."
        )
    return out


def predict_api(
    images: Sequence[Any],
    labels: Sequence[int],
    domains: Sequence[str],
    image_ids: Sequence[str],
    benchmark: Benchmark,
    settings: TeacherSettings,
    store_root: str | Path,
    *,
    dataset_folder: str | os.PathLike | None = None,
    http_client: Any | None = None,
    sleep: Any | None = None,
) -> Predictions:
    """Ask the API model the reasoning question for every readable image; resumable through the store.

    ``labels`` only let the teacher store record acceptance after the reply; they are never sent.
    Images given only as a local path must lie inside ``dataset_folder`` (see :func:`local_images_inside`);
    this is checked for every image before anything is sent.

    Raises:
        ValueError: an image's local path lies outside ``dataset_folder``.
        TeacherStopped: the server refused the key or model, or requests kept failing (``ServerFailing``).
    """
    decoded, unreadable = decode_images(local_images_inside(images, image_ids, dataset_folder))
    sources = [
        SourceImage(image_id=image_ids[i], domain=domains[i], label=int(labels[i]), data=_png_bytes(image))
        for i, image in enumerate(decoded)
        if image is not None
    ]
    chains = generate_chains(sources, benchmark, settings, store_root, http_client=http_client, sleep=sleep)
    indices = [-1] * len(decoded)
    texts: list[str | None] = [None] * len(decoded)
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    failed = {position[image_id]: error for image_id, error in chains.failures.items()}
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
    return Predictions("reasoning", indices, texts, None, unreadable, failed)
