"""`rdmldg build --teacher` over real HTTP (loopback): label-blind requests, the dataset's chain columns."""

from __future__ import annotations

import copy
import json
import re

import pytest
from datasets import load_dataset

from helpers.teacher import built_rows, pixel_teacher, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.testing import LoopbackBatchServer

PACS = get_benchmark("pacs")


def without_image(body: dict) -> dict:
    body = copy.deepcopy(body)
    for part in body["messages"][0]["content"]:
        if part["type"] == "image_url":
            part["image_url"]["url"] = "<image>"
    return body


def request_texts(body: dict) -> list[str]:
    return [part["text"] for message in body["messages"] for part in message["content"] if part["type"] == "text"]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A whole `rdmldg build` of 56 images (two per class and domain) against a recording loopback server,
    then the same build in Batch API mode into ``out-batch``; every byte sent is kept."""
    root = tmp_path_factory.mktemp("teacher-build")
    images = write_images(root / "PACS", PACS, 56)
    command = [
        "build",
        "--benchmark",
        "pacs",
        "--images",
        str(root / "PACS"),
        "--teacher",
        "gpt-4o",
        "--candidates",
        "3",
        "--max-rounds",
        "1",
        "--no-teacher-progress",
        "--image-max-side",
        "32",
    ]
    with LoopbackBatchServer(pixel_teacher(PACS)) as server:
        code = main([*command, "--out", str(root / "out"), "--base-url", server.base_url, "--concurrency", "4"])
        bodies = list(server.requests)
        batch_code = main(
            [
                *command,
                "--out",
                str(root / "out-batch"),
                "--base-url",
                server.base_url,
                "--mode",
                "batch",
                "--wait",
                "--poll-interval",
                "0",
                "--batch-max-requests",
                "30",
            ]
        )
        wire = list(server.wire)
    assert code == 0 and batch_code == 0
    return root, images, bodies, wire


def test_nothing_sent_in_either_mode_names_an_image_its_class_or_its_folders(build):
    """Every byte the server received (sync bodies, uploaded batch files and their names, custom ids,
    metadata, headers), once the images and the question shared by all requests (which lists every
    class as an option) are cut out, holds no class, folder, file name, path or label field."""
    root, images, bodies, wire = build
    sent = b"\n".join(wire).decode("utf-8")
    assert "multipart/form-data" in sent and '"custom_id"' in sent and "rdmldg_shard" in sent  # batch files went out
    sent = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,<image>", sent)
    for question in request_texts(bodies[0]):
        for encoded in (json.dumps(question), json.dumps(question, ensure_ascii=False)):
            sent = sent.replace(encoded[1:-1], "<question>")
    forbidden = {*PACS.classes, *PACS.class_names, *PACS.domain_folders, *PACS.domains, "label", str(root)}
    forbidden |= {part for image in images for part in (image.image_id, image.filename, image.path)}
    assert sorted(word for word in forbidden if word in sent) == []
    ids = re.findall(r'"custom_id":\s*"([^"]*)"', sent)
    assert len(ids) == 84 and all(re.fullmatch(r"rq-[0-9a-f]{32}", value) for value in ids)
    assert len(set(ids)) == len(ids)


def test_a_batch_build_maps_the_opaque_ids_back_to_the_sync_builds_result(build):
    root, images, _, _ = build
    columns = ("reasoning", "chain_source", "num_candidates", "num_valid", "rejection_reasons")
    sync, batch = built_rows(root / "out", PACS), built_rows(root / "out-batch", PACS)
    assert {key: [row[c] for c in columns] for key, row in batch.items()} == {
        key: [row[c] for c in columns] for key, row in sync.items()
    }


def test_every_request_of_a_build_is_label_blind(build):
    root, images, bodies, _ = build
    assert len(bodies) == 2 * (7 + 7 + 14 + 14)
    first = without_image(bodies[0])
    assert all(without_image(body) == first for body in bodies)  # only the image differs
    assert len({json.dumps(request_texts(body)) for body in bodies}) == 1
    urls = {body["messages"][0]["content"][0]["image_url"]["url"] for body in bodies}
    assert len(urls) == len(images)  # one image per image, repeated only for further rounds
    text = json.dumps(first)
    for image in images:  # nothing that names the image's file or folders
        assert image.image_id not in text and image.filename not in text
    for name in ("label", "ground", "answer is"):
        assert name not in text.lower()
    assert first["n"] == 3 and first["model"] == "gpt-4o"


def test_the_dataset_gets_the_chain_columns(build):
    root, images, _, _ = build
    rows = {}
    for domain in PACS.domains:
        for row in load_dataset(str(root / "out"), "pacs", split=domain):
            rows[row["image_id"]] = row
    assert set(rows) == {image.image_id for image in images}
    accepted = [row for row in rows.values() if row["reasoning"]]
    assert len(accepted) == 28
    assert all(row["chain_source"] == "gpt-4o" and row["prompt_version"] for row in accepted)
    assert all(
        row["num_candidates"] == 6 and row["num_valid"] == 0 for row in rows.values() if row["domain"] == "photo"
    )
    assert all(len(row["rejection_reasons"]) == 6 for row in rows.values() if row["domain"] == "sketch")
    stores = list((root / "out.teacher-store").iterdir())
    assert len(stores) == 1 and (stores[0] / "summary.json").is_file()
    assert not list((root / "out").rglob("replies.jsonl"))  # the store is never inside the pushed folder
    report = json.loads((root / "out" / "reports" / "pacs.json").read_text())
    teacher = report["teacher"]  # the teacher's summary is part of the published build report
    assert teacher["acceptance"]["accepted"] == 28 and teacher["acceptance"]["per_domain"]["photo"]["accepted"] == 0
    assert teacher["requests"] == 84 and teacher["tokens"]["total"] > 0 and teacher["estimated_cost_usd"] > 0
    assert str(root) not in json.dumps(teacher) and "127.0.0.1" not in json.dumps(teacher)
    card = (root / "out" / "README.md").read_text()
    assert "Teacher: `gpt-4o` (prompt `rdmldg-prompts-v1`, 3 candidates per request, up to 1 further rounds)" in card
    assert "28 of 56 images got an accepted chain; 84 requests" in card
    assert "Rejections: invalid format 84, several classes 84, wrong class 14." in card
