"""Share a trained adapter on the Hub: the adapter, its ``rdmldg_config.json``, results and a model card.

The card's metadata is PEFT's (``base_model``, ``library_name: peft``) plus ``datasets``,
``pipeline_tag`` and a ``model-index`` holding the per-domain accuracies of ``results.json`` in percent
(huggingface_hub's ``ModelCardData``; entries from :func:`rdmldg_hf.models.accuracy_result`).
Everything is uploaded in one commit through ``HfApi.create_commit``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..benchmarks import get_benchmark
from ..data.hub_layout import DEFAULT_REPO_ID, check_repo_id
from ..models import ADAPTER_CONFIG_NAME, RUN_CONFIG_NAME, RunConfig, accuracy_result

__all__ = ["RESULTS_NAME", "domain_accuracies", "is_repo_id", "model_card", "upload_files", "push_adapter"]

RESULTS_NAME = "results.json"
# Training-state files a run folder holds that a shared model does not need.
_SKIP = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "README.md"}

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A LoRA adapter for [{{ base_model }}]({{ base_url }}) trained with
`rdmldg_hf` (RD-MLDG: reasoning-driven multimodal LLMs for
domain generalization), method **{{ method }}**, on benchmark **{{ benchmark }}**.

- Trained on domains: {{ domains }}
- Held-out domain: {{ test_domain }}
- Classes ({{ num_classes }}): {{ classes }}
- Prompt version: `{{ prompt_version }}`

## Results

{{ results_table }}

## How to use

```python
from rdmldg_hf import DGClassifier

clf = DGClassifier.from_pretrained("{{ repo_id }}")
clf.predict([image], mode="direct")      # class and probabilities
clf.predict([image], mode="reasoning")   # class and its five-stage chain
```

With PEFT alone:

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

base = AutoModelForImageTextToText.from_pretrained("{{ base_model }}")
model = PeftModel.from_pretrained(base, "{{ repo_id }}")
processor = AutoProcessor.from_pretrained("{{ repo_id }}")
```

Evaluate it: `rdmldg eval --adapter {{ repo_id }} --dataset {{ dataset }} --config {{ benchmark }} --mode direct`.
"""


def domain_accuracies(results: Mapping[str, Any]) -> dict[str, float]:
    """Domain -> accuracy of a ``results.json`` record (``metrics.per_domain``)."""
    metrics = results.get("metrics") or {}
    per_domain = metrics.get("per_domain")
    if not isinstance(per_domain, Mapping) or not per_domain:
        raise ValueError(
            f"{RESULTS_NAME} holds no per-domain accuracies (metrics.per_domain); write it with "
            "`rdmldg eval --output ...` or recipes/lodo.py."
        )
    return {str(domain): float(value) for domain, value in per_domain.items()}


def is_repo_id(name: str | None) -> bool:
    """Whether ``name`` is a valid Hub repo id ``ORG/NAME`` (and no local path)."""
    if not name or os.path.exists(str(name)) or len(str(name).split("/")) != 2:
        return False
    try:
        validate_repo_id(str(name))
    except HFValidationError:
        return False
    return True


def model_card(
    run: RunConfig,
    repo_id: str,
    base_model: str,
    results: Mapping[str, Any] | None = None,
    dataset: str = DEFAULT_REPO_ID,
) -> ModelCard:
    """The model card of an adapter: PEFT metadata, ``model-index`` from ``results``, usage."""
    benchmark = get_benchmark(run.benchmark) if run.benchmark else None
    mode = (results or {}).get("mode", "direct")
    eval_results = []
    rows = []
    if results is not None:
        accuracies = domain_accuracies(results)
        for domain, value in accuracies.items():
            eval_results.append(
                accuracy_result(
                    value,
                    task_type="image-classification",
                    task_name="Domain generalization (held-out domain)"
                    if domain == run.test_domain
                    else "Image classification",
                    dataset_type=str(results.get("dataset") or dataset),
                    dataset_name=f"{benchmark.title if benchmark else run.benchmark} ({domain})",
                    dataset_config=str(results.get("config") or run.benchmark),
                    dataset_split=domain,
                    metric_name=f"Accuracy ({mode})",
                )
            )
            held_out = " (held out)" if domain == run.test_domain else ""
            rows.append(f"| {domain}{held_out} | {100 * value:.2f} |")
        invalid = (results.get("metrics") or {}).get("invalid_rate")
        if invalid is not None:
            rows.append(f"| invalid-output rate | {100 * float(invalid):.2f} |")
    table = "| Domain | Accuracy (%) |\n|---|---|\n" + "\n".join(rows) if rows else "No results were given."
    name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        base_model=base_model,
        library_name="peft",
        datasets=[str((results or {}).get("dataset") or dataset)],
        pipeline_tag="image-text-to-text",
        tags=["rdmldg", "domain-generalization", "lora", "peft", run.method],
        metrics=["accuracy"],
        model_name=name,
        eval_results=eval_results or None,
        rdmldg={
            "method": run.method,
            "benchmark": run.benchmark,
            "classes": list(run.classes),
            "test_domain": run.test_domain,
            "domains": list(run.domains),
            "prompt_version": run.prompt_version,
            "mode": mode,
        },
    )
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        model_name=name,
        base_model=base_model,
        base_url=f"https://huggingface.co/{base_model}",
        method=run.method,
        benchmark=run.benchmark,
        domains=", ".join(run.domains) or "-",
        test_domain=run.test_domain or "none",
        num_classes=len(run.classes),
        classes=", ".join(run.classes),
        prompt_version=run.prompt_version,
        results_table=table,
        repo_id=repo_id,
        dataset=(results or {}).get("dataset") or dataset,
    )


def upload_files(folder: Path) -> list[Path]:
    """The files of an output folder a shared adapter needs (top level; no checkpoints or training state)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _SKIP and not p.name.startswith("."))


def push_adapter(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    results: str | os.PathLike | Mapping[str, Any] | None = None,
    base_model: str | None = None,
    dataset: str = DEFAULT_REPO_ID,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload rdmldg adapter",
) -> str:
    """Push an adapter folder with its model card; returns the commit URL.

    Args:
        folder: an rdmldg output (``adapter_config.json``, weights, processor, ``rdmldg_config.json``).
        repo_id: ``ORG/NAME`` of the model repo (created if missing).
        results: a ``results.json`` (path or record) for the ``model-index``; default: the folder's own, if any.
        base_model: the base model's Hub id, when the adapter config names a local folder; it is
            written into the uploaded ``adapter_config.json`` so that the repo loads anywhere.
        dataset: the dataset repo the card names.
        private, token: as in ``HfApi.create_repo`` (the token is never printed).

    Raises:
        FileNotFoundError: the folder is not an rdmldg adapter output.
        ValueError: a bad repo id, a base model that is a local path, results without per-domain accuracies.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    root = Path(folder)
    for needed in (ADAPTER_CONFIG_NAME, RUN_CONFIG_NAME):
        if not (root / needed).is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} holds no {needed}: push the output folder of an rdmldg "
                "training run with a PEFT adapter."
            )
    check_repo_id(repo_id)
    run = RunConfig.load(root)
    adapter_config = json.loads((root / ADAPTER_CONFIG_NAME).read_text())
    base = base_model or adapter_config.get("base_model_name_or_path") or run.base_model
    if not is_repo_id(base):
        raise ValueError(
            f"The adapter's base model is {base!r}, a local path: others could not load it. "
            "Pass the base model's Hub id with --base-model ORG/NAME."
        )
    if results is None and (root / RESULTS_NAME).is_file():
        results = root / RESULTS_NAME
    record = json.loads(Path(results).read_text()) if isinstance(results, (str, os.PathLike)) else results
    card = model_card(run, repo_id, base, record, dataset)
    adapter_config["base_model_name_or_path"] = base
    operations = [
        CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
        for p in upload_files(root)
        if p.name not in (ADAPTER_CONFIG_NAME, RESULTS_NAME)
    ]
    operations.append(CommitOperationAdd(ADAPTER_CONFIG_NAME, (json.dumps(adapter_config, indent=2) + "\n").encode()))
    if record is not None:
        operations.append(CommitOperationAdd(RESULTS_NAME, (json.dumps(record, indent=2) + "\n").encode()))
    operations.append(CommitOperationAdd("README.md", str(card).encode()))
    api = HfApi(token=token, library_name="rdmldg_hf")
    repo_id = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True).repo_id
    info = api.create_commit(repo_id, operations=operations, commit_message=commit_message, repo_type="model")
    return str(getattr(info, "commit_url", info))
