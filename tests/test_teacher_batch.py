"""The Batch API mode through the real openai client against a loopback files/batches server."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from datasets import load_dataset

from helpers.teacher import pacs_build_arguments, pixel_teacher, sent_id, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.teacher.batch import BatchLimits, generate_chains_batch, write_shards
from rdmldg_hf.teacher.client import make_client
from rdmldg_hf.teacher.pipeline import generate_chains
from rdmldg_hf.teacher.settings import SamplingSettings, TeacherSettings
from rdmldg_hf.teacher.store import TeacherStore
from rdmldg_hf.testing import LoopbackBatchServer

PACS = get_benchmark("pacs")


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


SAMPLING = SamplingSettings(candidates=3, image_max_side=32)


def settings(base_url: str) -> TeacherSettings:
    return TeacherSettings(sampling=SAMPLING, base_url=base_url, max_rounds=1, progress=False)


def batch(images, server, store, wait=True, limits=BatchLimits(max_requests=10)):
    return generate_chains_batch(
        images, PACS, settings(server.base_url), store, limits=limits, wait=wait, poll_interval=0, sleep=no_wait
    )


def records(chains, images):
    return {image.image_id: chains[image.image_id] for image in images}


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "PACS", PACS, 28)


def without_image(body):
    body = copy.deepcopy(body)
    body["messages"][0]["content"][0]["image_url"]["url"] = "<image>"
    return body


def test_batch_mode_gives_the_synchronous_result_with_the_same_bodies(images, tmp_path):
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        chains, report = batch(images, server, tmp_path / "batch-store")
        batch_bodies = [json.loads(line)["body"] for upload in server.uploads for line in upload.splitlines()]
        synchronous = generate_chains(images, PACS, settings(server.base_url), tmp_path / "sync-store")
        sync_bodies = server.requests[len(batch_bodies) :]
    assert records(chains, images) == records(synchronous, images)
    assert len(report.submitted) == 5 and len(report.collected) == 5  # 28 then 14 requests in files of 10
    assert all(without_image(body) == without_image(sync_bodies[0]) for body in batch_bodies + sync_bodies)
    assert chains.summary["requests"] == 42 and chains.summary["mode"] == "batch"
    assert chains.summary["batch_api_tokens"]["prompt"] == chains.summary["tokens"]["prompt"]
    assert chains.summary["estimated_cost_usd"] == pytest.approx(synchronous.summary["estimated_cost_usd"] / 2)


def test_without_wait_a_run_submits_and_a_later_run_collects(images, tmp_path):
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        chains, report = batch(images, server, tmp_path / "store", wait=False, limits=BatchLimits())
        assert chains is None and len(report.submitted) == 1 and server.count == 0
        runs = 1
        while chains is None and runs < 10:  # validating -> in_progress -> completed, then round 1
            chains, report = batch(images, server, tmp_path / "store", wait=False, limits=BatchLimits())
            runs += 1
        assert chains is not None and len(server.batches) == 2 and server.count == 42


def test_failed_expired_and_lost_requests_are_submitted_again(images, tmp_path):
    seven = images[:7]
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        run = lambda wait=False: batch(seven, server, tmp_path / "store", wait=wait, limits=BatchLimits())  # noqa: E731
        run()  # submits batch 1
        run()  # batch 1: in progress
        server.outcome = "expired"
        _, report = run()  # batch 1 expired: its requests go into batch 2
        assert report.collected == ["batch_2"] and len(report.submitted) == 1
        server.outcome = "completed"
        lost = report.submitted[0]
        del server.batches[lost]  # the server forgot batch 2
        server.fail_ids = {sent_id(tmp_path / "store", PACS, SAMPLING, seven[0])}
        chains, report = run(wait=True)
    assert report.lost_batches == [lost] and report.failed_requests == 1
    assert all(chains[image.image_id].reasoning is not None for image in seven)
    store_lines = [json.loads(line) for line in chains.store.path.read_text().splitlines()]
    assert [line["status"] for line in store_lines if line["kind"] == "batch_done"][:2] == ["expired", "unknown"]


def test_a_batch_build_can_be_finished_synchronously(images, tmp_path):
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        chains, _ = batch(images, server, tmp_path / "store", wait=False, limits=BatchLimits())
        server.fail_ids = {sent_id(tmp_path / "store", PACS, SAMPLING, image) for image in images[:3]}
        for _ in range(2):  # round 0 collected (3 failed); round 1 and the 3 submitted in batch 2
            chains, _ = batch(images, server, tmp_path / "store", wait=False, limits=BatchLimits())
        assert chains is None
        before = server.count  # the rest synchronously: what has no reply yet, batch 2 included
        finished = generate_chains(images, PACS, settings(server.base_url), tmp_path / "store")
        assert server.count - before == 3 + 14  # the 3 failed, and round 1 of the 14 photo and sketch images
    assert sum(finished[image.image_id].reasoning is not None for image in images) == 14


def test_unknown_ids_and_malformed_lines_are_counted(images, tmp_path):
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        original = server._finish

        def finish(record):
            original(record)
            output = server.files[record["output_file_id"]]
            server.files[record["output_file_id"]] = (
                output + b'{"custom_id": "nobody|r0|s0", "response": null}\n{oops\n'
            )

        server._finish = finish
        chains, report = batch(images[:7], server, tmp_path / "store", limits=BatchLimits())
    assert report.unknown_ids == 1 and len(report.malformed_lines) == 1 and "line 9" in report.malformed_lines[0]
    assert all(chains[image.image_id].reasoning is not None for image in images[:7])


def test_a_batch_created_just_before_a_crash_is_adopted_not_submitted_twice(images, tmp_path):
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        config = settings(server.base_url)
        store = TeacherStore.open(tmp_path / "store", PACS, config.sampling)
        (shard,) = write_shards(images[:7], PACS, config, store, tmp_path / "shards")

        async def create_without_recording():  # the crash: created, never recorded
            client = make_client(config)
            with open(shard.path, "rb") as handle:
                uploaded = await client.files.create(file=(shard.path.name, handle), purpose="batch")
            await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"rdmldg_shard": shard.shard_id},
            )
            await client.close()

        asyncio.run(create_without_recording())
        store.close()
        chains, report = batch(images[:7], server, tmp_path / "store", limits=BatchLimits())
        assert len(server.batches) == 1 and report.submitted == ["batch_2"]
        assert all(chains[image.image_id].reasoning is not None for image in images[:7])


def batch_build_command(tmp_path, server, *extra: str) -> list[str]:
    """`rdmldg build` of the PACS images in batch mode against ``server`` (3 candidates, 1 round)."""
    return pacs_build_arguments(tmp_path / "PACS", tmp_path / "out", server.base_url, "--mode", "batch", *extra)


def test_rdmldg_build_in_batch_mode(images, tmp_path, capsys):
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        command = batch_build_command(tmp_path, server)
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert exit_info.value.code == 0
        assert "Submitted 1 batch(es): batch_2" in capsys.readouterr().out
        assert main([*command, "--wait", "--poll-interval", "0"]) == 0
    rows = [row for domain in PACS.domains for row in load_dataset(str(tmp_path / "out"), "pacs", split=domain)]
    assert sum(row["reasoning"] is not None for row in rows) == 14 and len(rows) == 28


def test_rdmldg_batches_reports_the_jobs_of_a_build(images, tmp_path, capsys):
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        command = batch_build_command(tmp_path, server, "--batch-max-requests", "20")
        with pytest.raises(SystemExit):
            main(command)
    capsys.readouterr()
    assert main(["batches", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "pacs / gpt-4o / rdmldg-prompts-v1: 2 batches, 28 requests pending, 0 replies" in out
    assert "batch_2" in out and "submitted" in out and "20 requests" in out


def test_a_batch_submitted_by_the_previous_version_under_store_keys_is_still_collected(images, tmp_path):
    """Builds started before ids were opaque sent the store keys as custom ids and recorded no opaque ids."""
    seven = images[:7]
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        config = settings(server.base_url)
        store = TeacherStore.open(tmp_path / "store", PACS, config.sampling)
        (shard,) = write_shards(seven, PACS, config, store, tmp_path / "shards")
        lines = [json.loads(line) for line in shard.path.read_text().splitlines()]
        for line, key in zip(lines, shard.request_keys()):
            line["custom_id"] = key  # what the previous version uploaded
        shard.path.write_text("".join(json.dumps(line) + "\n" for line in lines))

        async def submit_as_before():
            client = make_client(config)
            with open(shard.path, "rb") as handle:
                uploaded = await client.files.create(file=(shard.path.name, handle), purpose="batch")
            created = await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"rdmldg_shard": shard.shard_id},
            )
            await client.close()
            return created

        created = asyncio.run(submit_as_before())
        store.add_batch(created.id, shard.shard_id, created.input_file_id, shard.request_keys())  # no wire ids
        store.close()
        chains, report = batch(seven, server, tmp_path / "store", limits=BatchLimits())
    assert report.collected == [created.id] and report.replies == 7 and report.unknown_ids == 0
    assert report.submitted == [] and len(server.batches) == 1
    assert all(chains[image.image_id].reasoning is not None for image in seven)
