"""Sharing adapters: push intercepted at huggingface_hub's commit boundary, then served by olah
(a real Hub download server) and loaded with DGClassifier and plain PEFT by repo id; on every architecture."""

import json

import huggingface_hub.hf_api
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForImageTextToText

from helpers.devices import on_model_device
from helpers.evaluation import BASE_REPO, adapter_copy, png, rows
from helpers.hub import FakeHub, OlahServer, hub_endpoint, mirror_folder
from helpers.mtct import tiny_model_dir
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main as cli_main
from rdmldg_hf.evaluation.classifier import BaseModelNotFound, DGClassifier
from rdmldg_hf.evaluation.predict import decode_image
from rdmldg_hf.evaluation.rows import evaluate_rows
from rdmldg_hf.evaluation.sharing import push_adapter
from rdmldg_hf.testing import ARCHITECTURES

REPO = "rdmldg-tests/rdmldg-rotdigits-rot30"
IMAGES = [png((40 * i, 255 - 30 * i, 90)) for i in range(5)]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def pushed(request, tmp_path_factory):
    """A trained adapter with its results.json, pushed through FakeHub: (local folder, hub, record, architecture)."""
    tmp = tmp_path_factory.mktemp(f"push-{request.param}")
    adapter = adapter_copy(tmp / "adapter", request.param)
    clf = DGClassifier.from_pretrained(adapter)
    data = rows(12)
    record = evaluate_rows(clf.model, clf.processor, data, get_benchmark("rotdigits")).record(
        dataset="rdmldg/domainbed-reasoning", config="rotdigits"
    )
    (adapter / "results.json").write_text(json.dumps(record))
    (adapter / "training_args.bin").write_bytes(b"state")
    with FakeHub(tmp / "hub") as hub:
        code = cli_main(["push", "--adapter", str(adapter), "--repo", REPO, "--base-model", BASE_REPO, "--private"])
    assert code == 0
    return adapter, hub, record, request.param


def test_push_commits_adapter_card_and_results(pushed):
    adapter, hub, record, _ = pushed
    assert hub.created == [{"repo_id": REPO, "private": True, "repo_type": "model"}]
    ((_, added, deleted),) = hub.commits
    assert deleted == [] and added[-1] == "README.md"
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "rdmldg_config.json",
        "results.json",
        "tokenizer.json",
    } <= set(added)
    assert "training_args.bin" not in added
    repo = hub.repo(REPO)
    assert json.loads((repo / "adapter_config.json").read_text())["base_model_name_or_path"] == BASE_REPO
    front = (repo / "README.md").read_text().split("---")[1]
    meta = yaml.safe_load(front)
    assert meta["base_model"] == BASE_REPO and meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "image-text-to-text" and meta["datasets"] == ["rdmldg/domainbed-reasoning"]
    assert meta["rdmldg"]["classes"][:2] == ["zero", "one"] and meta["rdmldg"]["test_domain"] == "rot30"
    results = meta["model-index"][0]["results"]
    card_values = {r["dataset"]["split"]: r["metrics"][0]["value"] for r in results}
    assert card_values == {d: round(100 * v, 2) for d, v in record["metrics"]["per_domain"].items()}
    card = ModelCard.load(repo / "README.md")
    assert len(card.data.eval_results) == 4 and card.data.eval_results[0].metric_type == "accuracy"
    assert f'DGClassifier.from_pretrained("{REPO}")' in card.text


@pytest.mark.server
def test_olah_serves_the_pushed_adapter(pushed, tmp_path, monkeypatch):
    adapter, hub, _, architecture = pushed
    local = DGClassifier.from_pretrained(adapter)
    expected = local.predict(IMAGES, mode="direct")
    mirrors = tmp_path / "mirrors"
    mirror_folder(mirrors, "models", BASE_REPO, tiny_model_dir(architecture))
    mirror_folder(mirrors, "models", REPO, hub.repo(REPO))
    with OlahServer(mirrors, tmp_path / "olah") as server, hub_endpoint(server.endpoint):
        # huggingface_hub's module-level HfApi (PEFT's file_exists) read HF_ENDPOINT at import time.
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", server.endpoint)
        remote = DGClassifier.from_pretrained(REPO)
        got = remote.predict(IMAGES, mode="direct")
        # Loaded where and as the classifier loaded its model (on a GPU: there, in bf16), without Hub kernels.
        placement = {"dtype": local.model.dtype, "device_map": {"": str(local.model.device)}}
        folder = tiny_model_dir(architecture)
        base = AutoModelForImageTextToText.from_pretrained(folder, use_kernels=False, **placement)
        peft_model = PeftModel.from_pretrained(base, REPO)
        assert f"/{REPO}/resolve/" in server.log() and f"/{BASE_REPO}/resolve/" in server.log()
    assert [o.label for o in got] == [o.label for o in expected]
    for a, b in zip(got, expected):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = local.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = on_model_device(local.processor(text=[text], images=[local_image()], return_tensors="pt"), local.model)
    with torch.no_grad():
        assert torch.allclose(peft_model.eval()(**batch).logits, local.model.eval()(**batch).logits, atol=1e-5)


def local_image():
    return decode_image(IMAGES[0])


def test_classifier_predicts_labels_probabilities_and_chains(pushed):
    clf = DGClassifier.from_pretrained(pushed[0])
    assert clf.benchmark == "rotdigits" and clf.classes[3] == "three"
    direct = clf.predict(IMAGES[:2], mode="direct")
    assert all(o.label in clf.classes and abs(sum(o.probabilities.values()) - 1) < 1e-4 for o in direct)
    assert direct[0].label == max(direct[0].probabilities, key=direct[0].probabilities.get)
    reasoning = clf.predict(IMAGES[:1], mode="reasoning", max_new_tokens=4)
    assert reasoning[0].text is not None and reasoning[0].probabilities is None
    generated = clf.predict(IMAGES[:2], mode="direct-generate", max_new_tokens=4)
    for output in generated:  # a class when the text names one, else invalid (index -1)
        assert output.text is not None and output.probabilities is None
        assert (output.label in clf.classes) if output.index >= 0 else (output.label is None and output.index == -1)


def test_missing_base_model_says_which_and_how_to_pass_it(tmp_path):
    adapter = adapter_copy(tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(
        BaseModelNotFound, match=r"base model '.*gone' of adapter .* Pass the base model yourself.*--model"
    ):
        DGClassifier.from_pretrained(adapter)
    assert DGClassifier.from_pretrained(adapter, model=tiny_model_dir()).classes[0] == "zero"
    with pytest.raises(
        ValueError, match="a local path: others could not load it. Pass the base model's Hub id with --base-model"
    ):
        push_adapter(adapter, REPO)
