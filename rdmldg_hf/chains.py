"""The five-stage reasoning chain: render, parse, validate, and conclusion -> class.

A chain is five tagged stages in this order::

    <SUMMARY>...</SUMMARY>
    <CAPTION>...</CAPTION>
    <REASONING>...</REASONING>
    <REFLECTION>...</REFLECTION>
    <CONCLUSION>class name only</CONCLUSION>

Parsing is tolerant of whitespace, tag case and text around the tags; ``strict=True``
also requires nothing but whitespace outside the five tags. Every failure has a reason.
A chain is at most :data:`MAX_CHAIN_CHARS` characters and holds no model control token
(:data:`SPECIAL_TOKEN_STRINGS`: image placeholders and turn markers, which would stop training
or forge a turn boundary); :func:`escape_special_tokens` makes such strings plain text.
A conclusion maps to a class by normalised exact match, then ignoring word spacing, then by an
unambiguous alias; anything else is invalid, never a guess.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Iterable, Mapping, NamedTuple, Sequence

__all__ = [
    "STAGES",
    "MAX_CHAIN_CHARS",
    "SPECIAL_TOKEN_STRINGS",
    "Chain",
    "ChainCheck",
    "ClassMatch",
    "ChainParseError",
    "render_chain",
    "check_chain",
    "parse_chain",
    "extract_conclusion",
    "stage_texts",
    "match_class",
    "resolve_conclusion",
    "normalize_answer",
    "find_special_tokens",
    "escape_special_tokens",
]

STAGES: tuple[str, ...] = ("SUMMARY", "CAPTION", "REASONING", "REFLECTION", "CONCLUSION")

_TAG = re.compile(r"<\s*(/?)\s*(" + "|".join(STAGES) + r")\s*>", re.IGNORECASE)

# A chain longer than this is rejected: a real one is a few thousand characters (1,024 tokens, the teacher's
# default, are about 5,000), and a training row keeps far fewer tokens than this.
MAX_CHAIN_CHARS = 32_000

# Control tokens of the supported architectures written as text: image and video placeholders, turn markers,
# sequence ends. In a chain they become the real tokens when tokenized (an image token without an image stops
# training; an end-of-turn inside the target forges a turn boundary).
SPECIAL_TOKEN_STRINGS: frozenset[str] = frozenset(
    {
        # LLaVA (1.5, NeXT, OneVision): image/video placeholders, llama sequence tokens
        "<image>",
        "<video>",
        "<s>",
        "</s>",
        "<unk>",
        # Qwen2-VL / Qwen2.5-VL (and InternVL3's Qwen2.5 language model): ChatML turns and vision tokens
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        # InternVL3: image context and its grounding tags
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<quad>",
        "</quad>",
        "<ref>",
        "</ref>",
        "<box>",
        "</box>",
        # the project's tiny models and Phi-style templates: turns
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|end|>",
        "<|pad|>",
    }
)
# Any other "<|name|>" is a control token in ChatML, Phi, Llama 3 and most recent templates.
_PIPE_TOKEN = r"<\|[A-Za-z0-9_.:\-]{1,64}\|>"


class ChainParseError(ValueError):
    """A text is not a valid five-stage chain; ``reasons`` lists every problem."""

    def __init__(self, reasons: Sequence[str]):
        self.reasons = tuple(reasons)
        super().__init__("Invalid reasoning chain: " + "; ".join(self.reasons))


@dataclass(frozen=True)
class Chain:
    """The five stages of a reasoning chain, as plain text without tags."""

    summary: str
    caption: str
    reasoning: str
    reflection: str
    conclusion: str

    def render(self) -> str:
        """The tagged text of this chain (the training target format)."""
        return render_chain(*(getattr(self, f.name) for f in fields(self)))

    def stages(self) -> dict[str, str]:
        """``{"SUMMARY": ..., ...}`` in stage order."""
        return {stage: getattr(self, stage.lower()) for stage in STAGES}


@dataclass(frozen=True)
class ChainCheck:
    """Result of checking a text: the chain (when all five stages were found once), problems, and the
    special-token strings found in it."""

    chain: Chain | None
    problems: tuple[str, ...]
    special_tokens: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ClassMatch:
    """A conclusion resolved against a class list: the class index, or why there is none."""

    index: int | None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.index is not None


def render_chain(summary: str, caption: str, reasoning: str, reflection: str, conclusion: str) -> str:
    """Render five stage texts as a tagged chain, one stage per line.

    Raises:
        ValueError: if a stage is empty or contains a stage tag itself.
    """
    parts = (summary, caption, reasoning, reflection, conclusion)
    lines = []
    for stage, text in zip(STAGES, parts):
        text = str(text).strip()
        if not text:
            raise ValueError(f"Stage {stage} is empty; every stage needs text.")
        if _TAG.search(text):
            raise ValueError(f"Stage {stage} contains a stage tag: {text!r}. Remove tags from stage text.")
        lines.append(f"<{stage}>{text}</{stage}>")
    return "\n".join(lines)


class _Scan(NamedTuple):
    """A text split at its stage tags."""

    found: dict[str, list[str]]  # stage -> contents of its closed occurrences
    order: list[str]  # stages in the order their occurrences end
    outside: list[str]  # non-blank text outside every stage
    problems: list[str]  # unclosed or stray tags
    opened: Counter[str]  # stage -> opening tags, closed or not


def _scan(text: str) -> _Scan:
    """Split text into stage contents, stage order, text outside tags, tag problems and opening counts."""
    found: dict[str, list[str]] = {stage: [] for stage in STAGES}
    order: list[str] = []
    outside: list[str] = []
    problems: list[str] = []
    opened: Counter[str] = Counter()
    open_stage: str | None = None
    open_end = 0
    position = 0
    for match in _TAG.finditer(text):
        closing, stage = match.group(1) == "/", match.group(2).upper()
        opened[stage] += not closing
        between = text[position : match.start()]
        if open_stage is None:
            if between.strip():
                outside.append(between.strip())
            if closing:
                problems.append(f"</{stage}> closes a stage that was never opened")
            else:
                open_stage, open_end = stage, match.end()
        elif closing and stage == open_stage:
            found[stage].append(text[open_end : match.start()].strip())
            order.append(stage)
            open_stage = None
        elif closing:
            problems.append(f"</{stage}> closes <{open_stage}>")
            found[open_stage].append(text[open_end : match.start()].strip())
            order.append(open_stage)
            open_stage = None
        else:
            problems.append(f"<{open_stage}> is not closed before <{stage}>")
            found[open_stage].append(text[open_end : match.start()].strip())
            order.append(open_stage)
            open_stage, open_end = stage, match.end()
        position = match.end()
    if open_stage is not None:
        problems.append(f"<{open_stage}> is never closed")
    elif text[position:].strip():
        outside.append(text[position:].strip())
    return _Scan(found, order, outside, problems, opened)


def check_chain(text: str, strict: bool = False, special_tokens: Iterable[str] | None = None) -> ChainCheck:
    """Check a text against the five-stage format; never raises.

    Problems reported: a text longer than :data:`MAX_CHAIN_CHARS` (nothing else is checked then),
    special-token strings (``special_tokens``, default :data:`SPECIAL_TOKEN_STRINGS` and any ``<|name|>``),
    missing stage, empty stage, duplicated stage (a stage opened twice, closed or not, a second
    conclusion included), stages out of order, unclosed or stray tags, and, with ``strict=True``,
    text outside the tags.
    """
    if not isinstance(text, str):
        return ChainCheck(None, (f"expected a string, got {type(text).__name__}",))
    if len(text) > MAX_CHAIN_CHARS:
        return ChainCheck(None, (f"too long: {len(text):,} characters (a chain has at most {MAX_CHAIN_CHARS:,})",))
    found_tokens = find_special_tokens(text, special_tokens)
    found, order, outside, problems, opened = _scan(text)
    if found_tokens:
        problems.insert(
            0,
            f"special token {', '.join(map(repr, found_tokens))} in the text (a model's image or turn token: "
            "it would stop training or forge a turn)",
        )
    for stage in STAGES:
        count = max(len(found[stage]), opened[stage])
        if count == 0:
            problems.append(f"missing <{stage}>")
        elif count > 1:
            problems.append(f"duplicated <{stage}> ({count} times)")
        elif found[stage] and not found[stage][0]:  # (a single unclosed stage is reported as such)
            problems.append(f"empty <{stage}>")
    first_seen = list(dict.fromkeys(order))
    expected = [stage for stage in STAGES if stage in first_seen]
    if first_seen != expected:
        problems.append(f"stages out of order: {' '.join(first_seen)} (expected {' '.join(STAGES)})")
    if strict and outside:
        problems.append(f"text outside tags: {outside[0][:60]!r}")
    chain = None
    if all(len(found[stage]) == 1 == opened[stage] for stage in STAGES):
        chain = Chain(*(found[stage][0] for stage in STAGES))
    return ChainCheck(chain, tuple(problems), tuple(found_tokens))


def _pattern(special_tokens: Iterable[str] | None) -> re.Pattern[str] | None:
    """The regex of ``special_tokens`` (default: :data:`SPECIAL_TOKEN_STRINGS` and any ``<|name|>``)."""
    if special_tokens is None:
        return _compile(SPECIAL_TOKEN_STRINGS, True)
    return _compile(special_tokens if isinstance(special_tokens, (tuple, frozenset)) else tuple(special_tokens), False)


@lru_cache(maxsize=64)
def _compile(tokens: tuple[str, ...] | frozenset[str], any_pipe_token: bool) -> re.Pattern[str] | None:
    """One regex matching every token of two characters or more (longest first; a single character cannot be
    escaped), plus any ``<|name|>`` when asked; None when there is nothing to match."""
    usable = {token for token in tokens if len(token.strip()) > 1}
    parts = [re.escape(token) for token in sorted(usable, key=lambda t: (-len(t), t))]
    if any_pipe_token:
        parts.append(_PIPE_TOKEN)
    return re.compile("|".join(parts)) if parts else None


def find_special_tokens(text: str, special_tokens: Iterable[str] | None = None) -> list[str]:
    """The distinct special-token strings in ``text``, in order of appearance.

    ``special_tokens`` is a tokenizer's own list; by default :data:`SPECIAL_TOKEN_STRINGS` and any ``<|name|>``.
    """
    pattern = _pattern(special_tokens)
    return list(dict.fromkeys(pattern.findall(text))) if pattern is not None else []


_ESCAPE = "\u200b"  # zero-width space: no tokenizer's special token contains it


def escape_special_tokens(text: str, special_tokens: Iterable[str]) -> str:
    """``text`` with a zero-width space after the first character of each special-token string in it.

    A tokenizer then reads them as plain characters, never as the special token (the chain trains as the
    text it shows); text without such strings is returned unchanged.
    """
    pattern = _pattern(special_tokens)
    if pattern is None:
        return text
    return pattern.sub(lambda match: match.group(0)[0] + _ESCAPE + match.group(0)[1:], text)


def parse_chain(text: str, strict: bool = False) -> Chain:
    """Parse a tagged text into a :class:`Chain`.

    Raises:
        ChainParseError: listing every problem when the text is not a valid chain.
    """
    result = check_chain(text, strict=strict)
    if not result.valid:
        raise ChainParseError(result.problems)
    assert result.chain is not None
    return result.chain


def extract_conclusion(text: str) -> str | None:
    """The text of the single closed ``<CONCLUSION>`` stage, or None: no conclusion, or a second
    ``<CONCLUSION>`` (closed or not), e.g. an answer changed after the first one."""
    if not isinstance(text, str):
        return None
    scan = _scan(text)
    conclusions = scan.found["CONCLUSION"]
    return conclusions[0] if len(conclusions) == 1 == scan.opened["CONCLUSION"] and conclusions[0] else None


def stage_texts(text: str) -> dict[str, str]:
    """Each stage's text so far in a chain that may still be being written, in the order the stages open.

    A stage still open at the end of ``text`` holds what follows its tag (without a tag cut in half);
    a stage opened twice keeps its first text. Nothing is validated: see :func:`check_chain`.
    """
    tags = list(_TAG.finditer(text))
    stages: dict[str, str] = {}
    for i, tag in enumerate(tags):
        stage = tag.group(2).upper()
        if tag.group(1) or stage in stages:
            continue
        end = tags[i + 1].start() if i + 1 < len(tags) else len(text)
        body = text[tag.end() : end]
        if i + 1 == len(tags):
            body = re.sub(r"<[^<>]*$", "", body)  # a tag still being written
        stages[stage] = body.strip()
    return stages


_ARTICLE = re.compile(r"^(a|an|the)\s+")


def normalize_answer(text: str) -> str:
    """Case, underscores, hyphens, spaces, quotes, markdown emphasis, trailing punctuation and a leading article."""
    text = text.strip().strip("\"'`*").strip()
    text = re.sub(r"[\s_\-]+", " ", text.lower())
    text = text.rstrip(".!;:, \"'`*").strip()  # "**Batteries**." as well as "Batteries."
    return _ARTICLE.sub("", text)


def resolve_conclusion(
    conclusion: str | None,
    class_names: Sequence[str],
    aliases: Mapping[str, Iterable[str]] | None = None,
) -> ClassMatch:
    """Map a conclusion to a class index: normalised exact match, then the same letters spaced otherwise
    (``"flip-flops"`` for ``"flipflops"``), then an unambiguous alias.

    Args:
        conclusion: the conclusion text (None when the output had none).
        class_names: the classes, in label order (folder or display names).
        aliases: class name -> extra accepted spellings.
    """
    if conclusion is None or not normalize_answer(conclusion):
        return ClassMatch(None, "no conclusion")
    answer = normalize_answer(conclusion)
    normalized = [normalize_answer(name) for name in class_names]
    exact = [i for i, name in enumerate(normalized) if name == answer]
    if len(exact) == 1:
        return ClassMatch(exact[0])
    # "flip flops" for OfficeHome's "flipflops", "tooth brush" for "toothbrush": the same words, spaced otherwise
    joined = [i for i, name in enumerate(normalized) if name.replace(" ", "") == answer.replace(" ", "")]
    if not exact and len(joined) == 1:
        return ClassMatch(joined[0])
    by_alias: set[int] = set()
    for name, spellings in (aliases or {}).items():
        if answer in {normalize_answer(s) for s in spellings}:
            key = normalize_answer(name)
            by_alias.update(i for i, n in enumerate(normalized) if n == key)
    if len(by_alias) == 1:
        return ClassMatch(by_alias.pop())
    named = [class_names[i] for i, name in enumerate(normalized) if re.search(rf"\b{re.escape(name)}\b", answer)]
    if len(named) > 1 or len(by_alias) > 1:
        return ClassMatch(None, f"conclusion {conclusion[:60]!r} names several classes ({', '.join(named)})")
    return ClassMatch(None, f"conclusion {conclusion[:60]!r} names no class")


def match_class(
    conclusion: str | None,
    class_names: Sequence[str],
    aliases: Mapping[str, Iterable[str]] | None = None,
) -> int | None:
    """Class index of a conclusion, or None when it is invalid (see :func:`resolve_conclusion`)."""
    return resolve_conclusion(conclusion, class_names, aliases).index
