"""Benchmark registry and prompts."""

import pytest

from rdmldg_hf.benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK, display_name, get_benchmark, normalize_name
from rdmldg_hf.chains import STAGES
from rdmldg_hf.prompts import (
    PROMPT_VERSION,
    classification_question,
    prompt_messages,
    question,
    reasoning_question,
    training_example,
)


@pytest.mark.parametrize(
    "name, folder, domains, num_classes",
    [
        ("pacs", "PACS", ("art_painting", "cartoon", "photo", "sketch"), 7),
        ("vlcs", "VLCS", ("caltech101", "labelme", "sun09", "voc2007"), 5),
        ("officehome", "office_home", ("art", "clipart", "product", "real_world"), 65),
        ("terrainc", "terra_incognita", ("location_100", "location_38", "location_43", "location_46"), 10),
        ("domainnet", "domain_net", ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), 345),
    ],
)
def test_domainbed_declarations(name, folder, domains, num_classes):
    benchmark = get_benchmark(name)
    assert benchmark.folder == folder
    assert benchmark.domains == domains
    assert benchmark.num_classes == num_classes == len(set(benchmark.classes))
    assert list(benchmark.classes) == sorted(benchmark.classes)  # DomainBed (ImageFolder) order
    assert len(set(benchmark.class_names)) == num_classes  # display names stay distinct


def test_lookup_by_title_folder_and_case():
    assert get_benchmark("OfficeHome") is get_benchmark("office_home") is BENCHMARKS["officehome"]
    assert get_benchmark("TerraIncognita").name == "terrainc"
    assert get_benchmark(EMBEDDED_BENCHMARK).embedded


def test_unknown_benchmark_lists_valid_ones():
    with pytest.raises(ValueError, match="Unknown benchmark 'imagenet'.*pacs, vlcs, officehome"):
        get_benchmark("imagenet")


def test_domains_and_classes_by_either_name():
    officehome = get_benchmark("officehome")
    assert officehome.domain("Real World") == "real_world"
    assert officehome.domain_folder("real_world") == "Real World"
    assert officehome.domain_config_name("Real World") == "officehome-real_world"
    assert officehome.class_index("Alarm_Clock") == officehome.class_index("alarm clock") == 0
    with pytest.raises(ValueError, match="Unknown domain 'sketch'.*art, clipart, product, real_world"):
        officehome.domain("sketch")
    with pytest.raises(ValueError, match="Unknown class 'Zebra'"):
        officehome.class_index("Zebra")


def test_names():
    assert normalize_name(" Real-World ") == "real_world"
    assert display_name("Alarm_Clock") == "alarm clock"


def test_questions():
    names = get_benchmark("pacs").class_names
    direct = classification_question(names)
    assert direct == (
        "What type of object is in this photo? Choose from the following options: "
        "dog, elephant, giraffe, guitar, horse, house, person."
    )
    reasoning = reasoning_question(names)
    assert reasoning.startswith(direct) and reasoning != direct
    assert all(f"<{stage}>" in reasoning and f"</{stage}>" in reasoning for stage in STAGES)
    assert question("reasoning", names) == reasoning
    with pytest.raises(ValueError, match="Unknown task 'caption'"):
        question("caption", names)
    with pytest.raises(ValueError, match="empty class list"):
        classification_question([])
    assert PROMPT_VERSION


def test_messages_are_trl_conversational():
    names = ["cat", "dog"]
    messages = prompt_messages("classification", names)
    assert messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": classification_question(names)}]}
    ]
    example = training_example("classification", names, "dog")
    assert example["completion"] == [{"role": "assistant", "content": [{"type": "text", "text": "dog"}]}]
    with pytest.raises(ValueError, match="non-empty answer"):
        training_example("reasoning", names, " ")
