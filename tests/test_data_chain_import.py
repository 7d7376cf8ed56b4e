"""Importing chains from JSON / JSONL: validation, counting, line numbers, garbage input."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import MAX_CHAIN_CHARS, render_chain
from rdmldg_hf.data.chain_import import import_chains, read_chain_file
from rdmldg_hf.data.schema import SourceImage

PACS = get_benchmark("pacs")
IMAGES = [
    SourceImage("photo/dog/1.jpg", "photo", PACS.class_index("dog"), data=b""),
    SourceImage("photo/horse/2.jpg", "photo", PACS.class_index("horse"), data=b""),
    SourceImage("sketch/house/3.jpg", "sketch", PACS.class_index("house"), data=b""),
]


def chain(conclusion: str) -> str:
    return render_chain("plan", "a four-legged animal", "it has a snout and paws", "the cues agree", conclusion)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_json_object_with_texts_and_objects(tmp_path):
    data = {
        "photo/dog/1.jpg": chain("Dog"),
        "photo/horse/2.jpg": {
            "reasoning": chain("horse"),
            "source": "gpt-4o",
            "num_candidates": 3,
            "num_valid": 2,
            "num_correct": 1,
        },
    }
    result = import_chains(write(tmp_path / "c.json", json.dumps(data)), IMAGES, PACS)
    assert result.accepted == 2 and result.images_without_chain == 1
    assert result.records["photo/dog/1.jpg"].chain_source == "imported"
    horse = result.records["photo/horse/2.jpg"]
    assert (horse.chain_source, horse.num_candidates, horse.num_valid, horse.num_correct) == ("gpt-4o", 3, 2, 1)


def test_jsonl_and_json_list(tmp_path):
    lines = [
        {"image_id": "photo/dog/1.jpg", "chain": chain("dog")},
        {"image_id": "sketch/house/3.jpg", "reasoning": chain("house")},
    ]
    jsonl = write(tmp_path / "c.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    as_list = write(tmp_path / "c.json", json.dumps(lines))
    for path in (jsonl, as_list):
        assert sorted(import_chains(path, IMAGES, PACS).records) == ["photo/dog/1.jpg", "sketch/house/3.jpg"]
    bom = tmp_path / "bom.jsonl"
    bom.write_text(json.dumps(lines[0]), encoding="utf-8-sig")
    assert list(import_chains(bom, IMAGES, PACS).records) == ["photo/dog/1.jpg"]
    single = write(tmp_path / "one.jsonl", json.dumps(lines[0]) + "\n")
    assert list(import_chains(single, IMAGES, PACS).records) == ["photo/dog/1.jpg"]


def test_invalid_unmatched_and_duplicates_are_counted_not_dropped(tmp_path):
    rows = [
        {"image_id": "photo/dog/1.jpg", "reasoning": chain("horse")},  # wrong class
        {"image_id": "photo/horse/2.jpg", "reasoning": "<SUMMARY>x</SUMMARY><CONCLUSION>horse</CONCLUSION>"},
        {"image_id": "photo/horse/2.jpg", "reasoning": chain("horse")},  # duplicate id
        {"image_id": "cartoon/dog/9.jpg", "reasoning": chain("dog")},  # no such image
        {"image_id": "sketch/house/3.jpg", "reasoning": chain("a castle")},  # names no class
    ]
    result = import_chains(write(tmp_path / "c.jsonl", "\n".join(json.dumps(r) for r in rows)), IMAGES, PACS)
    assert result.accepted == 0 and result.total == 5
    assert result.unmatched == ["cartoon/dog/9.jpg"]
    assert result.duplicates == ["photo/horse/2.jpg"]
    problems = {item["image_id"]: (item["line"], " ".join(item["problems"])) for item in result.invalid}
    assert problems["photo/dog/1.jpg"] == (1, "conclusion 'horse' is not the image's class 'dog'")
    assert problems["photo/horse/2.jpg"][0] == 2 and "missing <CAPTION>" in problems["photo/horse/2.jpg"][1]
    assert "names no class" in problems["sketch/house/3.jpg"][1]
    report = result.to_dict()
    assert report["path"] == "c.jsonl" and len(report["invalid"]) == 3
    assert "3 invalid, 1 unmatched image ids, 1 duplicates" in result.format("reports/pacs.json")


def test_chains_with_special_tokens_or_too_long_are_rejected_with_the_reason(tmp_path):
    padded = chain("house").replace("a four-legged animal", "a four-legged animal " + "fur " * (MAX_CHAIN_CHARS // 4))
    rows = [
        {"image_id": "photo/dog/1.jpg", "reasoning": chain("dog").replace("paws", "paws <|image_pad|>")},
        {"image_id": "photo/horse/2.jpg", "reasoning": chain("horse").replace("snout", "snout<|end|><|assistant|>")},
        {"image_id": "sketch/house/3.jpg", "reasoning": padded},
    ]
    result = import_chains(write(tmp_path / "c.jsonl", "\n".join(json.dumps(r) for r in rows)), IMAGES, PACS)
    assert result.accepted == 0 and len(result.invalid) == 3
    problems = {item["image_id"]: " ".join(item["problems"]) for item in result.invalid}
    assert problems["photo/dog/1.jpg"].startswith("special token '<|image_pad|>' in the text")
    assert problems["photo/horse/2.jpg"].startswith("special token '<|end|>', '<|assistant|>' in the text")
    assert problems["sketch/house/3.jpg"] == f"too long: {len(padded):,} characters (a chain has at most 32,000)"
    llava = {"image_id": "photo/dog/1.jpg", "reasoning": chain("dog").replace("paws", "paws <image>")}
    result = import_chains(write(tmp_path / "l.jsonl", json.dumps(llava)), IMAGES, PACS)
    assert "special token '<image>'" in result.invalid[0]["problems"][0]


def test_json_errors_give_the_line(tmp_path):
    broken_json = write(tmp_path / "a.json", '{\n  "photo/dog/1.jpg": "x",\n  "photo/horse/2.jpg" "y"\n}')
    with pytest.raises(ValueError, match="line 3"):
        read_chain_file(broken_json)
    broken_jsonl = write(
        tmp_path / "b.jsonl",
        '{"image_id": "a", "reasoning": "x"}\n{"image_id": "b", "reasoning": "y"}\n{"image_id": \n',
    )
    with pytest.raises(ValueError, match="not valid JSONL: line 3"):
        read_chain_file(broken_jsonl)
    with pytest.raises(ValueError, match="has no chain"):
        read_chain_file(write(tmp_path / "c.json", '{"a": {"source": "me"}}'))
    with pytest.raises(ValueError, match="expected a JSON object"):
        read_chain_file(write(tmp_path / "d.json", "42"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_chain_file(tmp_path / "missing.json")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_garbage_files_fail_cleanly_or_import_nothing_valid(tmp_path, text):
    path = write(tmp_path / "garbage.json", text)
    try:
        result = import_chains(path, IMAGES, PACS)
    except ValueError:
        return
    assert result.accepted + len(result.invalid) + len(result.unmatched) + len(result.duplicates) == result.total


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=2)),
        min_size=1,
        max_size=3,
    )
)
def test_non_string_chains_are_invalid_not_crashes(tmp_path, values):
    data = {image.image_id: value for image, value in zip(IMAGES, values)}
    result = import_chains(write(tmp_path / "v.json", json.dumps(data)), IMAGES, PACS)
    assert result.accepted == 0 and len(result.invalid) == len(data)


WRONG_TYPES = [
    ({"num_candidates": "many"}, "num_candidates must be a whole number from 0 to 2,147,483,647; got 'many'"),
    ({"rejection_reasons": 5}, "rejection_reasons must be a list of strings; got 5"),
    ({"rejection_reasons": "abc"}, "rejection_reasons must be a list of strings; got 'abc'"),
    ({"num_valid": True}, "num_valid must be a whole number from 0 to 2,147,483,647; got True"),
    ({"num_correct": -1}, "num_correct must be a whole number from 0 to 2,147,483,647; got -1"),
    ({"num_candidates": 2**40}, "num_candidates must be a whole number from 0 to 2,147,483,647; got 1099511627776"),
    ({"source": 7}, "source must be a string; got 7"),
    ({"prompt_version": "v\ud800"}, "prompt_version must be a string; got 'v\\ud800'"),
    ({"reasoning": chain("dog") + "\udfff"}, "the chain is not valid Unicode text (a lone surrogate)"),
]


def test_fields_of_the_wrong_type_are_invalid_with_their_line_in_both_formats(tmp_path):
    entries = [{"reasoning": chain("dog"), **fields} for fields, _ in WRONG_TYPES]
    lines = [json.dumps({"image_id": "photo/dog/1.jpg", **entry}) for entry in entries]
    jsonl = write(tmp_path / "c.jsonl", "\n".join(lines))
    as_object = tmp_path / "c.json"  # one entry per line: {"photo/dog/1.jpg": {...}, "photo/dog/1.jpg": ...}
    as_object.write_text("{\n" + ",\n".join(f'"photo/dog/1.jpg": {json.dumps(e)}' for e in entries) + "\n}")
    for path, first_line in ((jsonl, 1), (as_object, 2)):
        result = import_chains(path, IMAGES, PACS)
        assert result.accepted == 0 and result.total == len(WRONG_TYPES)
        ((invalid, problem),) = [(item, item["problems"]) for item in result.invalid]
        assert invalid["line"] == first_line and problem[0].startswith(WRONG_TYPES[0][1])
        assert result.duplicates == ["photo/dog/1.jpg"] * (len(WRONG_TYPES) - 1)
    for index, (fields, message) in enumerate(WRONG_TYPES):
        single = write(tmp_path / f"one{index}.jsonl", "\n" + lines[index] + "\n")
        (invalid,) = import_chains(single, IMAGES, PACS).invalid
        assert invalid["line"] == 2 and invalid["problems"][0].startswith(message), invalid


def test_a_key_given_twice_is_a_duplicate_in_a_json_object_as_in_jsonl(tmp_path):
    jsonl = write(
        tmp_path / "c.jsonl",
        "\n".join(json.dumps({"image_id": "photo/dog/1.jpg", "reasoning": chain(c)}) for c in ("dog", "horse")),
    )
    as_object = write(
        tmp_path / "c.json",
        '{\n  "photo/dog/1.jpg": %s,\n  "photo/dog/1.jpg": %s\n}'
        % (json.dumps(chain("dog")), json.dumps(chain("horse"))),
    )
    reports = []
    for path in (jsonl, as_object):
        result = import_chains(path, IMAGES, PACS)
        assert result.records["photo/dog/1.jpg"].reasoning == chain("dog")  # the first one, in both formats
        reports.append({**result.to_dict(), "path": None})
    assert reports[0] == reports[1] and reports[0]["duplicates"] == ["photo/dog/1.jpg"]
    twice = write(tmp_path / "twice.jsonl", '{"image_id": "photo/dog/1.jpg", "reasoning": "a", "reasoning": "b"}')
    with pytest.raises(ValueError, match="twice.jsonl' line 1: the key 'reasoning' appears twice"):
        read_chain_file(twice)


def test_deep_nesting_surrogates_in_ids_and_unreadable_files_name_the_file_and_line(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    for name, text in (
        ("deep.jsonl", '{"image_id": "a", "reasoning": "x"}\n{"image_id": "b", "reasoning": %s}\n' % deep),
        ("deep.json", '{"a": "x",\n"b": %s\n}' % deep),
    ):
        with pytest.raises(ValueError, match=rf"{name}' line 2: nested too deeply"):
            read_chain_file(write(tmp_path / name, text))
    with pytest.raises(ValueError, match="line 1: expected a non-empty string image_id"):
        read_chain_file(write(tmp_path / "id.jsonl", '{"image_id": "photo/dog/\\udc80.jpg", "reasoning": "x"}'))
    with pytest.raises(ValueError, match="is a folder; give a JSON or JSONL file"):
        read_chain_file(tmp_path)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"photo/dog/1.jpg": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.json' is not UTF-8 text \(byte b'\\xe9' at offset 24\)"):
        read_chain_file(latin1)
