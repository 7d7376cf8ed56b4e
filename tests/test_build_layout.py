"""The folder a build writes is the layout ``DatasetDict.push_to_hub(repo, config_name=...)`` writes."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict, load_dataset
from huggingface_hub import DatasetCard

from helpers.hub import FakeHub
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.build import build_dataset, source_rows
from rdmldg_hf.data.hub_layout import write_config
from rdmldg_hf.data.schema import dataset_features
from rdmldg_hf.embedded import embedded_chains, embedded_source_images

ROTDIGITS = get_benchmark("rotdigits")


@pytest.fixture(scope="module")
def small_dict():
    """A few embedded images per domain as a DatasetDict (chains on half of them)."""
    images = [image for image in embedded_source_images() if int(image.image_id[-9:-4]) % 40 == 0]
    chains = dict(list(embedded_chains(images).items())[::2])
    return DatasetDict(
        {
            domain: Dataset.from_list(
                list(source_rows([i for i in images if i.domain == domain], chains)),
                features=dataset_features(ROTDIGITS),
            )
            for domain in ROTDIGITS.domains
        }
    )


def _card_yaml(folder: Path) -> dict:
    return DatasetCard((folder / "README.md").read_text(encoding="utf-8")).data.to_dict()


def test_same_files_and_metadata_as_push_to_hub(tmp_path, small_dict):
    with FakeHub(tmp_path / "hub") as hub:
        small_dict.push_to_hub("ref/domainbed-reasoning", config_name="rotdigits")
    reference = hub.repo("ref/domainbed-reasoning")
    ours = tmp_path / "ours"
    write_config(ours, "rotdigits", small_dict, ROTDIGITS)

    parquet = sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*.parquet"))
    assert parquet == [f"rotdigits/{d}-00000-of-00001.parquet" for d in ROTDIGITS.domains]
    assert sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*.parquet")) == parquet
    for path in parquet:
        assert (ours / path).read_bytes() == (reference / path).read_bytes()

    theirs, mine = _card_yaml(reference), _card_yaml(ours)
    mine_configs = {c["config_name"]: c for c in mine["configs"]}
    mine_infos = {i["config_name"]: i for i in mine["dataset_info"]}
    assert mine_configs["rotdigits"] == theirs["configs"][0]
    assert mine_infos["rotdigits"] == theirs["dataset_info"]


def test_per_domain_configs_read_the_same_files(tmp_path, small_dict):
    write_config(tmp_path, "rotdigits", small_dict, ROTDIGITS)
    configs = {c["config_name"]: c for c in _card_yaml(tmp_path)["configs"]}
    assert configs["rotdigits-rot30"]["data_files"] == [{"split": "train", "path": "rotdigits/rot30-*"}]
    single = load_dataset(str(tmp_path), "rotdigits-rot30", split="train")
    assert single["image_id"] == small_dict["rot30"]["image_id"]
    assert single.column_names[0] == "image"
    assert single.features["reasoning"].dtype == "string"


def test_image_bytes_are_embedded(tmp_path, small_dict):
    write_config(tmp_path, "rotdigits", small_dict, ROTDIGITS)
    table = pq.read_table(tmp_path / "rotdigits" / "rot0-00000-of-00001.parquet")
    first = table.column("image")[0].as_py()
    assert first["bytes"].startswith(b"\x89PNG") and first["path"].endswith(".png")
    assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["image"]["_type"] == "Image"


def test_sharding_follows_max_shard_size(tmp_path, small_dict):
    summary = write_config(tmp_path, "rotdigits", small_dict, ROTDIGITS, max_shard_size="8KB")
    rot0 = next(s for s in summary.splits if s.name == "rot0")
    assert len(rot0.files) > 1
    assert rot0.files[-1] == f"rotdigits/rot0-{len(rot0.files) - 1:05d}-of-{len(rot0.files):05d}.parquet"
    assert len(load_dataset(str(tmp_path), "rotdigits", split="rot0")) == len(small_dict["rot0"])


def test_a_second_config_is_added_and_the_first_kept(tmp_path, small_dict):
    write_config(tmp_path, "rotdigits", small_dict, ROTDIGITS)
    sarr = DatasetDict({"rot0": small_dict["rot0"], "rot30": small_dict["rot30"]})
    write_config(tmp_path, "rotdigits-sarr-r2", sarr, ROTDIGITS, description="SARR round 2 self-chains.")
    configs = {c["config_name"] for c in _card_yaml(tmp_path)["configs"]}
    assert {"rotdigits", "rotdigits-rot90", "rotdigits-sarr-r2", "rotdigits-sarr-r2-rot30"} <= configs
    assert "rotdigits-sarr-r2-rot60" not in configs
    assert set(load_dataset(str(tmp_path), "rotdigits-sarr-r2")) == {"rot0", "rot30"}
    assert len(load_dataset(str(tmp_path), "rotdigits", split="rot90")) == len(small_dict["rot90"])
    body = (tmp_path / "README.md").read_text()
    assert "### `rotdigits-sarr-r2`" in body and "SARR round 2 self-chains." in body


def test_rewriting_a_config_with_fewer_splits_drops_stale_files_and_configs(tmp_path, small_dict):
    write_config(tmp_path, "rotdigits-sarr-r1", small_dict, ROTDIGITS)
    write_config(tmp_path, "rotdigits-sarr-r1", {"rot0": small_dict["rot0"]}, ROTDIGITS)
    assert sorted(p.name for p in (tmp_path / "rotdigits-sarr-r1").iterdir()) == ["rot0-00000-of-00001.parquet"]
    configs = {c["config_name"] for c in _card_yaml(tmp_path)["configs"]}
    assert configs == {"rotdigits-sarr-r1", "rotdigits-sarr-r1-rot0"}
    infos = _card_yaml(tmp_path)["dataset_info"]
    assert {i["config_name"] for i in infos} == configs


def test_rows_with_another_schema_are_refused(tmp_path):
    bad = Dataset.from_dict({"image_id": ["a"], "label": [0]})
    with pytest.raises(ValueError, match="schema needs"):
        write_config(tmp_path, "rotdigits", {"rot0": bad}, ROTDIGITS)
    with pytest.raises(ValueError, match="Invalid config name"):
        write_config(tmp_path, "data", {"rot0": bad}, ROTDIGITS)
    assert not any(tmp_path.iterdir())


def test_card_describes_the_build(tmp_path):
    images = embedded_source_images()[::30]
    summary = build_dataset("rotdigits", tmp_path / "ds", images=images)
    card = DatasetCard.load(tmp_path / "ds" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other"
    assert data["task_categories"] == ["image-classification", "visual-question-answering"]
    assert "domain-generalization" in data["tags"]
    for domain, rows in summary.rows_per_domain.items():
        assert f"| `{domain}` | `rotdigits-{domain}` | {rows:,} | {rows:,} |" in card.text
    for needle in ("<CONCLUSION>", "label", "2602.23777", "Gulrajani", "Limitations", f"`template` {len(images)}"):
        assert needle in card.text


def test_a_build_killed_between_its_renames_is_recovered(tmp_path, small_dict):
    write_config(tmp_path / "ds", "rotdigits", small_dict, ROTDIGITS)
    (tmp_path / "ds").rename(tmp_path / ".ds.previous-deadbeef")  # as if killed after the first rename
    write_config(tmp_path / "ds", "rotdigits-sarr-r1", {"rot0": small_dict["rot0"]}, ROTDIGITS)
    assert set(load_dataset(str(tmp_path / "ds"), "rotdigits")) == set(ROTDIGITS.domains)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds"]


def test_a_failed_rewrite_leaves_the_folder_in_use_as_it_was(tmp_path, small_dict, monkeypatch):
    """The staging folder starts as hard links to the folder in use: its files are replaced there, never edited."""
    from rdmldg_hf.data import hub_layout

    write_config(tmp_path / "ds", "rotdigits", small_dict, ROTDIGITS, report={"attempt": 1})
    before = {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}

    def killed(*args, **kwargs):
        raise RuntimeError("killed while writing the card")

    monkeypatch.setattr(hub_layout, "render_card", killed)  # the report of the rewrite is written by now
    with pytest.raises(RuntimeError, match="killed"):
        write_config(tmp_path / "ds", "rotdigits", {"rot0": small_dict["rot0"]}, ROTDIGITS, report={"attempt": 2})
    assert {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds"]


def test_python_api_with_chain_records_reports_unknown_ids(tmp_path):
    images = [i for i in embedded_source_images() if i.domain == "rot90"][:5]
    chains = dict(embedded_chains(images[:2]))
    chains["rot90/zero/99999.png"] = next(iter(chains.values()))
    summary = build_dataset("rotdigits", tmp_path / "ds", images=images, chains=chains)
    assert summary.rows_per_domain == {"rot90": 5} and summary.config.with_chain == 2
    assert summary.chains_unmatched == ["rot90/zero/99999.png"]
    assert "1 chains name an image id not in the images" in summary.format()
    report = json.loads((tmp_path / "ds" / "reports" / "rotdigits.json").read_text())
    assert report["chains_unmatched"] == ["rot90/zero/99999.png"]
    assert _card_yaml(tmp_path / "ds")["size_categories"] == ["n<1K"]


def test_domain_configs_can_be_left_out(tmp_path, small_dict):
    summary = write_config(tmp_path, "rotdigits-sarr-r3", small_dict, ROTDIGITS, domain_configs=False)
    assert summary.domain_configs == []
    assert {c["config_name"] for c in _card_yaml(tmp_path)["configs"]} == {"rotdigits-sarr-r3"}
    assert "| `rot0` | - |" in (tmp_path / "README.md").read_text()


def test_concurrent_writers_of_one_folder_keep_each_others_configs(tmp_path, small_dict):
    from concurrent.futures import ThreadPoolExecutor

    names = ["rotdigits-sarr-r1", "rotdigits-sarr-r2", "rotdigits-sarr-r3"]
    with ThreadPoolExecutor(3) as pool:
        list(
            pool.map(lambda name: write_config(tmp_path / "ds", name, {"rot0": small_dict["rot0"]}, ROTDIGITS), names)
        )
    configs = {c["config_name"] for c in _card_yaml(tmp_path / "ds")["configs"]}
    assert configs == {*names, *(f"{n}-rot0" for n in names)}


def test_other_class_labels_and_bad_split_names_are_refused(tmp_path, small_dict):
    from datasets import ClassLabel

    other = small_dict["rot0"].cast_column("label", ClassLabel(names=[f"c{i}" for i in range(10)]))
    with pytest.raises(ValueError, match="labels rows with other classes"):
        write_config(tmp_path, "rotdigits", {"rot0": other}, ROTDIGITS)
    with pytest.raises(ValueError, match="Split name 'rot 0'"):
        write_config(tmp_path, "rotdigits", {"rot 0": small_dict["rot0"]}, ROTDIGITS)


def test_a_config_name_taken_by_a_per_domain_config_is_refused(tmp_path, small_dict):
    write_config(tmp_path / "ds", "rotdigits", small_dict, ROTDIGITS)
    with pytest.raises(ValueError, match="rotdigits-rot0 already name other data"):
        write_config(tmp_path / "ds", "rotdigits-rot0", {"rot30": small_dict["rot30"]}, ROTDIGITS)
    assert len(load_dataset(str(tmp_path / "ds"), "rotdigits-rot0", split="train")) == len(small_dict["rot0"])
    assert not (tmp_path / "ds" / "rotdigits-rot0").exists()
