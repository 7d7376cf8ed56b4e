"""`rdmldg build` and `rdmldg push` on hostile input: odd image folders, nested or misnamed folders, bad
chain files and sampling values, no Hub, a full disk. Each gets a clear error or a report, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from datasets import load_dataset
from PIL import Image

from helpers.hub import make_domainbed_folder
from helpers.teacher import built_rows, pacs_build_arguments, pixel_teacher, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.cli import main
from rdmldg_hf.teacher.store import TeacherStore
from rdmldg_hf.testing import LoopbackServer

VLCS = get_benchmark("vlcs")
PACS = get_benchmark("pacs")


@pytest.fixture
def vlcs_root(tmp_path):
    make_domainbed_folder(tmp_path / "DomainBed", VLCS.folder, VLCS.domain_folders, ("bird", "car"), per_class=2)
    return tmp_path / "DomainBed"


def build(*args):
    return main(["build", *map(str, args)])


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def ids(out, benchmark):
    return sorted(
        row for domain in benchmark.domains for row in load_dataset(str(out), benchmark.name, split=domain)["image_id"]
    )


def test_a_hostile_image_folder_builds_and_its_report_names_no_local_path(tmp_path, vlcs_root, capsys):
    bird = vlcs_root / "VLCS" / "SUN09" / "bird"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "private.png")
    (bird / "private.png").symlink_to(tmp_path / "private.png")
    (bird / "loop.png").symlink_to(bird / "loop.png")
    (bird / "gone.png").symlink_to(bird / "deleted.png")
    shutil.copy(bird / "000.png", os.path.join(os.fsencode(bird), b"caf\xe9.png"))
    chains = tmp_path / "chains.jsonl"
    chains.write_text(
        json.dumps({"image_id": "SUN09/bird/000.png", "reasoning": render_chain("a", "b", "c", "d", "bird")})
        + "\n"
        + json.dumps({"image_id": "SUN09/bird/001.png", "reasoning": "x", "num_candidates": "many"})
    )
    out = tmp_path / "out"
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--chains", chains) == 0
    printed = capsys.readouterr().out
    assert "Skipped 4 files" in printed and "SUN09/bird/caf\\xe9.png: name is not valid UTF-8" in printed
    assert "2 read, 1 accepted, 1 invalid" in printed
    assert "SUN09/bird/private.png" not in ids(out, VLCS) and len(ids(out, VLCS)) == 16
    report_text = (out / "reports" / "vlcs.json").read_text()
    for local in {str(tmp_path), os.path.realpath(tmp_path)}:
        assert local not in report_text
    report = json.loads(report_text)
    assert report["images_root"] == "VLCS"
    assert {item["path"]: item["reason"] for item in report["skipped"]} == {
        "SUN09/bird/caf\\xe9.png": "name is not valid UTF-8 (rename the file to include it)",
        "SUN09/bird/gone.png": "broken symlink (No such file or directory)",
        "SUN09/bird/loop.png": "broken symlink (Too many levels of symbolic links)",
        "SUN09/bird/private.png": "symlink to a file outside the benchmark folder (not followed)",
    }
    (invalid,) = report["chain_import"]["invalid"]
    assert invalid["line"] == 2 and "num_candidates must be a whole number" in invalid["problems"][0]


def test_an_image_named_in_bytes_that_are_not_utf8_is_skipped_before_any_request(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    images = write_images(tmp_path / "PACS", PACS, 4, classes=1)
    odd = os.path.join(os.fsencode(tmp_path / "PACS" / "photo" / "dog"), b"\xff.png")
    shutil.copy(images[2].path, odd)
    with LoopbackServer(pixel_teacher(PACS)) as server:
        assert main(pacs_build_arguments(tmp_path / "PACS", tmp_path / "out", server.base_url)) == 0
        requested = server.count
    assert "photo/dog/\\xff.png: name is not valid UTF-8" in capsys.readouterr().out
    assert len(ids(tmp_path / "out", PACS)) == 4
    assert requested == 1 + 1 + 2 + 2  # one image per domain; photo and sketch are asked twice (rejected)


@pytest.mark.parametrize(
    "out, images, message",
    [
        ("{root}/VLCS", "{root}/VLCS", "--out '{root}/VLCS' is the same folder as --images '{root}/VLCS'"),
        ("{root}", "{root}", "--out '{root}' holds --images '{root}/VLCS'"),
        ("{root}/VLCS/reasoning", "{root}", "--out '{root}/VLCS/reasoning' lies inside --images '{root}/VLCS'"),
        ("{tmp}", "{root}/VLCS", "--out '{tmp}' holds --images '{root}/VLCS'"),
        ("{tmp}/link/VLCS", "{root}", "--out '{tmp}/link/VLCS' is the same folder as --images '{root}/VLCS'"),
    ],
)
def test_out_and_images_inside_one_another_are_refused(tmp_path, vlcs_root, capsys, out, images, message):
    (tmp_path / "link").symlink_to(vlcs_root)
    before = listing(tmp_path)
    out, images, message = (value.format(root=vlcs_root, tmp=tmp_path) for value in (out, images, message))
    assert build("--benchmark", "vlcs", "--images", images, "--out", out) == 2
    assert message in capsys.readouterr().err
    assert listing(tmp_path) == before


def test_out_beside_the_benchmark_folder_in_a_data_root_is_fine(tmp_path, vlcs_root):
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", vlcs_root / "reasoning") == 0
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", vlcs_root / "reasoning") == 0  # again
    assert len(ids(vlcs_root / "reasoning", VLCS)) == 16


def test_a_teacher_store_inside_the_dataset_folder_or_the_images_is_refused(tmp_path, vlcs_root, capsys):
    out = tmp_path / "out"
    for store, holder in ((out / "store", f"--out '{out}'"), (vlcs_root / "VLCS" / "store", "--images '{}'")):
        arguments = ("--images", vlcs_root, "--out", out, "--teacher", "m", "--teacher-store", store)
        assert build("--benchmark", "vlcs", *arguments) == 2
        assert f"{holder.format(vlcs_root / 'VLCS')} holds --teacher-store '{store}'" in capsys.readouterr().err
        assert not store.exists() and not out.exists()


def test_folder_options_that_are_files_are_refused(tmp_path, vlcs_root, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    for option, value, problem in (
        ("--out", file, "is a file; give a folder"),
        ("--out", file / "sub", f"cannot be created: '{file}' is a file; give a folder"),
        ("--teacher-store", file, "is a file; give a folder"),
    ):
        out = value if option == "--out" else tmp_path / "out"
        extra = ("--teacher", "m", option, value) if option == "--teacher-store" else ()
        assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, *extra) == 2
        assert f"{option} '{value}' {problem}" in capsys.readouterr().err
    assert file.read_text() == "keep me" and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--temperature", "nan", "--temperature must be a number from 0 to 2"),
        ("--temperature", "inf", "--temperature must be a number from 0 to 2"),
        ("--temperature", "-0.5", "--temperature must be a number from 0 to 2"),
        ("--temperature", "2.5", "--temperature must be a number from 0 to 2"),
        ("--top-p", "nan", "--top-p must be a number from 0 to 1"),
        ("--top-p", "1.5", "--top-p must be a number from 0 to 1"),
        ("--image-quality", "0", "--image-quality must be from 1 to 100"),
    ],
)
def test_sampling_values_out_of_range_are_refused_before_anything_is_sent(
    tmp_path, monkeypatch, capsys, option, value, message
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    write_images(tmp_path / "PACS", PACS, 4, classes=1)
    with LoopbackServer(pixel_teacher(PACS)) as server:
        arguments = pacs_build_arguments(tmp_path / "PACS", tmp_path / "out", server.base_url, option, value)
        assert main([*arguments, "--max-retries", "0"]) == 2
        assert server.count == 0
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PACS"]  # no store, no dataset


def test_a_chains_option_that_is_a_folder_or_not_utf8_is_named(tmp_path, vlcs_root, capsys):
    latin1 = tmp_path / "chains.json"
    latin1.write_bytes('{"SUN09/bird/000.png": "caf\u00e9"}'.encode("latin-1"))
    for chains, message in ((tmp_path, "is a folder; give a JSON or JSONL file"), (latin1, "is not UTF-8 text")):
        assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", tmp_path / "out", "--chains", chains) == 2
        assert f"--chains '{chains}' {message}" in capsys.readouterr().err


def test_pushing_while_the_hub_is_offline_is_refused_before_building(tmp_path, vlcs_root, capsys):
    from helpers.evaluation import adapter_copy

    out = tmp_path / "out"
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out, "--push-to-hub", "me/dbr") == 2
    assert "--push-to-hub needs the Hugging Face Hub, but offline mode is on" in capsys.readouterr().err
    assert not out.exists()
    adapter = adapter_copy(tmp_path / "adapter")
    assert main(["push", "--adapter", str(adapter), "--repo", "me/adapter", "--base-model", "me/base"]) == 2
    assert "rdmldg push needs the Hugging Face Hub, but offline mode is on" in capsys.readouterr().err


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    "writer",
    ["datasets.arrow_writer.ArrowWriter.write", "datasets.Dataset.to_parquet"],
    ids=["arrow-cache", "parquet-shards"],
)
def test_a_full_disk_while_writing_the_dataset_says_where_and_a_rerun_loses_nothing(
    tmp_path, vlcs_root, monkeypatch, capsys, writer
):
    out = tmp_path / "out"
    make_domainbed_folder(vlcs_root, PACS.folder, PACS.domain_folders, ("house",), per_class=1)
    assert build("--benchmark", "pacs", "--images", vlcs_root, "--out", out) == 0
    before = {path: (out / path).read_bytes() for path in listing(out) if (out / path).is_file()}
    with monkeypatch.context() as patch:
        patch.setattr(writer, no_space)
        assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out) == 2
    err = capsys.readouterr().err
    assert f"No space left on device while writing in {tmp_path} (" in err
    assert "run the same command again: nothing is lost" in err and "Traceback" not in err
    assert {path: (out / path).read_bytes() for path in listing(out) if (out / path).is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "DomainBed", "out"]  # no cache or staging
    assert build("--benchmark", "vlcs", "--images", vlcs_root, "--out", out) == 0
    assert len(ids(out, VLCS)) == 16 and len(ids(out, PACS)) == 4


def test_a_full_disk_while_storing_teacher_replies_loses_no_stored_reply(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    write_images(tmp_path / "PACS", PACS, 8, classes=1)  # two images per domain
    clean, out = tmp_path / "clean", tmp_path / "out"
    stored = []

    def append_until_full(store, record):
        if len(stored) == 3:
            no_space()
        stored.append(record)
        return real_append(store, record)

    real_append = TeacherStore._append
    with LoopbackServer(pixel_teacher(PACS)) as server:
        assert main(pacs_build_arguments(tmp_path / "PACS", clean, server.base_url)) == 0
        clean_requests = server.count
        with monkeypatch.context() as patch:
            patch.setattr(TeacherStore, "_append", append_until_full)
            assert main(pacs_build_arguments(tmp_path / "PACS", out, server.base_url)) == 2
        err = capsys.readouterr().err
        assert f"No space left on device while writing in {tmp_path} or {tmp_path}/out.teacher-store" in err
        assert "the replies already received stay in the teacher store" in err and not out.exists()
        first_run = server.count - clean_requests
        assert main(pacs_build_arguments(tmp_path / "PACS", out, server.base_url)) == 0
        rerun = server.count - clean_requests - first_run
    assert len(stored) == 3 and rerun == clean_requests - 3  # only the requests whose reply was not stored
    clean_rows, rows = built_rows(clean, PACS), built_rows(out, PACS)
    assert rows == clean_rows


def test_absolute_paths_in_a_report_are_cut_to_the_folder_names(tmp_path, vlcs_root):
    from rdmldg_hf.data.build import build_dataset

    sun09 = vlcs_root / "VLCS" / "SUN09"
    note = {"first_error": f"OSError: cannot read '{sun09}/car/000.png'", "store": [f"{tmp_path}/out.teacher-store"]}
    build_dataset("vlcs", tmp_path / "out", images=vlcs_root, report={"teacher": note})
    report = json.loads((tmp_path / "out" / "reports" / "vlcs.json").read_text())
    assert report["teacher"] == {
        "first_error": "OSError: cannot read 'VLCS/SUN09/car/000.png'",
        "store": ["out.teacher-store"],
    }
