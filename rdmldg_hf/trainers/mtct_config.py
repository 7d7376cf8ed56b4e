"""Configuration of :class:`rdmldg_hf.trainers.MTCTTrainer`: TRL's ``SFTConfig`` plus the MTCT fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import SFTConfig

from ..data.training_rows import MODES
from .losses import NORMALIZATIONS

__all__ = ["MTCTConfig", "LENGTH_GROUPED_MODES"]

# Modes whose units hold their longest row (the chain) whole: sampling them by length keeps each batch's
# composition of tasks. In 'mixed' mode it would sort classification and reasoning rows into separate batches.
LENGTH_GROUPED_MODES: tuple[str, ...] = ("paired", "reasoning_only")


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

    Padding: ``group_by_task`` pads the short classification rows and the long reasoning rows of a
    training batch separately, and ``train_sampling_strategy`` defaults to ``"group_by_length"`` in
    ``paired`` and ``reasoning_only`` mode, so that chains of similar length share a batch. Neither
    changes any row's loss (see :class:`MTCTTrainer`).
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
        metadata={
            "help": "In 'mixed' mode, the share of images with a chain whose reasoning row is included (seeded)."
        },
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
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. Unset: on where the GPU supports it, off on CPU."},
    )
    group_by_task: bool = field(
        default=True,
        metadata={
            "help": "Collate the classification rows and the reasoning rows of each training batch as two "
            "sub-batches, each padded to its own longest row, and run one forward per sub-batch: the short "
            "classification rows are not padded to the length of the chains. The loss and its gradients are those "
            "of the whole batch (one backward, same normalisation). False: one padded batch, as TRL collates it."
        },
    )
    train_sampling_strategy: str | None = field(
        default=None,
        metadata={
            "help": "Sampler for training (transformers' choices). Unset: 'group_by_length' in 'paired' and "
            "'reasoning_only' mode (units of similar chain length share a batch, so little padding is computed; "
            "lengths are the units' answer tokens, or the dataset's own length_column_name column), 'random' in "
            "'mixed' mode (length grouping would sort classification and reasoning rows into separate batches) "
            "and 'cls_only' mode (every row has about the same length).",
            "choices": ["random", "sequential", "group_by_length", "batch_rebalance"],
        },
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown MTCT mode {self.mode!r}. Valid modes: {', '.join(MODES)}.")
        if self.reasoning_normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown reasoning_normalization {self.reasoning_normalization!r}. "
                f"Valid: {', '.join(NORMALIZATIONS)}."
            )
        if not 0.0 <= self.mixed_reasoning_ratio <= 1.0:
            raise ValueError(f"mixed_reasoning_ratio must be in [0, 1]; got {self.mixed_reasoning_ratio!r}.")
        if self.bf16 is None and not self.fp16:
            self.bf16 = _default_bf16()
        if self.train_sampling_strategy is None:
            self.train_sampling_strategy = "group_by_length" if self.mode in LENGTH_GROUPED_MODES else "random"
        if _no_accelerator():
            # Makes `accelerate launch --multi_gpu --num_processes N` on a CPU machine run DDP over gloo
            # (without it, transformers sees N unconnected single processes).
            self.use_cpu = True
        super().__post_init__()
        if self.loss_type != "nll":
            raise ValueError(
                f"MTCT computes its own loss from log-probabilities; loss_type must be 'nll', got {self.loss_type!r}."
            )
