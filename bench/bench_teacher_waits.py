"""The longest a teacher run waits on a hostile server: measured vs the bound worked out from the options.

Two runs of ``--images`` images at once, with the default teacher options (or those given),
against two loopback servers on 127.0.0.1: one that never answers, one that trickles every
answer one byte every ``--trickle`` seconds (each read succeeds; a whole reply takes minutes).
Each run must stop by itself (``ServerFailing``) once ``stop_after_failures`` requests in a row
failed; the figure is its wall time as a ratio of the bound:

    bound = ceil(stop_after_failures / concurrency) x longest request
    longest request = (max_retries + 1) x timeout + sum of the backoff waits before each retry

(a 429's Retry-After would replace a backoff wait, up to ``max_retry_after``: these servers send none).

    python bench/bench_teacher_waits.py                                   # the defaults: about 15 minutes
    python bench/bench_teacher_waits.py --timeout 2 --max-retries 1       # a quick look
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path

from teacher_bench_utils import BENCHMARK, write_images

from rdmldg_hf.teacher.pipeline import generate_chains
from rdmldg_hf.teacher.retry import ServerFailing
from rdmldg_hf.teacher.settings import RetryPolicy, SamplingSettings, TeacherSettings
from rdmldg_hf.testing import LoopbackServer


def longest_request(settings: TeacherSettings) -> float:
    """Seconds one request can take when every attempt runs out its timeout."""
    retry = settings.retry
    backoff = sum(min(retry.max_delay, retry.base_delay * 2**i) for i in range(retry.max_retries))
    return (retry.max_retries + 1) * settings.timeout + backoff


def measure(name: str, server: LoopbackServer, images, settings: TeacherSettings, store: Path, out: dict) -> None:
    started = time.perf_counter()
    try:
        generate_chains(images, BENCHMARK, settings, store)
        outcome = "finished (not stopped)"
    except ServerFailing:
        outcome = "stopped early"
    out[name] = (time.perf_counter() - started, server.count, outcome)


def main() -> None:
    defaults, retry = TeacherSettings(), RetryPolicy()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="Images per run (default %(default)s).")
    parser.add_argument("--trickle", type=float, default=0.5, help="Seconds between bytes (default %(default)s).")
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--max-retries", type=int, default=retry.max_retries)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--stop-after-failures", type=int, default=defaults.stop_after_failures)
    args = parser.parse_args()
    settings = TeacherSettings(
        sampling=SamplingSettings(model="bench-teacher", image_max_side=64),
        retry=RetryPolicy(max_retries=args.max_retries),
        base_url="http://127.0.0.1:9/v1",  # replaced per server below
        timeout=args.timeout,
        concurrency=args.concurrency,
        stop_after_failures=args.stop_after_failures,
        progress=False,
    )
    bound = math.ceil(args.stop_after_failures / args.concurrency) * longest_request(settings)
    results: dict[str, tuple[float, int, str]] = {}
    never = lambda body: ["never sent"]  # noqa: E731 - the reply of a server that never gets to answer
    with (
        tempfile.TemporaryDirectory() as tmp,
        LoopbackServer(never, delay=10 * bound, record=False) as silent,
        LoopbackServer(never, trickle=args.trickle, record=False) as trickling,
    ):
        images = write_images(Path(tmp) / "images", args.images, size=32)
        threads = [
            threading.Thread(
                target=measure,
                args=(
                    name,
                    server,
                    images,
                    TeacherSettings(**{**vars(settings), "base_url": server.base_url}),
                    Path(tmp) / name,
                    results,
                ),
            )
            for name, server in (("never answers", silent), (f"trickles 1 byte / {args.trickle:g} s", trickling))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(
        f"{args.images} images, timeout {args.timeout:g} s, max retries {args.max_retries}, backoff "
        f"{retry.base_delay:g}-{retry.max_delay:g} s, concurrency {args.concurrency}, stop after "
        f"{args.stop_after_failures} failures in a row; longest request {longest_request(settings):.0f} s, "
        f"bound {bound:.0f} s"
    )
    for name, (seconds, requests, outcome) in results.items():
        ratio = seconds / bound
        print(f"  server {name:<24} {outcome}: {seconds:8.1f} s = {ratio:.3f}x the bound, {requests} requests")


if __name__ == "__main__":
    main()
