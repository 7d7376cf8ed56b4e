"""`rdmldg build --teacher` against hostile servers on 127.0.0.1: every wait bounded, every failure
loud (exit code, incomplete mark, push refused), no secret stored or printed."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from datasets import load_dataset

from helpers.hub import FakeHub, free_port
from helpers.teacher import chain, pacs_build_arguments, run_bounded, seen, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.teacher.redaction import REDACTED, redact
from rdmldg_hf.testing import LoopbackServer, Scripted, chat_completion

PACS = get_benchmark("pacs")


def store_lines(out: Path) -> list[dict]:
    (store,) = (out.parent / f"{out.name}.teacher-store").iterdir()
    return [json.loads(line) for line in (store / "replies.jsonl").read_text().splitlines()]


def right_teacher(body: dict) -> list[str]:
    """Every candidate concludes the image's class (one request per image)."""
    return [chain(PACS.class_names[seen(body)[0]])] * body.get("n", 1)


def failing_for(label: int, answer: Scripted):
    """The right teacher, except that images of class ``label`` always get ``answer``."""
    return lambda body: answer if seen(body)[0] == label else right_teacher(body)


def test_help_says_the_timeout_bounds_the_whole_request_and_names_the_early_stop(capsys):
    for command in ("build", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "Seconds one attempt of a request may take in all" in text and "trickling" in text
        assert "--stop-after-failures N" in text and "(default 8; 0: never stop)" in text


@pytest.mark.multiprocess
def test_a_trickling_server_is_cut_off_at_the_timeout(tmp_path):
    """One byte every 0.2 s: every read succeeds, a whole reply would take minutes; --timeout 1 ends each."""
    write_images(tmp_path / "PACS", PACS, 4, classes=1)  # one per domain
    out = tmp_path / "out"
    with LoopbackServer(right_teacher, trickle=0.2) as server:
        arguments = pacs_build_arguments(
            tmp_path / "PACS", out, server.base_url, "--timeout", "1", "--max-retries", "0", candidates=1
        )
        code = run_bounded(arguments)
        sent = server.trickled
    assert code == 1  # written, marked incomplete
    assert server.count == 4 and sent < len(json.dumps(chat_completion([chain("dog")])))  # no reply got through
    failures = [line for line in store_lines(out) if line["kind"] == "failure"]
    assert len(failures) == 4 and all("no complete reply within 1 s (--timeout)" in f["error"] for f in failures)


@pytest.mark.multiprocess
def test_a_dead_server_stops_the_build_early_and_a_rerun_continues(tmp_path, capsys):
    write_images(tmp_path / "PACS", PACS, 12, classes=3)
    out = tmp_path / "out"

    def arguments(base_url: str, *extra: str) -> list[str]:
        options = ("--max-retries", "1", "--backoff-base", "0", "--concurrency", "1", *extra)
        return pacs_build_arguments(tmp_path / "PACS", out, base_url, *options)

    dead = Scripted(503, {"error": {"message": "upstream is down"}})
    with LoopbackServer(lambda body: dead) as server:
        assert run_bounded(arguments(server.base_url, "--stop-after-failures", "3")) == 2
        assert server.count == 3 * 2  # three requests, each retried once, then the build stopped
    err = " ".join(capsys.readouterr().err.split())
    assert "the last 3 teacher requests all failed after 1 retries each" in err
    assert "HTTP 503: Error code: 503 - upstream is down" in err and "rerun to continue: nothing is lost" in err
    assert not (out / "README.md").exists()  # nothing published-looking was written

    with LoopbackServer(right_teacher) as server:  # the default: 8 in a row; a server refusing connections
        assert run_bounded(arguments(f"http://127.0.0.1:{free_port()}/v1")) == 2
        assert "the last 8 teacher requests all failed" in capsys.readouterr().err
        assert run_bounded(arguments(server.base_url)) == 0
        assert server.count == 12  # every image asked again, once: nothing was stored for them
    assert [line["kind"] for line in store_lines(out)] == ["failure"] * (3 + 8) + ["reply"] * 12


class FailThenHang(LoopbackServer):
    """Fails the first two requests at once; every later one waits an hour."""

    async def route(self, method, path, headers, raw):
        self.count += 1
        if self.count > 2:
            await asyncio.sleep(3600)
        return Scripted(500, {"error": {"message": "boom"}})


@pytest.mark.multiprocess
def test_requests_in_flight_are_cancelled_when_the_build_stops(tmp_path):
    write_images(tmp_path / "PACS", PACS, 40)
    out = tmp_path / "out"
    with FailThenHang(right_teacher) as server:
        arguments = pacs_build_arguments(
            tmp_path / "PACS", out, server.base_url, "--max-retries", "0", "--concurrency", "4"
        )
        assert run_bounded([*arguments, "--stop-after-failures", "2"]) == 2  # not 2 minutes of --timeout
        assert 2 < server.count <= 2 + 4
    assert [line["kind"] for line in store_lines(out)] == ["failure", "failure"]  # the hanging ones: nothing


@pytest.mark.multiprocess
def test_failed_requests_exit_nonzero_mark_the_dataset_incomplete_and_block_the_push(tmp_path, capsys):
    write_images(tmp_path / "PACS", PACS, 8, classes=2)  # dog and elephant in each domain
    out = tmp_path / "out"
    broken = Scripted(502, {"error": {"message": "bad gateway"}})
    with LoopbackServer(failing_for(0, broken)) as server, FakeHub(tmp_path / "hub") as hub:
        arguments = pacs_build_arguments(tmp_path / "PACS", out, server.base_url, "--max-retries", "1")
        arguments += ["--backoff-base", "0", "--concurrency", "1"]
        assert run_bounded(arguments) == 1
        printed = capsys.readouterr()
        assert "Built config 'pacs'" in printed.out
        err = " ".join(printed.err.split())
        assert (
            "requests of 4 images failed (the first error: RetriesExhausted: HTTP 502: Error code: 502 - bad gateway"
            in err
        )
        assert "rerun the same command to ask for them again: nothing is lost" in err
        report = json.loads((out / "reports" / "pacs.json").read_text())
        assert report["incomplete"]["images"] == 4 and report["teacher"]["incomplete"] == report["incomplete"]
        assert "**Incomplete:** 4 images have no teacher reply yet" in (out / "README.md").read_text()
        rows = [row for domain in PACS.domains for row in load_dataset(str(out), "pacs", split=domain)]
        assert sorted(row["label"] for row in rows if row["reasoning"] is None) == [0, 0, 0, 0]
        rows = [row for row in rows if row["reasoning"] is None]
        assert all("request failed: RetriesExhausted: HTTP 502" in row["rejection_reasons"][-1] for row in rows)

        assert run_bounded([*arguments, "--push-to-hub", "me/dbr"]) == 2
        assert hub.created == [] and hub.commits == []
        err = " ".join(capsys.readouterr().err.split())
        assert "is marked incomplete" in err and "pacs (4 images)" in err and "--allow-incomplete" in err
        assert run_bounded([*arguments, "--push-to-hub", "me/dbr", "--allow-incomplete"]) == 1
        assert len(hub.commits) == 1

        server.reply = right_teacher  # the server recovers: the rerun completes the dataset
        before = server.count
        assert run_bounded([*arguments, "--push-to-hub", "me/dbr"]) == 0
        assert server.count - before == 4 and len(hub.commits) == 2
    report = json.loads((out / "reports" / "pacs.json").read_text())
    assert "incomplete" not in report and report["teacher"]["incomplete"] is None
    assert "Incomplete" not in (out / "README.md").read_text()


class EchoingServer(LoopbackServer):
    """Echoes the request's Authorization header, the HF token and a stranger's keys back: in a
    500 error body for class-0 images, inside the (right) chain of every other reply."""

    def __init__(self, hf_token: str):
        super().__init__(self.echo)
        self.hf_token = hf_token
        self.authorization = ""

    async def route(self, method, path, headers, raw):
        self.authorization = headers.get("authorization", "")
        return await super().route(method, path, headers, raw)

    def echo(self, body):
        leak = f"{self.authorization} {self.hf_token} Bearer abc.def-ghi sk-proj-STRANGER0123456789"
        label = seen(body)[0]
        if label == 0:
            return Scripted(500, {"error": {"message": f"cannot authenticate {leak}"}})
        return [chain(PACS.class_names[label]).replace("The colour matches it.", leak)] * body.get("n", 1)


@pytest.mark.multiprocess
def test_no_secret_a_server_echoes_is_stored_printed_or_published(tmp_path, monkeypatch, capsys, caplog):
    key, token = "sk-test-" + "k3y" * 10, "hf_" + "T0ken" * 7
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("HF_TOKEN", token)
    write_images(tmp_path / "PACS", PACS, 8, classes=2)
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    with EchoingServer(token) as server:
        arguments = pacs_build_arguments(tmp_path / "PACS", out, server.base_url, "--max-retries", "1")
        assert run_bounded(["-v", *arguments, "--backoff-base", "0"]) == 1
    printed = capsys.readouterr()
    files = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    rows = [row for domain in PACS.domains for row in load_dataset(str(out), "pacs", split=domain)]
    columns = json.dumps([[row["reasoning"], row["rejection_reasons"]] for row in rows])
    for secret in (key, token, "abc.def-ghi", "STRANGER0123456789"):
        for where in (printed.out, printed.err, caplog.text, columns):
            assert secret not in where
        assert secret.encode() not in files
    failed = [row for row in rows if row["label"] == 0]
    assert all(f"cannot authenticate Bearer {REDACTED} {REDACTED}" in row["rejection_reasons"][-1] for row in failed)
    accepted = [row["reasoning"] for row in rows if row["reasoning"]]
    assert len(accepted) == 4 and all(f"Bearer {REDACTED} {REDACTED} Bearer {REDACTED}" in text for text in accepted)


def test_redact_replaces_known_secrets_and_masks_key_shaped_text():
    text = "key sk-live-abcdefgh12345 Authorization: Bearer eyJhbGciOi.x-y hf_abcdefghijkl secret4u plain words"
    assert redact(text, ["secret4u", "no"]) == (
        f"key {REDACTED} Authorization: Bearer {REDACTED} {REDACTED} {REDACTED} plain words"
    )
    assert redact("a short sk-1 and skill-based bearer text", ["x"]) == "a short sk-1 and skill-based bearer text"


@pytest.mark.parametrize(
    "option, message",
    [
        (("--timeout", "nan"), "--timeout must be a positive, finite number of seconds; got nan"),
        (("--timeout", "inf"), "--timeout must be a positive, finite number of seconds; got inf"),
        (("--backoff-base", "nan"), "(--max-retries, --backoff-base, --backoff-max) must be non-negative finite"),
        (("--stop-after-failures", "-1"), "--stop-after-failures must be 0 (never stop) or more; got -1"),
    ],
)
def test_bad_request_options_are_refused_naming_the_flag(tmp_path, capsys, option, message):
    write_images(tmp_path / "PACS", PACS, 4, classes=1)
    assert main(pacs_build_arguments(tmp_path / "PACS", tmp_path / "out", "http://127.0.0.1:9/v1", *option)) == 2
    assert message in capsys.readouterr().err
