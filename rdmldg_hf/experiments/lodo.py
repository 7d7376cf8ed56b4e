"""The leave-one-domain-out ablation: every ablation row of the paper (arXiv 2602.23777), once per held-out domain.

For each (method, held-out domain) the runner trains on the in-part of the other domains,
selects the checkpoint by training-domain validation (the unweighted mean of their out-part
accuracies, as DomainBed; ``selection_rule: pooled`` pools the images), tests the selected model
on the whole held-out domain (``test_split: in``: its in-part, as DomainBed reports), and records
the result. Splits come from :mod:`rdmldg_hf.protocol` (``holdout_style: domainbed`` is
DomainBed's own in/out split). ``results.json`` (everything), ``results.md`` (the paper-shaped
tables) and each pair's ``predictions.jsonl`` (every test image's prediction) are written
after each finished pair, so a killed run resumes with the next unfinished pair.

==================  =========================================  ==========================
method              training                                   checkpoints compared
==================  =========================================  ==========================
``labels_only``     MTCT ``cls_only`` (SFT on labels)          each epoch (``select_every``)
``reasoning_only``  MTCT ``reasoning_only`` (SFT on chains)    each epoch (``select_every``)
``mtct``            MTCT ``paired`` (the paper's MTCT)         each epoch (``select_every``)
``sarr``            SARR with ``reasoning_only`` stages        start and each round's end
``full``            SARR with ``paired`` stages (RD-MLDG)      start and each round's end
==================  =========================================  ==========================

``select_every`` is ``"epoch"`` (the default), a number of steps, or ``"final"`` (the last
checkpoint only). SARR starts from an MTCT-trained model (Algorithm 1). When the row it builds on
(``reasoning_only`` for ``sarr``, ``mtct`` for ``full``) is finished for the same held-out
domain, its selected model is the start and only the SARR rounds are trained; otherwise
the SARR trainer runs its own first stage on the teacher chains.

``write_records: true`` also writes each pair's per-checkpoint records (DomainBed's ``results.jsonl``,
:mod:`rdmldg_hf.experiments.records`) into ``runs/<method>/<domain>/``, for ``rdmldg collect``: every
row then selects among its recorded checkpoints (each ``select_every`` and each stage's end) on the
records' training-domain validation accuracy (direct answers, the ``mean`` rule), so that its choice is
the one ``rdmldg collect`` makes by training-domain validation.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Dataset, DatasetDict

from ..atomic import atomic_write, atomic_write_json
from ..benchmarks import Benchmark
from ..evaluation.lodo_cell import cell_training_values, train_cell
from ..evaluation.lodo_config import LodoConfig
from ..evaluation.lodo_tables import render_results_md, results_table
from ..evaluation.predict import PREDICTIONS_NAME, write_predictions
from ..evaluation.rows import EvalOutcome, evaluate_rows
from ..evaluation.sharing import RESULTS_NAME
from ..locking import FolderLock
from ..methods import METHODS, MethodSpec
from ..models import reload_weights
from ..prompts import PROMPT_VERSION
from ..protocol import (
    CheckpointSelector,
    LodoSplit,
    check_domains,
    find_benchmark,
    lodo_split,
    sample_record,
    selection_score,
    stratified_sample,
)
from ..protocol.environments import EnvironmentSplit, environment_split
from ..recipe_setup import prepare_embedded_default
from .hparams import default_hparams
from .records import CheckpointCallback, RecordsCallback, RecordWriter, record_args

__all__ = ["LodoRunner"]

logger = logging.getLogger(__name__)


class LodoRunner:
    """Runs (or resumes) every (method, held-out domain) pair of a :class:`LodoConfig`."""

    def __init__(self, config: LodoConfig):
        from accelerate import PartialState

        self.config = config
        self.out = Path(config.output_dir)
        self.state = PartialState()
        # One LODO run per output folder: a second process stops here, before any work (see rdmldg_hf.locking).
        self._output_lock = FolderLock(self.out, "LODO run").acquire() if self.state.is_main_process else None
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.results_path = self.out / RESULTS_NAME
        self.results = self._open_results(config.overwrite)
        source, self.model_path = prepare_embedded_default(
            config,
            config.dataset_name,
            config.dataset_config,
            config.model_name_or_path,
            dataset_dir=self.out / "dataset",
            model_dir=self.out / "base-model",
        )
        self.dataset, self.benchmark = self._load_dataset(source)
        self.domains = list(self.dataset)
        self.test_domains = check_domains(config.test_domains, self.domains, config.dataset_config)

    # ------------------------------------------------------------------ set-up

    def _open_results(self, overwrite: bool) -> dict[str, Any]:
        fresh = {"format": 1, "settings": self.config.fingerprint(), "prompt_version": PROMPT_VERSION, "runs": {}}
        if not self.results_path.exists():
            return fresh
        found = json.loads(self.results_path.read_text())
        if found.get("settings") != fresh["settings"]:
            if not overwrite:
                earlier = found.get("settings", {})
                differs = sorted(k for k in fresh["settings"] if earlier.get(k) != fresh["settings"][k])
                raise ValueError(
                    f"{str(self.out)!r} holds a LODO run with other settings (differs in: {', '.join(differs)}). "
                    "Pass --overwrite to start again there, or choose another output_dir."
                )
            if self.state.is_main_process:
                shutil.rmtree(self.out / "runs", ignore_errors=True)
            return fresh
        return found

    def _load_dataset(self, source: str) -> tuple[DatasetDict, Benchmark]:
        from datasets import load_dataset

        dataset = load_dataset(source, self.config.dataset_config)
        return dataset, find_benchmark(dataset)

    # ------------------------------------------------------------------ one pair

    def split(self, test_domain: str) -> LodoSplit:
        """Train (in-part), validation (out-part) and test rows (whole domain or in-part) of a held-out domain."""
        return lodo_split(
            self.dataset,
            test_domain,
            self.config.holdout_fraction,
            self.config.holdout_seed,
            self.config.max_train_images_per_domain,
            holdout_style=self.config.holdout_style,
            test_split=self.config.test_split,
            sample_seed=self.config.sample_seed,
        )

    def _test_rows(self, rows: Dataset, mode: str) -> tuple[Dataset, dict[str, Any]]:
        """The test rows of ``mode`` and their record (generating modes: a stratified reasoning_eval_limit sample)."""
        limit = self.config.reasoning_eval_limit
        available = dict(Counter(rows["domain"]))
        if limit and mode != "direct":
            rows = stratified_sample(rows, limit, self.config.sample_seed)
        part = "whole domain" if self.config.test_split == "whole" else "in part"
        return rows, sample_record(Counter(rows["domain"]), available, self.config.sample_seed, part)

    def _evaluate(self, model: Any, processor: Any, rows: Dataset, mode: str) -> EvalOutcome:
        return evaluate_rows(
            model,
            processor,
            rows,
            self.benchmark,
            mode,
            batch_size=self.config.eval_batch_size,
            max_new_tokens=self.config.max_new_tokens,
        )

    def _validate(self, model: Any, processor: Any, rows: Dataset, mode: str) -> float:
        """Training-domain validation score of ``model`` (the selection rule on the out-part)."""
        if not len(rows):
            return 0.0
        return selection_score(self._evaluate(model, processor, rows, mode).metrics, self.config.selection_rule)

    def _peft_config(self):
        from ..models import default_lora_config

        return default_lora_config(r=self.config.lora_r) if self.config.lora_r > 0 else None

    def _training_values(self, spec: MethodSpec, run_dir: Path) -> dict[str, Any]:
        sarr = self.config.sarr if spec.trainer == "sarr" else {}
        return cell_training_values(run_dir / "train", self.config.training, sarr)

    def _records(self, method: str, test_domain: str, run_dir: Path, processor: Any) -> RecordsCallback:
        """The callback writing the pair's ``results.jsonl`` at each checkpoint; its selector checks each record."""
        config = self.config
        environments = self.split_environments(test_domain)
        values = self._training_values(METHODS[method], run_dir)
        settings = config.fingerprint()
        args = record_args(
            self.benchmark,
            method,
            environments.test_envs,
            hparams_seed=0,
            trial_seed=settings.pop("holdout_seed"),
            holdout_fraction=settings.pop("holdout_fraction"),
            checkpoint_freq=config.select_every,
            **settings,
        )
        hparams = default_hparams({**values, "lora_r": config.lora_r or None})
        writer = RecordWriter(
            run_dir, args, hparams, environments, processor, self.benchmark, batch_size=config.eval_batch_size
        )
        return RecordsCallback(writer, config.select_every, CheckpointSelector())

    def split_environments(self, test_domain: str) -> EnvironmentSplit:
        """Every environment's in and out parts with ``test_domain`` held out (the records' parts; the training and
        validation rows are those of :meth:`split`)."""
        return environment_split(
            self.dataset,
            [test_domain],
            self.config.holdout_fraction,
            self.config.holdout_seed,
            holdout_style=self.config.holdout_style,
            max_train_images_per_domain=self.config.max_train_images_per_domain,
            sample_seed=self.config.sample_seed,
        )

    def run_pair(self, method: str, test_domain: str) -> dict[str, Any]:
        """Train, select, test and save one (method, held-out domain) pair; returns its record."""
        from ..models import load_model_and_processor

        spec = METHODS[method]
        run_dir = self.out / "runs" / method / test_domain
        if self.state.is_main_process:
            shutil.rmtree(run_dir, ignore_errors=True)
        self.state.wait_for_everyone()
        began = time.perf_counter()
        split = self.split(test_domain)
        train, validation, test = split.train, split.validation, split.test
        modes = self.config.modes_of(method)
        select_mode = modes[0]
        model, processor = load_model_and_processor(self.model_path, use_kernels=self.config.use_kernels)
        records = self._records(method, test_domain, run_dir, processor) if self.config.write_records else None
        if records is not None:  # selection on each record: DomainBed's training-domain validation (direct answers)
            select_mode, selector = "direct", records.selector
            callbacks, stage_done = [records], None
        else:
            selector = CheckpointSelector(lambda m: self._validate(m, processor, validation, select_mode))
            every = CheckpointCallback(
                self.config.select_every, lambda m, step, epoch, where: selector.check(m, where)
            )
            callbacks, stage_done = ([every], None) if spec.trainer == "mtct" else ([], self._stage_done(selector))
        mtct_stage = True
        if spec.trainer == "sarr" and (start := self._start_model(spec, test_domain, model)) is not None:
            model, mtct_stage, where = start, False, f"start ({spec.starts_from})"
            if records is not None:
                records.record(model, 0, 0.0, where)
            else:
                selector.check(model, where)
        model, run_config = train_cell(
            method,
            model,
            processor,
            train,
            self._training_values(spec, run_dir),
            benchmark=self.benchmark,
            base_model=self.model_path,
            peft_config=self._peft_config(),
            split_record=split.record(),
            callbacks=callbacks,
            stage_done=stage_done,
            mtct_stage=mtct_stage,
        )
        selector.restore(model)
        run_config.settings.update(selection_rule=self.config.selection_rule, select_every=self.config.select_every)
        run_config.settings["selection"] = {
            "mode": select_mode,
            "rule": self.config.selection_rule,
            "checked": selector.history,
            "selected": selector.best_at,
        }
        tests, test_rows = {}, {}
        for mode in modes:
            rows, about = self._test_rows(test, mode)
            tests[mode], test_rows[mode] = self._evaluate(model, processor, rows, mode), (rows, about)
        record = {
            "method": method,
            "title": spec.title,
            "test_domain": test_domain,
            "train_images": len(train),
            "validation_images": len(validation),
            "selected": selector.best_at,
            "validation_accuracy": selector.best,
            "selection_rule": self.config.selection_rule,
            "selection": selector.history,
            "test": {
                mode: {**outcome.metrics, "rows": test_rows[mode][1], "seconds": round(outcome.seconds, 2)}
                for mode, outcome in tests.items()
            },
            "seconds": round(time.perf_counter() - began, 1),
            "model_dir": str(run_dir / "model"),
        }
        if self.state.is_main_process:
            model_dir = run_dir / "model"
            model.save_pretrained(model_dir)
            processor.save_pretrained(model_dir)
            run_config.save(model_dir)
            main = tests[modes[0]]
            atomic_write_json(
                model_dir / RESULTS_NAME,
                main.record(
                    dataset=self.config.dataset_name or "rdmldg/domainbed-reasoning",
                    config=self.config.dataset_config,
                    benchmark=self.benchmark.name,
                    method=method,
                    test_domain=test_domain,
                    validation_accuracy=selector.best,
                    selected=selector.best_at,
                    rows=test_rows[modes[0]][1],
                ),
            )
            write_predictions(
                model_dir / PREDICTIONS_NAME,
                [
                    record
                    for mode, outcome in tests.items()
                    for record in outcome.predictions.records(
                        *(test_rows[mode][0][column] for column in ("image_id", "domain", "label"))
                    )
                ],
            )
            shutil.rmtree(run_dir / "train", ignore_errors=True)
        self.state.wait_for_everyone()
        return record

    def _start_model(self, spec: MethodSpec, test_domain: str, base: torch.nn.Module) -> torch.nn.Module | None:
        """The selected model of the row a SARR row starts from, when that row is done for ``test_domain``."""
        done = self.results["runs"].get(spec.starts_from or "", {}).get(test_domain)
        if not done or not Path(done["model_dir"]).is_dir():
            return None
        if self.config.lora_r > 0:
            from peft import PeftModel

            return PeftModel.from_pretrained(base, done["model_dir"], is_trainable=True)
        return reload_weights(base, done["model_dir"])

    @staticmethod
    def _stage_done(selector: CheckpointSelector) -> Callable[[str, torch.nn.Module], dict[str, Any]]:
        """SARR rows without records: the selector checks the model at the end of each stage."""

        def stage_done(name: str, stage_model: torch.nn.Module) -> dict[str, Any]:
            return {"validation_accuracy": selector.check(stage_model, name)}

        return stage_done

    # ------------------------------------------------------------------ everything

    def run(self) -> dict[str, Any]:
        """Every unfinished pair, domain by domain (methods in table order); results written after each."""
        methods = [m for m in METHODS if m in self.config.methods]
        for domain in self.test_domains:
            for method in methods:
                if domain in self.results["runs"].get(method, {}):
                    logger.info("LODO %s / %s: done before, skipped.", method, domain)
                    continue
                logger.info("LODO %s / held-out %s: training.", method, domain)
                record = self.run_pair(method, domain)
                self.results["runs"].setdefault(method, {})[domain] = record
                self.save()
        return self.results

    def save(self) -> None:
        if not self.state.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self.results["table"] = results_table(self.results, self.benchmark)
        atomic_write_json(self.results_path, self.results)
        atomic_write(self.out / "results.md", render_results_md(self.results, self.benchmark))
