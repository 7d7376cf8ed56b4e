"""``rdmldg build`` end to end: DomainBed folders, chains, reports, bad input, interruption, push."""

import json

import pytest
from datasets import load_dataset

from helpers.hub import FakeHub, make_domainbed_folder
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.cli import main
from rdmldg_hf.commands import build as build_command
from rdmldg_hf.data import hub_layout
from rdmldg_hf.data.schema import ChainRecord

VLCS = get_benchmark("vlcs")
CLASSES = ("bird", "car")


@pytest.fixture
def vlcs_root(tmp_path):
    make_domainbed_folder(tmp_path / "DomainBed", VLCS.folder, VLCS.domain_folders, CLASSES, per_class=2)
    return tmp_path / "DomainBed"


def build(*args):
    return main(["build", *map(str, args)])


def chain(conclusion):
    return render_chain("plan", "what matters", "the argument", "the check", conclusion)


def add_pacs(root):
    pacs = get_benchmark("pacs")
    make_domainbed_folder(root, pacs.folder, pacs.domain_folders, ("house",), per_class=1)


def test_build_a_benchmark_and_add_a_second_one(tmp_path, vlcs_root, capsys):
    out = tmp_path / "domainbed-reasoning"
    add_pacs(vlcs_root)
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out) == 0
    assert build("--benchmark", "pacs", "--images", vlcs_root, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "Built config 'vlcs'" in printed and "caltech101" in printed
    voc = load_dataset(str(out), "vlcs", split="voc2007")
    assert len(voc) == 4 and voc[0]["image_id"] == "VOC2007/bird/000.png"
    assert load_dataset(str(out), "pacs", split="art_painting")["image_id"] == ["art_painting/house/000.png"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "pacs", "reports", "vlcs"]
    assert "### `vlcs` (VLCS)" in (out / "README.md").read_text()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [".domainbed-reasoning.lock"]  # no staging or cache folder left


def test_skipped_files_are_reported_in_the_folder_and_the_summary(tmp_path, vlcs_root, capsys):
    (vlcs_root / "VLCS" / "SUN09" / "car" / "thumbs.db").write_bytes(b"\x00\x01")
    (vlcs_root / "VLCS" / "download.log").write_text("log")
    out = tmp_path / "out"
    assert build("--benchmark", "vlcs", "--images", vlcs_root / "VLCS", "--out", out) == 0
    printed = capsys.readouterr().out
    assert "Skipped 1 files" in printed and "SUN09/car/thumbs.db: not an image file" in printed
    assert "Ignored 1 entries" in printed
    report = json.loads((out / "reports" / "vlcs.json").read_text())
    assert report["skipped"] == [{"path": "SUN09/car/thumbs.db", "reason": "not an image file"}]
    assert report["ignored"] == ["download.log"]
    assert report["images_root"] == "VLCS"  # no local absolute paths in what may be pushed
    assert "Skipped source files: 1" in (out / "README.md").read_text()


def test_exclude_leaves_out_listed_images_and_names_entries_that_match_nothing(tmp_path, vlcs_root, capsys):
    listed = tmp_path / "duplicates.txt"  # laid out like DomainBed's domain_net_duplicates.txt
    listed.write_text("# duplicates\nSUN09/car/000.png\n./VOC2007\\bird\\001.png\n\nSUN09/car/999.png\n")
    out = tmp_path / "out"
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--exclude", listed) == 0
    printed = capsys.readouterr().out
    assert "Excluded 2 images named in the exclude list." in printed
    assert "1 exclude-list entries matched no image" in printed and "SUN09/car/999.png" in printed
    ids = [row for domain in VLCS.domains for row in load_dataset(str(out), "vlcs", split=domain)["image_id"]]
    assert len(ids) == 4 * 4 - 2 and "SUN09/car/000.png" not in ids and "VOC2007/bird/001.png" not in ids
    report = json.loads((out / "reports" / "vlcs.json").read_text())
    assert report["excluded"] == 2 and report["exclude_unmatched"] == ["SUN09/car/999.png"]
    missing = tmp_path / "missing.txt"
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--exclude", missing) == 2
    assert "--exclude" in capsys.readouterr().err


def test_chains_file_fills_the_reasoning_column(tmp_path, vlcs_root, capsys):
    chains = tmp_path / "chains.jsonl"
    chains.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"image_id": "LabelMe/car/001.png", "reasoning": chain("car"), "source": "gpt-4o"},
                {"image_id": "LabelMe/car/000.png", "reasoning": chain("bird")},
                {"image_id": "LabelMe/car/999.png", "reasoning": chain("car")},
            ]
        )
    )
    out = tmp_path / "out"
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--chains", chains) == 0
    assert "3 read, 1 accepted, 1 invalid, 1 unmatched" in capsys.readouterr().out
    labelme = load_dataset(str(out), "vlcs", split="labelme").to_pandas().set_index("image_id")
    assert labelme.loc["LabelMe/car/001.png", "reasoning"] == chain("car")
    assert labelme.loc["LabelMe/car/001.png", "chain_source"] == "gpt-4o"
    assert labelme["reasoning"].isna().sum() == 3
    report = json.loads((out / "reports" / "vlcs.json").read_text())["chain_import"]
    assert report["unmatched"] == ["LabelMe/car/999.png"] and report["invalid"][0]["line"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--benchmark", "cifar"], "Unknown benchmark 'cifar'. Valid benchmarks: pacs, vlcs"),
        (["--benchmark", "vlcs"], "needs its images: pass --images"),
        (
            ["--benchmark", "vlcs", "--images", "{tmp}/nowhere"],
            "is not a folder; expected <data root>/VLCS/<domain>/<class>/<image>",
        ),
        (["--benchmark", "vlcs", "--images", "{root}", "--chains", "{tmp}/bad.jsonl"], "not valid JSONL: line 2"),
        (["--benchmark", "vlcs", "--images", "{root}", "--class-map", "{tmp}/nomap.json"], "--class-map"),
        (["--benchmark", "rotdigits", "--private"], "--private only applies with --push-to-hub"),
        (["--benchmark", "rotdigits", "--push-to-hub", "no-slash"], "give the repo as ORG/NAME"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, vlcs_root, capsys, args, message):
    (tmp_path / "bad.jsonl").write_text('{"image_id": "a", "reasoning": "x"}\n{oops\n')
    args = [a.format(tmp=tmp_path, root=vlcs_root) for a in args]
    assert build(*args, "--out", tmp_path / "out") == 2
    assert message in capsys.readouterr().err


def test_unknown_class_folder_then_class_map(tmp_path, vlcs_root, capsys):
    (vlcs_root / "VLCS" / "SUN09" / "car").rename(vlcs_root / "VLCS" / "SUN09" / "automobile")
    out = tmp_path / "out"
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out) == 2
    err = capsys.readouterr().err
    assert (
        "Class folder 'automobile'" in err
        and "Valid classes: bird, car, chair, dog, person" in err
        and "--class-map FILE" in err
    )
    assert not out.exists()
    class_map = tmp_path / "map.json"
    class_map.write_text('{"automobile": "car"}')
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--class-map", class_map) == 0
    assert "SUN09/automobile/000.png" in load_dataset(str(out), "vlcs", split="sun09")["image_id"]


def test_an_interrupted_build_leaves_the_previous_folder_untouched(tmp_path, vlcs_root, monkeypatch):
    out = tmp_path / "out"
    add_pacs(vlcs_root)
    assert build("--benchmark", "pacs", "--images", vlcs_root, "--out", out) == 0
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    calls = []

    def interrupted(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    real = hub_layout._write_shards
    monkeypatch.setattr(hub_layout, "_write_shards", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "DomainBed") == [".out.lock", "out"]
    assert len(load_dataset(str(out), "pacs", split="photo")) == 1
    with pytest.raises(ValueError, match="vlcs"):
        load_dataset(str(out), "vlcs")
    with pytest.raises(KeyboardInterrupt):
        build("--benchmark", "vlcs", "--images", vlcs_root, "--out", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() and not list(tmp_path.glob(".fresh.partial-*"))


def test_push_to_hub_commits_the_folder(tmp_path, vlcs_root, monkeypatch, capsys):
    secret = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    out = tmp_path / "out"
    with FakeHub(tmp_path / "hub") as hub:
        assert (
            build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--push-to-hub", "me/dbr", "--private")
            == 0
        )
        assert hub.created == [{"repo_id": "me/dbr", "private": True, "repo_type": "dataset"}]
        ((_, added, deleted),) = hub.commits
        assert {"README.md", "vlcs/caltech101-00000-of-00001.parquet"} <= set(added) and not deleted
        remote = hub.repo("me/dbr")
        pushed = load_dataset(str(remote), "vlcs", split="caltech101")
        assert pushed["image_id"] == load_dataset(str(out), "vlcs", split="caltech101")["image_id"]
        assert "me/dbr" in (remote / "README.md").read_text()
        # a rebuild with more shards replaces the old shard in the same commit; files outside data folders stay
        (remote / "notes.md").write_text("kept")
        assert (
            build(
                "--benchmark",
                "vlcs",
                "--images",
                vlcs_root,
                "--out",
                out,
                "--max-shard-size",
                "300",
                "--push-to-hub",
                "me/dbr",
            )
            == 0
        )
        _, added, deleted = hub.commits[-1]
        assert "vlcs/caltech101-00000-of-00001.parquet" in deleted and (remote / "notes.md").is_file()
        assert len(load_dataset(str(remote), "vlcs", split="caltech101")) == 4
        # a folder lacking the repo's vlcs config would drop it from the card: refused
        other = ("--out", tmp_path / "other", "--config-name", "vlcs-copy", "--push-to-hub", "me/dbr")
        assert build("--benchmark", "vlcs", "--images", vlcs_root, *other) == 2
        assert len(hub.commits) == 2
    printed = capsys.readouterr()
    assert "holds data of configs this folder lacks (vlcs)" in printed.err
    assert "Pushed" in printed.out and secret not in printed.out + printed.err
    assert not any(secret.encode() in p.read_bytes() for p in (tmp_path / "hub").rglob("*") if p.is_file())


def test_teacher_hook_supplies_the_chains(tmp_path, vlcs_root, monkeypatch):
    seen = {}

    def teacher_chains(args, benchmark, images, out_dir):
        seen.update(benchmark=benchmark.name, images=len(images), out_dir=out_dir)
        return {images[0].image_id: ChainRecord(reasoning=chain("bird"), chain_source=args.teacher)}

    monkeypatch.setattr(build_command.teacher_arguments, "teacher_chains", teacher_chains)
    out = tmp_path / "out"
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--teacher", "gpt-4o") == 0
    assert seen == {"benchmark": "vlcs", "images": 16, "out_dir": str(out)}
    caltech = load_dataset(str(out), "vlcs", split="caltech101")
    assert caltech[0]["chain_source"] == "gpt-4o" and caltech[1]["reasoning"] is None
    assert json.loads((out / "reports" / "vlcs.json").read_text())["teacher"] == {"model": "gpt-4o"}
    assert (
        build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--teacher", "m", "--chains", "c.json") == 2
    )
