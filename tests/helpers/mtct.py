"""Tiny data and models for the MTCT tests, built on the spot (no builder, no network)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage

from helpers import session_folder
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.testing import build_tiny_model
from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer

BENCHMARK = get_benchmark("rotdigits")
# Image tokens of one 32x32 image in the tiny models: 16 patches (InternVL's pixel shuffle merges them 4 to 1).
IMAGE_TOKENS = {"llava": 16, "qwen2_vl": 16, "qwen2_5_vl": 16, "internvl": 4}


def chain_for(label: int, words: int) -> str:
    """A valid chain whose length varies with ``words`` (so T_i differ across images)."""
    name = BENCHMARK.class_names[label]
    return render_chain(
        "look then decide",
        "a digit " + " ".join(["stroke"] * words),
        f"the strokes match {name}",
        "checked",
        name,
    )


def tiny_dataset(n: int = 24, without_chain: tuple[int, ...] = (1,), seed: int = 0, reasoning: bool = True) -> Dataset:
    """``n`` random 32x32 images over the four rotdigits domains; images in ``without_chain`` have no chain."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label, domain = (3 * i) % 10, BENCHMARK.domains[i % 4]
        row = {
            "image": PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
            "label": label,
            "domain": domain,
            "image_id": f"{domain}/{label}/{i:03d}.png",
        }
        if reasoning:
            row["reasoning"] = None if i in without_chain else chain_for(label, 1 + 12 * (i % 4))
        rows.append(row)
    features = {
        "image": Image(),
        "label": ClassLabel(names=list(BENCHMARK.classes)),
        "domain": Value("string"),
        "image_id": Value("string"),
    }
    if reasoning:
        features["reasoning"] = Value("string")
    return Dataset.from_list(rows, features=Features(features))


def template_parts(processor, answer: str) -> tuple[str, str]:
    """The generation prompt that ends every prompt, and the completion the chat template writes for ``answer``.

    The completion is what training labels and teacher forcing score: the answer, the end-of-turn token
    and whatever the template writes after it (a newline in Qwen2-style templates).
    """
    user = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    bare = processor.apply_chat_template(user, tokenize=False)
    prompt = processor.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    assert prompt.startswith(bare) and full.startswith(prompt)
    return prompt[len(bare) :], full[len(prompt) :]


@functools.lru_cache(maxsize=None)
def tiny_model_dir(architecture: str = "llava") -> Path:
    """A tiny model folder (``test`` preset), built once per test session."""
    return build_tiny_model(session_folder(f"mtct-{architecture}"), architecture, preset="test")


def load_tiny(architecture: str = "llava"):
    torch.manual_seed(0)
    return load_model_and_processor(tiny_model_dir(architecture))


def config(tmp_path, **overrides) -> MTCTConfig:
    """A test config: fp32 on every device (MTCTConfig turns bf16 on where a GPU supports it; the tests' tolerances
    assume fp32), no checkpointing, no saving, no reporting."""
    values = dict(
        output_dir=str(tmp_path),
        bf16=False,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        activation_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_steps=1,
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return MTCTConfig(**values)


def lodo_trainer(
    model, processor, args: MTCTConfig, rows: Dataset, *, holdout_fraction=0.0, validate=False, peft_config=None
) -> MTCTTrainer:
    """An MTCT trainer on ``rows`` with rot30 held out (its split recorded); ``validate`` evaluates on the
    training domains' out-part."""
    splits = lodo_split(rows, "rot30", holdout_fraction=holdout_fraction)
    return MTCTTrainer(
        model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.validation if validate else None,
        processing_class=processor,
        peft_config=peft_config,
        split_record=splits.record(),
    )
