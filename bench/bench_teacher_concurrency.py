"""Teacher throughput: images/s at concurrency 32 vs concurrency 1, same run, same server.

The loopback teacher answers every request after 100 ms (as a remote API would); each
image is one request for n=4 candidates (``--max-rounds 0``).

    python bench/bench_teacher_concurrency.py [--delay 0.1] [--images-per-worker 16] [--repeats 3]

The two settings run alternately ``--repeats`` times and the best rate of each counts
(as ``timeit`` does), so that load from other processes on a shared machine does not
fall on one setting only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from teacher_bench_utils import BENCHMARK, teacher_server, write_images

from rdmldg_hf.teacher.pipeline import generate_chains
from rdmldg_hf.teacher.settings import SamplingSettings, TeacherSettings

CPU_MS: list[float] = []  # client CPU per image of every run


def images_per_second(images, base_url: str, concurrency: int, store: Path) -> float:
    settings = TeacherSettings(
        sampling=SamplingSettings(model="bench-teacher", candidates=4, image_max_side=64),
        base_url=base_url,
        concurrency=concurrency,
        max_rounds=0,
        progress=False,
    )
    started, cpu = time.perf_counter(), time.process_time()
    chains = generate_chains(images, BENCHMARK, settings, store)
    seconds = time.perf_counter() - started
    CPU_MS.append((time.process_time() - cpu) / len(images) * 1000)
    assert chains.summary["this_run"]["requests"] == len(images), chains.summary["this_run"]
    chains.close()
    return len(images) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.1, help="Seconds the teacher takes per request.")
    parser.add_argument("--images-per-worker", type=int, default=16, help="Images per concurrent worker in each run.")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating runs of each setting; the best counts.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, teacher_server(args.delay) as base_url:
        root = Path(tmp)
        images = {c: write_images(root / f"images-{c}", args.images_per_worker * c, size=64) for c in (1, 32)}
        rates: dict[int, float] = {1: 0.0, 32: 0.0}
        for repeat in range(args.repeats):
            for concurrency in (1, 32):
                rate = images_per_second(
                    images[concurrency], base_url, concurrency, root / f"store-{concurrency}-{repeat}"
                )
                rates[concurrency] = max(rates[concurrency], rate)
                print(
                    f"run {repeat + 1}: concurrency {concurrency:>2}: "
                    f"{len(images[concurrency]):>4} images, {rate:7.1f} images/s"
                )
    print(f"best: concurrency 1 {rates[1]:.1f} images/s, concurrency 32 {rates[32]:.1f} images/s")
    print(
        f"client CPU per image {min(CPU_MS):.1f}-{max(CPU_MS):.1f} ms; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs (32 requests per 100 ms need about {32 * min(CPU_MS) / 100:.1f} of a free core)"
    )
    ratio = rates[32] / rates[1]
    print(
        f"ratio concurrency 32 / concurrency 1: {ratio:.1f}x (target >= 20x; ideal 32x "
        f"at {args.delay * 1000:.0f} ms per request)"
    )


if __name__ == "__main__":
    main()
