"""The zero-shot API baseline through the teacher's label-blind client: scripted replies
(httpx2 mock transport) and a real OpenAI-compatible server (`transformers serve` over a tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.mtct import load_tiny, tiny_model_dir
from helpers.serve import transformers_serve
from helpers.teacher import RecordedSleep, ScriptedTransport, chain, run_bounded, seen, status, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.evaluation.api import api_settings, predict_api
from rdmldg_hf.evaluation.predict import predict
from rdmldg_hf.evaluation.rows import score_predictions
from rdmldg_hf.teacher.settings import RetryPolicy
from rdmldg_hf.testing import LoopbackServer, Scripted

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


@pytest.mark.slow
@pytest.mark.server
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


def right_or_down(body):
    """Class 0 images: HTTP 503 every time; the others: a chain concluding the image's class."""
    label = seen(body)[0]
    if label == 0:
        return Scripted(503, {"error": {"message": "overloaded"}})
    return [chain(PACS.class_names[label])]


@pytest.fixture
def pacs_folder(tmp_path):
    """A local PACS dataset folder (built without chains): dog and elephant in every domain."""
    write_images(tmp_path / "PACS", PACS, 8, classes=2)
    out = tmp_path / "ds"
    assert main(["build", "--benchmark", "pacs", "--images", str(tmp_path / "PACS"), "--out", str(out)]) == 0
    return out


def eval_arguments(dataset, base_url, *extra):
    return ["eval", "--api", "gpt-4o", "--base-url", base_url, "--dataset", str(dataset), "--config", "pacs", *extra]


@pytest.mark.multiprocess
def test_eval_api_leaves_failed_requests_out_of_the_accuracy_and_exits_nonzero(pacs_folder, tmp_path, capsys):
    capsys.readouterr()
    output = tmp_path / "eval" / "results.json"
    options = ("--max-retries", "1", "--backoff-base", "0", "--concurrency", "2", "--output", str(output))
    with LoopbackServer(right_or_down) as server:
        assert run_bounded(eval_arguments(pacs_folder, server.base_url, *options)) == 1
        assert server.count == 4 + 4 * 2  # the dog images: asked twice each (one retry)
    printed = capsys.readouterr()
    assert "8/8" in printed.err  # the progress bar
    assert "4 requests failed after all their retries (left out of the accuracy)" in printed.out
    assert "4 of 8 requests failed after all their retries: rerun the same command" in printed.err
    metrics = json.loads(output.read_text())["metrics"]
    assert metrics["accuracy"] == 1.0 and sum(metrics["count_per_domain"].values()) == 4  # elephants only
    assert metrics["failed"] == 4 and metrics["failed_per_domain"] == dict.fromkeys(PACS.domains, 1)
    assert "HTTP 503" in metrics["first_failure"]
    lines = [json.loads(line) for line in (output.parent / "predictions.jsonl").read_text().splitlines()]
    failed = [line for line in lines if line["label"] == 0]
    assert all(line["correct"] is None and "HTTP 503" in line["request_failed"] for line in failed)
    assert all(line["correct"] is True and "request_failed" not in line for line in lines if line["label"] == 1)


@pytest.mark.multiprocess
def test_eval_api_takes_the_teachers_timeout_and_stops_on_a_silent_server(pacs_folder, tmp_path, capsys):
    options = ("--timeout", "1", "--max-retries", "0", "--concurrency", "1", "--stop-after-failures", "2")
    options += ("--store", str(tmp_path / "store"))
    with LoopbackServer(right_or_down, delay=3600) as server:  # never answers in time
        assert run_bounded(eval_arguments(pacs_folder, server.base_url, *options, "--no-progress")) == 2
        assert server.count == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no complete reply within 1 s (--timeout)" in err and "rerun to continue: nothing is lost" in err


def test_eval_api_refuses_local_image_paths_outside_the_dataset_folder(tmp_path):
    folder, outside = tmp_path / "dataset", tmp_path / "private"
    sources = write_images(folder / "images", PACS, 2)
    secret = write_images(outside, PACS, 1)[0]
    (folder / "images" / "link.png").symlink_to(secret.path)
    inside = [{"bytes": None, "path": "images/" + sources[0].image_id}, {"bytes": None, "path": sources[1].path}]
    transport = ScriptedTransport(lambda body: [chain(PACS.class_names[seen(body)[0]])])
    settings = api_settings("gpt-4o", "http://api.test/v1")

    def ask(images, dataset_folder=folder):
        ids = [f"image{i}" for i in range(len(images))]
        return predict_api(
            images,
            [0] * len(images),
            ["art_painting"] * len(images),
            ids,
            PACS,
            settings,
            tmp_path / "store",
            dataset_folder=dataset_folder,
            http_client=transport.client(),
        )

    for bad in (secret.path, "../private/" + secret.image_id, "images/link.png"):
        with pytest.raises(ValueError, match=r"1 image\(s\) are given only as a local file outside the dataset"):
            ask([*inside, {"bytes": None, "path": bad}])
    with pytest.raises(ValueError, match="on this machine \\(no dataset folder\\).*image 'image0'"):
        ask(inside, dataset_folder=None)
    assert transport.bodies == []  # refused before anything was sent
    result = ask([*inside, Path(sources[0].path).read_bytes()])
    assert result.unreadable == [] and len(transport.bodies) == 3 and result.indices == [0, 1, 0]
