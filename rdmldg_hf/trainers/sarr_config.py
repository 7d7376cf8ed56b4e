"""Configuration of :class:`rdmldg_hf.trainers.SARRTrainer`: ``MTCTConfig`` (every stage) plus the SARR fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..generation import GenerationSettings
from .mtct_config import MTCTConfig
from .relabel import FALLBACK_POLICIES

__all__ = ["SARRConfig", "ROUND_INITS"]

ROUND_INITS: tuple[str, ...] = ("continue", "restart")


@dataclass
class SARRConfig(MTCTConfig):
    """Configuration of :class:`SARRTrainer`: ``MTCTConfig`` (used for every stage) plus the SARR fields.

    ``num_train_epochs`` / ``max_steps`` apply to each stage (the paper: 3 epochs per stage).
    """

    num_rounds: int = field(default=3, metadata={"help": "Number of SARR rounds N (the paper uses 3)."})
    mtct_stage: bool = field(
        default=True,
        metadata={"help": "Train with MTCT on the dataset's (teacher) chains before the first round."},
    )
    fallback: str = field(
        default="teacher",
        metadata={
            "help": "Images whose self-written chain is rejected: 'teacher' keeps the teacher chain (classification "
            "only if it has none), 'cls_only' trains them with the classification row only, 'drop' leaves them "
            "out of that round. The paper does not say; 'teacher' is our default.",
            "choices": list(FALLBACK_POLICIES),
        },
    )
    round_init: str = field(
        default="continue",
        metadata={
            "help": "Weights each round starts from: 'continue' (the last stage's) or 'restart' (the base model, "
            "a fresh adapter).",
            "choices": list(ROUND_INITS),
        },
    )
    round_num_train_epochs: float | None = field(
        default=None,
        metadata={"help": "Epochs of each SARR round's training (default: num_train_epochs, as the MTCT stage)."},
    )
    round_max_steps: int | None = field(
        default=None,
        metadata={"help": "Steps of each SARR round's training, overriding epochs (default: max_steps)."},
    )
    relabel_batch_size: int = field(
        default=64,
        metadata={
            "help": "Images per generation batch when relabeling, per process. Decoding reads every weight once "
            "per step for the whole batch, so larger batches make more chains per second until memory runs out "
            "(the KV cache grows with batch x (prompt + relabel_max_new_tokens))."
        },
    )
    relabel_cache_implementation: str | None = field(
        default=None,
        metadata={
            "help": "KV cache of relabeling: 'static' allocates it once at full length, which lets transformers "
            "compile the decoding step on a GPU (the first batch of each size compiles); unset: the model's "
            "default (dynamic). Greedy chains are the same with either."
        },
    )
    relabel_max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per chain."})
    relabel_num_candidates: int = field(
        default=1,
        metadata={"help": "Chains sampled per image; the first correct one is kept (>1 needs a temperature)."},
    )
    relabel_temperature: float = field(
        default=0.0, metadata={"help": "Sampling temperature of relabeling; 0 means greedy decoding (the default)."}
    )
    relabel_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold of relabeling."})
    strict_chains: bool = field(
        default=False, metadata={"help": "Reject self-written chains with text outside the five tags."}
    )
    round_dataset_dir: str | None = field(
        default=None,
        metadata={"help": "Hub-layout folder receiving each round's rows (default: <output_dir>/dataset)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace another run's state found in output_dir.", "aliases": ["--overwrite"]},
    )
    resume_run: bool = field(
        default=False,
        metadata={
            "help": "Continue the run found in output_dir even if its settings differ.",
            "aliases": ["--resume"],
        },
    )

    def __post_init__(self) -> None:
        if self.num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1 (the paper uses 3); got {self.num_rounds!r}.")
        if self.fallback not in FALLBACK_POLICIES:
            raise ValueError(f"Unknown fallback {self.fallback!r}. Valid policies: {', '.join(FALLBACK_POLICIES)}.")
        if self.round_init not in ROUND_INITS:
            raise ValueError(f"Unknown round_init {self.round_init!r}. Valid: {', '.join(ROUND_INITS)}.")
        if self.mode == "cls_only":
            raise ValueError(
                "SARR trains on self-written chains; mode='cls_only' has no reasoning rows. Use 'paired'."
            )
        super().__post_init__()
        self.relabel_settings()  # validate now, not after the MTCT stage

    def relabel_settings(self) -> GenerationSettings:
        """The generation settings of relabeling (greedy unless a temperature is set)."""
        sample = self.relabel_temperature > 0
        return GenerationSettings(
            batch_size=self.relabel_batch_size,
            max_new_tokens=self.relabel_max_new_tokens,
            num_candidates=self.relabel_num_candidates,
            do_sample=sample,
            temperature=self.relabel_temperature if sample else 1.0,
            top_p=self.relabel_top_p,
            seed=self.seed,
            cache_implementation=self.relabel_cache_implementation,
        )
