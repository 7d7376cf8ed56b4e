"""Through a real Hub download server: olah serves the built folder as rdmldg/domainbed-reasoning."""

import numpy as np
import pytest
from datasets import load_dataset

from helpers.hub import OlahServer, hub_endpoint, make_domainbed_folder, mirror_folder
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.build import build_dataset

REPO_ID = "rdmldg/domainbed-reasoning"
OFFICEHOME = get_benchmark("officehome")
CLASSES = ("Alarm_Clock", "Backpack", "TV")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A fake OfficeHome folder built as config ``officehome``, mirrored and served by olah."""
    tmp = tmp_path_factory.mktemp("olah")
    counts = make_domainbed_folder(
        tmp / "DomainBed", OFFICEHOME.folder, OFFICEHOME.domain_folders, CLASSES, per_class=2
    )
    built = tmp / "built"
    build_dataset("officehome", built, images=tmp / "DomainBed")
    mirror_folder(tmp / "mirrors", "datasets", REPO_ID, built)
    with OlahServer(tmp / "mirrors", tmp / "olah") as server, hub_endpoint(server.endpoint):
        yield counts, server


@pytest.fixture
def olah_log(served):
    return served[1].log


@pytest.mark.server
def test_load_dataset_through_the_hub_api(served):
    counts, _ = served
    art = load_dataset("rdmldg/domainbed-reasoning", "officehome", split="art")
    assert len(art) == counts["Art"] == 2 * len(CLASSES)
    assert set(art["domain"]) == {"art"}
    assert art.features["label"].names == list(OFFICEHOME.classes)
    names = {art.features["label"].int2str(label) for label in art["label"]}
    assert names == set(CLASSES)
    for row in art:
        assert row["image_id"].startswith("Art/")
        assert OFFICEHOME.classes[row["label"]] == row["image_id"].split("/")[1]
        assert row["image"].size == (16, 16) and np.asarray(row["image"]).std() > 0
        assert row["reasoning"] is None


@pytest.mark.server
def test_every_domain_and_per_domain_config(served):
    counts, _ = served
    whole = load_dataset("rdmldg/domainbed-reasoning", "officehome")
    assert set(whole) == set(OFFICEHOME.domains)
    assert len(whole["real_world"]) == counts["Real World"]
    single = load_dataset("rdmldg/domainbed-reasoning", "officehome-real_world", split="train")
    assert single["image_id"] == whole["real_world"]["image_id"]


@pytest.mark.server
def test_files_came_from_the_server(served, olah_log):
    load_dataset("rdmldg/domainbed-reasoning", "officehome-clipart", split="train")
    assert "/datasets/rdmldg/domainbed-reasoning/resolve/" in olah_log()


@pytest.mark.server
def test_the_same_server_serves_model_repos(served, tmp_path):
    from huggingface_hub import hf_hub_download

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 8}')
    mirror_folder(served[1].mirrors, "models", "someone/tiny-adapter", folder)
    path = hf_hub_download("someone/tiny-adapter", "adapter_config.json", cache_dir=tmp_path / "cache")
    assert open(path).read() == '{"r": 8}'
