"""MTCT: Multi-Task Cross-Training (arXiv 2602.23777).

Every training image is trained with a direct classification target and with a reasoning
target (its five-stage chain) in the same batch, with the paper's loss
(:mod:`rdmldg_hf.trainers.losses`). :class:`MTCTTrainer` is an ``SFTTrainer`` that trains on the
rows it is given (``image``, ``label``, ``domain``, ``reasoning``, ...), builds the training rows
itself, and keeps TRL's loop, PEFT adapters and accelerate's distribution. Splitting happens
before, in :mod:`rdmldg_hf.protocol`:

    splits = lodo_split(load_dataset(path, "rotdigits"), test_domain="rot30")
    trainer = MTCTTrainer(model, args=MTCTConfig(output_dir="out"), train_dataset=splits.train,
                          eval_dataset=splits.validation, processing_class=processor,
                          peft_config=default_lora_config(), split_record=splits.record())
    trainer.train()
    trainer.save_model()   # adapter or model + processor + rdmldg_config.json (with the split)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from datasets import ClassLabel, Dataset, DatasetDict
from torch.utils.data import DataLoader
from transformers import AutoProcessor, PreTrainedModel, ProcessorMixin
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from ..benchmarks import Benchmark, display_name, get_benchmark
from ..cards import PAPER, RESULTS_NAME, build_model_card, read_results
from ..chains import find_special_tokens
from ..data.training_rows import (
    INDEX_COLUMN,
    TASKS_COLUMN,
    UnitStats,
    build_units,
    check_mode,
    unit_lengths,
    unit_rows,
)
from ..models import RunConfig, build_run_record, check_lora_covers_both_towers, register_processors
from ..protocol.domains import match_benchmark, merge_domains
from .losses import NamedSums, batch_normalizer, loss_metrics, mtct_loss
from .mtct_config import MTCTConfig

__all__ = [
    "MTCTTrainer",
    "MTCTDataCollator",
    "MTCTData",
    "batch_groups",
    "prepare_mtct_data",
    "tokenizer_special_tokens",
]

logger = logging.getLogger(__name__)

_TASK_KEY, _INDEX_KEY, _UNITS_KEY = "mtct_task", "mtct_image_index", "mtct_num_units"
_GROUPS_KEY = "mtct_groups"
# Samplers of transformers that read each training item's length (TrainingArguments.length_column_name).
_LENGTH_SAMPLERS = ("group_by_length", "batch_rebalance")


# --------------------------------------------------------------------------- data


@dataclass
class MTCTData:
    """The dataset turned into MTCT units, and what the run is about."""

    train: Dataset
    eval: Dataset | None
    benchmark: Benchmark | None
    classes: list[str]
    class_names: list[str]
    domains: list[str]
    stats: UnitStats

    def with_lengths(self, column: str, tokenizer: Any) -> "MTCTData":
        """The units with a ``column`` of lengths (:func:`~rdmldg_hf.data.training_rows.unit_lengths`) for
        length-grouped sampling; a dataset that already has that column keeps its own."""
        train, evaluation = (
            units
            if units is None or column in units.column_names
            else units.add_column(column, unit_lengths(units, tokenizer, self.class_names))
            for units in (self.train, self.eval)
        )
        return replace(self, train=train, eval=evaluation)

    def run_config(
        self,
        args: MTCTConfig,
        base_model: str | None,
        adapter: bool,
        split_record: Mapping[str, Any] | None = None,
        method: str = "mtct",
    ) -> RunConfig:
        """What ``rdmldg_config.json`` records (:func:`rdmldg_hf.models.build_run_record`): the run's settings and,
        from ``split_record`` (:meth:`rdmldg_hf.protocol.LodoSplit.record`), how its rows were split."""
        return build_run_record(
            method,
            self.benchmark,
            classes=self.classes,
            class_names=self.class_names,
            domains=self.domains,
            base_model=base_model,
            adapter=adapter,
            split_record=split_record,
            settings={
                "mode": args.mode,
                "mixed_reasoning_ratio": args.mixed_reasoning_ratio,
                "cls_weight": args.cls_weight,
                "reasoning_weight": args.reasoning_weight,
                "reasoning_normalization": args.reasoning_normalization,
                "images": self.stats.images,
                "classification_rows": self.stats.classification_rows,
                "reasoning_rows": self.stats.reasoning_rows,
            },
        )


def _label_classes(dataset: Dataset, benchmark: str | None) -> tuple[Benchmark | None, list[str]]:
    feature = dataset.features.get("label")
    if feature is None:
        raise ValueError(f"The dataset needs a 'label' column; it has {dataset.column_names}.")
    names = list(feature.names) if isinstance(feature, ClassLabel) else None
    if benchmark is not None:
        found = get_benchmark(benchmark)
        if names is not None and [display_name(n) for n in names] != list(found.class_names):
            raise ValueError(
                f"The dataset's label classes {names} are not those of benchmark {found.name!r} "
                f"({', '.join(found.classes)}). Set benchmark to the dataset's benchmark, or leave it unset."
            )
        return found, list(found.classes)
    if names is None:
        raise ValueError(
            "The 'label' column is not a ClassLabel, so the class names are unknown: set MTCTConfig.benchmark."
        )
    return match_benchmark(dataset), names


def _check_labels(dataset: Dataset, classes: Sequence[str]) -> None:
    bad = sorted({label for label in dataset["label"] if label is None or not 0 <= int(label) < len(classes)}, key=str)
    if bad:
        raise ValueError(
            f"Labels {bad[:10]} are outside the class list (valid: 0..{len(classes) - 1} = {', '.join(classes)})."
        )


def prepare_mtct_data(
    dataset: Dataset | DatasetDict,
    args: MTCTConfig,
    eval_dataset: Dataset | DatasetDict | None = None,
) -> MTCTData:
    """Check the rows and build the units of ``dataset`` (training) and ``eval_dataset`` (evaluation), as given.

    Each is a ``Dataset`` or a ``DatasetDict`` of domain splits (merged); nothing is held out here
    (split first, with :func:`rdmldg_hf.protocol.lodo_split`).

    Raises:
        ValueError: before any training, for a missing ``reasoning`` column in a mode that needs
            it, labels outside the class list, or an empty training set.
    """
    dataset = merge_domains(dataset)
    if len(dataset) == 0:
        raise ValueError("train_dataset has no rows.")
    benchmark, classes = _label_classes(dataset, args.benchmark)
    class_names = list(benchmark.class_names) if benchmark else [display_name(c) for c in classes]
    _check_labels(dataset, classes)
    check_mode(args.mode, dataset)
    domains = sorted(set(dataset["domain"])) if "domain" in dataset.column_names else []
    train, stats = build_units(dataset, args.mode, args.mixed_reasoning_ratio, args.seed)
    logger.info(stats.summary())
    evaluation = None
    if eval_dataset is not None:
        held_out = merge_domains(eval_dataset)
        _check_labels(held_out, classes)
        if len(held_out):
            evaluation, _ = build_units(held_out, args.mode, args.mixed_reasoning_ratio, args.seed)
    return MTCTData(train, evaluation, benchmark, classes, class_names, domains, stats)


# --------------------------------------------------------------------------- collator


def tokenizer_special_tokens(processor: Any) -> tuple[str, ...]:
    """The special-token strings of a processor's (or tokenizer's) tokenizer: its named special tokens and every
    added token marked special (image placeholders, turn markers)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    tokens = {*getattr(tokenizer, "all_special_tokens", ()), *(t.content for t in added if t.special)}
    return tuple(sorted(tokens))


def _report_special_tokens(units: Dataset, special_tokens: Sequence[str]) -> None:
    """Warn how many training chains hold the tokenizer's special-token strings, and which."""
    if "reasoning" not in units.column_names or not special_tokens:
        return
    ids = units["image_id"] if "image_id" in units.column_names else units[INDEX_COLUMN]
    flagged: dict[Any, list[str]] = {}
    for image, chain in zip(ids, units["reasoning"]):
        found = find_special_tokens(chain, special_tokens) if chain else []
        if found:
            flagged[image] = found
    if flagged:
        examples = "; ".join(f"{', '.join(tokens)} in {image}" for image, tokens in list(flagged.items())[:3])
        logger.warning(
            "%d training chains hold the tokenizer's special-token strings (%s): they train as plain text "
            "(escaped), never as those tokens. rdmldg build --chains and the teacher reject such chains.",
            len(flagged),
            examples,
        )


@dataclass
class MTCTDataCollator:
    """Expands units into their prompt-completion rows and collates them with TRL's vision collator.

    Adds ``mtct_task`` (task id per row), ``mtct_image_index`` (source image per row) and
    ``mtct_num_units`` (units in the batch). Labels are -100 on prompt, image and padding
    tokens (TRL's completion-only labels). The tokenizer's special-token strings inside a chain
    are escaped, so they are trained as text, never as an image or turn token.

    With ``group_by_task``, the rows of each task are collated on their own (each sub-batch padded
    to its own longest row): the batch is ``{"mtct_groups": [sub-batch, ...], "mtct_num_units": n}``,
    each sub-batch with its ``mtct_task`` and ``mtct_image_index``, classification rows first.
    """

    processor: ProcessorMixin
    class_names: Sequence[str]
    max_length: int | None = None
    group_by_task: bool = False

    def __post_init__(self) -> None:
        self._collate = DataCollatorForVisionLanguageModeling(
            processor=self.processor, max_length=self.max_length, completion_only_loss=True
        )
        self.special_tokens = tokenizer_special_tokens(self.processor)

    def __call__(self, units: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [
            (row, unit.get(INDEX_COLUMN, -1))
            for unit in units
            for row in unit_rows(unit, self.class_names, self.special_tokens)
        ]
        num_units = torch.tensor(len(units), dtype=torch.long)
        if not self.group_by_task:
            return {**self._collate_rows(rows), _UNITS_KEY: num_units}
        tasks = sorted({row["task"] for row, _ in rows})
        groups = [self._collate_rows([(row, i) for row, i in rows if row["task"] == task]) for task in tasks]
        return {_GROUPS_KEY: groups, _UNITS_KEY: num_units}

    def _collate_rows(self, rows: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
        tasks = [row["task"] for row, _ in rows]
        batch = self._collate([{k: v for k, v in row.items() if k != "task"} for row, _ in rows])
        batch[_TASK_KEY] = torch.tensor(tasks, dtype=torch.long)
        batch[_INDEX_KEY] = torch.tensor([image for _, image in rows], dtype=torch.long)
        return batch


def batch_groups(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sub-batches a forward pass runs on: a task-grouped batch's groups, or the batch itself."""
    return list(batch[_GROUPS_KEY]) if _GROUPS_KEY in batch else [dict(batch)]


def _batch_normalizer(groups: Sequence[Mapping[str, Any]], num_units: int | torch.Tensor) -> torch.Tensor:
    """``[B, R, T]`` of one collated batch from its sub-batches (see :func:`batch_normalizer`)."""
    total = sum(batch_normalizer(group[_TASK_KEY], group["labels"], 0) for group in groups)
    total[0] = torch.as_tensor(num_units, device=total.device).float()  # units count once, not once per group
    return total


# --------------------------------------------------------------------------- trainer


class MTCTTrainer(SFTTrainer):
    """``SFTTrainer`` with MTCT rows and loss; see the module docstring and :class:`MTCTConfig`.

    The loss is L = (1/B) sum_i [ NLL(label of i) + (1/T_i) NLL(chain of i) ] over the B images
    of the optimised batch (all accumulation steps and processes), on answer tokens only. An image
    without a chain has only its classification row and still counts once in B.

    Logged each logging step (train and eval): ``loss`` (the paper's L), ``cls_loss`` (mean
    classification NLL per image), ``reasoning_loss`` (mean over chains of the per-token NLL),
    ``cls_token_accuracy``, ``reasoning_token_accuracy``, ``mean_token_accuracy`` (answer tokens),
    ``entropy`` and ``num_tokens``.
    """

    _tag_names = ["trl", "sft", "rdmldg", "mtct"]
    _name = "MTCT"
    _paper = PAPER
    # compute_loss normalises by the whole optimised batch (all accumulation steps, all processes).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: MTCTConfig | None = None,
        train_dataset: Dataset | DatasetDict | None = None,
        eval_dataset: Dataset | DatasetDict | None = None,
        processing_class: ProcessorMixin | None = None,
        peft_config: Any = None,
        *,
        split_record: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        """As ``SFTTrainer``, on the rows given; ``split_record`` (:meth:`rdmldg_hf.protocol.LodoSplit.record`)
        says how they were split, for ``rdmldg_config.json`` (the held-out domain, the holdout)."""
        if args is None:
            args = MTCTConfig(output_dir="mtct-output")
        elif not isinstance(args, MTCTConfig):
            raise TypeError(f"args must be an MTCTConfig, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError("train_dataset is required: benchmark rows with image, label, domain, reasoning.")
        if "data_collator" in kwargs:
            raise ValueError("MTCTTrainer builds its own collator; do not pass data_collator.")
        with args.main_process_first(desc="MTCT units"):  # dataset caches are written once
            self.mtct_data = prepare_mtct_data(train_dataset, args, eval_dataset)
        register_processors()
        if processing_class is None:
            source = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoProcessor.from_pretrained(source)
        if not isinstance(processing_class, ProcessorMixin):
            raise TypeError(
                f"processing_class must be a multimodal processor, got {type(processing_class).__name__} "
                "(for Qwen2-VL-style models, import rdmldg_hf.models so AutoProcessor loads the real processor)."
            )
        if args.train_sampling_strategy in _LENGTH_SAMPLERS:
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            self.mtct_data = self.mtct_data.with_lengths(args.length_column_name, tokenizer)
        _report_special_tokens(self.mtct_data.train, tokenizer_special_tokens(processing_class))
        self._base_model_name = model if isinstance(model, str) else model.config._name_or_path
        self.split_record = dict(split_record or {})
        self._mtct_sums = {"train": NamedSums(), "eval": NamedSums()}  # logged loss parts, by name
        super().__init__(
            model=model,
            args=args,
            data_collator=MTCTDataCollator(processing_class, self.mtct_data.class_names, args.max_length),
            train_dataset=self.mtct_data.train,
            eval_dataset=self.mtct_data.eval,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )
        if peft_config is not None:  # the paper's LoRA: both towers, never the language model alone unnoticed
            check_lora_covers_both_towers(self.model)

    # The collator needs the unit columns (and the sampler their lengths); TRL's default keeps only
    # prompt/completion/image(s).
    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["image", "label", "reasoning", TASKS_COLUMN, INDEX_COLUMN]
            if self.args.train_sampling_strategy in _LENGTH_SAMPLERS:
                self._signature_columns.append(self.args.length_column_name)

    def get_train_dataloader(self) -> DataLoader:
        """Training batches, each task's rows collated as their own sub-batch when ``args.group_by_task``.

        ``data_collator`` (evaluation, analyses) keeps whole batches: ``compute_metrics`` needs their logits.
        """
        if not self.args.group_by_task:
            return super().get_train_dataloader()
        whole = self.data_collator
        self.data_collator = replace(whole, group_by_task=True)
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = whole

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> torch.utils.data.Sampler | None:
        """transformers' sampler; a length-grouped one draws from its own generator seeded with the run's
        seed, so that every process (and every rerun) draws the same batches."""
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and sampler.generator is None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler.generator = torch.Generator().manual_seed(seed)
        return sampler

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """``[B, R, T]`` of the optimised batch, summed over accumulation steps and processes."""
        if not batch_samples or _UNITS_KEY not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(_batch_normalizer(batch_groups(b), b[_UNITS_KEY]).to(device) for b in batch_samples)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The MTCT loss of a micro-batch (see :mod:`rdmldg_hf.trainers.losses`), and its logged parts.

        A task-grouped batch runs one forward per sub-batch; their losses add up to the batch's (every
        row's term is divided by the same global normaliser), and ``Trainer`` runs one backward on the sum.
        """
        mode = "train" if self.model.training else "eval"
        num_units = inputs.pop(_UNITS_KEY)
        groups = batch_groups(inputs)
        if return_outputs and len(groups) > 1:
            raise ValueError(
                "compute_loss(return_outputs=True) needs a whole batch, not task groups; collate with "
                "MTCTDataCollator(group_by_task=False) (evaluation batches are collated whole)."
            )
        if num_items_in_batch is None:  # evaluation: this batch alone
            normalizer, scale = _batch_normalizer(groups, num_units), 1
        else:  # DDP averages gradients over processes: undo it, the normaliser is global
            normalizer, scale = num_items_in_batch, self.accelerator.num_processes
        loss, sums = 0.0, None
        for group in groups:
            task = group.pop(_TASK_KEY)
            group.pop(_INDEX_KEY, None)
            outputs = self._forward(model, group)
            result = mtct_loss(
                outputs.log_probs,
                outputs.label_mask,
                task,
                normalizer,
                self.args.reasoning_normalization,
                self.args.cls_weight,
                self.args.reasoning_weight,
            )
            loss = loss + result.loss
            with torch.no_grad():
                group_sums = result.stats(outputs.is_top1, outputs.label_mask, outputs.entropy)
                mask = group.get("attention_mask")
                group_sums["tokens"] = mask.sum() if mask is not None else result.loss.new_zeros(())  # num_tokens
                sums = group_sums if sums is None else {name: sums[name] + group_sums[name] for name in sums}
        with torch.no_grad():  # once per batch: every process reduces the same number of times
            reduce = partial(self.accelerator.reduce, reduction="sum") if self.accelerator.num_processes > 1 else None
            self._mtct_sums[mode].add(sums, reduce)  # summed on the device; read (one sync) at logging time
        loss = loss * scale
        if return_outputs:  # callers that want logits (compute_metrics): one more forward, as in TRL
            with torch.no_grad():
                outputs = model(**{k: v for k, v in groups[0].items() if k != "labels"})
        return (loss, outputs) if return_outputs else loss

    def _forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Any:
        """One forward of collated rows with TRL's fused LM head (per-token log-probabilities of the labels)."""
        inputs["use_cache"] = False
        try:
            return model(**inputs, fused_lm_head=True)
        except ValueError as error:
            if "Image features and image tokens do not match" in str(error) and self.args.max_length is not None:
                raise ValueError(
                    f"max_length={self.args.max_length} truncates image tokens; increase it or set it to None."
                ) from error
            raise

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        sums = self._mtct_sums[mode].totals()
        if sums.get("cls_rows") or sums.get("reasoning_rows"):
            metrics = loss_metrics(sums)
            if mode == "train":
                self._total_train_tokens += int(sums["tokens"])
                metrics["num_tokens"] = self._total_train_tokens
            prefix = "eval_" if mode == "eval" else ""
            logs.update({prefix + k: v for k, v in metrics.items()})
            self._mtct_sums[mode].reset()
        self._metrics[mode].clear()  # TRL's own per-step metrics are not collected by compute_loss
        super().log(logs, start_time)

    def run_record(self, method: str = "mtct", base_model: str | None = None) -> RunConfig:
        """The run record (``rdmldg_config.json``) of this trainer's model, adapter or full weights; ``method`` and
        ``base_model`` (default: the model's own name) for a run that trains through this trainer (a LODO cell)."""
        from peft import PeftModel

        adapter = isinstance(self.accelerator.unwrap_model(self.model), PeftModel)
        base_model = base_model or self._base_model_name
        return self.mtct_data.run_config(self.args, base_model, adapter, self.split_record, method)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the adapter or model and the processor, plus ``rdmldg_config.json`` describing the run."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.run_record().save(output_dir or self.args.output_dir)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        results: str | os.PathLike | Mapping[str, Any] | None = None,
    ) -> None:
        """Write ``<output_dir>/README.md``: the project's model card (:func:`rdmldg_hf.cards.build_model_card`,
        TRL's card underneath) naming the trainer ``MTCT`` and the paper, with a ``model-index`` of the accuracies
        of ``results`` (a ``results.json`` path or record; default: the output folder's own, if any)."""
        if not self.is_world_process_zero():
            return
        out = Path(self.args.output_dir)
        if results is None and (out / RESULTS_NAME).is_file():
            results = out / RESULTS_NAME
        card = build_model_card(
            self.run_record(),
            self.hub_model_id or self.args.hub_model_id or out.absolute().name,
            model_name=model_name,
            dataset=dataset_name,
            results=read_results(results),
            tags=[*self._tag_names, *([tags] if isinstance(tags, str) else tags or [])],
            secrets=[self.args.hub_token or ""],
        )
        card.save(out / "README.md")
