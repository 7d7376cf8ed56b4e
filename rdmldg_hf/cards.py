"""Model cards: one builder for every model the project trains or shares (MTCT, SARR, ``rdmldg push``).

A card is TRL's (``trl.trainer.utils.generate_model_card``: the trainer, the paper, framework versions,
citations) in the project's one shape:

- metadata: ``base_model`` (a Hub id; left out for a local folder, as TRL does), ``library_name`` (``peft``
  for an adapter, else ``transformers``), ``datasets``, ``tags``, ``pipeline_tag: image-text-to-text``,
  ``metrics: [accuracy]``, ``rdmldg`` (the run record: method, benchmark, classes, domains, held-out domain,
  prompt version) and, when accuracies are known, a ``model-index`` whose every entry comes from
  :func:`rdmldg_hf.models.accuracy_result`: metric type ``accuracy`` named ``Accuracy (<mode>)``, in percent;
- text: what was trained, a results table, and one usage section (``DGClassifier``, then PEFT or
  transformers alone, then ``rdmldg eval``) in place of TRL's text-generation quick start.

Accuracies come from a ``results.json`` (:func:`results_accuracies`: an evaluation's or a SARR run's) or from
a stage's metrics (:func:`stage_accuracies`). Known secrets and token-shaped strings never reach a card.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from huggingface_hub import EvalResult, ModelCard

from .benchmarks import get_benchmark
from .data.hub_layout import DEFAULT_REPO_ID
from .models import RunConfig, accuracy_result

logger = logging.getLogger(__name__)

__all__ = [
    "PAPER",
    "PIPELINE_TAG",
    "RESULTS_NAME",
    "SOURCE_HOLDOUT",
    "Accuracy",
    "hub_id",
    "read_results",
    "domain_accuracies",
    "results_accuracies",
    "stage_accuracies",
    "card_eval_results",
    "build_model_card",
]

RESULTS_NAME = "results.json"
PIPELINE_TAG = "image-text-to-text"
SOURCE_HOLDOUT = "source-holdout"  # the split name of the training domains' holdout in a card
PAPER = {
    "title": "Reasoning-Driven Multimodal LLMs for Domain Generalization",
    "id": "2602.23777",
    "citation": (
        "@inproceedings{xu2026rdmldg,\n"
        "    title        = {{Reasoning-Driven Multimodal LLMs for Domain Generalization}},\n"
        "    author       = {Xu and Wang and Jiang and Li and Cheng and Wang},\n"
        "    booktitle    = {International Conference on Learning Representations (ICLR)},\n"
        "    year         = 2026,\n"
        "    eprint       = {arXiv:2602.23777}\n"
        "}"
    ),
}
_TRAINER_NAMES = {"mtct": "MTCT", "sarr": "SARR"}
_TAGS = ("trl", "rdmldg", "domain-generalization")
# Stage metrics (as the stage evaluation names them): metric -> (part, prediction mode, its invalid rate).
_STAGE_METRICS = {
    "heldout_direct": ("heldout", "direct", None),
    "heldout_reasoning": ("heldout", "reasoning", "heldout_reasoning_invalid"),
    "source_holdout_direct": (SOURCE_HOLDOUT, "direct", None),
}


@dataclass(frozen=True)
class Accuracy:
    """One accuracy a card reports: a fraction in [0, 1] on ``split`` (a domain, or :data:`SOURCE_HOLDOUT`)
    with answers in ``mode`` (``direct``, ``direct-generate``, ``reasoning``), and its invalid-output rate."""

    split: str
    value: float
    mode: str = "direct"
    invalid_rate: float | None = None


def hub_id(name: str | os.PathLike | None) -> str | None:
    """``name`` when it reads as a Hub repo id (``ORG/NAME`` or ``NAME``, not an existing local path), else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or os.path.exists(name):
        return None
    try:
        validate_repo_id(str(name))
    except HFValidationError:
        return None
    return str(name)


def read_results(results: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``results.json`` record from a path or a mapping (None stays None).

    Raises:
        ValueError: naming the file, when it is not a JSON object.
    """
    if results is None or isinstance(results, Mapping):
        return None if results is None else dict(results)
    try:
        record = json.loads(Path(results).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(results)!r} is not valid JSON ({error}); give the results.json a run wrote.") from None
    if not isinstance(record, dict):
        raise ValueError(f"{str(results)!r} holds a JSON {type(record).__name__}, not a results.json object.")
    return record


def domain_accuracies(results: Mapping[str, Any]) -> dict[str, float]:
    """Domain -> accuracy of an evaluation's ``results.json`` record (``metrics.per_domain``).

    Raises:
        ValueError: when the record holds no per-domain accuracies.
    """
    metrics = results.get("metrics") or {}
    per_domain = metrics.get("per_domain")
    if not isinstance(per_domain, Mapping) or not per_domain:
        raise ValueError(
            f"{RESULTS_NAME} holds no per-domain accuracies (metrics.per_domain) and is no SARR run's summary "
            "(stages, final); write it with `rdmldg eval --output ...`, recipes/lodo.py or recipes/sarr.py."
        )
    return {str(domain): float(value) for domain, value in per_domain.items()}


def stage_accuracies(metrics: Mapping[str, Any], test_domain: str | None) -> list[Accuracy]:
    """The accuracies of a training stage's metrics (``heldout_direct``, ``heldout_reasoning``,
    ``source_holdout_direct``; those not measured are left out). ``heldout`` is the split ``test_domain``."""
    found = []
    for key, (part, mode, invalid_key) in _STAGE_METRICS.items():
        split = test_domain if part == "heldout" else part
        if metrics.get(key) is not None and split:
            invalid = metrics.get(invalid_key) if invalid_key else None
            found.append(Accuracy(split, float(metrics[key]), mode, None if invalid is None else float(invalid)))
    return found


def results_accuracies(results: Mapping[str, Any], test_domain: str | None) -> list[Accuracy]:
    """The accuracies of a ``results.json``: an evaluation's (``metrics.per_domain``, in its ``mode``) or a
    SARR run's (its ``final`` stage's metrics).

    Raises:
        ValueError: when the record is neither (says how to write one).
    """
    if "final" in results and "stages" in results:
        return stage_accuracies(results.get("final") or {}, results.get("test_domain") or test_domain)
    invalid = (results.get("metrics") or {}).get("invalid_per_domain") or {}
    mode = str(results.get("mode") or "direct")
    return [
        Accuracy(domain, value, mode, None if invalid.get(domain) is None else float(invalid[domain]))
        for domain, value in domain_accuracies(results).items()
    ]


def card_eval_results(
    accuracies: Sequence[Accuracy], run: RunConfig, dataset: str, dataset_config: str | None = None
) -> list[EvalResult]:
    """The ``model-index`` entries of ``accuracies``: one metric (``accuracy``, named ``Accuracy (<mode>)``,
    in percent) per split and mode, the held-out domain's under the task "Domain generalization"."""
    title = _title(run)
    return [
        accuracy_result(
            accuracy.value,
            task_type="image-classification",
            task_name="Domain generalization (held-out domain)"
            if accuracy.split == run.test_domain
            else "Image classification (training domains)",
            dataset_type=dataset,
            dataset_name=f"{title} ({accuracy.split})",
            dataset_config=dataset_config or run.benchmark,
            dataset_split=accuracy.split,
            metric_name=f"Accuracy ({accuracy.mode})",
        )
        for accuracy in accuracies
    ]


def _title(run: RunConfig) -> str:
    return get_benchmark(run.benchmark).title if run.benchmark else "custom dataset"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _about_section(run: RunConfig, title: str) -> str:
    weights = "A LoRA adapter" if run.adapter else "Full weights"
    return "\n".join(
        [
            "## RD-MLDG",
            "",
            f"{weights} trained with `rdmldg_hf` (RD-MLDG: reasoning-driven multimodal LLMs for domain "
            f"generalization), method **{_TRAINER_NAMES.get(run.method, run.method)}**, on **{title}**.",
            "",
            f"- Trained on domains: {', '.join(run.domains) or '-'}",
            f"- Held-out domain: {run.test_domain or 'none'}",
            f"- Classes ({len(run.classes)}): {', '.join(run.class_names or run.classes)}",
            f"- Prompt version: `{run.prompt_version}`",
        ]
    )


def _results_section(accuracies: Sequence[Accuracy], test_domain: str | None) -> str:
    if not accuracies:
        return "## Results\n\nNo results were given."
    rows = [
        f"| {a.split}{' (held out)' if a.split == test_domain else ''} | {a.mode} | {_percent(a.value)} "
        f"| {_percent(a.invalid_rate)} |"
        for a in accuracies
    ]
    header = "| Split | Answer | Accuracy (%) | Invalid outputs (%) |\n|---|---|---|---|"
    return "## Results\n\n" + header + "\n" + "\n".join(rows)


def _usage_section(run: RunConfig, repo_id: str, base_model: str | None, dataset: str) -> str:
    lines = [
        "## How to use",
        "",
        "```python",
        "from rdmldg_hf import DGClassifier",
        "",
        f'clf = DGClassifier.from_pretrained("{repo_id}")',
        'clf.predict([image], mode="direct")      # class and probabilities',
        'clf.predict([image], mode="reasoning")   # class and its five-stage chain',
        "```",
        "",
    ]
    if run.adapter:
        base = f'"{base_model}"' if base_model else "BASE_MODEL  # the model this adapter was trained on"
        lines += [
            "With PEFT alone:",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForImageTextToText, AutoProcessor",
            "",
            f"base = AutoModelForImageTextToText.from_pretrained({base})",
            f'model = PeftModel.from_pretrained(base, "{repo_id}")',
            f'processor = AutoProcessor.from_pretrained("{repo_id}")',
            "```",
        ]
    else:
        lines += [
            "With transformers alone:",
            "",
            "```python",
            "from transformers import AutoModelForImageTextToText, AutoProcessor",
            "",
            f'model = AutoModelForImageTextToText.from_pretrained("{repo_id}")',
            f'processor = AutoProcessor.from_pretrained("{repo_id}")',
            "```",
        ]
    flag = "--adapter" if run.adapter else "--model"
    config = run.benchmark or "CONFIG"
    lines += ["", f"Evaluate it: `rdmldg eval {flag} {repo_id} --dataset {dataset} --config {config} --mode direct`."]
    return "\n".join(lines)


def _replace_section(text: str, heading: str, new: str) -> str:
    """``text`` with the section under ``heading`` (up to the next heading of its level or above) replaced by
    ``new``; ``new`` goes before the first such heading when there is no such section."""
    level = heading.split(" ", 1)[0]
    stop = rf"(?=^#{{1,{len(level)}}} |\Z)"
    pattern = re.compile(rf"^{re.escape(heading)}\s*$.*?{stop}", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: new.rstrip() + "\n\n", text, count=1)
    first = re.search(rf"^#{{2,{len(level)}}} ", text, re.MULTILINE)
    at = first.start() if first else len(text)
    return text[:at] + new.rstrip() + "\n\n" + text[at:]


def _insert_before(text: str, heading: str, new: str) -> str:
    """``text`` with ``new`` inserted before the line ``heading`` (appended when it has none)."""
    at = text.find("\n" + heading)
    at = len(text) if at < 0 else at + 1
    return text[:at] + new.rstrip() + "\n\n" + text[at:]


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (card metadata: strings, lists, mappings) with every secret redacted."""
    from .teacher.redaction import redact

    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    return value


def _redacted(card: ModelCard, secrets: Iterable[str]) -> ModelCard:
    """``card`` with the given and the known secrets (``HF_TOKEN``, the saved login) and token-shaped strings
    redacted, in its metadata and its text."""
    from huggingface_hub import ModelCardData

    from .teacher.redaction import known_secrets, redact

    known = [*secrets, *known_secrets(None)]
    data, text = card.data.to_dict(), card.text
    clean = _scrub(data, known)
    if clean != data:
        card.data = ModelCardData(**clean)
    card.text = redact(text, known)
    if clean != data or card.text != text:
        logger.warning("A secret (a token, or a string shaped like one) was redacted from the model card.")
    return card


def build_model_card(
    run: RunConfig,
    hub_model_id: str,
    *,
    model_name: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    accuracies: Sequence[Accuracy] = (),
    results: Mapping[str, Any] | None = None,
    tags: Iterable[str] = (),
    sections: Sequence[str] = (),
    secrets: Iterable[str] = (),
) -> ModelCard:
    """The model card of a trained model: TRL's card in the project's metadata shape and sections.

    Args:
        run: the model's run record (``rdmldg_config.json``).
        hub_model_id: the model's repo id (``ORG/NAME``), used in the usage section.
        model_name: the card's title and ``model-index`` name (default: the repo's name).
        base_model: the base model (default ``run.base_model``); kept only when it is a Hub id (:func:`hub_id`).
        dataset: the dataset repo trained and evaluated on (default: the one ``results`` names); a local folder
            or None names the project's dataset (``rdmldg/domainbed-reasoning``), whose configs the benchmarks are.
        dataset_config: the config the accuracies were measured on (default: the one ``results`` names, else
            the run's benchmark).
        accuracies: what goes to the results table and the ``model-index`` (fractions in [0, 1]).
        results: a ``results.json`` record whose accuracies (:func:`results_accuracies`) are added to ``accuracies``.
        tags: further tags (the trainer's, the user's).
        sections: further Markdown sections, placed before the framework versions.
        secrets: values (tokens) that must not appear; known ones (``HF_TOKEN``, the saved login) and
            token-shaped strings are redacted too.

    Raises:
        ValueError: an accuracy outside [0, 1]; ``results`` that hold no accuracies.
    """
    from trl.trainer.utils import generate_model_card

    base = hub_id(base_model if base_model is not None else run.base_model)
    if results is not None:
        accuracies = [*accuracies, *results_accuracies(results, run.test_domain)]
        dataset, dataset_config = dataset or results.get("dataset"), dataset_config or results.get("config")
    dataset = hub_id(dataset) or DEFAULT_REPO_ID
    name = model_name or hub_model_id.split("/")[-1]
    method_tags = ["mtct", "sarr"] if run.method == "sarr" else [run.method]
    adapter_tags = ["lora", "peft"] if run.adapter else []
    card = generate_model_card(
        base_model=base,
        model_name=name,
        hub_model_id=hub_model_id,
        dataset_name=dataset,
        tags=sorted({*_TAGS, *method_tags, *adapter_tags, *tags} - {"generated_from_trainer"}),
        wandb_url=None,
        trackio_url=None,
        trainer_name=_TRAINER_NAMES.get(run.method, run.method),
        trainer_citation=PAPER["citation"],
        paper_title=PAPER["title"],
        paper_id=PAPER["id"],
    )
    data = card.data
    data.datasets = [dataset]
    data.library_name = "peft" if run.adapter else "transformers"
    data.pipeline_tag = PIPELINE_TAG
    data.metrics = ["accuracy"]
    data.eval_results = card_eval_results(accuracies, run, dataset, dataset_config) or None
    data.rdmldg = {
        "method": run.method,
        "benchmark": run.benchmark,
        "classes": list(run.classes),
        "test_domain": run.test_domain,
        "domains": list(run.domains),
        "prompt_version": run.prompt_version,
    }
    body = "\n\n".join(
        [
            _about_section(run, _title(run)),
            _results_section(accuracies, run.test_domain),
            _usage_section(run, hub_model_id, base, dataset),
        ]
    )
    if base is None:  # TRL's template links the base model whatever it is
        card.text = card.text.replace("[None](https://huggingface.co/None)", "a base model")
    card.text = _replace_section(card.text, "## Quick start", body)
    if sections:
        card.text = _insert_before(card.text, "### Framework versions", "\n\n".join(sections))
    return _redacted(card, secrets)
