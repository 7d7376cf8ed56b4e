"""Shared set-up of the teacher benchmarks: image files on disk and a slow loopback teacher
running in a process of its own (so that its work is not counted as the client's)."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from PIL import Image

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.schema import SourceImage

BENCHMARK = get_benchmark("pacs")


def write_images(root: Path, count: int, size: int = 96, seed: int = 0) -> list[SourceImage]:
    """``count`` noisy PNG files (about 28 kB each at 96 px) spread over classes and domains."""
    rng = random.Random(seed)
    images = []
    for i in range(count):
        label = i % BENCHMARK.num_classes
        domain_index = i % len(BENCHMARK.domains)
        folder = BENCHMARK.domain_folders[domain_index]
        path = root / folder / BENCHMARK.classes[label] / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(path)
        images.append(
            SourceImage(
                f"{folder}/{BENCHMARK.classes[label]}/{path.name}", BENCHMARK.domains[domain_index], label, str(path)
            )
        )
    return images


@contextlib.contextmanager
def teacher_server(delay: float) -> Iterator[str]:
    """Base URL of a loopback teacher process answering every request after ``delay`` seconds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rdmldg_hf.testing.loopback", "--delay", str(delay), "--conclusion", "giraffe"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
