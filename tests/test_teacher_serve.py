"""A real OpenAI-compatible server: `transformers serve` on loopback over a tiny local model.

Its replies are gibberish (random weights): every candidate is rejected with its reasons,
nothing is lost, and the build completes. The server ignores ``n``, so the teacher falls
back to one candidate per request.
"""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset

from helpers.serve import transformers_serve
from helpers.teacher import pacs_build_arguments, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.server]


PACS = get_benchmark("pacs")


@pytest.fixture(scope="module")
def served_model(tmp_path_factory, tiny_model):
    """(model id, base URL) of `transformers serve --device cpu <tiny model>` on a free loopback port."""
    root = tmp_path_factory.mktemp("serve")
    model_dir = tiny_model("llava")
    with transformers_serve(model_dir, root) as base_url:
        yield str(model_dir), base_url


def test_a_build_against_transformers_serve_rejects_gibberish_with_reasons(served_model, tmp_path):
    model_id, base_url = served_model
    write_images(tmp_path / "PACS", PACS, 4, classes=1)  # one image per domain
    extra = ("--max-tokens", "12", "--concurrency", "2", "--max-retries", "2", "--backoff-base", "0.05")
    code = main(
        pacs_build_arguments(tmp_path / "PACS", tmp_path / "out", base_url, *extra, teacher=model_id, candidates=2)
    )
    assert code == 0
    rows = [row for domain in PACS.domains for row in load_dataset(str(tmp_path / "out"), "pacs", split=domain)]
    assert len(rows) == 4
    for row in rows:
        assert row["reasoning"] is None and row["chain_source"] is None
        assert (row["num_candidates"], row["num_valid"], row["num_correct"]) == (4, 0, 0)  # 2 rounds x 2
        assert len(row["rejection_reasons"]) == 4
        assert all("missing <" in reason for reason in row["rejection_reasons"])
    (store,) = (tmp_path / "out.teacher-store").iterdir()
    summary = json.loads((store / "summary.json").read_text())
    acceptance = summary["acceptance"]
    assert (acceptance["images"], acceptance["accepted"], acceptance["no_chain"], acceptance["failed"]) == (4, 0, 4, 0)
    assert acceptance["rejection_reasons"] == {"invalid format": 16}
    # the server ignores n: one request for n=2 got one choice, then one candidate per request
    assert summary["requests"] == 16
    assert summary["tokens"]["prompt"] > 0 and summary["tokens"]["completion"] > 0
    assert summary["estimated_cost_usd"] is None  # a local model has no price
