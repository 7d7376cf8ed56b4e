"""Today's teachers: max_completion_tokens, parameters a model refuses (OpenAI's real 400 bodies), other 400s."""

from __future__ import annotations

import asyncio
import json

import pytest

from helpers.teacher import pixel_teacher, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.teacher.adaptation import RequestRefused, refused_parameter
from rdmldg_hf.teacher.batch import BatchLimits, generate_chains_batch
from rdmldg_hf.teacher.pipeline import generate_chains
from rdmldg_hf.teacher.settings import SamplingSettings, TeacherSettings, store_key
from rdmldg_hf.testing import LoopbackBatchServer, LoopbackServer, Scripted

PACS = get_benchmark("pacs")
REASONING_MODEL = ("max_tokens", "temperature", "top_p", "n")  # what OpenAI's o-series and GPT-5 refuse


def settings(base_url: str, **sampling) -> TeacherSettings:
    return TeacherSettings(
        sampling=SamplingSettings(model="o4-mini", candidates=3, image_max_side=32, **sampling),
        base_url=base_url,
        max_rounds=0,
        concurrency=1,
        progress=False,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A PACS folder of 28 images: one per class and domain."""
    root = tmp_path_factory.mktemp("images") / "PACS"
    return root, write_images(root, PACS, 28)


@pytest.fixture(scope="module")
def seven(folder):
    """One image per class in the first domain (the pixel teacher answers them right)."""
    return folder[1][:7]


def test_a_reasoning_model_refusing_temperature_top_p_and_n_gets_requests_without_them(seven, tmp_path):
    with LoopbackServer(pixel_teacher(PACS), refuse=REASONING_MODEL) as server:
        chains = generate_chains(seven, PACS, settings(server.base_url, top_p=0.9), tmp_path / "store")
        bodies = list(server.requests)
    assert all(chains[image.image_id].reasoning is not None for image in seven)
    assert chains[seven[0].image_id].num_candidates == 3  # n refused: three requests of one candidate
    first, adapted = bodies[0], bodies[-1]
    assert first["max_completion_tokens"] == 1024 and "max_tokens" not in first
    assert first["temperature"] == 0.7 and first["top_p"] == 0.9 and first["n"] == 3
    assert not {"temperature", "top_p", "n", "max_tokens"} & set(adapted) and adapted["max_completion_tokens"] == 1024
    assert len(bodies) == 3 + 7 * 3  # one refusal per parameter, then every candidate answered
    notes = chains.summary["server_adaptations"]
    assert [note.split(":")[0] for note in notes] == ["temperature", "top_p", "n"]
    assert "Only the default (1) value is supported" in notes[0]
    recorded = json.loads((chains.store.directory / "server_adaptations.json").read_text())
    assert recorded["omitted"] == ["temperature", "top_p", "n"] and recorded["notes"] == notes
    chains.close()
    with LoopbackServer(pixel_teacher(PACS), refuse=REASONING_MODEL) as server:  # a resumed run starts adapted
        more = write_images(tmp_path / "more", PACS, 14)[7:]
        generate_chains(more, PACS, settings(server.base_url, top_p=0.9), tmp_path / "store").close()
        assert len(server.requests) == 7 * 3


def test_a_server_without_max_completion_tokens_gets_max_tokens(seven, tmp_path):
    with LoopbackServer(pixel_teacher(PACS), refuse=("max_completion_tokens",)) as server:
        chains = generate_chains(seven, PACS, settings(server.base_url, max_tokens=77), tmp_path / "store")
        bodies = list(server.requests)
    assert all(chains[image.image_id].reasoning is not None for image in seven)
    assert bodies[0]["max_completion_tokens"] == 77 and all(body["max_tokens"] == 77 for body in bodies[1:])
    assert all(body["temperature"] == 0.7 and body["n"] == 3 for body in bodies)  # what it takes is kept
    assert chains.summary["server_adaptations"][0].startswith("max_completion_tokens: refused, max_tokens sent")
    chains.close()


def test_a_server_refusing_both_token_fields_stops_the_run(seven, tmp_path):
    with LoopbackServer(pixel_teacher(PACS), refuse=("max_completion_tokens", "max_tokens")) as server:
        with pytest.raises(RequestRefused, match="Use 'max_completion_tokens' instead"):
            generate_chains(seven, PACS, settings(server.base_url), tmp_path / "store")
        assert len(server.requests) == 2


def test_any_other_400_stops_the_build_at_once_with_the_servers_message(folder, tmp_path, capsys):
    refused = Scripted(
        400,
        {
            "error": {
                "message": "Invalid model 'o9'. Use one of the models listed at /v1/models.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
    )
    with LoopbackServer(lambda body: refused) as server:
        code = main(
            [
                "build",
                "--benchmark",
                "pacs",
                "--images",
                str(folder[0]),
                "--out",
                str(tmp_path / "out"),
                "--teacher",
                "o9",
                "--base-url",
                server.base_url,
                "--max-rounds",
                "0",
                "--concurrency",
                "1",
                "--no-teacher-progress",
            ]
        )
        assert server.count == 1  # not one refused request per image
    assert code == 2
    error = capsys.readouterr().err
    assert "rdmldg build: error: The teacher server refused a request (HTTP 400: Invalid model 'o9'." in error
    assert "Traceback" not in error and not (tmp_path / "out").exists()


def test_batch_mode_adapts_to_the_refusals_inside_the_output_file(seven, tmp_path):
    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    with LoopbackBatchServer(pixel_teacher(PACS), refuse=("max_tokens", "temperature")) as server:
        chains, report = generate_chains_batch(
            seven,
            PACS,
            settings(server.base_url),
            tmp_path / "store",
            limits=BatchLimits(),
            wait=True,
            poll_interval=0,
            sleep=no_wait,
        )
        uploads = [[json.loads(line)["body"] for line in upload.splitlines()] for upload in server.uploads]
    assert report.adapted_requests == 7 and report.refusals == [] and len(uploads) == 2
    assert all(body["temperature"] == 0.7 for body in uploads[0])
    assert all("temperature" not in body and body["max_completion_tokens"] == 1024 for body in uploads[1])
    assert all(chains[image.image_id].reasoning is not None for image in seven)
    assert chains.summary["server_adaptations"][0].startswith("temperature: refused, left out")


def test_batch_mode_stops_on_a_refusal_no_adaptation_fixes(seven, tmp_path):
    refused = Scripted(
        400,
        {
            "error": {
                "message": "Invalid image data.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "invalid_image",
            }
        },
    )
    with LoopbackBatchServer(lambda body: refused) as server:
        with pytest.raises(RequestRefused, match="refused 7 batch request.*Invalid image data"):
            generate_chains_batch(
                seven,
                PACS,
                settings(server.base_url),
                tmp_path / "store",
                limits=BatchLimits(),
                wait=True,
                poll_interval=0,
            )
        assert len(server.batches) == 1


def test_reasoning_effort_is_sent_and_keys_the_store_only_when_set(seven, tmp_path):
    with LoopbackServer(pixel_teacher(PACS)) as server:
        generate_chains(seven[:1], PACS, settings(server.base_url, reasoning_effort="low"), tmp_path / "store").close()
        assert server.requests[0]["reasoning_effort"] == "low"
    assert "reasoning_effort" not in store_key(PACS, SamplingSettings())  # stores of earlier versions keep their key
    assert store_key(PACS, SamplingSettings(reasoning_effort="high"))["reasoning_effort"] == "high"
    with pytest.raises(ValueError, match="Unknown reasoning effort 'max'"):
        SamplingSettings(reasoning_effort="max")


@pytest.mark.parametrize(
    "param, message, expected",
    [
        ("max_tokens", "Unsupported parameter: 'max_tokens' is not supported with this model.", "max_tokens"),
        (None, "Unsupported value: 'temperature' does not support 0.7 with this model.", "temperature"),
        (None, "Unrecognized request argument supplied: max_completion_tokens", "max_completion_tokens"),
        (
            None,
            "[{'type': 'extra_forbidden', 'loc': ('body', 'top_p'), 'msg': 'Extra inputs are not permitted'}]",
            "top_p",
        ),
        (None, "n > 1 is not supported", "n"),
        ("messages", "Invalid image data.", None),
        (None, "Invalid model 'o9'.", None),
    ],
)
def test_the_refused_parameter_is_read_from_the_error(param, message, expected):
    assert refused_parameter(param, message) == expected
