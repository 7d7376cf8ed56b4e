"""SARR: Self-Aligned Reasoning Regularization (RD-MLDG, arXiv 2602.23777, Algorithm 1), with a Trainer's surface.

    model <- MTCT on teacher chains                      (stage "mtct", optional; round 0 in the logs)
    for k in 1..N:                                        (stages "round-1" ... "round-N")
        relabel: the model writes a chain for every training image (reasoning question)
        keep a chain only if it is well formed and its conclusion is the image's class;
        the other images follow the fallback policy (teacher chain / classification only / drop)
        model <- MTCT on the round's rows (continuing from the last weights, or from the base)

    splits = lodo_split(load_dataset(path, "officehome"), test_domain="art")
    trainer = SARRTrainer(model, SARRConfig(output_dir="out", num_rounds=3), train_dataset=splits.train,
                          eval_dataset=splits.validation, processing_class=processor,
                          peft_config=default_lora_config(), split_record=splits.record())
    trainer.train()          # MTCT stage + 3 rounds, resumable
    trainer.push_to_hub()    # adapter + card to the model repo, round datasets as configs of "<repo>-rounds"

The trainer trains on the rows it is given (split them with :mod:`rdmldg_hf.protocol`). Every stage
trains with :class:`~rdmldg_hf.trainers.mtct.MTCTTrainer` (TRL's loop, PEFT, accelerate) in
``<output_dir>/stages/<stage>``; what ``report_to`` and the callbacks' ``on_log`` see is one stream:
``step`` keeps counting across stages and every log carries ``round``. Callbacks with
``on_round_begin``/``on_round_end`` hear the round boundaries (:mod:`.sarr_callbacks`). Relabeling
and each round's rows: :mod:`.sarr_rounds`; the stage store and resume: :mod:`.sarr_state`; the
summary and the model card (TRL's): :mod:`.sarr_report`.

Resume: ``<output_dir>/sarr_state.json`` records what is done. Rerunning the same command
after a kill (SIGKILL included) skips finished stages, reads relabel outputs already
written instead of regenerating them, and resumes training from the stage's last
checkpoint. A folder holding another run's state is refused unless ``overwrite_output_dir``
(``--overwrite``) or ``resume_run`` (``--resume``) is set.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from datasets import Dataset, DatasetDict, Value
from transformers import TrainerControl, TrainerState, set_seed
from transformers.integrations import get_reporting_integration_callbacks
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..generation import GenerationBackend, ModelBackend, process_state
from ..locking import FolderLock
from ..models import RunConfig, reload_weights
from ..protocol import find_benchmark, merge_domains
from .mtct import MTCTTrainer
from .sarr_callbacks import call_round_event
from .sarr_config import SARRConfig
from .sarr_report import results_summary, run_record, sarr_model_card
from .sarr_rounds import RoundBuilder
from .sarr_state import STATE_FILE, SARRState, StageResult, dataset_digest, stage_losses

__all__ = ["SARRTrainer"]

logger = logging.getLogger(__name__)

# Settings that change what a run computes (a rerun with other values is another run).
_RUN_FIELDS = (
    "num_rounds",
    "mtct_stage",
    "fallback",
    "round_init",
    "round_num_train_epochs",
    "round_max_steps",
    "relabel_batch_size",
    "relabel_max_new_tokens",
    "relabel_num_candidates",
    "relabel_temperature",
    "relabel_top_p",
    "strict_chains",
    "mode",
    "mixed_reasoning_ratio",
    "cls_weight",
    "reasoning_weight",
    "reasoning_normalization",
    "benchmark",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "seed",
    "max_length",
)


def _jsonable(value: Any) -> Any:
    """JSON of a run fingerprint: sets sorted (PEFT's target_modules), anything else as its string."""
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


class _StageTrainer(MTCTTrainer):
    """An ``MTCTTrainer`` whose logs carry ``round`` and reach the callbacks (``report_to`` included) at the run's
    step: the stage's plus the earlier stages'. Its own ``trainer_state.json`` keeps the stage's steps."""

    def __init__(self, *args: Any, step_offset: int = 0, sarr_round: int = 0, **kwargs: Any):
        self.step_offset, self.sarr_round = step_offset, sarr_round
        super().__init__(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs["round"] = self.sarr_round
        logged = len(self.state.log_history)
        self.state.global_step += self.step_offset  # what every on_log (report_to) sees
        try:
            super().log(logs, start_time)
        finally:
            self.state.global_step -= self.step_offset
            for entry in self.state.log_history[logged:]:
                entry["step"] = self.state.global_step


class SARRTrainer:
    """MTCT on teacher chains, then ``num_rounds`` rounds of self-relabeling and MTCT training.

    Args:
        model: the base vision-language model (a loaded model).
        args: :class:`SARRConfig` (its ``MTCTConfig`` part applies to every stage).
        train_dataset: the training rows (``Dataset`` or ``DatasetDict`` of domain splits), e.g.
            ``lodo_split(...).train``; relabeled every round.
        eval_dataset: validation rows (e.g. ``lodo_split(...).validation``), evaluated by each stage's
            trainer when ``eval_strategy`` is set; None for none.
        processing_class: the model's processor.
        peft_config: a PEFT config (e.g. :func:`rdmldg_hf.models.default_lora_config`) or None for
            full fine-tuning.
        split_record: how the rows were split (``LodoSplit.record()``), for ``rdmldg_config.json`` of
            every stage and of the final model; part of the run's identity.
        backend: generation backend for relabeling (default: the model being trained).
        stage_callback: ``fn(stage_name, model) -> dict`` run after each stage (e.g. evaluation);
            its result is stored with the stage, so a resumed run does not recompute it.
        callbacks: ``transformers.TrainerCallback`` objects (or classes) given to every stage's
            trainer; those with ``on_round_begin``/``on_round_end`` also hear round boundaries
            (:class:`~rdmldg_hf.trainers.sarr_callbacks.SARRCallback`).
    """

    _tag_names = ["trl", "rdmldg", "mtct", "sarr"]
    _name = "SARR"
    _paper = MTCTTrainer._paper

    def __init__(
        self,
        model: torch.nn.Module,
        args: SARRConfig,
        train_dataset: Dataset | DatasetDict,
        eval_dataset: Dataset | DatasetDict | None = None,
        processing_class: Any = None,
        peft_config: Any = None,
        *,
        split_record: Mapping[str, Any] | None = None,
        backend: GenerationBackend | None = None,
        stage_callback: Callable[[str, torch.nn.Module], dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
    ):
        if not isinstance(args, SARRConfig):
            raise TypeError(f"args must be a SARRConfig, got {type(args).__name__}.")
        self.args, self.processing_class, self.peft_config = args, processing_class, peft_config
        self.backend, self.stage_callback = backend, stage_callback
        # report_to's integrations are made once, here, and given to every stage: one stream (one TensorBoard
        # folder, one W&B run) across stages, at the run's step.
        reporters = get_reporting_integration_callbacks(args.report_to)
        given = [*reporters, *(callbacks or [])]
        self.callbacks = [callback() if isinstance(callback, type) else callback for callback in given]
        self.model = model
        self.dist = process_state()
        # One SARR run per output folder: a second process stops here, before any work (see rdmldg_hf.locking).
        self._output_lock = FolderLock(args.output_dir, "SARR run").acquire() if self.dist.is_main_process else None
        rows = merge_domains(train_dataset)
        self.benchmark = find_benchmark(rows, args.benchmark)
        if args.mtct_stage and "reasoning" not in rows.column_names:
            raise ValueError(
                f"The MTCT stage trains on the dataset's chains, but it has no 'reasoning' column "
                f"({', '.join(rows.column_names)}). Import chains first (rdmldg build --chains FILE) "
                "or set mtct_stage=False."
            )
        if "reasoning" not in rows.column_names:
            rows = rows.add_column("reasoning", [None] * len(rows), feature=Value("string"))
        if len(rows) == 0:
            raise ValueError("train_dataset holds no rows: SARR needs training images to relabel.")
        self.train_dataset = rows
        self.eval_dataset = merge_domains(eval_dataset) if eval_dataset is not None else None
        self.split_record = dict(split_record or {})
        self.stages = (["mtct"] if args.mtct_stage else []) + [f"round-{k}" for k in range(1, args.num_rounds + 1)]
        self.output_dir = Path(args.output_dir)
        self.base_name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "model")
        self.rounds = RoundBuilder(
            rows,
            self.benchmark,
            args.relabel_settings(),
            args.fallback,
            args.strict_chains,
            self.model_name,
            self.output_dir / "relabel",
            Path(args.round_dataset_dir or self.output_dir / "dataset"),
        )
        run = {k: getattr(args, k) for k in _RUN_FIELDS}
        peft = peft_config.to_dict() if peft_config is not None else None
        run.update(base_model=self.base_name, dataset=dataset_digest(rows), peft=peft, split=self.split_record)
        self.run_state = SARRState.open(
            self.output_dir,
            json.loads(json.dumps(run, default=_jsonable)),
            args.overwrite_output_dir,
            args.resume_run,
            is_main=self.dist.is_main_process,
        )
        self.dist.wait_for_everyone()
        self._base_state = None
        if args.round_init == "restart" and peft_config is None:
            self._base_state = copy.deepcopy(model.state_dict())
        self.state, self.control = TrainerState(), TrainerControl()
        self.stage_results: list[StageResult] = []

    # ------------------------------------------------------------------ stages

    @property
    def model_name(self) -> str:
        """Short model name used in ``chain_source`` (``"<model>@sarr-r<k>"``)."""
        return Path(self.base_name).name if os.path.isdir(self.base_name) else self.base_name

    @property
    def is_adapter(self) -> bool:
        """Whether the model trained is a PEFT adapter on the base model."""
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def stage_dir(self, name: str) -> Path:
        return self.output_dir / "stages" / name

    def train(self, resume_from_checkpoint: str | bool | None = None) -> list[StageResult]:
        """Run (or resume) every stage; returns one :class:`StageResult` per stage (also in ``stage_results``).

        Args:
            resume_from_checkpoint: None resumes what ``output_dir`` records (finished stages are skipped,
                an unfinished one continues from its last checkpoint); True does the same but fails when there is
                nothing to resume; a path ``<output_dir>/stages/<stage>/checkpoint-<N>`` resumes that stage from it.

        Raises:
            ValueError: True with nothing to resume, or a path that is not a checkpoint of an unfinished stage
                whose earlier stages are done.
        """
        start_stage, start_checkpoint = self._resume_point(resume_from_checkpoint)
        done = [name for name in self.stages if self.run_state.is_done(name)]
        if done:
            self.model = self._load_stage_model(done[-1])
            logger.info("SARR resumes after %s (done: %s)", done[-1], ", ".join(done))
        self.run_state.event("run", "started" if not done else f"resumed after {done[-1]}")
        self.state, self.stage_results = TrainerState(), []
        for index, name in enumerate(self.stages):
            round_index = 0 if name == "mtct" else int(name.split("-")[1])
            if self.run_state.is_done(name):
                self._finish_stage(self.run_state.result(name), self._logged(name))
                continue
            self._round_event("on_round_begin", round_index, name)
            data = self.train_dataset if name == "mtct" else self._relabel_round(round_index)
            if name != "mtct" and self.args.round_init == "restart":
                self.model = self._fresh_model()
            set_seed(self.args.seed + index)
            checkpoint = start_checkpoint if name == start_stage else None
            self.model, trainer_state = self._train_stage(name, data, round_index, checkpoint)
            metrics = self.stage_callback(name, self.model) if self.stage_callback else {}
            record = {
                "model_dir": str(self.stage_dir(name) / "final"),
                "losses": stage_losses(trainer_state.log_history, trainer_state.global_step),
                "metrics": metrics,
            }
            self.run_state.update(name, "done", record)
            self._finish_stage(self.run_state.result(name), trainer_state.log_history)
            relabel = self.stage_results[-1].relabel
            self._round_event("on_round_end", round_index, name, relabel=relabel, metrics=metrics)
        self.dist.wait_for_everyone()
        return self.stage_results

    def _resume_point(self, resume_from_checkpoint: str | bool | None) -> tuple[str | None, str | None]:
        """The stage and checkpoint to resume from explicitly (None, None: each stage's last checkpoint)."""
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return None, None
        if resume_from_checkpoint is True:
            if not self.run_state.data["events"]:
                raise ValueError(
                    f"resume_from_checkpoint=True, but {str(self.output_dir)!r} holds no SARR run to resume "
                    f"(no {STATE_FILE}). Leave resume_from_checkpoint unset to start one."
                )
            return None, None
        path = Path(resume_from_checkpoint).resolve()
        stage = path.parent.name
        expected = f"{self.stage_dir('<stage>')}/{PREFIX_CHECKPOINT_DIR}-<N>"
        is_checkpoint = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-\d+", path.name)
        if path.parent != self.stage_dir(stage).resolve() or not is_checkpoint:
            raise ValueError(
                f"resume_from_checkpoint={str(resume_from_checkpoint)!r} is not a stage checkpoint "
                f"of this run; expected {expected} (stages: {', '.join(self.stages)})."
            )
        if stage not in self.stages or self.run_state.is_done(stage) or not path.is_dir():
            raise ValueError(
                f"resume_from_checkpoint={str(resume_from_checkpoint)!r}: stage {stage!r} has no such "
                "checkpoint, or is already done."
            )
        missing = [name for name in self.stages[: self.stages.index(stage)] if not self.run_state.is_done(name)]
        if missing:
            raise ValueError(
                f"Cannot resume {stage!r} from {path.name}: earlier stages are not done ({', '.join(missing)})."
            )
        return stage, str(path)

    def _logged(self, name: str) -> list[dict[str, Any]]:
        """The log history a finished stage saved (``trainer_state.json``), as every log stream saw it."""
        path = self.stage_dir(name) / "trainer_state.json"
        return TrainerState.load_from_json(str(path)).log_history if path.is_file() else []

    def _round_event(self, event: str, round_index: int, stage: str, **extra: Any) -> None:
        """Call ``event`` (``on_round_begin``/``on_round_end``) on the callbacks, with the round, stage and model."""
        self.control = call_round_event(
            self.callbacks,
            event,
            self.args,
            self.state,
            self.control,
            round=round_index,
            stage=stage,
            model=self.model,
            **extra,
        )

    def _finish_stage(self, result: StageResult, log_history: list[dict[str, Any]]) -> None:
        """Count a finished stage into the run's state: its logs at the run's steps, its steps, its result."""
        offset = self.state.global_step
        self.state.log_history.extend({**entry, "step": entry["step"] + offset} for entry in log_history)
        self.state.global_step += int(result.losses.get("steps") or 0)
        self.state.max_steps = self.state.global_step
        self.stage_results.append(result)

    def _relabel_round(self, k: int) -> Dataset:
        """Relabel the training images with the current model and build round ``k``'s rows."""
        backend = self.backend or ModelBackend(self.model, self.processing_class)
        return self.rounds.build(k, backend, self.run_state)

    def _stage_args(self, name: str) -> SARRConfig:
        length = {}
        if name != "mtct" and self.args.round_max_steps is not None:
            length["max_steps"] = self.args.round_max_steps
        if name != "mtct" and self.args.round_num_train_epochs is not None:
            length["num_train_epochs"] = self.args.round_num_train_epochs
        return replace(
            self.args,
            **length,
            output_dir=str(self.stage_dir(name)),
            run_name=f"{self.args.run_name or 'sarr'}-{name}",
            overwrite_output_dir=False,
            resume_run=False,
            push_to_hub=False,  # the run pushes once, from push_to_hub()
            report_to="none",  # the run's reporters are among self.callbacks
        )

    def _train_stage(
        self, name: str, data: Dataset, round_index: int, checkpoint: str | None
    ) -> tuple[torch.nn.Module, TrainerState]:
        from peft import PeftModel

        stage_dir = self.stage_dir(name)
        if checkpoint is None and stage_dir.is_dir():
            checkpoint = get_last_checkpoint(str(stage_dir))
        self.run_state.event(name, f"training started (checkpoint: {Path(checkpoint).name if checkpoint else 'none'})")
        if checkpoint and not isinstance(self.model, PeftModel):
            # The Trainer reloads full weights by raw state-dict keys (strict=False), which silently misses
            # checkpoints saved in a converted key layout (LLaVA, ...): load them the from_pretrained way.
            self.model = reload_weights(self.model, checkpoint)
        evaluate = self.args.eval_strategy != "no" and self.eval_dataset is not None and len(self.eval_dataset) > 0
        trainer = _StageTrainer(
            model=self.model,
            args=self._stage_args(name),
            train_dataset=data,
            eval_dataset=self.eval_dataset if evaluate else None,
            processing_class=self.processing_class,
            peft_config=None if isinstance(self.model, PeftModel) else self.peft_config,
            callbacks=self.callbacks,
            split_record=self.split_record,
            step_offset=self.state.global_step,
            sarr_round=round_index,
        )
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_state()  # trainer_state.json (the loss log) even when checkpointing is off
        trainer.save_model(str(stage_dir / "final"))
        return trainer.accelerator.unwrap_model(trainer.model), trainer.state

    def _load_stage_model(self, name: str) -> torch.nn.Module:
        """The weights a finished stage saved, on the base model."""
        final = self.run_state.stage(name)["done"]["model_dir"]
        if self.peft_config is not None:
            from peft import PeftModel

            return PeftModel.from_pretrained(self.model, final, is_trainable=True)
        return reload_weights(self.model, final)

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
        out = Path(output_dir or self.output_dir)
        if self.dist.is_main_process:
            self.model.save_pretrained(out)
            self.processing_class.save_pretrained(out)
            self.run_record().save(out)
        self.dist.wait_for_everyone()
        return out

    def run_record(self, method: str = "sarr", base_model: str | None = None) -> RunConfig:
        """The run record (``rdmldg_config.json``) of the final model: the last stage's MTCT settings and the SARR
        ones; ``method`` and ``base_model`` (default: the model's own name) for a run that trains through this
        trainer (a LODO cell)."""
        return run_record(self, method, base_model)

    def results_summary(self, stages: list[StageResult], wall_seconds: float | None = None) -> dict[str, Any]:
        """Per stage: relabel figures, losses and metrics; the final metrics; where the time went."""
        return results_summary(self, stages, wall_seconds)

    def _hub_model_id(self) -> str:
        return self.args.hub_model_id or Path(self.args.output_dir).absolute().name

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ) -> None:
        """Write ``<output_dir>/README.md``: TRL's model card (trainer ``SARR``, the paper, tags), every stage's
        acceptance and accuracies, and a ``model-index`` of the final stage's accuracies."""
        if not self.dist.is_main_process:
            return
        hub_model_id = self._hub_model_id()
        card = sarr_model_card(
            self,
            model_name or hub_model_id.split("/")[-1],
            hub_model_id,
            dataset_name,
            [tags] if isinstance(tags, str) else list(tags or []),
        )
        card.save(self.output_dir / "README.md")

    def push_to_hub(
        self,
        commit_message: str = "End of training",
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **card_kwargs: Any,
    ) -> Any:
        """Push the final model, its card and ``rdmldg_config.json`` to ``args.hub_model_id`` (default: the
        output folder's name), and the round datasets (one config per round) to the dataset repo
        ``<hub_model_id>-rounds``; returns the model commit's ``CommitInfo`` (None off the main process).

        ``card_kwargs`` (``model_name``, ``dataset_name``, ``tags``) go to :meth:`create_model_card`. The token
        is ``token``, ``args.hub_token`` or the usual Hugging Face login; it is never printed.

        Raises:
            ValueError: before training (nothing to push).
        """
        from huggingface_hub import HfApi

        from ..data.hub_layout import push_folder

        if not self.stage_results:
            raise ValueError("Nothing to push yet: call train() first (it resumes a finished run at no cost).")
        out = self.save_model()
        if not self.dist.is_main_process:
            self.dist.wait_for_everyone()
            return None
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        api = HfApi(token=token, library_name="rdmldg_hf")
        repo_id = api.create_repo(self._hub_model_id(), private=private, exist_ok=True).repo_id
        if self.rounds.dataset_dir.is_dir():
            push_folder(
                self.rounds.dataset_dir,
                f"{repo_id}-rounds",
                private=private,
                token=token,
                commit_message=f"SARR round datasets of {repo_id}",
            )
        self.create_model_card(**card_kwargs)
        inside = [
            p.relative_to(out.resolve()).as_posix() + "/"
            for p in (self.rounds.dataset_dir.resolve(),)
            if p.is_relative_to(out.resolve())
        ]
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=out,
            commit_message=commit_message,
            revision=revision if revision is not None else self.args.hub_revision,
            ignore_patterns=["_*", ".*", f"{PREFIX_CHECKPOINT_DIR}-*", "stages/", "relabel/", *inside],
        )
        self.dist.wait_for_everyone()
        return info
