"""Oversized images (over PIL's pixel limit, or --max-pixels) are bad input: skipped or reported, never decoded."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image, ImageFile

from helpers.teacher import pixel_teacher, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.data.pixel_limit import OversizedImageError
from rdmldg_hf.data.schema import SourceImage
from rdmldg_hf.evaluation.classifier import DGClassifier
from rdmldg_hf.evaluation.predict import decode_images
from rdmldg_hf.models import RunConfig
from rdmldg_hf.prompts import PROMPT_VERSION
from rdmldg_hf.teacher.images import encode_image
from rdmldg_hf.teacher.pipeline import generate_chains
from rdmldg_hf.teacher.settings import SamplingSettings, TeacherSettings
from rdmldg_hf.testing import LoopbackServer, ScriptedBackend, oversized_png

PACS = get_benchmark("pacs")
DIGITS = get_benchmark("rotdigits")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 48 KB PNG of 20,000 x 20,000 pixels (over twice PIL's limit: PIL refuses to open it)."""
    return oversized_png(20_000, 20_000)


@pytest.fixture(scope="module")
def large() -> bytes:
    """A PNG of 10,000 x 10,000 pixels (over PIL's limit, under twice it: PIL would only warn and decode it)."""
    return oversized_png(10_000, 10_000)


@pytest.fixture
def never_decoded(monkeypatch):
    """Decoding any image fails the test (the size must be read from the header only)."""

    def load(self):
        raise AssertionError(f"a {self.size} image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def png(size: int = 24, image_format: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(out, format=image_format)
    return out.getvalue()


def test_the_build_skips_and_reports_an_oversized_png_beside_a_broken_jpeg(tmp_path, bomb, large, capsys):
    write_images(tmp_path / "PACS", PACS, 4, classes=1)
    (tmp_path / "PACS" / "photo" / "dog" / "bomb.png").write_bytes(bomb)
    (tmp_path / "PACS" / "photo" / "dog" / "large.png").write_bytes(large)
    (tmp_path / "PACS" / "sketch" / "dog" / "broken.jpg").write_bytes(png(64, "JPEG")[:400])  # truncated
    code = main(["build", "--benchmark", "pacs", "--images", str(tmp_path / "PACS"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0 and "4 rows" in printed and "Skipped 3 files" in printed
    report = json.loads((tmp_path / "out" / "reports" / "pacs.json").read_text())
    skipped = {item["path"]: item["reason"] for item in report["skipped"]}
    assert skipped["photo/dog/bomb.png"].startswith("image over PIL's decompression-bomb limit")
    assert skipped["photo/dog/large.png"].startswith(
        "10000x10000 image (100,000,000 pixels) is over the pixel limit of 89,478,485"
    )
    assert skipped["sketch/dog/broken.jpg"].startswith("unreadable image")


def test_max_pixels_sets_the_limit_of_a_build(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    write_images(tmp_path / "PACS", PACS, 4, classes=1, size=24)
    (tmp_path / "PACS" / "photo" / "dog" / "wide.png").write_bytes(png(30))
    code = main(
        [
            "build",
            "--benchmark",
            "pacs",
            "--images",
            str(tmp_path / "PACS"),
            "--out",
            str(tmp_path / "out"),
            "--max-pixels",
            "600",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "4 rows" in printed
    assert "photo/dog/wide.png: 30x30 image (900 pixels) is over the pixel limit of 600" in printed


def test_teacher_encoding_reports_oversized_images_without_decoding_them(bomb, large, never_decoded):
    for data, message in ((bomb, "decompression-bomb limit"), (large, "10000x10000 image")):
        with pytest.raises(OversizedImageError, match=message):
            encode_image(data, 32)


def test_a_teacher_run_records_an_oversized_image_as_failed_and_sends_nothing_for_it(tmp_path, bomb):
    good = write_images(tmp_path / "PACS", PACS, 1)
    huge = SourceImage(image_id="art_painting/dog/huge.png", domain="art_painting", label=0, data=bomb)
    with LoopbackServer(pixel_teacher(PACS)) as server:
        settings = TeacherSettings(
            sampling=SamplingSettings(candidates=1, image_max_side=32),
            base_url=server.base_url,
            max_rounds=0,
            progress=False,
        )
        chains = generate_chains([*good, huge], PACS, settings, tmp_path / "store")
        assert server.count == 1
    assert "decompression-bomb limit" in chains[huge.image_id].rejection_reasons[-1]
    assert chains.summary["acceptance"]["failed"] == 1 and chains[good[0].image_id].reasoning is not None
    chains.close()


def test_evaluation_and_the_classifier_report_oversized_images(bomb, large):
    images, failed = decode_images([png(), bomb, {"bytes": large, "path": None}])
    assert failed == [1, 2] and images[0] is not None and images[1] is None
    run = RunConfig(
        "mtct", DIGITS.name, list(DIGITS.classes), list(DIGITS.class_names), list(DIGITS.domains), None, PROMPT_VERSION
    )
    classifier = DGClassifier(ScriptedBackend(lambda messages, image: DIGITS.class_names[3]), None, run)
    outputs = classifier.predict([png(), bomb, large], "direct-generate")
    assert [output.index for output in outputs] == [3, -1, -1] and outputs[1].label is None
