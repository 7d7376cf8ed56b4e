"""Kill test of the Batch API mode: SIGKILL during upload, right after batches.create and
during collection; the rerun submits nothing twice and the result equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.teacher.batch_loopback import LoopbackBatchServer
from teacher_fakes import built_rows, pixel_teacher, write_images

PACS = get_benchmark("pacs")
REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("teacher_build_script.py")  # `rdmldg build`, started quicker


def arguments(images: Path, out: Path, base_url: str) -> list[str]:
    return ["build", "--benchmark", "pacs", "--images", str(images), "--out", str(out), "--teacher", "gpt-4o",
            "--base-url", base_url, "--candidates", "3", "--max-rounds", "1", "--image-max-side", "32",
            "--mode", "batch", "--wait", "--poll-interval", "0.02", "--batch-max-requests", "10", "--no-teacher-progress"]


def kill_at(server: LoopbackBatchServer, route: str, images: Path, out: Path) -> None:
    """Run the build in a subprocess and SIGKILL it while the server handles ``route``."""
    seen = server.hits[route]
    server.pause = {route: 0.5} if route != "create" else {}
    process = subprocess.Popen([sys.executable, str(SCRIPT), *arguments(images, out, server.base_url)[1:]],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while server.hits[route] <= seen and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert process.poll() is None, f"the build ended before reaching {route}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        server.pause = {}


def test_sigkill_at_upload_create_and_collection_then_the_same_command(tmp_path):
    images = tmp_path / "PACS"
    write_images(images, PACS, 28)
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        assert main(arguments(images, tmp_path / "whole", server.base_url)) == 0
        expected_batches, expected_answers = len(server.batches), server.count

    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        for route in ("upload", "create", "content"):
            kill_at(server, route, images, tmp_path / "killed")
        assert main(arguments(images, tmp_path / "killed", server.base_url)) == 0
        shards = Counter(batch["metadata"]["rdmldg_shard"] for batch in server.batches.values())
        print(f"uninterrupted: {expected_batches} batches, {expected_answers} requests answered; "
              f"killed 3 times: {len(server.batches)} batches, {server.count} answered, uploads {len(server.uploads)}")
        assert max(shards.values()) == 1  # no shard was ever submitted twice
        assert len(server.batches) == expected_batches and server.count == expected_answers
    assert built_rows(tmp_path / "killed", PACS) == built_rows(tmp_path / "whole", PACS)
