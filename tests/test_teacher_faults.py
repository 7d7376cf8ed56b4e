"""Scripted replies through the openai client's http_client: acceptance paths and faults."""

from __future__ import annotations

import asyncio
import json
import random

import httpx2
import pytest

from helpers.teacher import (
    Event,
    RecordedSleep,
    ScriptedTransport,
    chain,
    fail,
    pixel_teacher,
    raw,
    seen,
    status,
    texts,
    write_images,
)
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.teacher.pipeline import generate_chains
from rdmldg_hf.teacher.retry import TeacherConfigError
from rdmldg_hf.teacher.settings import RetryPolicy, SamplingSettings, TeacherSettings
from rdmldg_hf.testing import chat_completion

PACS = get_benchmark("pacs")
NAMES = PACS.class_names


def settings(candidates: int = 2, max_rounds: int = 1, max_retries: int = 3, **overrides) -> TeacherSettings:
    return TeacherSettings(
        sampling=SamplingSettings(model="gpt-4o", candidates=candidates, image_max_side=32),
        retry=RetryPolicy(max_retries=max_retries, base_delay=0.5, max_delay=4.0, jitter=0.5),
        base_url="http://teacher.test/v1",
        concurrency=overrides.pop("concurrency", 3),
        max_rounds=max_rounds,
        progress=False,
        **overrides,
    )


def run(images, transport, tmp_path, sleep=None, **kwargs):
    return generate_chains(
        images,
        PACS,
        settings(**kwargs),
        tmp_path / "store",
        http_client=transport.client(),
        sleep=sleep or RecordedSleep(),
        rng=random.Random(0),
    )


@pytest.fixture
def seven(tmp_path):
    """One image per class, all in the first domain (the pixel teacher answers them right)."""
    return write_images(tmp_path / "images", PACS, 7)


def test_scripted_build_acceptance_statistics(tmp_path):
    images = write_images(tmp_path / "images", PACS, 28)
    transport = ScriptedTransport(pixel_teacher(PACS))
    chains = run(images, transport, tmp_path, candidates=3)
    acceptance = chains.summary["acceptance"]
    print(json.dumps({k: v for k, v in acceptance.items() if k != "per_class"}, indent=1))
    domains = acceptance["per_domain"]
    assert {d: domains[d]["accepted"] for d in domains} == {"art_painting": 7, "cartoon": 7, "photo": 0, "sketch": 0}
    assert domains["art_painting"]["correct"] == 21 and domains["cartoon"]["correct"] == 14
    assert domains["photo"]["valid"] == 0 and domains["photo"]["candidates"] == 42  # 2 rounds x 3
    assert domains["sketch"]["valid"] == 42 and domains["sketch"]["correct"] == 0
    assert acceptance["rejection_reasons"] == {"invalid format": 42, "several classes": 42, "wrong class": 7}
    assert sum(t["images"] for t in acceptance["per_class"].values()) == 28
    assert len(transport.bodies) == 7 + 7 + 14 + 14
    cartoon = next(image for image in images if image.domain == "cartoon")
    record = chains[cartoon.image_id]
    assert record.reasoning.endswith(f"<CONCLUSION>{NAMES[cartoon.label]}</CONCLUSION>")
    assert (record.num_candidates, record.num_valid, record.num_correct) == (3, 3, 2)
    assert record.rejection_reasons == (
        f"round 0 candidate 0: concludes {NAMES[(cartoon.label + 1) % 7]!r}, not the label",
    )
    photo = chains[next(image.image_id for image in images if image.domain == "photo")]
    assert photo.reasoning is None and photo.chain_source is None and len(photo.rejection_reasons) == 6
    assert all("missing <REFLECTION>" in reason for reason in photo.rejection_reasons)
    sketch = chains[next(image.image_id for image in images if image.domain == "sketch")]
    assert all("names several classes" in reason for reason in sketch.rejection_reasons)
    assert (
        chains.summary["tokens"]["total"]
        == chains.summary["this_run"]["prompt_tokens"] + chains.summary["this_run"]["completion_tokens"]
    )
    assert chains.summary["estimated_cost_usd"] > 0


def test_faults_are_retried_with_backoff_and_counted(seven, tmp_path):
    script = {
        0: [status(429, {"retry-after": "7"})],
        1: [status(500), status(503)],
        2: [fail(httpx2.ReadTimeout, "read timed out")],
        3: [fail(httpx2.RemoteProtocolError, "Server disconnected without sending a response.")],
        4: [raw(b'{"id": "chatcmpl", "choices": [')],
        5: [texts([])],
        6: [texts([chain(NAMES[6], drop="CAPTION"), chain("a submarine")])],
    }
    transport = ScriptedTransport(pixel_teacher(PACS), script)
    sleep = RecordedSleep()
    chains = run(seven, transport, tmp_path, sleep=sleep)
    records = {image.label: chains[image.image_id] for image in seven}
    assert all(record.reasoning is not None for record in records.values())
    assert chains.summary["this_run"]["retries"] == 6
    assert chains.summary["this_run"]["failed"] == 0
    assert 7.0 in sleep.waits  # Retry-After honoured as given
    backoffs = [wait for wait in sleep.waits if wait != 7.0]
    assert len(backoffs) == 5 and all(0.25 <= wait <= 1.0 for wait in backoffs)  # base 0.5 or 1.0, jitter 50%
    assert [transport.requests_for(label) for label in range(7)] == [2, 3, 2, 2, 2, 2, 2]
    assert records[5].rejection_reasons == ("round 0: reply had no choices (asked for 2)",)
    assert records[5].num_candidates == 2  # round 1 only
    assert records[6].rejection_reasons[0] == "round 0 candidate 0: missing <CAPTION>"
    assert "names no class" in records[6].rejection_reasons[1]
    assert (records[6].num_candidates, records[6].num_valid, records[6].num_correct) == (4, 3, 2)


def test_exhausted_retries_mark_the_image_failed_and_the_next_run_asks_again(seven, tmp_path):
    transport = ScriptedTransport(pixel_teacher(PACS), {2: [status(502)] * 10})
    chains = run(seven, transport, tmp_path, max_retries=2)
    failed = chains[seven[2].image_id]
    assert failed.reasoning is None
    assert "request failed" in failed.rejection_reasons[-1] and "next run asks again" in failed.rejection_reasons[-1]
    assert transport.requests_for(2) == 3
    assert chains.summary["acceptance"]["failed"] == 1 and chains.summary["acceptance"]["accepted"] == 6
    assert chains.summary["acceptance"]["rejection_reasons"] == {"request failed": 1}
    lines = [json.loads(line) for line in (chains.store.path).read_text().splitlines()]
    assert [line["kind"] for line in lines].count("failure") == 1
    chains.close()

    again = ScriptedTransport(pixel_teacher(PACS))
    chains = run(seven, again, tmp_path)
    assert [again.requests_for(label) for label in range(7)] == [0, 0, 1, 0, 0, 0, 0]
    assert chains[seven[2].image_id].reasoning is not None
    assert chains.summary["acceptance"]["failed"] == 0 and chains.summary["acceptance"]["accepted"] == 7


def test_a_server_refusing_n_gets_one_request_per_candidate(seven, tmp_path):
    teacher = pixel_teacher(PACS)
    refused = httpx2.Response(400, json={"error": {"message": "n > 1 is not supported"}})
    transport = ScriptedTransport(lambda body: refused if body.get("n", 1) > 1 else teacher(body))
    chains = run(seven, transport, tmp_path, candidates=3, concurrency=1)
    assert all(chains[image.image_id].num_candidates == 3 for image in seven)
    assert all(chains[image.image_id].reasoning is not None for image in seven)
    assert [body.get("n") for body in transport.bodies[:4]] == [3, None, None, None]  # n=1 is not sent
    assert chains.summary["server_adaptations"] == [
        "n: refused, one candidate per request (server: HTTP 400: n > 1 is not supported)"
    ]
    assert len(transport.bodies) == 1 + 7 * 3


def test_a_server_ignoring_n_is_topped_up_one_candidate_at_a_time(seven, tmp_path):
    transport = ScriptedTransport(lambda body: pixel_teacher(PACS)(body)[:1])  # always one choice
    chains = run(seven, transport, tmp_path, candidates=3, concurrency=1)
    assert [chains[image.image_id].num_candidates for image in seven] == [3] * 7
    assert [body.get("n", 1) for body in transport.bodies[:3]] == [3, 1, 1]
    assert len(transport.bodies) == 7 * 3


def test_an_unreadable_image_is_recorded_failed_not_fatal(seven, tmp_path):
    from rdmldg_hf.data.schema import SourceImage

    broken = SourceImage(image_id="art_painting/dog/broken.png", domain="art_painting", label=0, data=b"not an image")
    transport = ScriptedTransport(pixel_teacher(PACS))
    chains = run([*seven, broken], transport, tmp_path)
    assert chains[broken.image_id].reasoning is None
    assert "Unreadable image" in chains[broken.image_id].rejection_reasons[-1]
    assert chains.summary["acceptance"]["accepted"] == 7 and chains.summary["acceptance"]["failed"] == 1


def test_a_refused_key_stops_the_run_and_the_key_is_never_written(seven, tmp_path, monkeypatch, capsys):
    secret = "sk-test-do-not-leak-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    sent = []

    def handle(request):
        sent.append(request.headers.get("authorization"))
        return status(401, message="Incorrect API key provided")(request, {})

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handle))
    config = TeacherSettings(sampling=SamplingSettings(model="gpt-4o"), progress=False, concurrency=1)
    with pytest.raises(TeacherConfigError, match="API key environment variable"):
        generate_chains(seven, PACS, config, tmp_path / "store", http_client=client, sleep=RecordedSleep())
    assert sent and sent[0] == f"Bearer {secret}"
    written = "".join(path.read_text() for path in (tmp_path / "store").rglob("*") if path.is_file())
    captured = capsys.readouterr()
    assert secret not in written + captured.out + captured.err


def test_the_key_comes_from_the_named_variable(seven, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = TeacherSettings(sampling=SamplingSettings(model="gpt-4o"), progress=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        generate_chains(seven, PACS, config, tmp_path / "store")
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-other")
    transport = ScriptedTransport(pixel_teacher(PACS))
    keys = []
    original = transport.handle
    transport.handle = lambda request: keys.append(request.headers["authorization"]) or original(request)
    config = TeacherSettings(sampling=SamplingSettings(model="gpt-4o"), api_key_env="MY_TEACHER_KEY", progress=False)
    generate_chains(seven[:1], PACS, config, tmp_path / "store", http_client=transport.client())
    assert keys == ["Bearer sk-other"]
    assert "sk-other" not in json.dumps(
        generate_chains(seven[:1], PACS, config, tmp_path / "store", http_client=transport.client()).summary
    )


def test_concurrency_is_bounded(tmp_path):
    images = write_images(tmp_path / "images", PACS, 20)
    state = {"now": 0, "peak": 0}
    teacher = pixel_teacher(PACS)

    async def handle(request):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.005)
        state["now"] -= 1
        return httpx2.Response(200, json=chat_completion(teacher(json.loads(request.content))))

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handle))
    generate_chains(images, PACS, settings(concurrency=4), tmp_path / "store", http_client=client)
    assert state["peak"] == 4


def test_rounds_stop_at_max_rounds_and_a_later_run_can_add_rounds(seven, tmp_path):
    wrong = [texts([chain(NAMES[1]), chain(NAMES[2])])] * 5
    transport = ScriptedTransport(pixel_teacher(PACS), {0: list(wrong)})
    chains = run(seven, transport, tmp_path, max_rounds=1)
    assert transport.requests_for(0) == 2 and chains[seven[0].image_id].reasoning is None
    assert chains[seven[0].image_id].num_candidates == 4
    chains.close()
    more = ScriptedTransport(pixel_teacher(PACS))
    chains = run(seven, more, tmp_path, max_rounds=2)
    assert [more.requests_for(label) for label in range(7)] == [1, 0, 0, 0, 0, 0, 0]
    record = chains[seven[0].image_id]
    assert record.reasoning is not None and (record.num_candidates, record.num_correct) == (6, 2)
    assert len(record.rejection_reasons) == 4
    assert seen(more.bodies[0])[0] == 0


def test_a_reply_that_is_json_but_not_a_chat_completion_is_retried(seven, tmp_path):
    transport = ScriptedTransport(pixel_teacher(PACS), {1: [raw(b'{"choices": "none"}'), raw(b"[1, 2]")]})
    chains = run(seven, transport, tmp_path)
    assert transport.requests_for(1) == 3 and chains[seven[1].image_id].reasoning is not None
    assert chains.summary["this_run"]["retries"] == 2


def test_content_given_as_parts_is_read_as_text(seven, tmp_path):
    from rdmldg_hf.teacher.store import Reply

    body = chat_completion([None])
    body["choices"][0]["message"]["content"] = [
        {"type": "text", "text": "<SUMMARY>a"},
        {"type": "text", "text": "</SUMMARY>"},
    ]
    assert Reply.from_completion("x", 0, 0, 1, body).texts == ("<SUMMARY>a</SUMMARY>",)
    assert Reply.from_completion("x", 0, 0, 1, chat_completion([None])).texts == (None,)


def test_the_progress_bar_shows_accepted_rejected_retries_tokens_and_cost(tmp_path, capsys):
    images = write_images(tmp_path / "images", PACS, 14)
    transport = ScriptedTransport(pixel_teacher(PACS), {0: [status(503)]})
    config = settings()
    config = TeacherSettings(**{**config.__dict__, "progress": True})
    generate_chains(images, PACS, config, tmp_path / "store", http_client=transport.client(), sleep=RecordedSleep())
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "14/14" in last
    for field in ("accepted=14", "rejected=0", "failed=0", "retries=1", "tokens=", "cost=$"):
        assert field in last, last


def completion_with(**changes) -> Event:
    """A right chat completion (two choices) with parts of it replaced by ``changes``."""

    def event(request: httpx2.Request, body: dict) -> httpx2.Response:
        right = chain(NAMES[seen(body)[0]])
        completion = chat_completion([right, right])
        for where, value in changes.items():
            if where == "usage":
                completion["usage"]["prompt_tokens"] = value
            elif where == "choices":
                completion["choices"] = value(completion["choices"])
            else:
                completion["choices"][0][where] = value
        return httpx2.Response(200, content=json.dumps(completion).encode())

    return event


MALFORMED = {
    "usage values that are not finite whole numbers": [
        completion_with(usage="many"),
        completion_with(usage=float("inf")),
        completion_with(usage=float("nan")),
        completion_with(usage=2.5),
        completion_with(usage=-3),
        completion_with(usage=True),
    ],
    "a choice index that is not a whole number": [completion_with(index="0"), completion_with(index=[1])],
    "a message that is a string": [completion_with(message="<SUMMARY>")],
    "content that is not text": [
        completion_with(message={"role": "assistant", "content": 5}),
        completion_with(message={"role": "assistant", "content": {"text": "x"}}),
        completion_with(message={"role": "assistant", "content": [{"type": "text", "text": 7}]}),
    ],
    "more choices than n": [completion_with(choices=lambda choices: choices * 2)],
    "choices that are not objects": [completion_with(choices=lambda choices: [*choices[:1], "b"])],
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_replies_are_retried_counted_and_never_judge_more_candidates(seven, tmp_path, kind):
    events = MALFORMED[kind]
    transport = ScriptedTransport(pixel_teacher(PACS), {0: list(events)})
    chains = run(seven, transport, tmp_path, max_retries=len(events))
    record = chains[seven[0].image_id]
    assert record.reasoning is not None and record.num_candidates == 2  # the reply after them, n=2 judged
    assert chains.summary["this_run"]["malformed_replies"] == len(events) == chains.summary["this_run"]["retries"]
    assert transport.requests_for(0) == len(events) + 1
    chains.close()

    again = ScriptedTransport(pixel_teacher(PACS), {0: list(events)})  # a fresh store, one retry fewer: failed
    chains = run(seven, again, tmp_path / "fewer", max_retries=len(events) - 1)
    failed = chains[seven[0].image_id]
    assert failed.reasoning is None and failed.num_candidates == 0
    assert "RetriesExhausted: unreadable reply: MalformedReply" in failed.rejection_reasons[-1]
    assert chains.summary["acceptance"]["failed"] == 1 and chains.summary["acceptance"]["accepted"] == 6
