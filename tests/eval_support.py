"""Shared pieces of the evaluation tests: a tiny LoRA adapter trained on the spot, images, datasets."""

from __future__ import annotations

import functools
import io
import shutil
import tempfile
from pathlib import Path

from datasets import Dataset

from mtct_support import config, load_tiny, tiny_dataset, tiny_model_dir
from rdmldg_hf.data.build import build_dataset
from rdmldg_hf.models import default_lora_config
from rdmldg_hf.protocol import lodo_split
from rdmldg_hf.trainers import MTCTTrainer

BASE_REPO = "rdmldg-tests/tiny-base"


@functools.lru_cache(maxsize=None)
def trained_adapter(architecture: str = "llava") -> Path:
    """A LoRA adapter (held-out rot30) trained for a few MTCT steps on the tiny model, saved once per session.

    The trainer's state (``trainer_state.json``, the logged losses) is saved in the folder's parent.
    """
    out = Path(tempfile.mkdtemp(prefix=f"rdmldg-eval-adapter-{architecture}-"))
    model, processor = load_tiny(architecture)
    args = config(out / "train", max_steps=4, per_device_train_batch_size=8, learning_rate=5e-3)
    splits = lodo_split(tiny_dataset(24), "rot30", holdout_fraction=0.0)
    trainer = MTCTTrainer(
        model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=processor,
        peft_config=default_lora_config(r=4),
        split_record=splits.record(),
    )
    trainer.train()
    trainer.save_model(str(out / "adapter"))
    trainer.state.save_to_json(str(out / "trainer_state.json"))
    return out / "adapter"


def adapter_copy(target: Path, architecture: str = "llava") -> Path:
    """A private copy of the trained adapter folder (tests may edit it)."""
    return Path(shutil.copytree(trained_adapter(architecture), target))


def png(color: tuple[int, int, int], size: int = 32) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=None)
def embedded_folder() -> Path:
    """The embedded benchmark built once per session as a Hub-layout folder."""
    out = Path(tempfile.mkdtemp(prefix="rdmldg-eval-data-")) / "data"
    build_dataset("rotdigits", out)
    return out


def rows(n: int = 16) -> Dataset:
    return tiny_dataset(n)


__all__ = [
    "BASE_REPO",
    "trained_adapter",
    "adapter_copy",
    "png",
    "embedded_folder",
    "rows",
    "tiny_model_dir",
    "load_tiny",
]
