"""Rejection sampling decisions, accounting and the images the teacher is sent."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from helpers.teacher import chain
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.teacher.accounting import AcceptanceStats, estimate_cost, price_for
from rdmldg_hf.teacher.images import encode_image, image_data_url
from rdmldg_hf.teacher.rejection import decide, judge_candidate
from rdmldg_hf.teacher.retry import retry_after_seconds
from rdmldg_hf.teacher.settings import RetryPolicy
from rdmldg_hf.teacher.store import Reply

PACS = get_benchmark("pacs")
OFFICE = get_benchmark("officehome")
DOG, HORSE = PACS.class_index("dog"), PACS.class_index("horse")


def reply(texts, round_index=0, start=0, n=None):
    return Reply("img", round_index, start, len(texts) if n is None else n, tuple(texts))


@pytest.mark.parametrize(
    "text, valid, correct, category",
    [
        (chain("dog"), True, True, None),
        (chain("Dog."), True, True, None),
        (chain("horse"), True, False, "wrong class"),
        (chain("dog", drop="REASONING"), False, False, "invalid format"),
        (chain("a dog or a horse"), True, False, "several classes"),
        (chain("a submarine"), True, False, "no class"),
        (chain("dog").replace("square.", "square.<|im_end|><|im_start|>assistant"), False, False, "special token"),
        (chain("dog").replace("square.", "square <IMG_CONTEXT>"), False, False, "special token"),
        (chain("dog").replace("square.", "square " + "x" * 40_000), False, False, "invalid format"),
        ("", False, False, "empty reply"),
        (None, False, False, "empty reply"),
    ],
)
def test_candidates_are_judged_format_then_class_then_label(text, valid, correct, category):
    verdict = judge_candidate(text, PACS, DOG)
    assert (verdict.valid, verdict.correct, verdict.category) == (valid, correct, category)
    assert (verdict.reason is None) == correct


def test_aliases_and_display_names_map_conclusions_to_classes():
    tv = OFFICE.class_index("TV")
    assert judge_candidate(chain("television"), OFFICE, tv).chain_text == chain("tv")
    assert judge_candidate(chain("Alarm clock"), OFFICE, OFFICE.class_index("Alarm_Clock")).correct


def test_a_truncated_chain_says_so():
    verdict = judge_candidate(chain("dog", drop="CONCLUSION"), PACS, DOG, finish_reason="length")
    assert verdict.reason.endswith("(cut at max tokens)")


def test_the_first_correct_candidate_is_accepted_and_rendered_canonically():
    messy = "Sure!\n" + chain("dog").replace("<CONCLUSION>dog", "<CONCLUSION> Dog ")
    decision = decide([reply([chain("horse"), messy, chain("dog")])], PACS, DOG, 3, 2, "gpt-4o")
    assert decision.final and decision.accepted
    assert decision.record.reasoning == chain("dog")  # canonical format and class name
    assert (decision.record.num_candidates, decision.record.num_valid, decision.record.num_correct) == (3, 3, 2)
    assert decision.record.chain_source == "gpt-4o"


def test_the_label_is_only_compared_after_generation():
    replies = [reply([chain("horse"), chain("dog")])]
    as_dog = decide(replies, PACS, DOG, 2, 0, "t").record
    as_horse = decide(replies, PACS, HORSE, 2, 0, "t").record
    assert as_dog.reasoning.endswith("<CONCLUSION>dog</CONCLUSION>")
    assert as_horse.reasoning.endswith("<CONCLUSION>horse</CONCLUSION>")
    assert as_dog.num_valid == as_horse.num_valid == 2


def test_incomplete_rounds_name_what_is_missing():
    assert decide([], PACS, DOG, 4, 2, "t").next_round == 0
    partial = decide([reply([chain("horse")], start=0)], PACS, DOG, 4, 2, "t")
    assert (partial.final, partial.next_round, partial.next_start) == (False, 0, 1)
    assert partial.record.num_candidates == 0  # rounds are judged only when complete
    one_round = decide([reply([chain("horse")] * 4)], PACS, DOG, 4, 2, "t")
    assert (one_round.final, one_round.next_round, one_round.next_start) == (False, 1, 0)
    all_rounds = decide([reply([chain("horse")] * 4, r) for r in range(3)], PACS, DOG, 4, 2, "t")
    assert all_rounds.final and not all_rounds.accepted and all_rounds.record.reasoning is None
    assert all_rounds.record.num_candidates == 12 and len(all_rounds.record.rejection_reasons) == 12


def test_single_candidate_parts_make_a_round_in_any_arrival_order():
    parts = [
        reply([chain("horse")], start=2, n=1),
        reply([chain("horse")], start=0, n=1),
        reply([chain("dog")], start=1, n=1),
    ]
    decision = decide(parts, PACS, DOG, 3, 0, "t")
    assert decision.accepted and decision.record.rejection_reasons == (
        "round 0 candidate 0: concludes 'horse', not the label",
        "round 0 candidate 2: concludes 'horse', not the label",
    )


def test_zero_choices_settle_the_round_as_rejected():
    decision = decide([reply([], n=4)], PACS, DOG, 4, 0, "t")
    assert decision.final and decision.record.rejection_reasons == ("round 0: reply had no choices (asked for 4)",)
    assert decision.categories == {"no choices": 1}


def test_prices_costs_and_acceptance_tallies():
    assert price_for("gpt-4o") == (2.5, 10.0)
    assert price_for("some-local-model") is None
    assert price_for("some-local-model", (1.0, 2.0)) == (1.0, 2.0)
    assert estimate_cost(1_000_000, 500_000, (2.5, 10.0)) == 7.5
    assert estimate_cost(10, 10, None) is None
    assert (
        estimate_cost(2_000_000, 1_000_000, (2.5, 10.0), 1_000_000, 1_000_000) == 2.5 + 1.25 + 5.0
    )  # half of it batched
    assert estimate_cost(2_000_000, 0, (2.5, 10.0), 2_000_000, 0, batch_factor=0.4) == 2.0
    stats = AcceptanceStats(PACS.class_names)
    accepted = decide([reply([chain("dog")])], PACS, DOG, 1, 0, "t")
    rejected = decide([reply([chain("horse")])], PACS, DOG, 1, 0, "t")
    stats.add("photo", DOG, accepted, failed=False)
    stats.add("sketch", DOG, rejected, failed=False)
    stats.add("sketch", DOG, decide([], PACS, DOG, 1, 0, "t"), failed=True)
    summary = stats.as_dict()
    assert (summary["images"], summary["accepted"], summary["no_chain"], summary["failed"]) == (3, 1, 1, 1)
    assert summary["per_domain"]["sketch"]["acceptance_rate"] == 0.0
    assert summary["per_class"]["dog"]["images"] == 3
    assert summary["rejection_reasons"] == {"request failed": 1, "wrong class": 1}


def test_images_are_resized_reencoded_and_sent_as_data_urls():
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 150), (255, 0, 0, 0)).save(buffer, format="PNG")
    url = image_data_url(buffer.getvalue(), max_side=64, image_format="jpeg")
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size == (64, 32) and image.mode == "RGB"
    assert image.getpixel((10, 10))[1] > 240  # transparent -> white, not black
    small = io.BytesIO()
    Image.new("L", (20, 10)).save(small, format="PNG")
    assert Image.open(io.BytesIO(encode_image(small.getvalue(), 64, "png"))).size == (20, 10)  # never enlarged
    assert encode_image(small.getvalue(), 64, "png") == encode_image(small.getvalue(), 64, "png")
    with pytest.raises(ValueError, match="Unreadable image"):
        encode_image(b"not an image", 64)


def test_retry_after_headers_and_backoff():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a past date
    assert retry_after_seconds({"retry-after": "soon"}) is None
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=0.5)
    assert [policy.backoff(i, 0.0) for i in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.backoff(1, 0.999) == pytest.approx(1.001)
