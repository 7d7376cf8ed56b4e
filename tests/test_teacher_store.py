"""The resumable reply store: torn lines, separate stores per key set, request ids."""

from __future__ import annotations

import json

import pytest

from helpers.teacher import ScriptedTransport, pixel_teacher, seen, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.commands.batches import batch_status
from rdmldg_hf.teacher import settings as settings_module
from rdmldg_hf.teacher.pipeline import generate_chains
from rdmldg_hf.teacher.requests import custom_id, parse_custom_id
from rdmldg_hf.teacher.settings import RetryPolicy, SamplingSettings, TeacherSettings, store_key, store_name
from rdmldg_hf.teacher.store import Reply, TeacherStore

PACS = get_benchmark("pacs")


def reply(image_id: str, round_index: int = 0, start: int = 0, n: int = 2, text: str = "x") -> Reply:
    return Reply(image_id, round_index, start, n, (text,) * n, ("stop",) * n, 10, 5 * n, "gpt-4o")


def test_replies_round_trip_and_are_read_back_from_disk(tmp_path):
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        store.add_reply(reply("a/b/1.png", text="é ünïcode"))
        store.add_reply(reply("a/b/1.png", round_index=1))
        store.add_reply(reply("a/b/2.png"))
        directory = store.directory
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        assert store.directory == directory
        assert [r.round for r in store.replies("a/b/1.png")] == [0, 1]
        assert store.replies("a/b/1.png")[0] == reply("a/b/1.png", text="é ünïcode")
        assert store.totals.replies == 3 and store.totals.prompt_tokens == 30 and store.totals.completion_tokens == 30
        assert store.has_reply(custom_id("a/b/2.png", 0, 0)) and not store.has_reply(custom_id("a/b/2.png", 1, 0))


def test_a_torn_last_line_is_cut_off_and_appending_goes_on(tmp_path):
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        store.add_reply(reply("one"))
        store.add_reply(reply("two"))
        path = store.path
    whole = path.read_bytes()
    line = json.dumps(reply("three").to_json()).encode()
    for torn in (line[: len(line) // 2], line, b"\n"[:0] + line[:-3] + b"\n"):  # mid-line, unterminated, broken JSON
        path.write_bytes(whole + torn)
        with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
            assert store.repaired_bytes == len(torn)
            assert list(store.image_ids()) == ["one", "two"]
            store.add_reply(reply("four"))
        lines = path.read_text().splitlines()
        assert [json.loads(text)["image_id"] for text in lines] == ["one", "two", "four"]
        path.write_bytes(whole)


def test_an_unreadable_line_in_the_middle_is_skipped_and_counted(tmp_path):
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        store.add_reply(reply("one"))
        path = store.path
    with open(path, "ab") as handle:
        handle.write(b"{garbage\n" + json.dumps(reply("two").to_json()).encode() + b"\n")
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        assert store.corrupt_lines == 1 and store.repaired_bytes == 0
        assert sorted(store.image_ids()) == ["one", "two"]


def test_a_request_answered_twice_is_paid_twice_and_decided_by_its_first_reply(tmp_path):
    from helpers.teacher import chain
    from rdmldg_hf.teacher.rejection import decide

    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        store.add_reply(Reply("one", 0, 0, 1, (chain("dog"),)))
        store.add_reply(Reply("one", 0, 0, 1, (chain("horse"),)))
        assert store.totals.replies == 2
        decision = decide(store.replies("one"), PACS, PACS.class_index("dog"), 1, 0, "t")
        assert decision.accepted and decision.record.num_candidates == 1


def test_teacher_prompt_version_and_sampling_settings_each_start_a_separate_store(monkeypatch):
    base = store_name(store_key(PACS, SamplingSettings()))
    assert base.startswith("pacs-gpt-4o-rdmldg-prompts-v1-")
    assert store_name(store_key(PACS, SamplingSettings())) == base
    others = {
        store_name(store_key(PACS, SamplingSettings(model="gpt-4o-mini"))),
        store_name(store_key(PACS, SamplingSettings(candidates=8))),
        store_name(store_key(PACS, SamplingSettings(temperature=1.0))),
        store_name(store_key(PACS, SamplingSettings(image_max_side=256))),
        store_name(store_key(get_benchmark("vlcs"), SamplingSettings())),
    }
    monkeypatch.setattr(settings_module, "PROMPT_VERSION", "rdmldg-prompts-v2")
    others.add(store_name(store_key(PACS, SamplingSettings())))
    assert base not in others and len(others) == 6


def test_a_store_folder_with_other_settings_is_refused(tmp_path):
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        directory = store.directory
    settings_file = directory / TeacherStore.SETTINGS
    stored = json.loads(settings_file.read_text())
    assert set(stored) >= {"model", "prompt_version", "question_sha256", "candidates", "benchmark"}
    assert not any("key" in name and "api" in name for name in stored)
    settings_file.write_text(json.dumps({**stored, "model": "other"}))
    with pytest.raises(ValueError, match="other settings"):
        TeacherStore(directory, store_key(PACS, SamplingSettings()))


def test_request_ids_name_image_round_and_first_candidate():
    value = custom_id("Real World/Alarm_Clock/00001.jpg", 2, 3)
    assert parse_custom_id(value) == ("Real World/Alarm_Clock/00001.jpg", 2, 3)
    with pytest.raises(ValueError, match="Not a teacher request id"):
        parse_custom_id("some-other-id")


BAD_RECORDS = [
    ({"kind": "reply"}, "reply record: image_id is None, not an image id"),
    ({**reply("b").to_json(), "round": "x"}, "reply record: round is 'x', not a whole number of at least 0"),
    ({**reply("b").to_json(), "n": 0}, "reply record: n is 0, not a whole number of at least 1"),
    ({**reply("b").to_json(), "usage": {"prompt_tokens": "lots"}}, "usage.prompt_tokens is 'lots'"),
    ({**reply("b").to_json(), "choices": [{"text": 5}]}, "reply record: a choice's text is a int, not a string"),
    ({**reply("b").to_json(), "choices": "abc"}, "reply record: choices is not a list of objects"),
    ({"kind": "batch", "batch_id": "b1"}, "batch record: shard is 'None', not a string"),
    ({"kind": "batch", "batch_id": "b1", "shard": "s", "custom_ids": 5}, "custom_ids is not a list of request ids"),
    ({"kind": "batch_done", "batch_id": ["b1"]}, None),  # names no known batch: kept and skipped, as before
]


def test_bad_records_are_skipped_and_reported_by_file_and_line_and_asked_again(tmp_path, caplog):
    images = write_images(tmp_path / "images", PACS, 2)
    settings = TeacherSettings(
        sampling=SamplingSettings(candidates=1, image_max_side=32),
        retry=RetryPolicy(max_retries=0),
        base_url="http://teacher.test/v1",
        max_rounds=0,
        progress=False,
    )
    with TeacherStore.open(tmp_path / "store", PACS, settings.sampling) as store:
        store.add_reply(reply(images[0].image_id, n=1))
        path = store.path
    good = path.read_text()
    broken_first = {**reply(images[1].image_id, n=1).to_json(), "round": "x"}  # its request is sent again
    lines = [json.dumps(record) for record, _ in BAD_RECORDS] + [json.dumps(broken_first)]
    path.write_text(good + "\n".join(lines) + "\n" + good)
    with TeacherStore.open(tmp_path / "store", PACS, settings.sampling) as store:
        expected = [f"replies.jsonl line {n}: " for n in (*range(2, 2 + len(BAD_RECORDS) - 1), 11)]
        assert [line[: len(start)] for line, start in zip(store.skipped, expected)] == expected
        assert all(why in line for (_, why), line in zip(BAD_RECORDS[:-1], store.skipped))
        assert store.corrupt_lines == len(store.skipped) == len(BAD_RECORDS)  # the unknown batch_done is no error
        assert list(store.image_ids()) == [images[0].image_id] and store.totals.replies == 2
    assert f"Skipping line 3 of {path} (reply record: round is 'x'" in caplog.text

    transport = ScriptedTransport(pixel_teacher(PACS))
    chains = generate_chains(images, PACS, settings, tmp_path / "store", http_client=transport.client())
    assert [seen(body)[0] for body in transport.bodies] == [images[1].label]  # only the bad record's image
    assert chains.summary["store_skipped_lines"][1].startswith("replies.jsonl line 3: reply record: round is 'x'")
    chains.close()


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"model": 5}'])
def test_a_garbage_settings_file_is_an_error_naming_it(tmp_path, garbage):
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        settings_file = store.directory / TeacherStore.SETTINGS
    settings_file.write_bytes(garbage)
    with pytest.raises(ValueError, match=f"settings file {settings_file} is unreadable") as error:
        TeacherStore.open(tmp_path, PACS, SamplingSettings())
    assert "point --teacher-store elsewhere" in str(error.value)
    (settings_file.parent / TeacherStore.REPLIES).write_text("")
    with pytest.raises(ValueError, match=f"settings file {settings_file} is unreadable"):
        batch_status(tmp_path)


def test_a_garbage_request_id_secret_is_an_error_naming_it(tmp_path):
    with TeacherStore.open(tmp_path, PACS, SamplingSettings()) as store:
        store.request_id_secret()
        (store.directory / "request-id-secret").write_text("not hex\n")
        with pytest.raises(ValueError, match="request-id-secret is not a request id secret"):
            store.request_id_secret()
