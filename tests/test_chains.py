"""The five-stage chain format: render/parse round trips, validation reasons, conclusion -> class."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import (
    MAX_CHAIN_CHARS,
    SPECIAL_TOKEN_STRINGS,
    STAGES,
    Chain,
    ChainParseError,
    check_chain,
    escape_special_tokens,
    extract_conclusion,
    find_special_tokens,
    match_class,
    parse_chain,
    render_chain,
    resolve_conclusion,
)
from rdmldg_hf.evaluation.predict import predict
from rdmldg_hf.testing import ScriptedBackend

DIGITS = get_benchmark("rotdigits").class_names

# Stage text: printable, no angle brackets (so no tags), not blank, no surrounding whitespace.
stage_text = (
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>"), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
)
chains = st.builds(Chain, stage_text, stage_text, stage_text, stage_text, stage_text)


@given(chains)
def test_render_parse_round_trip(chain):
    text = chain.render()
    assert parse_chain(text, strict=True) == chain
    assert extract_conclusion(text) == chain.conclusion


@given(chains, st.sampled_from(["", " ", "\n\n", "\t "]), st.booleans())
def test_parse_tolerates_whitespace_and_tag_case(chain, gap, lower):
    parts = [
        f"<{s.lower() if lower else s}>{gap}{t}{gap}</ {s.lower() if lower else s} >"
        for s, t in chain.stages().items()
    ]
    assert parse_chain(gap.join(parts)) == chain


@given(chains, stage_text)
def test_text_around_tags_is_tolerated_unless_strict(chain, chatter):
    text = f"{chatter}\n{chain.render()}\n{chatter}"
    assert parse_chain(text) == chain
    with pytest.raises(ChainParseError, match="text outside tags"):
        parse_chain(text, strict=True)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_garbage_never_raises_anything_but_parse_error(text):
    result = check_chain(text)
    assert result.valid == (result.chain is not None and not result.problems)
    if not result.valid:
        with pytest.raises(ChainParseError) as info:
            parse_chain(text)
        assert info.value.reasons == result.problems


@settings(max_examples=200)
@given(st.lists(st.sampled_from([f"<{s}>" for s in STAGES] + [f"</{s}>" for s in STAGES] + ["x", " "]), max_size=30))
def test_tag_soup_is_reported_not_crashed(tokens):
    result = check_chain("".join(tokens))
    if result.valid:
        assert result.chain is not None
    else:
        assert all(isinstance(p, str) and p for p in result.problems)


def _chain(**overrides):
    stages = {
        "SUMMARY": "plan",
        "CAPTION": "a dog",
        "REASONING": "four legs",
        "REFLECTION": "yes",
        "CONCLUSION": "dog",
    }
    stages.update(overrides)
    return "".join(f"<{s}>{t}</{s}>" for s, t in stages.items() if t is not None)


@pytest.mark.parametrize(
    "text, reason",
    [
        (_chain(REFLECTION=None), "missing <REFLECTION>"),
        (_chain(CAPTION="  "), "empty <CAPTION>"),
        (_chain() + "<CONCLUSION>cat</CONCLUSION>", "duplicated <CONCLUSION> (2 times)"),
        (
            "<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY><REASONING>r</REASONING><REFLECTION>f</REFLECTION><CONCLUSION>d</CONCLUSION>",
            "stages out of order",
        ),
        ("<SUMMARY>s<CAPTION>c</CAPTION>", "<SUMMARY> is not closed before <CAPTION>"),
        (_chain()[: -len("</CONCLUSION>")], "<CONCLUSION> is never closed"),
        ("</SUMMARY>" + _chain(), "</SUMMARY> closes a stage that was never opened"),
    ],
)
def test_each_failure_has_its_reason(text, reason):
    result = check_chain(text)
    assert not result.valid
    assert any(reason in problem for problem in result.problems), result.problems


def test_duplicated_conclusion_has_no_answer():
    assert extract_conclusion(_chain() + "<CONCLUSION>cat</CONCLUSION>") is None
    assert extract_conclusion("no tags at all") is None


@pytest.mark.parametrize("tail", ["<CONCLUSION>cat", "\nWait, no. < conclusion > cat", "<CONCLUSION>"])
def test_a_second_unclosed_conclusion_leaves_no_answer(tail):
    text = _chain() + tail
    assert extract_conclusion(text) is None
    check = check_chain(text)
    assert check.chain is None and "duplicated <CONCLUSION> (2 times)" in check.problems
    images = [PILImage.new("RGB", (8, 8))] * 2
    replies = iter([_chain(CONCLUSION="seven"), _chain(CONCLUSION="seven") + tail])
    evaluated = predict(ScriptedBackend(lambda messages, image: next(replies)), None, images, DIGITS, "reasoning")
    assert evaluated.indices == [7, -1] and evaluated.invalid == [1]


@pytest.mark.parametrize(
    "token",
    ["<image>", "<|image_pad|>", "<IMG_CONTEXT>", "<img>", "<|im_end|>", "<|end|>", "<|assistant|>", "<|eot_id|>"],
)
def test_special_tokens_in_a_chain_are_a_problem(token):
    check = check_chain(render_chain("plan", f"a dog {token} on grass", "fur", "sure", "dog"))
    assert not check.valid and check.special_tokens == (token,) and check.chain is not None
    assert check.problems[0].startswith(f"special token {token!r} in the text")
    assert not check_chain(render_chain("plan", "a dog <on> grass | here", "fur", "sure", "dog")).special_tokens


def test_a_chain_longer_than_the_cap_is_rejected_before_parsing():
    text = render_chain("plan", "word " * (MAX_CHAIN_CHARS // 5), "fur", "sure", "dog")
    assert check_chain(text).problems == (f"too long: {len(text):,} characters (a chain has at most 32,000)",)
    within = render_chain("plan", "word " * ((MAX_CHAIN_CHARS - 200) // 5), "fur", "sure", "dog")
    assert len(within) <= MAX_CHAIN_CHARS and check_chain(within).valid


tokens = st.sampled_from(sorted(SPECIAL_TOKEN_STRINGS))


@settings(max_examples=80, deadline=None)
@given(parts=st.lists(st.one_of(tokens, st.text(alphabet="<|>/ ab", max_size=6)), max_size=12))
def test_escaped_special_tokens_are_gone_and_the_text_reads_the_same(parts):
    text = "".join(parts)
    escaped = escape_special_tokens(text, SPECIAL_TOKEN_STRINGS)
    assert not [token for token in SPECIAL_TOKEN_STRINGS if token in escaped]
    assert escaped.replace("\u200b", "") == text
    assert escape_special_tokens(text, ()) == text
    if not find_special_tokens(text):
        assert escaped == text


def test_render_refuses_empty_or_tagged_stage():
    with pytest.raises(ValueError, match="CAPTION is empty"):
        render_chain("s", " ", "r", "f", "c")
    with pytest.raises(ValueError, match="contains a stage tag"):
        render_chain("s", "c", "r <CONCLUSION>", "f", "c")


@pytest.mark.parametrize(
    "conclusion, expected",
    [
        ("Alarm Clock", "alarm clock"),
        ("alarm_clock.", "alarm clock"),
        ("  the ALARM-CLOCK ", "alarm clock"),
        ('"Desk Lamp"', "desk lamp"),
        ("television", "tv"),  # alias
        ("tv", "tv"),
    ],
)
def test_conclusion_maps_to_class(conclusion, expected):
    officehome = get_benchmark("officehome")
    index = match_class(conclusion, officehome.class_names, officehome.class_aliases)
    assert index is not None and officehome.class_names[index] == expected


@pytest.mark.parametrize(
    "conclusion, reason",
    [
        (None, "no conclusion"),
        ("", "no conclusion"),
        ("a wolf", "names no class"),
        ("dog or cat", "names several classes"),
        ("probably a dog", "names no class"),
    ],
)
def test_invalid_conclusions_are_never_guessed(conclusion, reason):
    terrainc = get_benchmark("terrainc")
    match = resolve_conclusion(conclusion, terrainc.class_names)
    assert match.index is None and reason in match.reason


def test_ambiguous_alias_is_invalid():
    assert match_class("pet", ["dog", "cat"], {"dog": ["pet"], "cat": ["pet"]}) is None
    assert match_class("pet", ["dog", "cat"], {"dog": ["pet"]}) == 0
