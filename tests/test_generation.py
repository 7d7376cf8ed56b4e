"""Batched generation: scripted backend, real tiny models, resume hooks."""

from __future__ import annotations

import pytest
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from helpers.sarr import CLASSES, tiny_rows
from rdmldg_hf.generation import (
    GenerationSettings,
    ModelBackend,
    batch_indices,
    generate,
    length_order,
    run_batches,
)
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.prompts import prompt_messages
from rdmldg_hf.testing import ScriptedBackend
from rdmldg_hf.trainers.relabel import RelabelStore, relabel


@pytest.fixture(scope="module")
def rows():
    return tiny_rows(3)


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def tiny(request, tiny_model):
    return load_model_and_processor(tiny_model(request.param))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="batch_size"):
        GenerationSettings(batch_size=0)
    with pytest.raises(ValueError, match="do_sample=True"):
        GenerationSettings(num_candidates=3)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(do_sample=True, temperature=0.0)
    assert GenerationSettings(num_candidates=2, do_sample=True).to_dict()["num_candidates"] == 2


def test_batches_cover_every_item_once():
    assert batch_indices(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batch_indices(0, 4) == []


def test_scripted_generation_keeps_order_and_batches():
    backend = ScriptedBackend(lambda messages, image: [f"a{image}", f"b{image}"])
    settings = GenerationSettings(batch_size=4, num_candidates=2, do_sample=True)
    out = generate(backend, None, [[]] * 10, list(range(10)), settings)
    assert out == [[f"a{i}", f"b{i}"] for i in range(10)]
    assert backend.calls == [4, 4, 2]


def test_a_dataset_image_column_is_read_once_per_batch(monkeypatch):
    rows = Dataset.from_dict({"image": [Image.new("RGB", (i + 1, 1)) for i in range(5)]})
    column = rows.cast_column("image", ImageFeature())["image"]  # datasets' lazy Column, as relabel passes it
    reads = []
    read = Dataset.__getitem__
    monkeypatch.setattr(Dataset, "__getitem__", lambda self, key: reads.append(key) or read(self, key))
    backend = ScriptedBackend(lambda messages, image: str(image.size[0]))
    out = generate(backend, None, [[]] * 5, column, GenerationSettings(batch_size=2))
    assert out == [[str(i + 1)] for i in range(5)] and reads == [[0, 1], [2, 3], [4]]


def test_generate_needs_one_image_per_prompt():
    with pytest.raises(ValueError, match="one image per prompt"):
        generate(ScriptedBackend(lambda m, i: "x"), None, [[]] * 3, [0, 1], GenerationSettings())


def test_run_batches_skips_done_batches_and_reports_new_ones():
    seen: list[int] = []
    written: dict[int, list[int]] = {}

    def square(indices, batch_index):
        seen.append(batch_index)
        return [i * i for i in indices]

    result = run_batches(square, 7, 3, done={1: [-1, -1, -1]}, on_batch=lambda b, idx, res: written.update({b: res}))
    assert result == [0, 1, 4, -1, -1, -1, 36]
    assert seen == [0, 2] and written == {0: [0, 1, 4], 2: [36]}


def test_batched_greedy_equals_one_at_a_time(tiny, rows):
    model, processor = tiny
    images = list(rows["image"])[:7]
    messages = [prompt_messages("reasoning", CLASSES)] * len(images)
    batched = generate(model, processor, messages, images, GenerationSettings(batch_size=4, max_new_tokens=12))
    single = generate(model, processor, messages, images, GenerationSettings(batch_size=1, max_new_tokens=12))
    assert batched == single
    assert all(len(texts) == 1 and texts[0] for texts in batched)


def test_sampling_gives_k_candidates_reproducibly(tiny, rows):
    model, processor = tiny
    images = list(rows["image"])[:3]
    messages = [prompt_messages("reasoning", CLASSES)] * 3
    settings = GenerationSettings(batch_size=2, max_new_tokens=6, num_candidates=3, do_sample=True, temperature=1.5)
    first = generate(model, processor, messages, images, settings)
    assert [len(texts) for texts in first] == [3, 3, 3]
    assert first == generate(model, processor, messages, images, settings)


def test_generation_restores_training_mode(tiny, rows):
    model, processor = tiny
    model.train()
    generate(
        model,
        processor,
        [prompt_messages("reasoning", CLASSES)],
        [rows[0]["image"]],
        GenerationSettings(max_new_tokens=2),
    )
    assert model.training
    model.eval()


def test_batches_follow_an_order_and_results_come_back_in_item_order():
    assert batch_indices(5, 2, order=[4, 0, 3, 1, 2]) == [[4, 0], [3, 1], [2]]
    with pytest.raises(ValueError, match="each of the 3 item indices once"):
        batch_indices(3, 2, order=[0, 0, 1])
    assert length_order([3, 9, 3, 12]) == [3, 1, 0, 2]  # longest first, ties in item order
    out = run_batches(lambda indices, b: [(i, b) for i in indices], 5, 2, order=[4, 0, 3, 1, 2])
    assert out == [(0, 0), (1, 1), (2, 2), (3, 1), (4, 0)]


def test_cache_implementation_is_checked():
    with pytest.raises(ValueError, match="Unknown cache_implementation 'fast'"):
        GenerationSettings(cache_implementation="fast")
    assert GenerationSettings(cache_implementation="static").to_dict()["cache_implementation"] == "static"


def test_static_cache_gives_the_same_greedy_outputs(tiny, rows):
    model, processor = tiny
    images = list(rows["image"])[:5]
    messages = [prompt_messages("reasoning", CLASSES)] * len(images)
    dynamic = generate(model, processor, messages, images, GenerationSettings(batch_size=3, max_new_tokens=10))
    static = GenerationSettings(batch_size=3, max_new_tokens=10, cache_implementation="static")
    assert generate(model, processor, messages, images, static) == dynamic


# (height, width) of the relabeled images: Qwen2-VL's processor gives them different numbers of image tokens.
SIZES = [(32, 32), (16, 64), (64, 48), (40, 40), (24, 72), (48, 16), (32, 64)]


def test_relabel_batches_by_image_tokens_and_matches_one_at_a_time(tiny_model, rows, tmp_path):
    model, processor = load_model_and_processor(tiny_model("qwen2_vl"))
    images = rows.select(range(len(SIZES)))
    images = images.map(lambda row, i: {"image": row["image"].resize(SIZES[i][::-1])}, with_indices=True)
    backend = ModelBackend(model, processor)
    tokens = backend.image_tokens(SIZES)
    assert len(set(tokens)) > 2
    store = RelabelStore(tmp_path / "store")
    settings = GenerationSettings(batch_size=3, max_new_tokens=10)
    batched = relabel(backend, images, CLASSES, settings, store)
    # Batches hold images of similar token counts, most first; outputs come back in dataset order.
    ids = list(images["image_id"])
    written = [
        [ids.index(i) for i in record["image_ids"]] for record in sorted(store.read(), key=lambda r: r["batch"])
    ]
    assert written == batch_indices(len(SIZES), 3, length_order(tokens)) != batch_indices(len(SIZES), 3)
    assert [tokens[i] for batch in written for i in batch] == sorted(tokens, reverse=True)
    messages = [prompt_messages("reasoning", CLASSES)] * len(SIZES)
    single = generate(model, processor, messages, list(images["image"]), GenerationSettings(1, max_new_tokens=10))
    assert batched == single and all(texts[0] for texts in batched)
    # A rerun forms the same batches and reads every one back from the store: nothing is generated.
    backend.generate_texts = None
    assert relabel(backend, images, CLASSES, settings, store) == batched
