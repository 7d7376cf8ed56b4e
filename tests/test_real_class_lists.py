"""Real class lists: OfficeHome's 65 and DomainNet's 345 names, multi-token under the tiny InternVL3-shaped
model's byte-level BPE, flow through scoring, conclusion matching (relabel, evaluation), the metric, and an
OfficeHome-format folder goes through `rdmldg build` (chains imported), two training steps and `rdmldg eval`."""

from __future__ import annotations

import io
import json
import runpy
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset
from PIL import Image

from helpers.officehome import DOMAIN_CLASSES, IMAGES_PER_CLASS, OFFICEHOME, build_officehome, chain_about
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import resolve_conclusion
from rdmldg_hf.cli import main as rdmldg_main
from rdmldg_hf.data.schema import dataset_features
from rdmldg_hf.evaluation.dg_metric import compute_dg_metrics
from rdmldg_hf.evaluation.predict import predict
from rdmldg_hf.generation import GenerationSettings
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.scoring import answer_token_ids, score_classes
from rdmldg_hf.testing import ScriptedBackend
from rdmldg_hf.trainers.relabel import build_round_dataset, relabel

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# How teachers write some classes; each must resolve to the class (folder name) on the right.
TEACHER_SPELLINGS = {
    "officehome": {
        "Flip-flops": "Flipflops",
        "tooth brush": "ToothBrush",
        "Television": "TV",
        "post-it notes": "Postit_Notes",
        "pushpin": "Push_Pin",
        "Trashcan": "Trash_Can",
        "LAMPSHADE": "Lamp_Shade",
    },
    "domainnet": {
        "Eiffel Tower": "The_Eiffel_Tower",
        "T-Shirt": "t-shirt",
        "teddy bear": "teddy-bear",
        "flip-flops": "flip_flops",
        "the great wall of china": "The_Great_Wall_of_China",
    },
}


@pytest.fixture(scope="module")
def internvl_dir(tiny_model) -> Path:
    return tiny_model("internvl")


def _spelling(index: int, folder: str, name: str) -> str:
    """A conclusion as a teacher might write class ``name``: as offered, as the folder, bold and capitalised, ..."""
    if name.startswith("the "):
        return name.title()
    return (name, folder, f"**{name.title()}**.", name.replace(" ", "-"), f"A {name}")[index % 5]


def _expected_answer(index: int, num_classes: int) -> int:
    """What image ``index``'s scripted chain concludes: its class, the next class (1 in 7), no class (1 in 11)."""
    if index % 7 == 3:
        return (index + 1) % num_classes
    return -1 if index % 11 == 5 else index


def _image(index: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (index % 256, index // 256, 99))


def _rows(benchmark) -> Dataset:
    """One image per class, domains in turn, the teacher chain naming the class."""
    rows = []
    for index, name in enumerate(benchmark.class_names):
        encoded = io.BytesIO()
        _image(index).save(encoded, format="PNG")
        rows.append(
            {
                "image": {"bytes": encoded.getvalue(), "path": None},
                "label": index,
                "domain": benchmark.domains[index % len(benchmark.domains)],
                "image_id": f"{index:05d}.png",
                "reasoning": chain_about(name),
                "chain_source": "teacher",
                "prompt_version": None,
                "num_candidates": None,
                "num_valid": None,
                "num_correct": None,
                "rejection_reasons": [],
            }
        )
    return Dataset.from_list(rows, features=dataset_features(benchmark))


@pytest.mark.parametrize("benchmark_name, num_classes", [("officehome", 65), ("domainnet", 345)])
def test_real_class_list_flows_through_scoring_matching_and_metric(internvl_dir, benchmark_name, num_classes):
    benchmark = get_benchmark(benchmark_name)
    names, folders, aliases = list(benchmark.class_names), benchmark.classes, benchmark.class_aliases
    assert len(names) == num_classes

    for spelled, folder in TEACHER_SPELLINGS[benchmark_name].items():
        assert resolve_conclusion(spelled, names, aliases).index == benchmark.classes.index(folder), spelled

    # Scoring and generation with a real (tiny) model: class names are several tokens each.
    model, processor = load_model_and_processor(internvl_dir)
    answers = answer_token_ids(processor, names)
    assert sum(len(ids) > 1 for ids in answers) >= 0.9 * num_classes and max(map(len, answers)) >= 4
    probabilities = score_classes(model, processor, [_image(0), _image(1)], names, batch_size=2)
    assert probabilities.shape == (2, num_classes) and probabilities.sum(-1).sub(1).abs().max() < 1e-4
    generated = predict(model, processor, [_image(0)], names, "reasoning", batch_size=1, max_new_tokens=6)
    assert len(generated.texts[0]) > 0 and -1 <= generated.indices[0] < num_classes

    # Conclusion matching, with chains a scripted model writes: in evaluation and in relabel.
    rows = _rows(benchmark)
    labels = list(range(num_classes))
    expected = [_expected_answer(i, num_classes) for i in labels]
    questions = []

    def reply(messages, image):
        questions.append(messages[-1]["content"][-1]["text"])
        index = image.getpixel((0, 0))[0] + 256 * image.getpixel((0, 0))[1]
        said = expected[index]
        return chain_about("a unicorn" if said < 0 else _spelling(said, folders[said], names[said]))

    backend = ScriptedBackend(reply)
    predictions = predict(backend, None, list(rows["image"]), names, "reasoning", batch_size=64, aliases=aliases)
    assert predictions.indices == expected
    assert len(questions) == num_classes and ", ".join(names) in questions[0]  # every class offered

    outputs = relabel(backend, rows, names, GenerationSettings(batch_size=64, max_new_tokens=8))
    round_rows, stats = build_round_dataset(rows, outputs, 1, "teacher", "tiny@sarr-r1", benchmark, aliases)
    right = sum(e == i for i, e in enumerate(expected))
    assert stats.accepted == right and stats.fallbacks == {"teacher": num_classes - right}
    assert set(stats.acceptance_per_class) == set(names) and len(round_rows) == num_classes
    assert stats.no_class_rate == pytest.approx(expected.count(-1) / num_classes)

    metrics = compute_dg_metrics(predictions.indices, labels, list(rows["domain"]))
    assert metrics["accuracy"] == pytest.approx(right / num_classes)
    assert metrics["invalid_rate"] == pytest.approx(expected.count(-1) / num_classes)
    assert set(metrics["per_domain"]) == set(benchmark.domains)


def test_officehome_folder_to_held_out_evaluation(internvl_dir, tmp_path):
    data = build_officehome(tmp_path)  # `rdmldg build --chains`: one wrong conclusion per domain, one unknown image
    report = json.loads((data / "reports" / "officehome.json").read_text())["chain_import"]
    counts = (report["total"], report["accepted"], len(report["invalid"]), report["unmatched"])
    assert counts == (17, 12, 4, ["Art/Mug/00001.jpg"])
    dataset = load_dataset(str(data), "officehome")
    assert list(dataset) == list(OFFICEHOME.domains) == ["art", "clipart", "product", "real_world"]
    for domain, classes in DOMAIN_CLASSES.items():
        split = dataset[OFFICEHOME.domain(domain)]
        assert split.features["label"].names == list(OFFICEHOME.classes)
        assert sorted(OFFICEHOME.classes[label] for label in split["label"]) == sorted(classes * IMAGES_PER_CLASS)
        assert all(image_id.startswith(f"{domain}/") for image_id in split["image_id"])
        assert sum(chain is not None for chain in split["reasoning"]) == 2 * IMAGES_PER_CLASS - 1

    out = tmp_path / "mtct"
    mtct = runpy.run_path(str(RECIPES / "mtct.py"), run_name="mtct_recipe")
    mtct["main"](
        *mtct["parse_args"](
            [
                "--model_name_or_path",
                str(internvl_dir),
                "--dataset_name",
                str(data),
                "--dataset_config",
                "officehome",
                "--test_domain",
                "art",
                "--use_peft",
                "true",
                "--lora_r",
                "4",
                "--max_steps",
                "2",
                "--per_device_train_batch_size",
                "2",
                "--bf16",
                "false",
                "--activation_checkpointing",
                "false",
                "--save_strategy",
                "no",
                "--report_to",
                "none",
                "--output_dir",
                str(out),
            ]
        )
    )
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2

    held_out_labels = sorted([OFFICEHOME.classes.index(c) for c in DOMAIN_CLASSES["Art"]] * IMAGES_PER_CLASS)
    for mode in ("direct", "reasoning"):
        results = tmp_path / f"eval-{mode}.json"
        code = rdmldg_main(
            [
                "eval",
                "--adapter",
                str(out),
                "--dataset",
                str(data),
                "--config",
                "officehome",
                "--domains",
                "art",
                "--mode",
                mode,
                "--max-new-tokens",
                "12",
                "--output",
                str(results),
            ]
        )
        assert code == 0
        metrics = json.loads(results.read_text())["metrics"]
        assert metrics["count_per_domain"] == {"art": 4} and 0 <= metrics["per_domain"]["art"] <= 1
        lines = [json.loads(line) for line in results.with_suffix(".predictions.jsonl").read_text().splitlines()]
        assert sorted(line["label"] for line in lines) == held_out_labels
        assert all(-1 <= line["prediction"] < OFFICEHOME.num_classes for line in lines)
        if mode == "direct":
            assert all(len(line["probabilities"]) == 65 for line in lines) and metrics["invalid_rate"] == 0
