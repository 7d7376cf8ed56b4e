"""Shared helpers of the generation and SARR tests: tiny datasets and scripted model outputs."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping

from datasets import Dataset

from helpers import session_folder
from rdmldg_hf.benchmarks import EMBEDDED_BENCHMARK, get_benchmark
from rdmldg_hf.chains import render_chain
from rdmldg_hf.data.schema import dataset_features
from rdmldg_hf.embedded import embedded_chains, embedded_source_images
from rdmldg_hf.testing import build_tiny_model
from rdmldg_hf.trainers import SARRConfig

BENCHMARK = get_benchmark(EMBEDDED_BENCHMARK)
CLASSES = BENCHMARK.class_names


@functools.lru_cache(maxsize=None)
def phrase_model_dir() -> Path:
    """The session's tiny llava (``test`` preset) whose tokenizer holds whole phrases (vocabulary 1,024), so that
    its chains are short enough for SARR rounds; built once."""
    return build_tiny_model(session_folder("sarr-phrases"), preset="test", phrase_tokens=True, vocab_size=1024)


def tiny_rows(per_domain: int = 4, domains: tuple[str, ...] | None = None, chains: bool = True) -> Dataset:
    """The first ``per_domain`` embedded images of each domain, in the dataset schema."""
    domains = domains or BENCHMARK.domains
    everything = embedded_source_images()
    picked = []
    for domain in domains:
        picked += [image for image in everything if image.domain == domain][:per_domain]
    records = embedded_chains(picked) if chains else {}
    rows = []
    for image in picked:
        record = records.get(image.image_id)
        rows.append(
            {
                "image": {"bytes": image.data, "path": None},
                "label": image.label,
                "domain": image.domain,
                "image_id": image.image_id,
                "reasoning": record.reasoning if record else None,
                "chain_source": record.chain_source if record else None,
                "prompt_version": record.prompt_version if record else None,
                "num_candidates": None,
                "num_valid": None,
                "num_correct": None,
                "rejection_reasons": [],
            }
        )
    return Dataset.from_list(rows, features=dataset_features(BENCHMARK))


def image_key(image: Any) -> str:
    """A stable key of a decoded image's pixels."""
    return hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()


def chain_for(class_name: str) -> str:
    """A valid five-stage chain concluding ``class_name``."""
    return render_chain("plan", "a digit", f"it looks like {class_name}", "checked", class_name)


def scripted_reply(dataset: Dataset, replies: Mapping[str, Any]) -> Callable[[Any, Any], Any]:
    """A ScriptedBackend reply function: image_id -> text(s), looked up by the image's pixels."""
    by_key = {image_key(row["image"]): replies[row["image_id"]] for row in dataset if row["image_id"] in replies}

    def reply(messages: Any, image: Any) -> Any:
        return by_key[image_key(image)]

    return reply


def sarr_test_config(out: Any, **overrides: Any) -> SARRConfig:
    """A CPU SARR config for tests: one round of two steps, no saving, no reporting."""
    settings = dict(
        output_dir=str(out),
        num_rounds=1,
        max_steps=2,
        per_device_train_batch_size=4,
        relabel_batch_size=4,
        relabel_max_new_tokens=8,
        save_strategy="no",
        report_to="none",
        activation_checkpointing=False,
        bf16=False,
        disable_tqdm=True,
        logging_steps=1,
    )
    settings.update(overrides)
    return SARRConfig(**settings)
