"""Kill test: SIGKILL `rdmldg build --teacher` mid-way (at two moments), run it again, compare with a lone build.

The killed runs are subprocesses; the uninterrupted build and the final rerun run the same
command in this process (quicker: the modules are already imported).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from helpers.teacher import (
    built_rows,
    identity,
    pacs_build_arguments,
    pixel_teacher,
    seen,
    sigkill_build_when,
    write_images,
)
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.teacher.rejection import decide
from rdmldg_hf.teacher.store import Reply
from rdmldg_hf.testing import LoopbackServer

PACS = get_benchmark("pacs")
CANDIDATES, MAX_ROUNDS = 3, 1


def arguments(images: Path, out: Path, base_url: str) -> list[str]:
    """`rdmldg build` arguments: the same command for every run."""
    return pacs_build_arguments(
        images, out, base_url, "--concurrency", "4", candidates=CANDIDATES, max_rounds=MAX_ROUNDS
    )


def build(images: Path, out: Path, kill_after: int | None = None) -> Counter:
    """Run the build against a fresh loopback server: in this process to the end, or in a
    subprocess SIGKILLed once the server got ``kill_after`` requests. Returns the requests
    this run made, per image (as the server saw it)."""
    with LoopbackServer(pixel_teacher(PACS), delay=0.02) as server:
        if kill_after is None:
            assert main(arguments(images, out, server.base_url)) == 0
        else:
            sigkill_build_when(
                arguments(images, out, server.base_url)[1:], lambda: server.count >= kill_after, "it could be killed"
            )
        bodies = list(server.requests)
    return Counter(seen(body) for body in bodies)


def stored(out: Path, images) -> tuple[Counter, set]:
    """Replies in the store per image, and the images already final (read-only; whole lines only)."""
    (store,) = (out.parent / f"{out.name}.teacher-store").iterdir()
    lines = (store / "replies.jsonl").read_bytes().split(b"\n")[:-1]
    replies: dict[str, list[Reply]] = {}
    for line in lines:
        record = json.loads(line)
        if record["kind"] == "reply":
            replies.setdefault(record["image_id"], []).append(Reply.from_json(record))
    counts = Counter({identity(image, PACS): len(replies.get(image.image_id, [])) for image in images})
    final = {
        identity(image, PACS)
        for image in images
        if decide(replies.get(image.image_id, []), PACS, image.label, CANDIDATES, MAX_ROUNDS, "gpt-4o").final
    }
    return counts, final


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigkill_then_the_same_command_requests_only_what_is_missing(tmp_path):
    images_dir = tmp_path / "PACS"
    images = write_images(images_dir, PACS, 56)
    expected = build(images_dir, tmp_path / "whole")
    assert sum(expected.values()) == 2 * (7 + 7 + 14 + 14)

    out = tmp_path / "killed"
    total = Counter()
    for kill_after in (10, 35):
        total += build(images_dir, out, kill_after=kill_after)
        counts, final = stored(out, images)
        assert 0 < sum(counts.values()) < sum(expected.values())
        assert final and len(final) < len(images)
        print(f"killed after {kill_after} requests: {sum(counts.values())} replies stored, {len(final)} images final")
        again = build(images_dir, out, kill_after=None) if kill_after == 35 else None
        if again is not None:
            total += again
            for image in images:
                key = identity(image, PACS)
                if key in final:
                    assert again[key] == 0, f"{image.image_id} was complete and was requested again"
                assert again[key] == expected[key] - counts[key], image.image_id

    assert built_rows(out, PACS) == built_rows(tmp_path / "whole", PACS)
    resent = sum(total.values()) - sum(expected.values())
    print(
        f"requests: uninterrupted {sum(expected.values())}, killed twice + rerun {sum(total.values())} "
        f"({resent} in flight at a kill and sent again)"
    )
    assert 0 <= resent <= 2 * 4  # at most the requests in flight (concurrency 4) at each kill
