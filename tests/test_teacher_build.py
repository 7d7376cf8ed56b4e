"""`rdmldg build --teacher` over real HTTP (loopback): label-blind requests, the dataset's chain columns."""

from __future__ import annotations

import copy
import json

import pytest
from datasets import load_dataset

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.teacher.loopback import LoopbackServer
from teacher_fakes import pixel_teacher, write_images

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
    """A whole `rdmldg build` of 56 images (two per class and domain) against a recording loopback server."""
    root = tmp_path_factory.mktemp("teacher-build")
    images = write_images(root / "PACS", PACS, 56)
    with LoopbackServer(pixel_teacher(PACS)) as server:
        code = main([
            "build", "--benchmark", "pacs", "--images", str(root / "PACS"), "--out", str(root / "out"),
            "--teacher", "gpt-4o", "--base-url", server.base_url, "--candidates", "3", "--max-rounds", "1",
            "--concurrency", "4", "--no-teacher-progress", "--image-max-side", "32",
        ])
        bodies = list(server.requests)
    assert code == 0
    return root, images, bodies


def test_every_request_of_a_build_is_label_blind(build):
    root, images, bodies = build
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
    root, images, _ = build
    rows = {}
    for domain in PACS.domains:
        for row in load_dataset(str(root / "out"), "pacs", split=domain):
            rows[row["image_id"]] = row
    assert set(rows) == {image.image_id for image in images}
    accepted = [row for row in rows.values() if row["reasoning"]]
    assert len(accepted) == 28
    assert all(row["chain_source"] == "gpt-4o" and row["prompt_version"] for row in accepted)
    assert all(row["num_candidates"] == 6 and row["num_valid"] == 0 for row in rows.values() if row["domain"] == "photo")
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
