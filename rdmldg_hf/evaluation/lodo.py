"""The leave-one-domain-out ablation: every method of METHOD.md section 7, once per held-out domain.

For each (method, held-out domain) the runner trains on the in-part of the other domains,
selects the checkpoint by training-domain validation (accuracy on their out-part, the
foundation's holdout), tests the selected model on the whole held-out domain, and records
the result. ``results.json`` (everything) and ``results.md`` (the paper-shaped tables) are
rewritten after each finished pair, so a killed run resumes with the next unfinished pair.

==================  =========================================  ==========================
method              training                                   checkpoints compared
==================  =========================================  ==========================
``labels_only``     MTCT ``cls_only`` (SFT on labels)          every ``select_every`` steps
``reasoning_only``  MTCT ``reasoning_only`` (SFT on chains)    every ``select_every`` steps
``mtct``            MTCT ``paired`` (the paper's MTCT)         every ``select_every`` steps
``sarr``            SARR with ``reasoning_only`` stages        start and each round's end
``full``            SARR with ``paired`` stages (RD-MLDG)      start and each round's end
==================  =========================================  ==========================

SARR starts from an MTCT-trained model (Algorithm 1). When the row it builds on
(``reasoning_only`` for ``sarr``, ``mtct`` for ``full``) is finished for the same held-out
domain, its selected model is the start and only the SARR rounds are trained; otherwise
the SARR trainer runs its own first stage on the teacher chains.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback

from ..benchmarks import Benchmark, get_benchmark
from ..data.holdout import DEFAULT_HOLDOUT_FRACTION, DEFAULT_HOLDOUT_SEED
from ..models import RunConfig
from ..prompts import PROMPT_VERSION
from .predict import check_mode
from .protocol import EvalOutcome, check_domains, evaluate_rows, find_benchmark, lodo_split
from .sharing import RESULTS_NAME

__all__ = ["METHODS", "MethodSpec", "LodoConfig", "LodoRunner", "render_results_md"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSpec:
    """One ablation row: its trainer, MTCT mode, title, default evaluation modes and (SARR) the row it starts from."""

    title: str
    trainer: str  # "mtct" or "sarr"
    mode: str
    eval_modes: tuple[str, ...]
    starts_from: str | None = None


METHODS: dict[str, MethodSpec] = {
    "labels_only": MethodSpec("Labels only", "mtct", "cls_only", ("direct",)),
    "reasoning_only": MethodSpec("Reasoning only", "mtct", "reasoning_only", ("reasoning",)),
    "mtct": MethodSpec("+MTCT", "mtct", "paired", ("direct", "reasoning")),
    "sarr": MethodSpec("+SARR", "sarr", "reasoning_only", ("reasoning",), starts_from="reasoning_only"),
    "full": MethodSpec("Full (MTCT + SARR)", "sarr", "paired", ("direct", "reasoning"), starts_from="mtct"),
}


@dataclass
class LodoConfig:
    """Settings of a leave-one-domain-out run (the recipe's YAML)."""

    output_dir: str = "outputs/lodo"
    dataset: str | None = None
    config: str = "rotdigits"
    model: str | None = None
    tiny_preset: str = "embedded"
    tiny_sizes: dict[str, Any] = field(default_factory=dict)
    test_domains: list[str] | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    eval_modes: dict[str, list[str]] = field(default_factory=dict)
    max_train_images_per_domain: int | None = None
    reasoning_eval_limit: int | None = None
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    holdout_seed: int = DEFAULT_HOLDOUT_SEED
    lora_r: int = 8
    select_every: int = 0
    eval_batch_size: int = 32
    max_new_tokens: int = 256
    num_threads: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    sarr: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"Unknown methods {unknown}. Valid methods: {', '.join(METHODS)}.")
        for method, modes in self.eval_modes.items():
            if method not in METHODS:
                raise ValueError(f"eval_modes names unknown method {method!r}. Valid methods: {', '.join(METHODS)}.")
            for mode in modes:
                check_mode(mode)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LodoConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown LODO settings {unknown}. Valid settings: {', '.join(sorted(known))}.")
        return cls(**dict(values))

    def modes_of(self, method: str) -> list[str]:
        return list(self.eval_modes.get(method) or METHODS[method].eval_modes)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the finished pairs (not the lists of what to run)."""
        values = asdict(self)
        for key in ("output_dir", "test_domains", "methods", "num_threads", "eval_batch_size"):
            values.pop(key)
        return values


class _Selector:
    """Training-domain validation: scores the model now and keeps a copy of its trainable weights if best."""

    def __init__(self, score: Callable[[torch.nn.Module], float]):
        self.score = score
        self.best: float = -1.0
        self.best_at: str | None = None
        self.history: list[dict[str, Any]] = []
        self._weights: dict[str, torch.Tensor] | None = None

    def check(self, model: torch.nn.Module, where: str) -> float:
        value = self.score(model)
        self.history.append({"checkpoint": where, "validation_accuracy": value})
        if value > self.best:
            self.best, self.best_at = value, where
            self._weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return value

    def restore(self, model: torch.nn.Module) -> None:
        if self._weights is None:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self._weights.items():
                params[name].copy_(value)


class _SelectEvery(TrainerCallback):
    def __init__(self, selector: _Selector, every: int):
        self.selector, self.every = selector, every

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.selector.check(model, f"step-{state.global_step}")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.selector.check(model, f"step-{state.global_step}")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class LodoRunner:
    """Runs (or resumes) every (method, held-out domain) pair of a :class:`LodoConfig`."""

    def __init__(self, config: LodoConfig, overwrite: bool = False):
        from accelerate import PartialState

        self.config = config
        self.out = Path(config.output_dir)
        self.state = PartialState()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.results_path = self.out / RESULTS_NAME
        self.results = self._open_results(overwrite)
        self.dataset, self.benchmark = self._load_dataset()
        self.domains = list(self.dataset)
        self.test_domains = check_domains(config.test_domains, self.domains, config.config)
        self.model_path = self._base_model()

    # ------------------------------------------------------------------ set-up

    def _open_results(self, overwrite: bool) -> dict[str, Any]:
        fresh = {"format": 1, "settings": self.config.fingerprint(), "prompt_version": PROMPT_VERSION, "runs": {}}
        if not self.results_path.exists():
            return fresh
        found = json.loads(self.results_path.read_text())
        if found.get("settings") != fresh["settings"]:
            if not overwrite:
                differs = sorted(k for k in fresh["settings"] if found.get("settings", {}).get(k) != fresh["settings"][k])
                raise ValueError(
                    f"{str(self.out)!r} holds a LODO run with other settings (differs in: {', '.join(differs)}). "
                    "Pass --overwrite to start again there, or choose another output_dir."
                )
            if self.state.is_main_process:
                shutil.rmtree(self.out / "runs", ignore_errors=True)
            return fresh
        return found

    def _load_dataset(self) -> tuple[DatasetDict, Benchmark]:
        from datasets import load_dataset

        source = self.config.dataset
        if source is None:
            benchmark = get_benchmark(self.config.config)
            folder = self.out / "dataset"
            with self.state.main_process_first():
                if not (folder / benchmark.name).exists() and self.state.is_main_process:
                    from ..data.build import build_dataset

                    build_dataset(benchmark.name, folder)
            source = str(folder)
        dataset = load_dataset(source, self.config.config)
        return dataset, find_benchmark(dataset)

    def _base_model(self) -> str:
        if self.config.model is not None:
            return self.config.model
        from ..testing import build_tiny_model

        folder = self.out / "base-model"
        with self.state.main_process_first():
            if not (folder / "config.json").exists() and self.state.is_main_process:
                build_tiny_model(folder, preset=self.config.tiny_preset, **self.config.tiny_sizes)
        return str(folder)

    # ------------------------------------------------------------------ one pair

    def split(self, test_domain: str) -> tuple[Dataset, Dataset, Dataset]:
        """(train in-part, validation out-part, whole test domain) of a held-out domain."""
        split = lodo_split(
            self.dataset, test_domain, self.config.holdout_fraction, self.config.holdout_seed,
            self.config.max_train_images_per_domain,
        )
        return split.train, split.validation, split.test

    def _evaluate(self, model: Any, processor: Any, rows: Dataset, mode: str, limit: int | None = None) -> EvalOutcome:
        if limit and mode != "direct" and len(rows) > limit:
            rows = rows.select(range(limit))
        return evaluate_rows(
            model, processor, rows, self.benchmark, mode,
            batch_size=self.config.eval_batch_size, max_new_tokens=self.config.max_new_tokens,
        )

    def _peft_config(self):
        from ..models import default_lora_config

        return default_lora_config(r=self.config.lora_r) if self.config.lora_r > 0 else None

    def _training_args(self, spec: MethodSpec, run_dir: Path) -> dict[str, Any]:
        values: dict[str, Any] = dict(
            output_dir=str(run_dir / "train"),
            report_to="none",
            save_strategy="no",
            activation_checkpointing=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
            max_length=None,
        )
        values.update(self.config.training)
        values.update(mode=spec.mode, benchmark=self.benchmark.name, test_domain=None, holdout_fraction=0.0)
        return values

    def run_pair(self, method: str, test_domain: str) -> dict[str, Any]:
        """Train, select, test and save one (method, held-out domain) pair; returns its record."""
        from ..models import load_model_and_processor

        spec = METHODS[method]
        run_dir = self.out / "runs" / method / test_domain
        if self.state.is_main_process:
            shutil.rmtree(run_dir, ignore_errors=True)
        self.state.wait_for_everyone()
        began = time.perf_counter()
        train, validation, test = self.split(test_domain)
        modes = self.config.modes_of(method)
        select_mode = modes[0]
        model, processor = load_model_and_processor(self.model_path)
        selector = _Selector(
            lambda m: self._evaluate(m, processor, validation, select_mode).metrics["accuracy"] if len(validation) else 0.0
        )
        if spec.trainer == "mtct":
            model, run_config = self._train_mtct(model, processor, spec, run_dir, train, selector)
        else:
            start = self._start_model(spec, test_domain, model)
            if start is not None:
                model = start
                selector.check(model, f"start ({spec.starts_from})")
            model, run_config = self._train_sarr(model, processor, spec, run_dir, train, selector, start is None)
        selector.restore(model)
        run_config.method = method
        run_config.test_domain = test_domain
        run_config.domains = [d for d in self.domains if d != test_domain]
        run_config.settings["selection"] = {"mode": select_mode, "checked": selector.history, "selected": selector.best_at}
        tests = {mode: self._evaluate(model, processor, test, mode, self.config.reasoning_eval_limit) for mode in modes}
        record = {
            "method": method,
            "title": spec.title,
            "test_domain": test_domain,
            "train_images": len(train),
            "validation_images": len(validation),
            "selected": selector.best_at,
            "validation_accuracy": selector.best,
            "selection": selector.history,
            "test": {mode: {**outcome.metrics, "seconds": round(outcome.seconds, 2)} for mode, outcome in tests.items()},
            "seconds": round(time.perf_counter() - began, 1),
            "model_dir": str(run_dir / "model"),
        }
        if self.state.is_main_process:
            model_dir = run_dir / "model"
            model.save_pretrained(model_dir)
            processor.save_pretrained(model_dir)
            run_config.save(model_dir)
            main = tests[modes[0]]
            _write_json(
                model_dir / RESULTS_NAME,
                main.record(
                    dataset=self.config.dataset or "rdmldg/domainbed-reasoning", config=self.config.config,
                    benchmark=self.benchmark.name, method=method, test_domain=test_domain,
                    validation_accuracy=selector.best, selected=selector.best_at,
                ),
            )
            shutil.rmtree(run_dir / "train", ignore_errors=True)
        self.state.wait_for_everyone()
        return record

    def _train_mtct(self, model, processor, spec, run_dir, train, selector):
        from ..trainers import MTCTConfig, MTCTTrainer

        args = MTCTConfig(**self._training_args(spec, run_dir))
        trainer = MTCTTrainer(
            model, args=args, train_dataset=train, processing_class=processor, peft_config=self._peft_config(),
            callbacks=[_SelectEvery(selector, self.config.select_every)],
        )
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model)
        run_config = trainer.mtct_data.run_config(args, self.model_path, adapter=self.config.lora_r > 0)
        return model, run_config

    def _start_model(self, spec: MethodSpec, test_domain: str, base: torch.nn.Module) -> torch.nn.Module | None:
        """The selected model of the row a SARR row starts from, when that row is done for ``test_domain``."""
        done = self.results["runs"].get(spec.starts_from or "", {}).get(test_domain)
        if not done or not Path(done["model_dir"]).is_dir():
            return None
        if self.config.lora_r > 0:
            from peft import PeftModel

            return PeftModel.from_pretrained(base, done["model_dir"], is_trainable=True)
        return type(base).from_pretrained(done["model_dir"])

    def _train_sarr(self, model, processor, spec, run_dir, train, selector, mtct_stage: bool = True):
        from ..trainers.sarr import SARRConfig, SARRTrainer

        values = self._training_args(spec, run_dir)
        values.update(self.config.sarr)
        values.update(
            output_dir=str(run_dir / "train"), overwrite_output_dir=True, round_dataset_dir=str(run_dir / "train" / "dataset"),
            mtct_stage=mtct_stage,
        )
        args = SARRConfig(**values)

        def stage_done(name: str, stage_model: torch.nn.Module) -> dict[str, Any]:
            return {"validation_accuracy": selector.check(stage_model, name)}

        trainer = SARRTrainer(
            model, args, train, processing_class=processor, peft_config=self._peft_config(), stage_callback=stage_done
        )
        results = trainer.train()
        run_config = RunConfig(
            method="sarr", benchmark=self.benchmark.name, classes=list(self.benchmark.classes),
            class_names=list(self.benchmark.class_names), domains=[], test_domain=None, prompt_version=PROMPT_VERSION,
            base_model=self.model_path, adapter=self.config.lora_r > 0,
            settings={"mode": spec.mode, "num_rounds": args.num_rounds, "fallback": args.fallback,
                      "started_from": None if mtct_stage else spec.starts_from,
                      "rounds": [r.relabel for r in results if r.relabel]},
        )
        return trainer.model, run_config

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
        _write_json(self.results_path, self.results)
        (self.out / "results.md").write_text(render_results_md(self.results, self.benchmark))


def results_table(results: Mapping[str, Any], benchmark: Benchmark) -> dict[str, dict[str, dict[str, float]]]:
    """mode -> method -> {domain: accuracy %, "avg": mean over the domains done}."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method, runs in results["runs"].items():
        for domain in benchmark.domains:
            for mode, metrics in (runs.get(domain) or {}).get("test", {}).items():
                table.setdefault(mode, {}).setdefault(method, {})[domain] = round(100 * metrics["accuracy"], 2)
    for methods in table.values():
        for row in methods.values():
            row["avg"] = round(sum(row.values()) / len(row), 2)
    return table


def render_results_md(results: Mapping[str, Any], benchmark: Benchmark) -> str:
    """Paper-shaped tables: one per prediction mode, a row per method, a column per held-out domain + Avg."""
    table = results_table(results, benchmark)
    domains = [d for d in benchmark.domains if any(d in r for m in table.values() for r in m.values())]
    lines = [f"# Leave-one-domain-out on {benchmark.title} (accuracy %, test = the whole held-out domain)", ""]
    order = [m for m in METHODS if m in results["runs"]]
    for mode, methods in table.items():
        lines += [f"## Prediction mode: {mode}", "", "| Method | " + " | ".join(domains) + " | Avg |",
                  "|---|" + "---|" * (len(domains) + 1)]
        for method in order:
            if method not in methods:
                continue
            row = methods[method]
            cells = [f"{row[d]:.2f}" if d in row else "-" for d in domains]
            lines.append(f"| {METHODS[method].title} | " + " | ".join(cells) + f" | {row['avg']:.2f} |")
        lines.append("")
    lines += ["## Runs", "", "| Method | Held out | Train images | Selected | Validation acc. | Invalid (reasoning) | Seconds |",
              "|---|---|---|---|---|---|---|"]
    for method in order:
        for domain in benchmark.domains:
            run = results["runs"][method].get(domain)
            if not run:
                continue
            invalid = run["test"].get("reasoning", {}).get("invalid_rate")
            lines.append(
                f"| {METHODS[method].title} | {domain} | {run['train_images']} | {run['selected']} | "
                f"{100 * run['validation_accuracy']:.2f} | {'-' if invalid is None else f'{100 * invalid:.2f}'} | {run['seconds']} |"
            )
    return "\n".join(lines) + "\n"
