"""Tiny images and a scripted teacher that reads them, for the teacher tests.

Each image is a flat colour: red encodes the class index, green the domain index, so a
scripted teacher can "see" the class from the pixels of the (re-encoded) image it is
sent, without ever being told the label.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from rdmldg_hf.benchmarks import Benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.data.schema import SourceImage

RED_STEP, GREEN_STEP = 20, 60


def write_images(root: Path, benchmark: Benchmark, count: int, size: int = 24) -> list[SourceImage]:
    """``count`` PNG files spread over classes and domains, as a DomainBed folder would give them."""
    images = []
    for i in range(count):
        label = i % benchmark.num_classes
        domain_index = (i // benchmark.num_classes) % len(benchmark.domains)
        folder = benchmark.domain_folders[domain_index]
        path = root / folder / benchmark.classes[label] / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), (10 + RED_STEP * label, 10 + GREEN_STEP * domain_index, 128)).save(path)
        images.append(SourceImage(image_id=f"{folder}/{benchmark.classes[label]}/{path.name}",
                                  domain=benchmark.domains[domain_index], label=label, path=str(path)))
    return images


def image_of(body: dict[str, Any]) -> Image.Image:
    """The image a chat-completions request body carries."""
    parts = body["messages"][0]["content"]
    url = next(part["image_url"]["url"] for part in parts if part["type"] == "image_url")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def seen(body: dict[str, Any]) -> tuple[int, int]:
    """(class index, domain index) read from the pixels of the request's image."""
    red, green, _ = image_of(body).getpixel((4, 4))
    return round((red - 10) / RED_STEP), round((green - 10) / GREEN_STEP)


def chain(conclusion: str, drop: str | None = None) -> str:
    """A five-stage chain concluding ``conclusion``; ``drop`` removes one stage."""
    text = render_chain("Identify the object.", "A flat coloured square.", "The colour matches it.",
                        "The colour is unambiguous.", conclusion)
    if drop:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"<{drop}>"))
    return text


def pixel_teacher(benchmark: Benchmark):
    """A deterministic teacher: its answers depend only on the image it is shown.

    Domain 0: every candidate right. Domain 1: the first candidate names a wrong class,
    the others are right. Domain 2: every candidate misses <REFLECTION>. Domain 3: every
    candidate concludes two classes at once (no class).
    """
    names = benchmark.class_names

    def reply(body: dict[str, Any]) -> Sequence[str]:
        label, domain = seen(body)
        n = int(body.get("n") or 1)
        right = chain(names[label])
        if domain == 0:
            return [right] * n
        if domain == 1:
            return [chain(names[(label + 1) % len(names)])] + [right] * (n - 1)
        if domain == 2:
            return [chain(names[label], drop="REFLECTION")] * n
        return [chain(f"{names[label]} or {names[(label + 1) % len(names)]}")] * n

    return reply
