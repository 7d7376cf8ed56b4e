"""Every path on every architecture: LLaVA, Qwen2-VL, Qwen2.5-VL and InternVL3-shaped tiny models.

Here: LoRA on both towers and full fine-tuning, batched generation, the LM head applied only where
logits are needed (generation and teacher forcing, with a 150k-entry vocabulary), the scoring
template check, and the four analyses. Elsewhere, parametrized the same way: collator masks
(test_mtct_masks.py); save, push, olah, ``DGClassifier`` / ``PeftModel.from_pretrained`` by repo id
and the three prediction modes (test_eval_hub.py).
"""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from helpers.analysis import dataset_dir
from helpers.evaluation import trained_adapter
from helpers.mtct import BENCHMARK, chain_for, config, load_tiny, template_parts, tiny_dataset, tiny_model_dir
from rdmldg_hf.analysis import teacher_forcing
from rdmldg_hf.analysis.teacher_forcing import ForcedExample, teacher_force
from rdmldg_hf.cli import main
from rdmldg_hf.generation import GenerationSettings, generate
from rdmldg_hf.models import default_lora_config, lora_modules_per_tower, model_towers
from rdmldg_hf.prompts import prompt_messages
from rdmldg_hf.scoring import answer_token_ids
from rdmldg_hf.testing import ARCHITECTURES, LMHeadCalls
from rdmldg_hf.trainers import MTCTTrainer

NAMES = list(BENCHMARK.class_names)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def architecture(request):
    return request.param


def _images(sizes=((32, 32), (64, 32), (40, 48))):
    """Images of different sizes: Qwen's and InternVL's processors give them different numbers of image tokens."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


# --------------------------------------------------------------------------- training


def test_default_lora_wraps_and_trains_both_towers(architecture):
    """``default_lora_config`` puts adapters in the vision tower and the language model, and training moves both."""
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir(architecture))
    model = PeftModel.from_pretrained(base, trained_adapter(architecture))
    counts = lora_modules_per_tower(model)
    assert counts["vision"] > 0 and counts["language"] > 0, counts
    for tower, module in model_towers(model).items():
        # lora_B starts at zero: a non-zero one was trained.
        trained = [name for name, p in module.named_parameters() if "lora_B" in name and p.abs().sum() > 0]
        assert trained, f"no trained LoRA weight in the {tower} tower of {architecture}"


def test_full_fine_tuning_updates_both_towers(architecture, tmp_path):
    model, processor = load_tiny(architecture)
    towers = model_towers(model)
    before = {tower: [p.detach().clone() for p in module.parameters()] for tower, module in towers.items()}
    args = config(tmp_path, max_steps=1, per_device_train_batch_size=2)
    trainer = MTCTTrainer(model, args=args, train_dataset=tiny_dataset(2), processing_class=processor)
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])
    for tower, module in towers.items():
        assert any(not torch.equal(a, b.to(a.device)) for a, b in zip(before[tower], module.parameters())), tower


def test_lora_targets_missing_a_tower_are_refused(architecture, tmp_path):
    """Targets that miss the vision tower (e.g. defaults that do not know an architecture) fail at set-up."""
    model, processor = load_tiny(architecture)
    language_only = default_lora_config(r=2, target_modules=r".*language_model.*\.(?:q_proj|v_proj)")
    name = type(model).__name__
    pattern = rf"0 modules of the vision tower .* of {name}: none in the vision tower.*--lora_target_modules"
    args, data = config(tmp_path), tiny_dataset(2)
    with pytest.raises(ValueError, match=pattern):
        MTCTTrainer(model, args=args, train_dataset=data, processing_class=processor, peft_config=language_only)


# --------------------------------------------------------------------------- generation and scoring


def test_batched_generation_equals_one_at_a_time(architecture):
    """Relabel-style generation (reasoning question, greedy, left padding) gives the chains of one image at a time."""
    model, processor = load_tiny(architecture)
    images = _images()
    messages = [prompt_messages("reasoning", NAMES)] * len(images)
    batched = generate(model, processor, messages, images, GenerationSettings(batch_size=3, max_new_tokens=10))
    single = generate(model, processor, messages, images, GenerationSettings(batch_size=1, max_new_tokens=10))
    assert batched == single and all(texts[0] for texts in batched)


def test_generation_applies_the_lm_head_to_the_last_position_only(architecture):
    """``model.generate`` (relabel, evaluation) computes logits of one position per step, prefill included."""
    model, processor = load_tiny(architecture)
    images = _images()[:2]
    with LMHeadCalls(model) as head:
        messages = [prompt_messages("reasoning", NAMES)] * 2
        generate(model, processor, messages, images, GenerationSettings(max_new_tokens=3))
    assert len(head.shapes) == 3 and all(shape[:2] == (2, 1) for shape in head.shapes), head.shapes


def test_teacher_forcing_applies_the_lm_head_only_to_answer_positions(architecture, monkeypatch):
    """With a 150k-entry vocabulary, teacher forcing applies the LM head to answer positions only, not the prompt's."""
    model, processor = load_tiny(architecture)
    vocab = 150_000
    model.resize_token_embeddings(vocab, mean_resizing=False)
    # Two images of different sizes (prompts of different lengths on Qwen and InternVL), then two chains.
    images = _images(((32, 32), (64, 32), (32, 32), (32, 32)))
    examples = [ForcedExample(images[0], 3), ForcedExample(images[1], 7)]
    examples += [ForcedExample(images[2], 2, "reasoning", chain_for(2, 3))]
    examples += [ForcedExample(images[3], 5, "reasoning", chain_for(5, 9))]
    with LMHeadCalls(model) as head:
        scores = teacher_force(model, processor, examples, NAMES, batch_size=2)
    tokenizer = processor.tokenizer
    answers = [NAMES[e.label] if e.task == "classification" else e.answer for e in examples]
    completions = [template_parts(processor, answer)[1] for answer in answers]
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in completions]
    # One batch per task: the head sees the positions predicting some row's answer token, nothing else.
    (_, classification, _), (_, reasoning, _) = head.shapes
    assert max(lengths[:2]) <= classification <= sum(lengths[:2]) and reasoning == max(lengths[2:])
    for score, completion in zip(scores, completions):
        assert score.text == completion and all(0 < p <= 1 for p in score.probs)
        # Near-uniform over the whole 150k vocabulary (more than log 640, the tokenizer's size).
        assert all(math.log(len(tokenizer)) < h <= math.log(vocab) + 1e-3 for h in score.entropies)
    # The same numbers as from the full [rows, sequence, vocab] logits, which are not computed above.
    monkeypatch.setattr(teacher_forcing, "_logits_to_keep_supported", lambda model: False)
    with LMHeadCalls(model) as head:
        full = teacher_force(model, processor, examples, NAMES, batch_size=2)
    assert head.shapes[0][1] > classification + 10
    for kept, reference in zip(scores, full):
        assert kept.token_ids == reference.token_ids
        assert kept.probs == pytest.approx(reference.probs, rel=1e-4)


def test_scoring_refuses_a_generation_prompt_that_answered_rows_do_not_have(architecture):
    processor = AutoProcessor.from_pretrained(tiny_model_dir(architecture))
    answers = answer_token_ids(processor, NAMES)
    assert len(answers) == len(NAMES) and all(answers)
    # A generation prompt the rendering of an answered conversation lacks: training reads the answer after the
    # assistant's turn starts, scoring would read it after 'Answer: '.
    processor.chat_template += "{%- if add_generation_prompt -%}{{- 'Answer: ' -}}{%- endif -%}"
    with pytest.raises(ValueError, match="does not write the answer .* after its generation prompt"):
        answer_token_ids(processor, NAMES)


# --------------------------------------------------------------------------- analyses


@pytest.mark.slow
def test_the_four_analyses_run(architecture, tmp_path, capsys):
    adapter = trained_adapter(architecture)
    common = ["--dataset", str(dataset_dir()), "--max-images", "1", "--max-new-tokens", "8", "--batch-size", "8"]
    runs = {
        "losses": ["--run", str(adapter.parent)],
        "class-probs": ["--adapter", str(adapter), "--with-base", *common],
        "token-probs": ["--adapter", str(adapter), "--chains", "teacher", "self", "--self-filter", "all"]
        + ["--domains", "rot0", *common],
        "entropy": ["--before", str(tiny_model_dir(architecture)), "--after", str(adapter), "--top", "3"]
        + ["--min-count", "1", *common],
    }
    for analysis, options in runs.items():
        out = tmp_path / analysis
        assert main(["analyze", analysis, *options, "--out", str(out)]) == 0, analysis
        figures = json.loads((out / "manifest.json").read_text())["figures"]
        assert figures and all(Path(f["png"]).is_file() and Path(f["data"]).is_file() for f in figures), analysis
    capsys.readouterr()
    logged = [e for e in json.loads((adapter.parent / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(_rows(tmp_path / "losses" / "losses.csv")) == len(logged) > 0
    class_probs = _rows(tmp_path / "class-probs" / "class_probs.csv")
    assert {r["model"] for r in class_probs} == {"base", adapter.name}
    assert len(class_probs) == 2 * 4  # two models, one image per domain
    assert all(0 < float(r[f"p_{condition}"]) <= 1 for r in class_probs for condition in ("direct", "teacher_chain"))
    token_probs = _rows(tmp_path / "token-probs" / "token_probs.csv")
    assert {r["chains"] for r in token_probs} == {"teacher", "self"}
    assert all(0 < float(r["prob"]) <= 1 for r in token_probs)
    assert _rows(tmp_path / "entropy" / "entropy_by_token.csv")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
