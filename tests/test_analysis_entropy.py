"""Entropy reduction per token type and per stage, top-k order and marked examples, on constructed scores."""

import pytest

from rdmldg_hf.analysis import TokenScores, entropy_changes, marked_examples, stage_changes, token_type, top_reductions
from rdmldg_hf.analysis.entropy import END, TAG, token_stages


def _scores(pieces, entropies):
    offsets, position = [], 0
    for piece in pieces:
        offsets.append((position, position + len(piece)))
        position += len(piece)
    ids = [hash(p) % 1000 for p in pieces]
    return TokenScores(ids, list(pieces), offsets, "".join(pieces), [0.5] * len(pieces), list(entropies))


PIECES = [
    "<",
    "SUMMARY",
    ">",
    "a",
    " loop",
    "</",
    "SUMMARY",
    ">",
    "\n",
    "<",
    "CONCLUSION",
    ">",
    "six",
    "</",
    "CONCLUSION",
    ">",
    "<|end|>",
]


def test_token_types_and_stages():
    assert token_type(" loop") == "loop" and token_type("\n") == "\\n" and token_type(" ") == "␣"
    stages = token_stages(_scores(PIECES, [0.0] * len(PIECES)))
    assert stages == [TAG] * 3 + ["SUMMARY"] * 2 + [TAG] * 7 + ["CONCLUSION"] + [TAG] * 3 + [END]


def test_top_k_order_on_a_constructed_case():
    # Two chains; reductions per type: loop (2.0, 1.0) -> 1.5; a -> 3.0; six -> -1.0; "the" (0.5 twice) -> 0.5
    before = [
        _scores([" a", " loop", " the", " six"], [4.0, 3.0, 1.0, 0.0]),
        _scores([" loop", " the", " x"], [2.0, 1.0, 1.0]),
    ]
    after = [
        _scores([" a", " loop", " the", " six"], [1.0, 1.0, 0.5, 1.0]),
        _scores([" loop", " the", " x"], [1.0, 0.5, 0.5]),
    ]
    changes = {c.group: c for c in entropy_changes(before, after)}
    assert changes["loop"].count == 2 and changes["loop"].before == pytest.approx(2.5)
    assert changes["loop"].after == pytest.approx(1.0) and changes["loop"].reduction == pytest.approx(1.5)
    ranked = top_reductions(list(changes.values()), k=3)
    assert [c.group for c in ranked] == ["a", "loop", "the"]  # "the" (0.5, 2 tokens) before "x" (0.5, 1 token)
    assert [c.group for c in top_reductions(list(changes.values()), k=10, min_count=2)] == ["loop", "the"]
    assert [c.group for c in top_reductions(list(changes.values()), k=10)][-1] == "six"
    lines = marked_examples("loop", before, after, max_examples=5, window=3)
    assert lines == [
        "chain 0: … a[[ loop]] th… (H 3.000 -> 1.000 nats)",
        "chain 1: …[[ loop]] th… (H 2.000 -> 1.000 nats)",
    ]


def test_stage_changes_and_mismatch():
    before = [_scores(PIECES, [1.0] * len(PIECES))]
    after = [_scores(PIECES, [0.5 if p in ("a", " loop") else 1.0 for p in PIECES])]
    stages = {c.group: c for c in stage_changes(before, after)}
    assert list(stages) == ["SUMMARY", "CONCLUSION", TAG, END]
    assert stages["SUMMARY"].reduction == pytest.approx(0.5) and stages["SUMMARY"].count == 2
    assert stages[TAG].reduction == 0 and stages[TAG].count == 13
    other = [_scores(PIECES[:-1], [1.0] * (len(PIECES) - 1))]
    with pytest.raises(ValueError, match="different tokens"):
        entropy_changes(before, other)
