"""Shared pieces of the evaluation tests: a tiny LoRA adapter trained once per session, images, rows."""

from __future__ import annotations

import functools
import io
import shutil
from pathlib import Path

from datasets import Dataset

from helpers import session_folder
from helpers.mtct import config, load_tiny, lodo_trainer, tiny_dataset
from rdmldg_hf.models import default_lora_config

BASE_REPO = "rdmldg-tests/tiny-base"


@functools.lru_cache(maxsize=None)
def trained_adapter(architecture: str = "llava") -> Path:
    """A LoRA adapter (held-out rot30) trained for a few MTCT steps on the tiny model, saved once per session.

    The trainer's state (``trainer_state.json``, the logged losses) is saved in the folder's parent.
    """
    out = session_folder(f"eval-adapter-{architecture}")
    model, processor = load_tiny(architecture)
    args = config(out / "train", max_steps=4, per_device_train_batch_size=8, learning_rate=5e-3)
    lora = default_lora_config(r=4)
    trainer = lodo_trainer(model, processor, args, tiny_dataset(24), validate=True, peft_config=lora)
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


def rows(n: int = 16) -> Dataset:
    return tiny_dataset(n)
