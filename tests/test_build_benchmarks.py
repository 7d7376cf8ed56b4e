"""Every registry benchmark builds from a DomainBed-layout folder and loads one split per domain."""

import pytest
from datasets import load_dataset

from helpers.hub import make_domainbed_folder
from rdmldg_hf.benchmarks import BENCHMARKS
from rdmldg_hf.data.build import build_dataset

DOMAINBED = [b for b in BENCHMARKS.values() if not b.embedded]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each DomainBed benchmark built (into its own folder) from one data root."""
    tmp = tmp_path_factory.mktemp("all")
    for benchmark in DOMAINBED:
        make_domainbed_folder(
            tmp / "DomainBed", benchmark.folder, benchmark.domain_folders, benchmark.classes[-2:], per_class=1
        )
        build_dataset(benchmark, tmp / benchmark.name, images=tmp / "DomainBed")
    return tmp


@pytest.mark.parametrize("benchmark", DOMAINBED, ids=lambda b: b.name)
def test_each_domain_is_a_split(built, benchmark):
    dataset = load_dataset(str(built / benchmark.name), benchmark.name)
    assert list(dataset) == list(benchmark.domains)
    for domain, folder in zip(benchmark.domains, benchmark.domain_folders):
        split = dataset[domain]
        assert len(split) == 2 and set(split["domain"]) == {domain}
        assert sorted(split.features["label"].int2str(split["label"])) == sorted(benchmark.classes[-2:])
        assert all(image_id.startswith(f"{folder}/") for image_id in split["image_id"])
    per_domain = load_dataset(
        str(built / benchmark.name), benchmark.domain_config_name(benchmark.domains[-1]), split="train"
    )
    assert per_domain["image_id"] == dataset[benchmark.domains[-1]]["image_id"]
