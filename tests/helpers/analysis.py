"""Outputs of a tiny MTCT/SARR-shaped run, built once per test session for the analysis tests.

The run folder mimics a SARR output: ``stages/mtct/final`` and ``stages/round-1/final``
(adapters with ``rdmldg_config.json``), each stage's ``trainer_state.json``, and the final
adapter at the top. The dataset is a small slice of the embedded benchmark (real digits,
template chains) in the Hub layout.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from datasets import load_dataset

from helpers import session_folder
from helpers.mtct import config, load_tiny, tiny_model_dir
from rdmldg_hf.data.build import build_dataset
from rdmldg_hf.embedded import embedded_source_images
from rdmldg_hf.models import default_lora_config
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.trainers import MTCTTrainer

PER_DOMAIN = 6


@functools.lru_cache(maxsize=None)
def dataset_dir() -> Path:
    """A Hub-layout folder with config ``rotdigits``: ``PER_DOMAIN`` images per domain."""
    images, seen = [], {}
    for image in embedded_source_images():
        if seen.get(image.domain, 0) < PER_DOMAIN:
            seen[image.domain] = seen.get(image.domain, 0) + 1
            images.append(image)
    out = session_folder("analysis-data") / "rotdigits"
    build_dataset("rotdigits", out, images=images)
    return out


def recipe_args(out: Path, holdout_fraction: float, *extra: str) -> list[str]:
    """A tiny recipe run's arguments: this dataset and the tiny model, rot30 held out, no checkpoints, CPU-safe."""
    return [
        *("--dataset_name", str(dataset_dir()), "--dataset_config", "rotdigits"),
        *("--model_name_or_path", str(tiny_model_dir()), "--output_dir", str(out)),
        *("--test_domain", "rot30", "--holdout_fraction", str(holdout_fraction)),
        *("--save_strategy", "no", "--eval_strategy", "no", "--bf16", "false", "--activation_checkpointing", "false"),
        *("--report_to", "none", "--dataloader_num_workers", "0", "--disable_tqdm", "true", *extra),
    ]


@functools.lru_cache(maxsize=None)
def run_dir() -> Path:
    """Two short MTCT stages with LoRA (the second continues the first), saved SARR-style."""
    splits = lodo_split(load_dataset(str(dataset_dir()), "rotdigits"), "rot30", holdout_fraction=0.0)
    root = session_folder("analysis-run")
    model, processor = load_tiny()
    for stage in ("mtct", "round-1"):
        stage_dir = root / "stages" / stage
        args = config(
            stage_dir,
            max_steps=4,
            per_device_train_batch_size=6,
            learning_rate=1e-2,
            logging_steps=1,
        )
        peft = default_lora_config(r=4) if stage == "mtct" else None
        torch.manual_seed(0)
        trainer = MTCTTrainer(
            model,
            args=args,
            train_dataset=splits.train,
            processing_class=processor,
            peft_config=peft,
            split_record=splits.record(),
        )
        trainer.train()
        trainer.save_model(str(stage_dir / "final"))
        trainer.save_state()
        model = trainer.model
    trainer.save_model(str(root))
    return root
