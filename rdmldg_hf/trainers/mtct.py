"""MTCT: Multi-Task Cross-Training (METHOD.md sections 1, 4 and 6).

Every training image is trained with a direct classification target and with a reasoning
target (its five-stage chain) in the same batch, with the paper's loss
(:mod:`rdmldg_hf.trainers.losses`). :class:`MTCTTrainer` is an ``SFTTrainer`` that takes
the dataset as it loads (``image``, ``label``, ``domain``, ``reasoning``, ...), holds out
the test domain and the validation part, builds the training rows itself, and keeps
TRL's loop, PEFT adapters and accelerate's distribution.

    trainer = MTCTTrainer(model, args=MTCTConfig(output_dir="out", test_domain="rot30"),
                          train_dataset=load_dataset(path, "rotdigits"), processing_class=processor,
                          peft_config=default_lora_config())
    trainer.train()
    trainer.save_model()   # adapter or model + processor + rdmldg_config.json
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets
from transformers import AutoProcessor, PreTrainedModel, ProcessorMixin
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from ..benchmarks import BENCHMARKS, Benchmark, display_name, get_benchmark, normalize_name
from ..protocol.holdout import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_HOLDOUT_SEED,
    DEFAULT_HOLDOUT_STYLE,
    HOLDOUT_STYLES,
    check_holdout_style,
    split_holdout,
)
from ..data.training_rows import INDEX_COLUMN, MODES, TASKS_COLUMN, UnitStats, build_units, check_mode, unit_rows
from ..models import RunConfig, check_lora_covers_both_towers, register_processors
from ..prompts import PROMPT_VERSION
from .losses import NORMALIZATIONS, batch_normalizer, mtct_loss

__all__ = ["MTCTConfig", "MTCTTrainer", "MTCTDataCollator", "MTCTData", "prepare_mtct_data"]

logger = logging.getLogger(__name__)

_TASK_KEY, _INDEX_KEY, _UNITS_KEY = "mtct_task", "mtct_image_index", "mtct_num_units"
_STATS = (
    "cls_nll", "cls_rows", "reasoning_nll", "reasoning_rows",
    "cls_correct", "cls_tokens", "reasoning_correct", "reasoning_tokens", "entropy", "tokens",
)


def _default_bf16() -> bool:
    """bf16 where an accelerator supports it, fp32 on CPU."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _no_accelerator() -> bool:
    return not torch.accelerator.is_available()


@dataclass
class MTCTConfig(SFTConfig):
    """Configuration of :class:`MTCTTrainer`: ``SFTConfig`` plus the MTCT fields.

    ``per_device_train_batch_size`` counts images (units, see :mod:`rdmldg_hf.data.training_rows`):
    in ``paired`` mode a batch of B images holds up to 2B sequences. ``bf16`` defaults to True
    only where a GPU supports it (TRL's default would fail on CPU); on a machine without any
    accelerator ``use_cpu`` is set, so multi-process CPU launches run DDP over gloo.
    """

    mode: str = field(
        default="paired",
        metadata={
            "help": "How the classification and reasoning rows are trained: 'paired' (both rows of each image in "
            "the same batch, the paper's MTCT), 'mixed' (rows shuffled independently, see mixed_reasoning_ratio), "
            "'cls_only' (labels only) or 'reasoning_only' (chains only), the paper's ablation rows.",
            "choices": list(MODES),
        },
    )
    mixed_reasoning_ratio: float = field(
        default=1.0,
        metadata={"help": "In 'mixed' mode, the share of images with a chain whose reasoning row is included (seeded)."},
    )
    cls_weight: float = field(default=1.0, metadata={"help": "Weight of the classification term (paper: 1)."})
    reasoning_weight: float = field(default=1.0, metadata={"help": "Weight of the reasoning term (paper: 1)."})
    reasoning_normalization: str = field(
        default="per_sequence",
        metadata={
            "help": "Normalisation of a chain's summed NLL: 'per_sequence' divides by its own length T_i (the "
            "paper's), 'per_token' by the batch's mean chain length (every chain token weighs the same).",
            "choices": list(NORMALIZATIONS),
        },
    )
    benchmark: str | None = field(
        default=None,
        metadata={"help": "Benchmark of the dataset (e.g. 'officehome'); inferred from the label classes when unset."},
    )
    test_domain: str | None = field(
        default=None,
        metadata={"help": "Domain held out for testing (leave-one-domain-out); the other domains are trained on."},
    )
    holdout_fraction: float = field(
        default=DEFAULT_HOLDOUT_FRACTION,
        metadata={
            "help": "Per training domain, the fraction of images kept out of training as validation data "
            "(DomainBed's deterministic in/out split by image_id). 0 trains on every image."
        },
    )
    holdout_seed: int = field(default=DEFAULT_HOLDOUT_SEED, metadata={"help": "Seed of the in/out split."})
    holdout_style: str = field(
        default=DEFAULT_HOLDOUT_STYLE,
        metadata={
            "help": "Which images the in/out split holds out: 'hash' (seeded hash of image_id, order-independent) "
            "or 'domainbed' (DomainBed's own split, image for image; the seed is its trial_seed).",
            "choices": list(HOLDOUT_STYLES),
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. Unset: on where the GPU supports it, off on CPU."},
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown MTCT mode {self.mode!r}. Valid modes: {', '.join(MODES)}.")
        if self.reasoning_normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown reasoning_normalization {self.reasoning_normalization!r}. Valid: {', '.join(NORMALIZATIONS)}."
            )
        if not 0.0 <= self.mixed_reasoning_ratio <= 1.0:
            raise ValueError(f"mixed_reasoning_ratio must be in [0, 1]; got {self.mixed_reasoning_ratio!r}.")
        check_holdout_style(self.holdout_style)
        if self.bf16 is None and not self.fp16:
            self.bf16 = _default_bf16()
        if _no_accelerator():
            # Makes `accelerate launch --multi_gpu --num_processes N` on a CPU machine run DDP over gloo
            # (without it, transformers sees N unconnected single processes).
            self.use_cpu = True
        super().__post_init__()
        if self.loss_type != "nll":
            raise ValueError(f"MTCT computes its own loss from log-probabilities; loss_type must be 'nll', got {self.loss_type!r}.")


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

    def run_config(self, args: MTCTConfig, base_model: str | None, adapter: bool) -> RunConfig:
        return RunConfig(
            method="mtct",
            benchmark=self.benchmark.name if self.benchmark else None,
            classes=self.classes,
            class_names=self.class_names,
            domains=self.domains,
            test_domain=args.test_domain and normalize_name(args.test_domain),
            prompt_version=PROMPT_VERSION,
            base_model=base_model,
            adapter=adapter,
            settings={
                "mode": args.mode,
                "mixed_reasoning_ratio": args.mixed_reasoning_ratio,
                "cls_weight": args.cls_weight,
                "reasoning_weight": args.reasoning_weight,
                "reasoning_normalization": args.reasoning_normalization,
                "holdout_fraction": args.holdout_fraction,
                "holdout_seed": args.holdout_seed,
                "holdout_style": args.holdout_style,
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
    for candidate in BENCHMARKS.values():
        if list(candidate.classes) == names:
            return candidate, names
    return None, names


def _merge_domains(dataset: Dataset | DatasetDict) -> Dataset:
    if isinstance(dataset, DatasetDict):
        return concatenate_datasets([dataset[split] for split in dataset])
    if not isinstance(dataset, Dataset):
        raise TypeError(f"train_dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}.")
    return dataset


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
    """Check the dataset, hold out ``test_domain`` and the validation part, and build the units.

    ``dataset`` is a benchmark as it loads: one ``Dataset`` or a ``DatasetDict`` of domain
    splits. Without ``eval_dataset``, the out-part of the holdout becomes the eval set.

    Raises:
        ValueError: before any training, for a missing ``reasoning`` column in a mode that needs
            it, an unknown ``test_domain`` (the valid ones are listed), labels outside the class list.
    """
    dataset = _merge_domains(dataset)
    benchmark, classes = _label_classes(dataset, args.benchmark)
    class_names = list(benchmark.class_names) if benchmark else [display_name(c) for c in classes]
    _check_labels(dataset, classes)
    check_mode(args.mode, dataset)
    needs_domain = args.test_domain is not None or args.holdout_fraction > 0
    if needs_domain and "domain" not in dataset.column_names:
        raise ValueError(f"test_domain/holdout need a 'domain' column; the dataset has {dataset.column_names}.")
    present = sorted(set(dataset["domain"])) if "domain" in dataset.column_names else []
    environments = list(benchmark.domains) if benchmark else present  # DomainBed's environment indices
    if args.test_domain is not None:
        test = normalize_name(args.test_domain)
        valid = sorted(set(present) | set(benchmark.domains if benchmark else ()))
        if test not in valid:
            raise ValueError(f"Unknown test_domain {args.test_domain!r}. Valid domains: {', '.join(valid)}.")
        dataset = dataset.filter(lambda d: d != test, input_columns="domain")
        present = [d for d in present if d != test]
        if len(dataset) == 0:
            raise ValueError(f"No training images left after holding out {test!r}.")
    held_out = None
    if args.holdout_fraction > 0:
        dataset, held_out = split_holdout(
            dataset, args.holdout_fraction, args.holdout_seed, args.holdout_style, environments
        )
    train, stats = build_units(dataset, args.mode, args.mixed_reasoning_ratio, args.seed)
    logger.info(stats.summary())
    if eval_dataset is not None:
        held_out = _merge_domains(eval_dataset)
        _check_labels(held_out, classes)
    evaluation = None
    if held_out is not None and len(held_out):
        evaluation, _ = build_units(held_out, args.mode, args.mixed_reasoning_ratio, args.seed)
    return MTCTData(train, evaluation, benchmark, classes, class_names, present, stats)


# --------------------------------------------------------------------------- collator


@dataclass
class MTCTDataCollator:
    """Expands units into their prompt-completion rows and collates them with TRL's vision collator.

    Adds ``mtct_task`` (task id per row), ``mtct_image_index`` (source image per row) and
    ``mtct_num_units`` (units in the batch). Labels are -100 on prompt, image and padding
    tokens (TRL's completion-only labels).
    """

    processor: ProcessorMixin
    class_names: Sequence[str]
    max_length: int | None = None

    def __post_init__(self) -> None:
        self._collate = DataCollatorForVisionLanguageModeling(
            processor=self.processor, max_length=self.max_length, completion_only_loss=True
        )

    def __call__(self, units: list[dict[str, Any]]) -> dict[str, Any]:
        rows, tasks, images = [], [], []
        for unit in units:
            for row in unit_rows(unit, self.class_names):
                tasks.append(row.pop("task"))
                images.append(unit.get(INDEX_COLUMN, -1))
                rows.append(row)
        batch = self._collate(rows)
        batch[_TASK_KEY] = torch.tensor(tasks, dtype=torch.long)
        batch[_INDEX_KEY] = torch.tensor(images, dtype=torch.long)
        batch[_UNITS_KEY] = torch.tensor(len(units), dtype=torch.long)
        return batch


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
        **kwargs: Any,
    ):
        if args is None:
            args = MTCTConfig(output_dir="mtct-output")
        elif not isinstance(args, MTCTConfig):
            raise TypeError(f"args must be an MTCTConfig, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError("train_dataset is required: a benchmark dataset with image, label, domain, reasoning.")
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
        self._base_model_name = model if isinstance(model, str) else model.config._name_or_path
        self._mtct_stats = {"train": torch.zeros(len(_STATS)), "eval": torch.zeros(len(_STATS))}
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

    # The collator needs the unit columns; TRL's default keeps only prompt/completion/image(s).
    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["image", "label", "reasoning", TASKS_COLUMN, INDEX_COLUMN]

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """``[B, R, T]`` of the optimised batch, summed over accumulation steps and processes."""
        if not batch_samples or _TASK_KEY not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(batch_normalizer(b[_TASK_KEY], b["labels"], b[_UNITS_KEY]).to(device) for b in batch_samples)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The MTCT loss of a micro-batch (see :mod:`rdmldg_hf.trainers.losses`), and its logged parts."""
        mode = "train" if self.model.training else "eval"
        task = inputs.pop(_TASK_KEY)
        inputs.pop(_INDEX_KEY, None)
        num_units = inputs.pop(_UNITS_KEY)
        if num_items_in_batch is None:  # evaluation: this batch alone
            normalizer, scale = batch_normalizer(task, inputs["labels"], num_units), 1
        else:  # DDP averages gradients over processes: undo it, the normaliser is global
            normalizer, scale = num_items_in_batch, self.accelerator.num_processes
        inputs["use_cache"] = False
        try:
            outputs = model(**inputs, fused_lm_head=True)
        except ValueError as error:
            if "Image features and image tokens do not match" in str(error) and self.args.max_length is not None:
                raise ValueError(
                    f"max_length={self.args.max_length} truncates image tokens; increase it or set it to None."
                ) from error
            raise
        result = mtct_loss(
            outputs.log_probs,
            outputs.label_mask,
            task,
            normalizer,
            self.args.reasoning_normalization,
            self.args.cls_weight,
            self.args.reasoning_weight,
        )
        with torch.no_grad():
            zero = torch.zeros((), device=result.loss.device)
            entropy = (outputs.entropy * outputs.label_mask).sum().float() if outputs.entropy is not None else zero
            tokens = inputs["attention_mask"].sum().float() if "attention_mask" in inputs else zero
            stats = torch.cat([result.stats(outputs.is_top1, outputs.label_mask), entropy.view(1), tokens.view(1)])
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.reduce(stats, reduction="sum")
        # Summed on the device; read (one sync) at logging time.
        self._mtct_stats[mode] = self._mtct_stats[mode].to(stats.device) + stats
        loss = result.loss * scale
        if return_outputs:  # callers that want logits (compute_metrics): one more forward, as in TRL
            with torch.no_grad():
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        s = dict(zip(_STATS, self._mtct_stats[mode].tolist()))
        if s["cls_rows"] or s["reasoning_rows"]:
            answer_tokens = s["cls_tokens"] + s["reasoning_tokens"]
            metrics = {
                "cls_loss": s["cls_nll"] / s["cls_rows"] if s["cls_rows"] else None,
                "reasoning_loss": s["reasoning_nll"] / s["reasoning_rows"] if s["reasoning_rows"] else None,
                "cls_token_accuracy": s["cls_correct"] / s["cls_tokens"] if s["cls_tokens"] else None,
                "reasoning_token_accuracy": s["reasoning_correct"] / s["reasoning_tokens"] if s["reasoning_tokens"] else None,
                "mean_token_accuracy": (s["cls_correct"] + s["reasoning_correct"]) / max(answer_tokens, 1),
                "entropy": s["entropy"] / max(answer_tokens, 1),
            }
            if mode == "train":
                self._total_train_tokens += int(s["tokens"])
                metrics["num_tokens"] = self._total_train_tokens
            prefix = "eval_" if mode == "eval" else ""
            logs.update({prefix + k: v for k, v in metrics.items() if v is not None})
            self._mtct_stats[mode].zero_()
        self._metrics[mode].clear()  # TRL's own per-step metrics are not collected by compute_loss
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the adapter or model and the processor, plus ``rdmldg_config.json`` describing the run."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            from peft import PeftModel

            adapter = isinstance(self.accelerator.unwrap_model(self.model), PeftModel)
            self.mtct_data.run_config(self.args, self._base_model_name, adapter).save(output_dir)
