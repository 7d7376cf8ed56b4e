"""Settings of a leave-one-domain-out run: :class:`LodoConfig`; its ablation rows are
:data:`rdmldg_hf.methods.METHODS` (re-exported here)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from ..benchmarks import EMBEDDED_BENCHMARK
from ..methods import METHODS, MethodSpec, check_methods
from ..protocol import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_HOLDOUT_SEED,
    DEFAULT_HOLDOUT_STYLE,
    DEFAULT_SAMPLE_SEED,
    DEFAULT_SELECTION_RULE,
    HOLDOUT_STYLES,
    SELECTION_RULES,
    TEST_SPLITS,
    check_holdout_style,
    check_selection_rule,
    check_test_split,
)
from ..recipe_setup import DEPRECATED_TINY_FIELDS, TinyModelArguments, unknown_fields_error
from ..trainers import MTCTConfig, SARRConfig
from .predict import check_mode

__all__ = ["METHODS", "MethodSpec", "LodoConfig"]


def _section(kind: type, help_text: str) -> Any:
    return field(
        default_factory=dict,
        metadata={"help": f"{help_text}: a mapping of {kind.__name__} fields (JSON on the command line)."},
    )


@dataclass
class LodoConfig(TinyModelArguments):
    """Settings of a leave-one-domain-out run (``recipes/lodo.py``: YAML keys or ``--field value``); the tiny model
    built when ``model_name_or_path`` is unset is asked for as in the recipes (:class:`TinyModelArguments`)."""

    output_dir: str = field(default="outputs/lodo", metadata={"help": "Folder of results.json, results.md and runs/."})
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset folder or Hub id of DomainBed-Reasoning; unset: the embedded benchmark, built "
            "into <output_dir>/dataset."
        },
    )
    dataset_config: str = field(
        default=EMBEDDED_BENCHMARK,
        metadata={"help": "Config to load: a benchmark ('officehome'); splits are domains."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Base model (Hub id or folder); unset: a tiny random model (tiny_model, default llava) built "
            "into <output_dir>/base-model."
        },
    )
    test_domains: list[str] | None = field(
        default=None, metadata={"help": "Domains held out, one pair per method each (default: every domain)."}
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": f"Ablation rows to run: {', '.join(METHODS)}.", "choices": list(METHODS)},
    )
    eval_modes: dict | str | None = field(
        default_factory=dict,
        metadata={
            "help": "Per method, the prediction modes tested ('direct', 'reasoning'); the first one selects "
            "the checkpoint (default: the method's own)."
        },
    )
    max_train_images_per_domain: int | None = field(
        default=None,
        metadata={
            "help": "A stratified sample of this many in-part images per training domain (validation "
            "shrinks in proportion); unset: all."
        },
    )
    reasoning_eval_limit: int | None = field(
        default=None,
        metadata={
            "help": "A stratified sample of this many test images per domain in the generating modes; unset: all."
        },
    )
    sample_seed: int = field(default=DEFAULT_SAMPLE_SEED, metadata={"help": "Seed of the stratified samples."})
    holdout_fraction: float = field(
        default=DEFAULT_HOLDOUT_FRACTION,
        metadata={"help": "Per domain, the fraction of images in the out-part (validation of the training domains)."},
    )
    holdout_seed: int = field(
        default=DEFAULT_HOLDOUT_SEED, metadata={"help": "Seed of the in/out split (DomainBed's trial_seed)."}
    )
    holdout_style: str = field(
        default=DEFAULT_HOLDOUT_STYLE,
        metadata={
            "help": "'hash' (seeded hash of image_id) or 'domainbed' (DomainBed's own in/out split).",
            "choices": list(HOLDOUT_STYLES),
        },
    )
    test_split: str = field(
        default="whole",
        metadata={
            "help": "Test rows: the 'whole' held-out domain, or its 'in' part (what DomainBed reports).",
            "choices": list(TEST_SPLITS),
        },
    )
    selection_rule: str = field(
        default=DEFAULT_SELECTION_RULE,
        metadata={
            "help": "Checkpoint selection: 'mean' of the training domains' validation accuracies (DomainBed) "
            "or 'pooled' over their images.",
            "choices": list(SELECTION_RULES),
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank on both towers; 0 trains every weight."})
    select_every: str = field(  # or an int (a number of steps): parsed as a string on the command line
        default="epoch",
        metadata={"help": "Checkpoints compared: 'epoch' (each epoch's end), a number of steps, or 'final'."},
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Images per batch when scoring and generating."})
    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per answer in reasoning mode."})
    num_threads: int | None = field(default=None, metadata={"help": "Torch threads (CPU); unset: torch's default."})
    use_kernels: bool = field(
        default=False,
        metadata={"help": "Hub kernels (transformers' use_kernels) on GPUs; off by default (see the MTCT recipe)."},
    )
    training: dict | str | None = _section(MTCTConfig, "Training settings of every method")
    sarr: dict | str | None = _section(SARRConfig, "Further settings of the sarr and full rows")
    overwrite: bool = field(
        default=False, metadata={"help": "Start again in an output_dir holding a run with other settings."}
    )
    write_records: bool = field(
        default=False,
        metadata={
            "help": "Write each pair's per-checkpoint records (DomainBed's results.jsonl: every environment's in and "
            "out accuracy) into runs/<method>/<domain>/ for `rdmldg collect`; every row then selects among its "
            "recorded checkpoints on them (training-domain validation, direct answers)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("eval_modes", "training", "sarr"):  # JSON on the command line, None: empty
            value = getattr(self, name)
            setattr(self, name, json.loads(value) if isinstance(value, str) else dict(value or {}))
        if isinstance(self.select_every, str) and self.select_every.isdigit():
            self.select_every = int(self.select_every)
        check_methods(self.methods)
        check_methods(self.eval_modes, "methods in eval_modes")
        for modes in self.eval_modes.values():
            for mode in modes:
                check_mode(mode)
        for section, kind in (("training", MTCTConfig), ("sarr", SARRConfig)):
            valid = {f.name for f in fields(kind)}
            wrong = [key for key in getattr(self, section) if key not in valid]
            if wrong:
                raise unknown_fields_error(None, wrong, valid, section)
        check_holdout_style(self.holdout_style)
        check_test_split(self.test_split)
        check_selection_rule(self.selection_rule)
        if self.write_records and self.selection_rule != "mean":
            raise ValueError(
                f"write_records selects as DomainBed does, on the mean of the training domains' validation "
                f"accuracies; selection_rule is {self.selection_rule!r}. Set selection_rule: mean."
            )
        valid_every = self.select_every in ("epoch", "final") or (
            isinstance(self.select_every, int) and not isinstance(self.select_every, bool) and self.select_every > 0
        )
        if not valid_every:
            raise ValueError(
                f"select_every must be 'epoch', 'final' or a number of steps above 0; got {self.select_every!r}."
            )
        for name in ("max_train_images_per_domain", "reasoning_eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be 1 or more images per domain, or null for all; got {value!r}.")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LodoConfig":
        """The config of a mapping of its fields.

        Raises:
            ValueError: naming the fields it does not have, with the closest valid ones.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise unknown_fields_error(None, unknown, known)
        return cls(**dict(values))

    def modes_of(self, method: str) -> list[str]:
        return list(self.eval_modes.get(method) or METHODS[method].eval_modes)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the finished pairs (not the lists of what to run)."""
        values = asdict(self)
        for key in (
            "output_dir",
            "test_domains",
            "methods",
            "num_threads",
            "use_kernels",
            "eval_batch_size",
            "overwrite",
            *DEPRECATED_TINY_FIELDS,  # folded into tiny_sizes
        ):
            values.pop(key)
        if values["tiny_model"] is None:  # runs from before LODO read tiny_model stay resumable
            values.pop("tiny_model")
        if not values["write_records"]:  # runs from before records existed stay resumable
            values.pop("write_records")
        return values
