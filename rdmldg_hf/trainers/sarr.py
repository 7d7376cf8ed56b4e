"""SARR: Self-Aligned Reasoning Regularization (METHOD.md section 5, Algorithm 1).

    model <- MTCT on teacher chains                      (stage "mtct", optional)
    for k in 1..N:                                        (stages "round-1" ... "round-N")
        relabel: the model writes a chain for every training image (reasoning question)
        keep a chain only if it is well formed and its conclusion is the image's class;
        the other images follow the fallback policy (teacher chain / classification only / drop)
        model <- MTCT on the round's rows (continuing from the last weights, or from the base)

Every stage trains with :class:`~rdmldg_hf.trainers.mtct.MTCTTrainer` (TRL's loop, PEFT,
accelerate) in ``<output_dir>/stages/<stage>``. Relabeling uses batched generation spread
over the accelerate processes (:mod:`rdmldg_hf.trainers.relabel`). Each round's rows are
saved as config ``<benchmark>-sarr-r<k>`` of a Hub-layout dataset folder.

Resume: ``<output_dir>/sarr_state.json`` records what is done. Rerunning the same command
after a kill (SIGKILL included) skips finished stages, reads relabel outputs already
written instead of regenerating them, and resumes training from the stage's last
checkpoint. A folder holding another run's state is refused unless ``overwrite_output_dir``
(``--overwrite``) or ``resume_run`` (``--resume``) is set.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from datasets import ClassLabel, Dataset, DatasetDict, Value, concatenate_datasets
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..benchmarks import BENCHMARKS, Benchmark, get_benchmark, normalize_name
from ..protocol.holdout import split_holdout
from ..generation import GenerationBackend, GenerationSettings, ModelBackend, process_state
from ..locking import FolderLock
from ..models import RUN_CONFIG_NAME, RunConfig
from ..prompts import PROMPT_VERSION
from .mtct import MTCTConfig, MTCTTrainer
from .relabel import FALLBACK_POLICIES, RelabelStore, build_round_dataset, relabel

__all__ = ["SARRConfig", "SARRTrainer", "SARRState", "ROUND_INITS", "STATE_FILE", "round_config_name"]

logger = logging.getLogger(__name__)

ROUND_INITS: tuple[str, ...] = ("continue", "restart")
STATE_FILE = "sarr_state.json"
_STATE_FORMAT = 1


def round_config_name(benchmark: str, round_index: int) -> str:
    """Dataset config name of a round's rows: ``officehome-sarr-r2``."""
    return f"{benchmark}-sarr-r{round_index}"


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
    relabel_batch_size: int = field(default=16, metadata={"help": "Images per generation batch when relabeling."})
    relabel_max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per chain."})
    relabel_num_candidates: int = field(
        default=1, metadata={"help": "Chains sampled per image; the first correct one is kept (>1 needs a temperature)."}
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
        metadata={"help": "Continue the run found in output_dir even if its settings differ.", "aliases": ["--resume"]},
    )

    def __post_init__(self) -> None:
        if self.num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1 (the paper uses 3); got {self.num_rounds!r}.")
        if self.fallback not in FALLBACK_POLICIES:
            raise ValueError(f"Unknown fallback {self.fallback!r}. Valid policies: {', '.join(FALLBACK_POLICIES)}.")
        if self.round_init not in ROUND_INITS:
            raise ValueError(f"Unknown round_init {self.round_init!r}. Valid: {', '.join(ROUND_INITS)}.")
        if self.mode == "cls_only":
            raise ValueError("SARR trains on self-written chains; mode='cls_only' has no reasoning rows. Use 'paired'.")
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
        )


# Settings that change what a run computes (a rerun with other values is another run).
_RUN_FIELDS = (
    "num_rounds", "mtct_stage", "fallback", "round_init", "round_num_train_epochs", "round_max_steps", "relabel_batch_size", "relabel_max_new_tokens",
    "relabel_num_candidates", "relabel_temperature", "relabel_top_p", "strict_chains", "mode",
    "mixed_reasoning_ratio", "cls_weight", "reasoning_weight", "reasoning_normalization", "benchmark",
    "test_domain", "holdout_fraction", "holdout_seed", "holdout_style", "learning_rate", "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps",
    "weight_decay", "seed", "max_length",
)


class SARRState:
    """The run's progress in ``<output_dir>/sarr_state.json`` (written by the main process only).

    ``stages[name]`` holds ``relabel`` (round statistics) once relabeling is done and
    ``done`` with the stage's results once it is trained; ``events`` is the log of
    everything started and finished, in order, across restarts.
    """

    def __init__(self, output_dir: str | os.PathLike, run: Mapping[str, Any], is_main: bool = True):
        self.path = Path(output_dir) / STATE_FILE
        self.is_main = is_main
        self.data: dict[str, Any] = {"format": _STATE_FORMAT, "run": dict(run), "stages": {}, "events": []}

    @classmethod
    def open(
        cls, output_dir: str | os.PathLike, run: Mapping[str, Any], overwrite: bool, resume: bool, is_main: bool = True
    ) -> "SARRState":
        """The state of ``output_dir``: the same run's (to resume), or a new one.

        Raises:
            ValueError: the folder holds another run's state and neither ``overwrite`` nor ``resume`` is set.
        """
        state = cls(output_dir, run, is_main)
        if not state.path.exists():
            return state
        found = json.loads(state.path.read_text())
        differs = sorted(k for k in set(found.get("run", {})) | set(run) if found.get("run", {}).get(k) != run.get(k))
        if differs and not (overwrite or resume):
            raise ValueError(
                f"{str(output_dir)!r} holds another SARR run ({STATE_FILE} differs in: {', '.join(differs)}). "
                "Pass --overwrite to replace it, --resume to continue it anyway, or choose another output_dir."
            )
        if differs and overwrite:
            if is_main:
                shutil.rmtree(output_dir)
            return state
        state.data = found
        if differs:
            state.data["run"] = dict(run)
            state.event("run", "resumed with changed settings: " + ", ".join(differs))
        return state

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {})

    def is_done(self, name: str) -> bool:
        return "done" in self.data["stages"].get(name, {})

    def event(self, stage: str, what: str) -> None:
        self.data["events"].append({"stage": stage, "event": what, "time": round(time.time(), 3)})
        self.save()

    def update(self, name: str, key: str, value: Any) -> None:
        self.stage(name)[key] = value
        self.event(name, f"{key} recorded")

    def save(self) -> None:
        if not self.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, self.path)


@dataclass
class StageResult:
    """One trained stage: where it is saved, its training losses and any extra metrics."""

    name: str
    model_dir: str
    losses: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    relabel: dict[str, Any] | None = None


def _merge(dataset: Dataset | DatasetDict) -> Dataset:
    if isinstance(dataset, DatasetDict):
        return concatenate_datasets([dataset[split] for split in dataset])
    if not isinstance(dataset, Dataset):
        raise TypeError(f"train_dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}.")
    return dataset


def _find_benchmark(dataset: Dataset, name: str | None) -> Benchmark:
    if name is not None:
        return get_benchmark(name)
    feature = dataset.features.get("label")
    if isinstance(feature, ClassLabel):
        for benchmark in BENCHMARKS.values():
            if list(benchmark.classes) == list(feature.names):
                return benchmark
    raise ValueError(
        "SARR saves each round in a registry benchmark's schema, but the dataset's label classes match no "
        f"benchmark ({', '.join(BENCHMARKS)}): set benchmark=..."
    )


def _digest(dataset: Dataset) -> str:
    h = hashlib.sha256()
    for column in ("image_id", "label", "domain", "reasoning"):
        if column in dataset.column_names:
            h.update(json.dumps(list(dataset[column])).encode())
    return h.hexdigest()[:16]


def _losses(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last logged training losses of a stage (and the final train_loss)."""
    keys = ("loss", "cls_loss", "reasoning_loss", "mean_token_accuracy")
    logged = [entry for entry in log_history if "loss" in entry]
    out: dict[str, Any] = {"steps": log_history[-1].get("step") if log_history else 0}
    for key in keys:
        values = [entry[key] for entry in logged if key in entry]
        if values:
            out[f"first_{key}"], out[f"last_{key}"] = values[0], values[-1]
    for entry in log_history:
        for key in ("train_loss", "train_runtime"):
            if key in entry:
                out[key] = entry[key]
    return out


class SARRTrainer:
    """MTCT on teacher chains, then ``num_rounds`` rounds of self-relabeling and MTCT training.

    Args:
        model: the base vision-language model (a loaded model).
        args: :class:`SARRConfig`.
        train_dataset: the benchmark as it loads (``Dataset`` or ``DatasetDict`` of domain splits);
            ``test_domain`` and the validation holdout are taken out here, once, for every stage.
        processing_class: the model's processor.
        peft_config: a PEFT config (e.g. :func:`rdmldg_hf.models.default_lora_config`) or None for
            full fine-tuning.
        backend: generation backend for relabeling (default: the model being trained).
        stage_callback: ``fn(stage_name, model) -> dict`` run after each stage (e.g. evaluation);
            its result is stored with the stage, so a resumed run does not recompute it.
        callbacks: ``transformers.TrainerCallback`` objects given to every stage's trainer.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: SARRConfig,
        train_dataset: Dataset | DatasetDict,
        processing_class: Any,
        peft_config: Any = None,
        backend: GenerationBackend | None = None,
        stage_callback: Callable[[str, torch.nn.Module], dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
    ):
        if not isinstance(args, SARRConfig):
            raise TypeError(f"args must be a SARRConfig, got {type(args).__name__}.")
        self.args, self.processor, self.peft_config = args, processing_class, peft_config
        self.backend, self.stage_callback, self.callbacks = backend, stage_callback, callbacks
        self.model = model
        self.dist = process_state()
        # One SARR run per output folder: a second process stops here, before any work (see rdmldg_hf.locking).
        self._output_lock = FolderLock(args.output_dir, "SARR run").acquire() if self.dist.is_main_process else None
        dataset = _merge(train_dataset)
        self.benchmark = _find_benchmark(dataset, args.benchmark)
        if args.mtct_stage and "reasoning" not in dataset.column_names:
            raise ValueError(
                f"The MTCT stage trains on the dataset's chains, but it has no 'reasoning' column "
                f"({', '.join(dataset.column_names)}). Import chains first (rdmldg build --chains FILE) "
                "or set mtct_stage=False."
            )
        if "reasoning" not in dataset.column_names:
            dataset = dataset.add_column("reasoning", [None] * len(dataset), feature=Value("string"))
        self.test_rows: Dataset | None = None
        environments = list(self.benchmark.domains)  # DomainBed's environment indices, held-out domain included
        if args.test_domain is not None:
            test = self.benchmark.domain(args.test_domain)
            self.test_rows = dataset.filter(lambda d: d == test, input_columns="domain")
            dataset = dataset.filter(lambda d: d != test, input_columns="domain")
        self.train_rows, self.val_rows = split_holdout(
            dataset, args.holdout_fraction, args.holdout_seed, args.holdout_style, environments
        )
        if len(self.train_rows) == 0:
            raise ValueError("No training images left after holding out the test domain and the validation part.")
        self.stages = (["mtct"] if args.mtct_stage else []) + [f"round-{k}" for k in range(1, args.num_rounds + 1)]
        self.output_dir = Path(args.output_dir)
        self.dataset_dir = Path(args.round_dataset_dir or self.output_dir / "dataset")
        self.base_name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "model")
        run = {k: getattr(args, k) for k in _RUN_FIELDS}
        run.update(base_model=self.base_name, dataset=_digest(dataset), peft=_peft_summary(peft_config))
        self.state = SARRState.open(
            self.output_dir, run, args.overwrite_output_dir, args.resume_run, is_main=self.dist.is_main_process
        )
        self.dist.wait_for_everyone()
        self._base_state = None
        if args.round_init == "restart" and peft_config is None:
            self._base_state = copy.deepcopy(model.state_dict())
        self.results: list[StageResult] = []

    # ------------------------------------------------------------------ stages

    @property
    def model_name(self) -> str:
        """Short model name used in ``chain_source`` (``"<model>@sarr-r<k>"``)."""
        return Path(self.base_name).name if os.path.isdir(self.base_name) else self.base_name

    def stage_dir(self, name: str) -> Path:
        return self.output_dir / "stages" / name

    def train(self) -> list[StageResult]:
        """Run (or resume) every stage; returns one :class:`StageResult` per stage."""
        done = [name for name in self.stages if self.state.is_done(name)]
        if done:
            self.model = self._load_stage_model(done[-1])
            logger.info("SARR resumes after %s (done: %s)", done[-1], ", ".join(done))
        self.state.event("run", "started" if not done else f"resumed after {done[-1]}")
        for index, name in enumerate(self.stages):
            if self.state.is_done(name):
                self.results.append(self._stage_result(name))
                continue
            data = self.train_rows if name == "mtct" else self._relabel_round(int(name.split("-")[1]))
            if name != "mtct" and self.args.round_init == "restart":
                self.model = self._fresh_model()
            set_seed(self.args.seed + index)
            self.model, losses = self._train_stage(name, data)
            metrics = self.stage_callback(name, self.model) if self.stage_callback else {}
            self.state.update(name, "done", {"model_dir": str(self.stage_dir(name) / "final"), "losses": losses, "metrics": metrics})
            self.results.append(self._stage_result(name))
        self.dist.wait_for_everyone()
        return self.results

    def _stage_result(self, name: str) -> StageResult:
        info = self.state.stage(name)
        done = info["done"]
        return StageResult(name, done["model_dir"], done["losses"], done.get("metrics", {}), info.get("relabel"))

    def _relabel_round(self, k: int) -> Dataset:
        """Relabel the training images with the current model and build round ``k``'s rows."""
        name = f"round-{k}"
        self.state.event(name, "relabel started")
        backend = self.backend or ModelBackend(self.model, self.processor)
        store = RelabelStore(self.output_dir / "relabel" / name, self.dist.process_index)
        settings = self.args.relabel_settings()
        start = time.time()
        outputs = relabel(backend, self.train_rows, self.benchmark.class_names, settings, store)
        seconds = time.time() - start
        rows, stats = build_round_dataset(
            self.train_rows,
            outputs,
            k,
            self.args.fallback,
            f"{self.model_name}@sarr-r{k}",
            self.benchmark,
            self.benchmark.class_aliases,
            self.args.strict_chains,
        )
        if "relabel" not in self.state.stage(name):
            record = stats.to_dict()
            record["seconds"] = round(seconds, 2)
            record["dataset_config"] = round_config_name(self.benchmark.name, k)
            if self.dist.is_main_process:
                self._save_round(k, rows)
            self.state.update(name, "relabel", record)
        self.dist.wait_for_everyone()
        logger.info("SARR %s: %d/%d chains accepted (%.1f%%)", name, stats.accepted, stats.images, 100 * stats.acceptance)
        return rows

    def _save_round(self, k: int, rows: Dataset) -> None:
        from ..data.hub_layout import write_config

        domains = sorted(set(rows["domain"]))
        splits = {d: rows.filter(lambda x, d=d: x == d, input_columns="domain") for d in domains}
        write_config(
            self.dataset_dir,
            round_config_name(self.benchmark.name, k),
            splits,
            self.benchmark,
            description=f"SARR round {k}: chains written by {self.model_name} for its own training images "
            f"(fallback {self.args.fallback!r}).",
        )

    def _stage_args(self, name: str) -> SARRConfig:
        # Rows are already selected: no test domain or holdout inside the stage.
        length = {}
        if name != "mtct" and self.args.round_max_steps is not None:
            length["max_steps"] = self.args.round_max_steps
        if name != "mtct" and self.args.round_num_train_epochs is not None:
            length["num_train_epochs"] = self.args.round_num_train_epochs
        return replace(
            self.args,
            **length,
            output_dir=str(self.stage_dir(name)),
            test_domain=None,
            holdout_fraction=0.0,
            run_name=f"{self.args.run_name or 'sarr'}-{name}",
            overwrite_output_dir=False,
            resume_run=False,
        )

    def _train_stage(self, name: str, data: Dataset) -> tuple[torch.nn.Module, dict[str, Any]]:
        from peft import PeftModel

        stage_dir = self.stage_dir(name)
        checkpoint = get_last_checkpoint(str(stage_dir)) if stage_dir.is_dir() else None
        self.state.event(name, f"training started (checkpoint: {Path(checkpoint).name if checkpoint else 'none'})")
        if checkpoint and not isinstance(self.model, PeftModel):
            # The Trainer reloads full weights by raw state-dict keys (strict=False), which silently misses
            # checkpoints saved in a converted key layout (LLaVA, ...): load them the from_pretrained way.
            self.model = type(self.model).from_pretrained(checkpoint)
        evaluate = self.args.eval_strategy != "no" and len(self.val_rows) > 0
        trainer = MTCTTrainer(
            model=self.model,
            args=self._stage_args(name),
            train_dataset=data,
            eval_dataset=self.val_rows if evaluate else None,
            processing_class=self.processor,
            peft_config=None if isinstance(self.model, PeftModel) else self.peft_config,
            callbacks=self.callbacks,
        )
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_state()  # trainer_state.json (the loss log) even when checkpointing is off
        trainer.save_model(str(stage_dir / "final"))
        self._record_run_split(stage_dir / "final")
        return trainer.accelerator.unwrap_model(trainer.model), _losses(trainer.state.log_history)

    def _holdout_record(self) -> dict[str, Any]:
        """The run's holdout (each stage trains on rows already split, with holdout_fraction 0)."""
        return {
            "holdout_fraction": self.args.holdout_fraction,
            "holdout_seed": self.args.holdout_seed,
            "holdout_style": self.args.holdout_style,
        }

    def _record_run_split(self, folder: Path) -> None:
        """Make a stage's ``rdmldg_config.json`` record the run's held-out domain and holdout, not the stage's."""
        if not self.dist.is_main_process or not (folder / RUN_CONFIG_NAME).is_file():
            return
        run = RunConfig.load(folder)
        run.test_domain = self.args.test_domain and normalize_name(self.args.test_domain)
        run.settings.update(self._holdout_record())
        run.save(folder)

    def _load_stage_model(self, name: str) -> torch.nn.Module:
        """The weights a finished stage saved, on the base model."""
        final = self.state.stage(name)["done"]["model_dir"]
        if self.peft_config is not None:
            from peft import PeftModel

            return PeftModel.from_pretrained(self.model, final, is_trainable=True)
        return type(self.model).from_pretrained(final)

    def _fresh_model(self) -> torch.nn.Module:
        """The base model again (round_init='restart'): adapter removed, or original weights restored."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            return self.model.unload()
        if self._base_state is not None:  # full fine-tuning; under PEFT the base weights never change
            self.model.load_state_dict(self._base_state)
        return self.model

    # ------------------------------------------------------------------ output

    def save_model(self, output_dir: str | os.PathLike | None = None) -> Path:
        """Save the final model (adapter or weights) and processor, with ``rdmldg_config.json`` (method ``sarr``)."""
        from peft import PeftModel

        out = Path(output_dir or self.output_dir)
        if self.dist.is_main_process:
            self.model.save_pretrained(out)
            self.processor.save_pretrained(out)
            final = self.results[-1].model_dir if self.results else None
            run = RunConfig.load(final) if final and (Path(final) / RUN_CONFIG_NAME).exists() else None
            settings = dict(run.settings) if run else {}
            settings.update(
                **self._holdout_record(),
                num_rounds=self.args.num_rounds,
                mtct_stage=self.args.mtct_stage,
                fallback=self.args.fallback,
                round_init=self.args.round_init,
                relabel=self.args.relabel_settings().to_dict(),
                rounds=[r.relabel for r in self.results if r.relabel],
            )
            RunConfig(
                method="sarr",
                benchmark=self.benchmark.name,
                classes=list(self.benchmark.classes),
                class_names=list(self.benchmark.class_names),
                domains=sorted(set(self.train_rows["domain"])),
                test_domain=self.args.test_domain and normalize_name(self.args.test_domain),
                prompt_version=PROMPT_VERSION,
                base_model=self.base_name,
                adapter=isinstance(self.model, PeftModel),
                settings=settings,
            ).save(out)
        self.dist.wait_for_everyone()
        return out

    def results_summary(self, stages: list[StageResult], wall_seconds: float | None = None) -> dict[str, Any]:
        """Per stage: relabel figures, losses and metrics; the final metrics; where the time went."""
        from peft import PeftModel

        rows = [{"stage": r.name, "relabel": r.relabel, "losses": r.losses, "metrics": r.metrics} for r in stages]
        return {
            "method": "sarr",
            "benchmark": self.benchmark.name,
            "test_domain": self.args.test_domain and normalize_name(self.args.test_domain),
            "chance": 1 / self.benchmark.num_classes,
            "base_model": self.base_name,
            "adapter": isinstance(self.model, PeftModel),
            "prompt_version": PROMPT_VERSION,
            "images": {
                "train": len(self.train_rows),
                "source_holdout": len(self.val_rows),
                "heldout": len(self.test_rows) if self.test_rows is not None else 0,
            },
            "stages": rows,
            "final": rows[-1]["metrics"] if rows else {},
            "timing": {
                "wall_seconds": wall_seconds,
                "relabel_seconds": sum((r.relabel or {}).get("seconds", 0.0) for r in stages),
                "training_seconds": sum(r.losses.get("train_runtime", 0.0) for r in stages),
                "evaluation_seconds": sum(r.metrics.get("eval_seconds", 0.0) for r in stages),
            },
        }

    def create_model_card(self, results: Mapping[str, Any], dataset_name: str | None = None):
        """A ``huggingface_hub.ModelCard`` with ``base_model``, ``library_name`` and a ``model-index`` of accuracies."""
        from huggingface_hub import EvalResult, ModelCard, ModelCardData

        name = f"rdmldg-sarr-{self.model_name}-{self.benchmark.name}" + (
            f"-{results['test_domain']}" if results.get("test_domain") else ""
        )
        evals = []
        for key, split, what in (
            ("heldout_direct", results.get("test_domain"), "held-out domain, direct answer"),
            ("heldout_reasoning", results.get("test_domain"), "held-out domain, reasoning answer"),
            ("source_holdout_direct", "source-holdout", "source domains' holdout, direct answer"),
        ):
            value = results.get("final", {}).get(key)
            if value is not None and split:
                evals.append(
                    EvalResult(
                        task_type="image-classification",
                        dataset_type=dataset_name or "rdmldg/domainbed-reasoning",
                        dataset_name=f"{self.benchmark.title} ({what})",
                        dataset_config=self.benchmark.name,
                        dataset_split=split,
                        metric_type="accuracy",
                        metric_name=f"accuracy ({what})",
                        metric_value=round(value, 4),
                    )
                )
        data = ModelCardData(
            model_name=name,
            base_model=self.base_name if not os.path.isdir(self.base_name) else None,
            library_name="peft" if results.get("adapter") else "transformers",
            pipeline_tag="image-text-to-text",
            tags=["rdmldg", "sarr", "mtct", "domain-generalization", "reasoning"],
            eval_results=evals or None,
        )
        lines = [
            f"Fine-tuned with RD-MLDG (MTCT, then {self.args.num_rounds} SARR rounds of self-relabeling) on "
            f"{self.benchmark.title}, holding out domain `{results.get('test_domain')}`.",
            "",
            f"- base model: `{self.base_name}`; {'LoRA adapter' if results.get('adapter') else 'full weights'}",
            f"- fallback for rejected self-chains: `{self.args.fallback}`; rounds start from: `{self.args.round_init}`",
            f"- prompt version: `{PROMPT_VERSION}` (see `rdmldg_config.json`)",
            "",
            "| stage | acceptance | held-out direct | held-out reasoning | source-holdout direct |",
            "|---|---|---|---|---|",
        ]
        for stage in results.get("stages", []):
            metrics, relabel = stage["metrics"], stage.get("relabel") or {}
            cells = [relabel.get("acceptance"), metrics.get("heldout_direct"), metrics.get("heldout_reasoning"), metrics.get("source_holdout_direct")]
            lines.append(f"| {stage['stage']} | " + " | ".join("-" if c is None else f"{100 * c:.1f}%" for c in cells) + " |")
        lines += ["", f"Chance: {100 * results.get('chance', 0):.0f}%. Each round's training rows are in `dataset/` "
                  "(configs `<benchmark>-sarr-r<k>`, loadable with `datasets.load_dataset`)."]
        return ModelCard.from_template(data, template_str=_CARD_TEMPLATE, model_name=name, body="\n".join(lines))


_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ body }}
"""


def _peft_summary(peft_config: Any) -> dict[str, Any] | None:
    if peft_config is None:
        return None
    keys = ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules")
    return {k: str(getattr(peft_config, k, None)) for k in keys}
