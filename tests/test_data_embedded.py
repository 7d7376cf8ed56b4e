"""The embedded RotatedDigits benchmark: real digits, disjoint rotated domains, template chains."""

import io
import re

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import check_chain, resolve_conclusion
from rdmldg_hf.cli import main
from rdmldg_hf.embedded.benchmark import (
    EMBEDDED_SEED,
    TEMPLATE_CHAIN_SOURCE,
    _embedded_images,
    _render_digit,
    domain_angle,
    embedded_chains,
    embedded_source_images,
    load_digits_arrays,
    template_chain,
)
from rdmldg_hf.prompts import PROMPT_VERSION

BENCHMARK = get_benchmark("rotdigits")


@pytest.fixture(scope="module")
def images():
    return embedded_source_images()


def test_four_disjoint_domains_cover_every_digit(images):
    counts = {d: sum(1 for i in images if i.domain == d) for d in BENCHMARK.domains}
    assert counts == {"rot0": 450, "rot30": 449, "rot60": 449, "rot90": 449}
    indices = [int(re.fullmatch(r"rot\d+/[a-z]+/(\d{5})\.png", i.image_id).group(1)) for i in images]
    assert sorted(indices) == list(range(1797))  # disjoint and complete


def test_image_ids_name_domain_and_class(images):
    for image in images[::37]:
        domain, class_name, _ = image.image_id.split("/")
        assert domain == image.domain
        assert class_name == BENCHMARK.classes[image.label]


def test_images_are_32px_rgb_png_and_deterministic(images):
    again = _embedded_images.__wrapped__(EMBEDDED_SEED)  # made afresh, not the cached copy
    assert [i.image_id for i in again] == [i.image_id for i in images]
    assert all(a.data == b.data for a, b in zip(again[::50], images[::50]))
    picture = Image.open(io.BytesIO(images[0].data))
    assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (32, 32))


def test_digits_are_scikit_learns():
    pixels, targets = load_digits_arrays()
    assert pixels.shape == (1797, 8, 8) and (pixels.min(), pixels.max()) == (0, 16)
    assert np.bincount(targets).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # as load_digits
    assert pixels[0, 1].tolist() == [0, 0, 13, 15, 10, 15, 5, 0]  # second row of the first digit (a zero)


def test_domains_are_rotations_of_the_digit():
    digit = load_digits_arrays()[0][7]
    upright = np.asarray(Image.open(io.BytesIO(_render_digit(digit, 0))))
    turned = np.asarray(Image.open(io.BytesIO(_render_digit(digit, 90))))
    assert np.array_equal(turned, np.rot90(upright))
    assert upright.max() > 200  # real strokes, not blank
    assert [domain_angle(d) for d in BENCHMARK.domains] == [0, 30, 60, 90]


@pytest.mark.parametrize("class_name", BENCHMARK.class_names)
def test_template_chain_is_valid_and_concludes_its_class(class_name):
    text = template_chain(class_name)
    check = check_chain(text, strict=True)
    assert check.valid, check.problems
    assert resolve_conclusion(check.chain.conclusion, BENCHMARK.class_names).index == BENCHMARK.class_index(class_name)


def test_template_chains_are_class_specific(images):
    chains = embedded_chains(images)
    assert set(chains) == {i.image_id for i in images}
    record = chains[images[0].image_id]
    assert (record.chain_source, record.prompt_version) == (TEMPLATE_CHAIN_SOURCE, PROMPT_VERSION)
    captions = {check_chain(template_chain(c)).chain.caption for c in BENCHMARK.class_names}
    assert len(captions) == BENCHMARK.num_classes
    assert "horizontal top stroke" in template_chain("seven") and "diagonal" in template_chain("seven")
    with pytest.raises(ValueError, match="eleven"):
        template_chain("eleven")


def test_build_command_makes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "domainbed-reasoning"
    assert main(["build", "--benchmark", "rotdigits", "--out", str(out)]) == 0
    assert "1,797 rows" in capsys.readouterr().out
    dataset = load_dataset(str(out), "rotdigits")
    assert {split: len(ds) for split, ds in dataset.items()} == {"rot0": 450, "rot30": 449, "rot60": 449, "rot90": 449}
    row = dataset["rot60"][3]
    assert dataset["rot60"].column_names[0] == "image"
    assert row["domain"] == "rot60" and row["image_id"].startswith("rot60/")
    assert row["image"].size == (32, 32)
    assert row["reasoning"] == template_chain(BENCHMARK.class_names[row["label"]])
    single = load_dataset(str(out), "rotdigits-rot90", split="train")
    assert single["image_id"] == dataset["rot90"]["image_id"]
