"""Share a trained adapter on the Hub: the adapter, its ``rdmldg_config.json``, results and a model card.

The card is the project's one model card (:func:`rdmldg_hf.cards.build_model_card`): PEFT's metadata
(``base_model``, ``library_name: peft``), ``datasets``, ``pipeline_tag`` and a ``model-index`` of the
accuracies of ``results.json`` (an evaluation's per-domain accuracies or a SARR run's final stage), in percent.
Everything is uploaded in one commit through ``HfApi.create_commit``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from huggingface_hub import ModelCard

from ..cards import RESULTS_NAME, build_model_card, domain_accuracies, hub_id, read_results
from ..data.hub_layout import DEFAULT_REPO_ID, check_repo_id
from ..models import ADAPTER_CONFIG_NAME, RUN_CONFIG_NAME, RunConfig

__all__ = ["RESULTS_NAME", "domain_accuracies", "is_repo_id", "model_card", "upload_files", "push_adapter"]

# Training-state files a run folder holds that a shared model does not need.
_SKIP = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "README.md"}


def is_repo_id(name: str | None) -> bool:
    """Whether ``name`` is a valid Hub repo id ``ORG/NAME`` (and no local path)."""
    return hub_id(name) is not None and str(name).count("/") == 1


def model_card(
    run: RunConfig,
    repo_id: str,
    base_model: str,
    results: Mapping[str, Any] | None = None,
    dataset: str = DEFAULT_REPO_ID,
    token: str | None = None,
) -> ModelCard:
    """The model card of a pushed model: :func:`rdmldg_hf.cards.build_model_card` with the accuracies of
    ``results`` (a ``results.json`` record), on the dataset it names (else ``dataset``)."""
    return build_model_card(
        run,
        repo_id,
        base_model=base_model,
        dataset=(results or {}).get("dataset") or dataset,
        results=results,
        secrets=[token or ""],
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
        results: a ``results.json`` (path or record: an evaluation's or a SARR run's) for the ``model-index``;
            default: the folder's own, if any.
        base_model: the base model's Hub id, when the adapter config names a local folder; it is
            written into the uploaded ``adapter_config.json`` so that the repo loads anywhere.
        dataset: the dataset repo the card names.
        private, token: as in ``HfApi.create_repo`` (the token is never printed).

    Raises:
        FileNotFoundError: the folder is not an rdmldg adapter output.
        ValueError: a bad repo id, a base model that is a local path, results that hold no accuracies.
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
    record = read_results(results)
    card = model_card(run, repo_id, base, record, dataset, token)
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
