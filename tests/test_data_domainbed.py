"""Scanning DomainBed folders: both root forms, messy files, class maps, clear errors."""

import contextlib
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from helpers.hub import make_domainbed_folder
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.domainbed import load_class_map, load_domain_map, resolve_benchmark_folder, scan_domainbed

PACS = get_benchmark("pacs")
CLASSES = ("dog", "horse")


@pytest.fixture
def pacs_root(tmp_path):
    make_domainbed_folder(tmp_path, PACS.folder, PACS.domain_folders, CLASSES, per_class=2, formats=("png", "jpg"))
    return tmp_path


def test_data_root_and_benchmark_folder_give_the_same_images(pacs_root):
    from_root = scan_domainbed(PACS, pacs_root)
    from_folder = scan_domainbed(PACS, pacs_root / "PACS")
    assert [i.image_id for i in from_root.images] == [i.image_id for i in from_folder.images]
    assert from_root.counts() == {d: 4 for d in PACS.domains}
    first = from_root.images[0]
    assert first.image_id == "art_painting/dog/000.png"
    assert (first.domain, first.label, first.data) == ("art_painting", PACS.class_index("dog"), None)
    assert first.read_bytes().startswith(b"\x89PNG")


def test_messy_files_are_ignored_or_skipped_with_reasons(pacs_root):
    folder = pacs_root / "PACS"
    (folder / "README.txt").write_text("notes")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "photo" / "stray.jpg").write_bytes(b"\0")
    (folder / "photo" / "dog" / "notes.txt").write_text("not an image")
    png = (folder / "photo" / "dog" / "000.png").read_bytes()
    jpeg = (folder / "photo" / "dog" / "001.jpg").read_bytes()
    (folder / "photo" / "dog" / "broken.png").write_bytes(png[: len(png) // 2])
    (folder / "photo" / "dog" / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "photo" / "dog" / "header.png").write_bytes(png[:40])
    (folder / "photo" / "dog" / ".hidden.png").write_bytes(b"")
    (folder / "sketch" / "horse" / "UPPER.JPEG").write_bytes((folder / "sketch" / "horse" / "001.jpg").read_bytes())
    result = scan_domainbed(PACS, pacs_root)
    assert sorted(result.ignored) == [".DS_Store", "README.txt"]
    reasons = {item.path: item.reason for item in result.skipped}
    assert reasons["photo/stray.jpg"].startswith("file beside the class folders")
    assert reasons["photo/dog/notes.txt"] == "not an image file"
    assert reasons["photo/dog/broken.png"].startswith("unreadable image")
    assert reasons["photo/dog/broken.jpg"].startswith("unreadable image")
    assert reasons["photo/dog/header.png"] == "not an image file"
    assert reasons["photo/dog/.hidden.png"] == "hidden file"
    assert result.counts()["sketch"] == 5  # odd extension, real image: kept
    assert result.counts()["photo"] == 4


def test_a_class_missing_in_one_domain_is_fine(pacs_root):
    for path in (pacs_root / "PACS" / "cartoon" / "horse").iterdir():
        path.unlink()
    (pacs_root / "PACS" / "cartoon" / "horse").rmdir()
    assert scan_domainbed(PACS, pacs_root).counts()["cartoon"] == 2


def test_unknown_class_folder_names_it_and_offers_a_class_map(pacs_root, tmp_path):
    (pacs_root / "PACS" / "photo" / "dog").rename(pacs_root / "PACS" / "photo" / "doggo")
    with pytest.raises(ValueError) as error:
        scan_domainbed(PACS, pacs_root)
    message = str(error.value)
    assert "'doggo'" in message and "dog, elephant, giraffe" in message and "--class-map" in message
    class_map = tmp_path / "map.json"
    class_map.write_text(json.dumps({"doggo": "dog"}))
    result = scan_domainbed(PACS, pacs_root, class_map=load_class_map(class_map))
    assert {i.image_id for i in result.images if i.domain == "photo" and i.label == PACS.class_index("dog")} == {
        "photo/doggo/000.png",
        "photo/doggo/001.jpg",
    }


def test_class_map_errors(tmp_path, pacs_root):
    with pytest.raises(ValueError, match="maps folder 'doggo' to 'wolf'.*Valid classes"):
        scan_domainbed(PACS, pacs_root, class_map={"doggo": "wolf"})
    bad = tmp_path / "bad.json"
    bad.write_text('{"doggo": "dog",\n oops}')
    with pytest.raises(ValueError, match="line 2"):
        load_class_map(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_class_map(tmp_path / "missing.json")


def test_unknown_domain_folder_names_it_and_offers_a_domain_map(pacs_root, tmp_path):
    (pacs_root / "PACS" / "cartoon").rename(pacs_root / "PACS" / "comics")
    with pytest.raises(
        ValueError, match="'comics'.*Valid domains: art_painting, cartoon, photo, sketch.*--domain-map FILE"
    ):
        scan_domainbed(PACS, pacs_root)
    domain_map = tmp_path / "domains.json"
    domain_map.write_text('{"comics": "cartoon"}')
    result = scan_domainbed(PACS, pacs_root, domain_map=load_domain_map(domain_map))
    cartoon = [i.image_id for i in result.images if i.domain == "cartoon"]
    assert len(cartoon) == 4 and cartoon[0] == "comics/dog/000.png"
    with pytest.raises(ValueError, match="maps folder 'comics' to 'anime'.*Valid domains"):
        scan_domainbed(PACS, pacs_root, domain_map={"comics": "anime"})
    with pytest.raises(FileNotFoundError, match="--domain-map"):
        load_domain_map(tmp_path / "missing.json")


def test_empty_domain(pacs_root):
    for class_folder in (pacs_root / "PACS" / "photo").iterdir():
        for path in class_folder.iterdir():
            path.write_text("not an image any more")
    with pytest.raises(ValueError, match="'photo' holds no readable image"):
        scan_domainbed(PACS, pacs_root)


def test_missing_domain_and_bad_roots(pacs_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected <data root>/PACS/<domain>/<class>/<image>"):
        scan_domainbed(PACS, tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "dog").mkdir()
    with pytest.raises(ValueError, match="holds no domain folder of 'pacs'.*found: dog"):
        resolve_benchmark_folder(PACS, tmp_path / "flat")
    for path in (pacs_root / "PACS" / "sketch").rglob("*"):
        if path.is_file():
            path.unlink()
    for path in sorted((pacs_root / "PACS" / "sketch").rglob("*"), reverse=True):
        path.rmdir()
    (pacs_root / "PACS" / "sketch").rmdir()
    with pytest.raises(ValueError, match="lacks the domain folders sketch"):
        scan_domainbed(PACS, pacs_root)


def test_domain_folders_with_spaces_become_split_names(tmp_path):
    officehome = get_benchmark("officehome")
    make_domainbed_folder(tmp_path, officehome.folder, officehome.domain_folders, ("Alarm_Clock",), per_class=1)
    result = scan_domainbed(officehome, tmp_path)
    assert result.counts() == {"art": 1, "clipart": 1, "product": 1, "real_world": 1}
    assert any(i.image_id == "Real World/Alarm_Clock/000.png" for i in result.images)


def scan_within(seconds, *args, **kwargs):
    """``scan_domainbed(*args, **kwargs)``, failing (not hanging) if it takes longer than ``seconds``;
    a FIFO a hung scan is blocked on is opened for writing, which releases it."""
    outcome = {}

    def scan():
        try:
            outcome["result"] = scan_domainbed(*args, **kwargs)
        except Exception as error:  # re-raised below, in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=scan, daemon=True)
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    for fifo in Path(args[1]).rglob("*.png"):
        if stat.S_ISFIFO(fifo.lstat().st_mode):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    thread.join(10)
    assert not hung, f"the scan did not finish within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_a_fifo_named_like_an_image_is_skipped_unopened(pacs_root):
    os.mkfifo(pacs_root / "PACS" / "photo" / "dog" / "camera.png")
    os.mkfifo(pacs_root / "PACS" / "photo" / "stream.png")  # beside the class folders
    result = scan_within(30, PACS, pacs_root)
    reasons = {item.path: item.reason for item in result.skipped}
    assert reasons == {
        "photo/dog/camera.png": "not a regular file (FIFO)",
        "photo/stream.png": "not a regular file (FIFO)",
    }
    assert result.counts()["photo"] == 4


def test_symlinks_are_followed_only_inside_the_benchmark_folder(pacs_root, tmp_path):
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copy(pacs_root / "PACS" / "photo" / "dog" / "000.png", outside / "holiday.png")
    (outside / "more").mkdir()
    shutil.copy(outside / "holiday.png", outside / "more" / "family.png")
    dog = pacs_root / "PACS" / "photo" / "dog"
    (dog / "holiday.png").symlink_to(outside / "holiday.png")
    (dog / "albums").symlink_to(outside / "more")
    (pacs_root / "PACS" / "cartoon" / "elephant").symlink_to(outside / "more")  # a class folder outside
    (dog / "same.png").symlink_to(Path("..") / ".." / "sketch" / "dog" / "000.png")  # inside: followed
    (dog / "sketches").symlink_to(pacs_root / "PACS" / "sketch" / "dog")  # inside: followed
    (dog / "gone.png").symlink_to(dog / "deleted.png")
    (dog / "loop.png").symlink_to(dog / "loop.png")
    (dog / "up").symlink_to(dog.parent)  # a loop back up: scanned once
    result = scan_within(30, PACS, pacs_root)
    reasons = {item.path: item.reason for item in result.skipped}
    assert reasons == {
        "photo/dog/holiday.png": "symlink to a file outside the benchmark folder (not followed)",
        "photo/dog/albums": "symlink to a folder outside the benchmark folder (not followed)",
        "cartoon/elephant": "symlink to a folder outside the benchmark folder (not followed)",
        "photo/dog/gone.png": "broken symlink (No such file or directory)",
        "photo/dog/loop.png": "broken symlink (Too many levels of symbolic links)",
        "photo/dog/up": "folder already scanned through another link (not scanned twice)",
    }
    photo_dogs = [image.image_id for image in result.images if image.domain == "photo" and image.label == 0]
    assert photo_dogs == [
        "photo/dog/000.png",
        "photo/dog/001.jpg",
        "photo/dog/same.png",
        "photo/dog/sketches/000.png",
        "photo/dog/sketches/001.jpg",
    ]
    assert not any(str(outside) in os.path.realpath(image.path) for image in result.images)


def test_names_that_are_not_utf8_are_skipped_and_shown_escaped(pacs_root):
    dog = os.fsencode(pacs_root / "PACS" / "photo" / "dog")
    shutil.copy(os.path.join(dog, b"000.png"), os.path.join(dog, b"caf\xe9.png"))
    os.mkdir(os.path.join(dog, b"\xff\xfe"))
    shutil.copy(os.path.join(dog, b"000.png"), os.path.join(dog, b"\xff\xfe", b"inside.png"))
    result = scan_within(30, PACS, pacs_root)
    reasons = {item.path: item.reason for item in result.skipped}
    assert reasons == {
        "photo/dog/caf\\xe9.png": "name is not valid UTF-8 (rename the file to include it)",
        "photo/dog/\\xff\\xfe": "name is not valid UTF-8 (rename the file to include it)",
    }
    assert all(image.image_id.encode("utf-8") for image in result.images)
    assert result.counts()["photo"] == 4
