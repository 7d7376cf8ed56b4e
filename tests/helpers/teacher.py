"""Tiny images and a scripted teacher that reads them, for the teacher tests.

Each image is a flat colour: red encodes the class index, green the domain index and
blue the repeat, so a scripted teacher can "see" the class (and which image it is) from
the pixels of the re-encoded image it is sent, without ever being told the label.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx2
from PIL import Image

from helpers.scripts import TEACHER_BUILD, TESTS
from rdmldg_hf.benchmarks import Benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.data.schema import SourceImage
from rdmldg_hf.testing import chat_completion

RED_STEP, GREEN_STEP, BLUE_STEP = 20, 60, 8


def write_images(
    root: Path, benchmark: Benchmark, count: int, size: int = 24, classes: int | None = None
) -> list[SourceImage]:
    """``count`` PNG files spread over classes (the first ``classes`` of them) and domains,
    as a DomainBed folder would give them."""
    images = []
    classes = classes or benchmark.num_classes
    for i in range(count):
        label = i % classes
        domain_index = (i // classes) % len(benchmark.domains)
        repeat = i // (classes * len(benchmark.domains))
        folder = benchmark.domain_folders[domain_index]
        path = root / folder / benchmark.classes[label] / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(
            "RGB", (size, size), (10 + RED_STEP * label, 10 + GREEN_STEP * domain_index, 10 + BLUE_STEP * repeat)
        ).save(path)
        images.append(
            SourceImage(
                image_id=f"{folder}/{benchmark.classes[label]}/{path.name}",
                domain=benchmark.domains[domain_index],
                label=label,
                path=str(path),
            )
        )
    return images


def pacs_build_arguments(
    images: Path,
    out: Path,
    base_url: str,
    *extra: str,
    teacher: str = "gpt-4o",
    candidates: int = 3,
    max_rounds: int = 1,
) -> list[str]:
    """`rdmldg build` of a PACS folder with the teacher at ``base_url`` (32-pixel images, no progress bar)."""
    return [
        *("build", "--benchmark", "pacs", "--images", str(images), "--out", str(out), "--teacher", teacher),
        *("--base-url", base_url, "--candidates", str(candidates), "--max-rounds", str(max_rounds)),
        *("--image-max-side", "32", "--no-teacher-progress", *extra),
    ]


_REPO = TESTS.parent


def sigkill_build_when(build_arguments: Sequence[str], reached: Callable[[], bool], moment: str) -> None:
    """Run ``rdmldg build <build_arguments>`` in a subprocess and SIGKILL it as soon as ``reached()``.

    Fails if the build ends before that moment; bounded to 90 s of waiting.
    """
    process = subprocess.Popen(
        [sys.executable, str(TEACHER_BUILD), *build_arguments],
        cwd=_REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not reached() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert process.poll() is None, f"the build ended before {moment}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_bounded(arguments: Sequence[str], seconds: float = 60) -> int:
    """``rdmldg <arguments>`` in this process (in a thread); fails if it has not returned after ``seconds``."""
    from rdmldg_hf.cli import main

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(list(arguments))), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"rdmldg {' '.join(map(str, arguments[:2]))} still waiting after {seconds} s"
    return result[0]


def built_rows(out: Path, benchmark: Benchmark) -> dict[str, dict]:
    """Every row of a built benchmark config by image_id, images as raw pixel bytes (for equality checks)."""
    from datasets import load_dataset

    found = {}
    for domain in benchmark.domains:
        for row in load_dataset(str(out), benchmark.name, split=domain):
            row["image"] = row["image"].tobytes()
            found[row["image_id"]] = row
    return found


def image_of(body: dict[str, Any]) -> Image.Image:
    """The image a chat-completions request body carries."""
    parts = body["messages"][0]["content"]
    url = next(part["image_url"]["url"] for part in parts if part["type"] == "image_url")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def seen(body: dict[str, Any]) -> tuple[int, int, int]:
    """(class index, domain index, repeat) read from the pixels of the request's image."""
    red, green, blue = image_of(body).getpixel((4, 4))
    return round((red - 10) / RED_STEP), round((green - 10) / GREEN_STEP), round((blue - 10) / BLUE_STEP)


def identity(image: SourceImage, benchmark: Benchmark) -> tuple[int, int, int]:
    """What :func:`seen` reads from the image (for matching requests to images)."""
    index = int(Path(image.path or image.image_id).stem[3:])
    return (
        image.label,
        benchmark.domains.index(image.domain),
        index // (benchmark.num_classes * len(benchmark.domains)),
    )


def chain(conclusion: str, drop: str | None = None) -> str:
    """A five-stage chain concluding ``conclusion``; ``drop`` removes one stage."""
    text = render_chain(
        "Identify the object.",
        "A flat coloured square.",
        "The colour matches it.",
        "The colour is unambiguous.",
        conclusion,
    )
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
        label, domain, _ = seen(body)
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


def sent_id(
    store_root: Path, benchmark: Benchmark, sampling: Any, image: SourceImage, round_index: int = 0, start: int = 0
) -> str:
    """The opaque Batch API ``custom_id`` a request of ``image`` is sent under (from its store's secret)."""
    from rdmldg_hf.teacher.requests import custom_id, wire_id
    from rdmldg_hf.teacher.store import TeacherStore

    with TeacherStore.open(store_root, benchmark, sampling, read_only=True) as store:
        return wire_id(store.request_id_secret(), custom_id(image.image_id, round_index, start))


# ---- scripted replies through the openai client's http_client (httpx2 mock transport) ----

Event = Callable[[httpx2.Request, dict], httpx2.Response]


def status(code: int, headers: dict[str, str] | None = None, message: str = "scripted error") -> Event:
    """An HTTP error reply."""
    return lambda request, body: httpx2.Response(code, headers=headers, json={"error": {"message": message}})


def fail(error: type[Exception], message: str = "scripted") -> Event:
    """A transport failure (timeout, connection reset) raised while sending."""

    def event(request: httpx2.Request, body: dict) -> httpx2.Response:
        raise error(message, request=request)

    return event


def raw(content: bytes) -> Event:
    """A 200 reply with this body (e.g. invalid JSON)."""
    return lambda request, body: httpx2.Response(200, content=content, headers={"content-type": "application/json"})


def texts(choices: Sequence[str | None]) -> Event:
    """A 200 chat completion with these choice texts (``[]``: zero choices)."""
    return lambda request, body: httpx2.Response(200, json=chat_completion(choices))


class ScriptedTransport:
    """Per class index (what the teacher sees), scripted events first, then ``default``'s answer
    (choice texts, or an ``httpx2.Response`` of its own).

    Records every request body; ``client()`` is an ``httpx2.AsyncClient`` for ``http_client=``.
    """

    def __init__(
        self,
        default: Callable[[dict], "Sequence[str] | httpx2.Response"],
        script: dict[int, list[Event]] | None = None,
    ):
        self.default = default
        self.script = {key: list(events) for key, events in (script or {}).items()}
        self.bodies: list[dict] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        events = self.script.get(seen(body)[0])
        if events:
            return events.pop(0)(request, body)
        answer = self.default(body)
        return answer if isinstance(answer, httpx2.Response) else httpx2.Response(200, json=chat_completion(answer))

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))

    def requests_for(self, label: int) -> int:
        return sum(seen(body)[0] == label for body in self.bodies)


class RecordedSleep:
    """An instant ``sleep`` that records the waits asked for."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
