"""The demo's parts in one process: the streamed chain, uploads, the page's rendering, card facts, examples and the
queue."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageFile
from transformers import AutoProcessor, TextIteratorStreamer

from helpers.demo import CHAIN, REASONED_CLASS, example_png, reasoning_model
from helpers.mtct import tiny_model_dir
from rdmldg_hf import DGClassifier
from rdmldg_hf.chains import stage_texts
from rdmldg_hf.demo.app import CONCURRENCY_ID, UploadError, build_demo, read_upload
from rdmldg_hf.demo.examples import write_examples
from rdmldg_hf.demo.facts import ModelFacts, held_out_accuracy
from rdmldg_hf.demo.rendering import conclusion_markdown, stage_sections
from rdmldg_hf.demo.streaming import ReasoningUpdate, TokenTextStreamer, stream_reasoning
from rdmldg_hf.evaluation.predict import decode_image
from rdmldg_hf.testing import oversized_png

WAIT_SECONDS = 120


def upload(path: Path, name: str | None = None) -> dict:
    """A Gradio file payload, as the page and gradio_client send an uploaded file."""
    return {"path": str(path), "orig_name": name or path.name, "meta": {"_type": "gradio.FileData"}}


def bounded(fn, *args):
    """``fn(*args)`` on a thread, waited for at most WAIT_SECONDS; its result, or its error raised here."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(WAIT_SECONDS)
    assert not worker.is_alive(), f"{fn.__name__} did not return within {WAIT_SECONDS} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def classifier() -> DGClassifier:
    return DGClassifier.from_pretrained(reasoning_model())


def test_token_streamer_hands_on_a_tag_as_soon_as_it_is_generated():
    """The stock streamer holds '<SUMMARY>' back until a space follows; the demo's hands it on at once."""
    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir()).tokenizer
    ids = tokenizer("<SUMMARY>look", add_special_tokens=False, return_tensors="pt")["input_ids"]
    tag_tokens = len(tokenizer("<SUMMARY>", add_special_tokens=False)["input_ids"])
    pieces = {}
    for streamer_class in (TextIteratorStreamer, TokenTextStreamer):
        streamer = streamer_class(tokenizer, skip_prompt=True)
        streamer.put(ids[:, :1])  # the prompt
        for position in range(tag_tokens):
            streamer.put(ids[0, position : position + 1])
        pieces[streamer_class] = "".join(streamer.text_queue.queue)
    assert pieces[TextIteratorStreamer] == ""
    assert pieces[TokenTextStreamer] == "<SUMMARY>"


def test_streamed_chain_grows_token_by_token_and_ends_as_predict(classifier, tmp_path):
    image = decode_image(str(example_png(tmp_path)))
    updates = bounded(lambda: list(stream_reasoning(classifier, image)))
    expected = classifier.predict([image], mode="reasoning")[0]
    final = updates[-1]
    assert final.done and final.text == expected.text == CHAIN
    assert final.label == expected.label == REASONED_CLASS and not final.problems
    partial = [update.text for update in updates[:-1]]
    tokens = classifier.processor.tokenizer(CHAIN, add_special_tokens=False)["input_ids"]
    assert len(partial) == len(tokens) and partial[0] == "<"  # one update per token, the first on its own
    assert all(later.startswith(earlier) for earlier, later in zip(partial, partial[1:]))
    assert not any(update.done or update.label for update in updates[:-1])


def test_generation_error_reaches_the_caller_instead_of_hanging(classifier, tmp_path):
    image = decode_image(str(example_png(tmp_path)))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        bounded(lambda: list(stream_reasoning(classifier, image, max_new_tokens=-1)))


def test_oversized_upload_is_refused_from_its_header_and_never_decoded(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(oversized_png(20_000, 20_000))
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image.size))
    with pytest.raises(UploadError, match=r"'huge.png': .*400000000 pixels.* not decoded") as error:
        read_upload(upload(path))
    assert decoded == [] and "--max-pixels" in str(error.value)


def test_bad_uploads_get_a_message_naming_them(tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(UploadError, match=r"Cannot classify 'notes.txt': .*Upload an image file"):
        read_upload(upload(notes))
    for empty in (None, {}, {"path": None}):
        with pytest.raises(UploadError, match="No image was given"):
            read_upload(empty)
    image = read_upload(upload(example_png(tmp_path)))
    assert image.mode == "RGB" and image.size == (32, 32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # what `rdmldg demo --max-pixels 1000` sets
    with pytest.raises(UploadError, match="32x32 image .* over the pixel limit of 1,000"):
        read_upload(upload(example_png(tmp_path)))
    with pytest.raises(UploadError, match="not a file uploaded to this server"):  # any file on the server's disk
        read_upload({"path": str(example_png(tmp_path))})


def test_partial_chains_render_stage_by_stage():
    partial = "<SUMMARY>look then decide</SUMMARY>\n<CAPTION>a digit</CAPTION>\n<REASONING>the str"
    assert stage_texts(partial) == {"SUMMARY": "look then decide", "CAPTION": "a digit", "REASONING": "the str"}
    assert stage_texts(partial + "okes</REASONING>\n<REFLE") == {
        "SUMMARY": "look then decide",
        "CAPTION": "a digit",
        "REASONING": "the strokes",  # a tag cut in half is not shown
    }
    assert stage_sections(partial) == ["look then decide", "a digit", "the str", "…"]
    assert conclusion_markdown(ReasoningUpdate(partial + "</REASONING><CONCLUSION>sev")) == "sev"
    assert conclusion_markdown(ReasoningUpdate(CHAIN, done=True, label="seven")) == "**seven**"
    invalid = ReasoningUpdate("ther curved", done=True, reason="no conclusion", problems=("missing <SUMMARY>",))
    assert (
        conclusion_markdown(invalid)
        == "**No valid conclusion**: no conclusion.\n\nFormat problems: missing <SUMMARY>."
    )


def test_one_request_at_a_time_and_two_named_endpoints(classifier):
    facts = ModelFacts.from_folder(reasoning_model())
    demo = build_demo(classifier, facts)
    model_events = [fn for fn in demo.fns.values() if fn.fn is not None and fn.name != "load"]
    assert {fn.api_name for fn in model_events if fn.api_visibility == "public"} == {"classify", "reason"}
    assert len(model_events) == 3  # the page's run, /classify, /reason
    assert all(fn.concurrency_id == CONCURRENCY_ID and fn.concurrency_limit == 1 for fn in model_events)


def test_facts_read_the_run_record_results_and_card(tmp_path):
    folder = Path(shutil.copytree(reasoning_model(), tmp_path / "model"))
    bare = ModelFacts.from_folder(folder, "me/model")
    assert (bare.method, bare.benchmark, bare.test_domain, bare.accuracy) == ("mtct", "rotdigits", "rot30", {})
    assert "not recorded" in bare.markdown()
    (folder / "results.json").write_text(json.dumps({"final": {"heldout_direct": 0.597, "heldout_reasoning": 0.414}}))
    local_dataset = tmp_path / "outputs" / "domainbed-reasoning"  # a local folder, whatever the working directory
    local_dataset.mkdir(parents=True)
    (folder / "README.md").write_text(f"---\ndatasets: {local_dataset}\nbase_model: org/base\n---\n")
    facts = ModelFacts.from_folder(folder, "me/model")
    assert facts.accuracy == {"direct": 0.597, "reasoning": 0.414}
    assert facts.dataset == str(local_dataset) and facts.hub_dataset is None and facts.hub_model == "me/model"
    text = facts.markdown()
    assert "Held-out domain**: rot30" in text and "59.7% (direct), 41.4% (reasoning)" in text
    evaluated = {"mode": "reasoning", "metrics": {"per_domain": {"rot30": 0.5, "rot0": 0.9}}}
    assert held_out_accuracy(evaluated, "rot30") == {"reasoning": 0.5}
    assert held_out_accuracy(evaluated, "rot60") == {} and held_out_accuracy({"metrics": {}}, "rot30") == {}


def test_examples_come_per_domain_held_out_first(tmp_path, caplog):
    facts = ModelFacts.from_folder(reasoning_model())
    examples = write_examples(facts, tmp_path / "examples", per_domain=2)
    held_out_first = ("rot30", "rot0", "rot60", "rot90")
    assert [example.domain for example in examples] == [domain for domain in held_out_first for _ in range(2)]
    for domain in ("rot30", "rot0"):
        assert len({example.label for example in examples if example.domain == domain}) == 2
    assert all(Image.open(example.path).size == (32, 32) for example in examples)
    custom = ModelFacts("me/model", "mtct", None, None, None, ("a", "b"))
    unreachable = ModelFacts("me/model", "mtct", None, "pacs", "sketch", ("a",), dataset=str(tmp_path / "missing"))
    with caplog.at_level(logging.WARNING):
        assert write_examples(custom, tmp_path / "none") == []
        assert write_examples(unreachable, tmp_path / "none") == []
    assert "names no benchmark" in caplog.text and "No example images from" in caplog.text
