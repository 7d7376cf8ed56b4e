"""Kill test of the Batch API mode: SIGKILL during upload, right after batches.create and
during collection; the rerun submits nothing twice and the result equals an uninterrupted run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from helpers.teacher import built_rows, pacs_build_arguments, pixel_teacher, sigkill_build_when, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.testing import LoopbackBatchServer

PACS = get_benchmark("pacs")


def arguments(images: Path, out: Path, base_url: str) -> list[str]:
    return pacs_build_arguments(
        images, out, base_url, "--mode", "batch", "--wait", "--poll-interval", "0.02", "--batch-max-requests", "10"
    )


def kill_at(server: LoopbackBatchServer, route: str, images: Path, out: Path) -> None:
    """Run the build in a subprocess and SIGKILL it while the server handles ``route``."""
    seen = server.hits[route]
    server.pause = {route: 0.5} if route != "create" else {}
    try:
        sigkill_build_when(
            arguments(images, out, server.base_url)[1:], lambda: server.hits[route] > seen, f"reaching {route}"
        )
    finally:
        server.pause = {}


@pytest.mark.slow
@pytest.mark.multiprocess
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
        print(
            f"uninterrupted: {expected_batches} batches, {expected_answers} requests answered; "
            f"killed 3 times: {len(server.batches)} batches, {server.count} answered, uploads {len(server.uploads)}"
        )
        assert max(shards.values()) == 1  # no shard was ever submitted twice
        assert len(server.batches) == expected_batches and server.count == expected_answers
    assert built_rows(tmp_path / "killed", PACS) == built_rows(tmp_path / "whole", PACS)
