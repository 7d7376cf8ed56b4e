"""Batch API mode: memory of preparing batch files (20,000 vs 2,000 images) and the speed of
collecting and rejection-sampling 20,000 results.

    python bench/bench_teacher_batch.py [--small 2000] [--large 20000]

Preparation runs in a fresh process per size (``tracemalloc`` from before the image list
is made, the caller's list of ids and paths reported apart as in bench_teacher_memory.py).
Collection reads one completed batch of ``--large`` results from a loopback files/batches
server through the openai client, stores every reply and decides every image, on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from teacher_bench_utils import BENCHMARK, write_images

from rdmldg_hf.chains import render_chain
from rdmldg_hf.data.schema import SourceImage
from rdmldg_hf.teacher.batch import BatchLimits, BatchReport, collect_batches, write_shards
from rdmldg_hf.teacher.client import make_client
from rdmldg_hf.teacher.pipeline import TeacherRun
from rdmldg_hf.teacher.requests import custom_id, wire_id
from rdmldg_hf.teacher.settings import SamplingSettings, TeacherSettings
from rdmldg_hf.teacher.store import TeacherStore
from rdmldg_hf.testing import LoopbackBatchServer, chat_completion

SETTINGS = TeacherSettings(
    sampling=SamplingSettings(model="gpt-4o", candidates=4, image_max_side=32),
    base_url="http://127.0.0.1:9/v1",
    progress=False,
)


def image_list(images_dir: Path, count: int) -> list[SourceImage]:
    paths = sorted(str(path.relative_to(images_dir)) for path in images_dir.rglob("*.png"))[:count]
    images = []
    for relative in paths:
        domain, class_name, _ = relative.split("/")
        images.append(
            SourceImage(
                relative, BENCHMARK.domain(domain), BENCHMARK.class_index(class_name), str(images_dir / relative)
            )
        )
    return images


def prepare_child(count: int, images_dir: Path, work: Path) -> None:
    tracemalloc.start()
    images = image_list(images_dir, count)
    listed, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    store = TeacherStore.open(work / "store", BENCHMARK, SETTINGS.sampling)
    shards = write_shards(images, BENCHMARK, SETTINGS, store, work / "shards", BatchLimits(max_requests=5000))
    _, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {"requests": sum(s.requests for s in shards), "peak": peak, "teacher_peak": peak - listed, "rss": rss}
        )
    )


def prepare(count: int, images_dir: Path, work: Path) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--prepare-child",
            str(count),
            "--images-dir",
            str(images_dir),
            "--work",
            str(work),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def collect(count: int, work: Path) -> float:
    """Images per second: download, store and rejection-sample ``count`` batch results."""
    images = [
        SourceImage(f"d/c/{i}.png", BENCHMARK.domains[i % 4], i % BENCHMARK.num_classes, data=b"")
        for i in range(count)
    ]
    chains = [
        render_chain("Plan.", "A picture.", "Shape decides.", "Checked.", name) for name in BENCHMARK.class_names
    ]
    with LoopbackBatchServer(lambda body: [], record=False) as server:
        settings = TeacherSettings(**{**SETTINGS.__dict__, "base_url": server.base_url})
        store = TeacherStore.open(work / "collect-store", BENCHMARK, settings.sampling)
        keys = [custom_id(image.image_id, 0, 0) for image in images]
        sent = [wire_id(store.request_id_secret(), key) for key in keys]  # the opaque ids the server answers
        lines = []
        for image, request_id in zip(images, sent):
            body = chat_completion([chains[(image.label + k) % len(chains)] for k in range(4)])
            lines.append(
                json.dumps({"custom_id": request_id, "error": None, "response": {"status_code": 200, "body": body}})
            )
        output = server._file(("\n".join(lines) + "\n").encode())
        server.batches["batch_x"] = {
            "id": "batch_x",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-in",
            "completion_window": "24h",
            "status": "completed",
            "created_at": 0,
            "output_file_id": output,
            "error_file_id": None,
        }
        store.add_batch("batch_x", "shard", "file-in", keys, sent)
        client = make_client(settings)

        async def run() -> BatchReport:
            report = BatchReport()
            await collect_batches(client, store, 4, report)
            await client.close()
            return report

        started = time.perf_counter()
        report = asyncio.run(run())
        tally = TeacherRun(BENCHMARK, settings, store, client)
        tally.tally(images)
        seconds = time.perf_counter() - started
    assert report.replies == count and tally.counters.accepted == count, (report, tally.counters)
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--prepare-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare_child:
        prepare_child(args.prepare_child, args.images_dir, args.work)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "images", args.large, size=24)
        results = {
            count: prepare(count, root / "images", root / f"prepare-{count}") for count in (args.small, args.large)
        }
        for count, result in results.items():
            assert result["requests"] == count, result
            print(
                f"prepare {count:>6} images: tracemalloc peak {result['peak'] / 2**20:6.2f} MiB "
                f"(batch files {result['teacher_peak'] / 2**20:5.2f} MiB + image list), RSS "
                f"peak {result['rss'] / 2**20:6.1f} MiB"
            )
        small, large = results[args.small], results[args.large]
        print(
            f"ratio {args.large} / {args.small} images: {large['peak'] / small['peak']:.2f}x with the image list, "
            f"{large['teacher_peak'] / small['teacher_peak']:.2f}x on top of it, RSS "
            f"{large['rss'] / small['rss']:.2f}x (target <= 1.3x)"
        )
        rate = collect(args.large, root)
        print(f"collect + rejection-sample {args.large} results: {rate:,.0f} images/s (target >= 500 on one core)")


if __name__ == "__main__":
    main()
