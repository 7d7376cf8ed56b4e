"""The zero-shot API baseline through the teacher's label-blind client: scripted replies
(httpx2 mock transport) and a real OpenAI-compatible server (`transformers serve` over a tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_support import load_tiny, tiny_model_dir
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.evaluation.api import api_settings, predict_api
from rdmldg_hf.evaluation.predict import predict
from rdmldg_hf.evaluation.rows import score_predictions
from rdmldg_hf.teacher.settings import RetryPolicy
from serve_support import transformers_serve
from teacher_fakes import RecordedSleep, ScriptedTransport, chain, seen, status, write_images

PACS = get_benchmark("pacs")


def _images(tmp_path: Path, count: int = 21):
    sources = write_images(tmp_path / "images", PACS, count)
    data = [Path(s.path).read_bytes() for s in sources]
    return sources, data


def _reply(body):
    """Domain 0: the right class; domain 1: a wrong class; domain 2: no conclusion at all."""
    label, domain, _ = seen(body)
    if domain == 0:
        return [chain(PACS.class_names[label])]
    if domain == 1:
        return [chain(PACS.class_names[(label + 1) % 7])]
    return ["I think it is a dog."]


def test_scripted_api_baseline_counts_invalid_and_resumes(tmp_path):
    sources, data = _images(tmp_path)
    data[3] = b"broken file"
    transport = ScriptedTransport(_reply, script={0: [status(503)]})
    settings = api_settings("gpt-4o", "http://api.test/v1", retry=RetryPolicy(max_retries=2, base_delay=0.1))
    args = (
        data,
        [s.label for s in sources],
        [s.domain for s in sources],
        [s.image_id for s in sources],
        PACS,
        settings,
    )
    sleep = RecordedSleep()
    result = predict_api(*args, tmp_path / "store", http_client=transport.client(), sleep=sleep)
    assert len(transport.bodies) == 21 and len(sleep.waits) == 1  # 20 readable images + one retried 503
    body = transport.bodies[-1]
    assert "n" not in body and body["temperature"] == 0.0 and body["model"] == "gpt-4o"  # n=1: the default, not sent
    assert result.unreadable == [3] and result.indices[3] == -1
    metrics = score_predictions(result, _as_rows(sources))
    assert metrics["per_domain"] == {
        "art_painting": pytest.approx(6 / 7),
        "cartoon": 0.0,
        "photo": 0.0,
    }  # 1 unreadable
    assert metrics["invalid_per_domain"] == {"art_painting": pytest.approx(1 / 7), "cartoon": 0.0, "photo": 1.0}
    assert metrics["unreadable"] == 1
    again = predict_api(*args, tmp_path / "store", http_client=transport.client(), sleep=sleep)
    assert len(transport.bodies) == 21 and again.indices == result.indices  # everything came from the store


def _as_rows(sources):
    from datasets import Dataset

    return Dataset.from_dict({"label": [s.label for s in sources], "domain": [s.domain for s in sources]})


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """`transformers serve` over the tiny model on a loopback port (stopped at the end)."""
    with transformers_serve(tiny_model_dir(), tmp_path_factory.mktemp("serve")) as base_url:
        yield base_url


def test_api_baseline_against_transformers_serve(served_model, tmp_path):
    sources, data = _images(tmp_path, 4)
    digits = get_benchmark("rotdigits")
    settings = api_settings(str(tiny_model_dir()), served_model, max_tokens=6, concurrency=2)
    result = predict_api(
        data,
        [s.label % 10 for s in sources],
        ["rot0"] * 4,
        [s.image_id for s in sources],
        digits,
        settings,
        tmp_path / "store",
    )
    assert all(text for text in result.texts)
    model, processor = load_tiny()
    local = predict(model, processor, data, digits.class_names, "reasoning", max_new_tokens=6)
    assert result.texts == local.texts  # the server asked the same question of the same model, greedily
    assert result.indices == local.indices
