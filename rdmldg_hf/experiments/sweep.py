"""DomainBed-style sweeps: datasets x methods x test environments x hyperparameter seeds x trial seeds.

``rdmldg sweep launch|status|delete_incomplete`` reads its settings with the recipes' parser: the
:class:`SweepArguments` below, every ``SARRConfig`` field (the training settings of every run; the MTCT
rows read the ``MTCTConfig`` ones) and TRL's ``ModelConfig``, from a YAML file (``--config``) and the
command line. One run per (dataset, method, test environments, ``hparams_seed``, ``trial_seed``):

* test environments: every single one (or ``test_envs``), and with ``test_env_pairs`` every pair
  holding one of them out (what leave-one-domain-out selection needs);
* ``hparams_seed`` in ``[n_hparams_from, n_hparams)``: 0 is the config's values, others are drawn
  (:mod:`.hparams`);
* ``trial_seed`` in ``[0, n_trials)``: DomainBed's in/out split of every environment, and, through
  the run's ``seed`` (DomainBed's ``seed_hash`` of its arguments), data order and initialisation.

A run's folder, directly under ``output_dir``, is named by the MD5 of its arguments (DomainBed's
``sweep.py``) and holds ``args.json``, ``results.jsonl`` (:mod:`.records`), ``out.txt``/``err.txt``
and, once finished, ``done``. A run is *done*, *running* (another process holds its folder's lock),
*incomplete* (a folder without ``done``: killed or failed) or *not launched*. ``launch`` runs every
run that is neither done nor running (an incomplete run starts again from scratch) and never writes
into a done run's folder; ``delete_incomplete`` removes the incomplete folders.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from trl import ModelConfig

from ..atomic import atomic_write_json
from ..benchmarks import BENCHMARKS, get_benchmark
from ..locking import FolderBusyError, FolderLock
from ..methods import METHODS, check_methods
from ..protocol.environments import check_test_envs
from ..protocol.holdout import domainbed_seed_hash
from ..recipe_setup import DEFAULT_TINY_MODEL, RecipeScriptArguments, embedded_model_path, prepare_embedded_default
from ..trainers import SARRConfig
from .launchers import LAUNCHERS, check_launcher, launch
from .records import ARGS_FILE, DONE_FILE, domainbed_dataset_name

__all__ = ["SweepArguments", "SweepJob", "Sweep", "job_hash", "test_env_sets"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"  # inside a run folder: held by the process running it


@dataclass
class SweepArguments(RecipeScriptArguments):
    """What a sweep runs and how it launches (beside the training config and TRL's ``ModelConfig``)."""

    dataset_config: list[str] = field(
        default_factory=lambda: ["rotdigits"],
        metadata={"help": "Datasets (configs of dataset_name, e.g. pacs officehome); splits are domains."},
    )
    holdout_style: str = field(
        default="domainbed",
        metadata={
            "help": "The in/out split of every environment: 'domainbed' (DomainBed's own; the seed is the trial "
            "seed) or 'hash'.",
            "choices": ["domainbed", "hash"],
        },
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": f"Methods (ablation rows) to run: {', '.join(METHODS)}."},
    )
    test_envs: list[str] | None = field(
        default=None,
        metadata={"help": "Test environments (indices in DomainBed's order, or domain names); default: every one."},
    )
    test_env_pairs: bool = field(
        default=False,
        metadata={
            "help": "Also hold out every pair of environments containing a test environment (needed by "
            "leave-one-domain-out selection)."
        },
    )
    n_hparams_from: int = field(default=0, metadata={"help": "First hparams_seed (0: the config's values)."})
    n_hparams: int = field(default=1, metadata={"help": "hparams_seed runs up to (not including) this."})
    n_trials: int = field(default=3, metadata={"help": "Trial seeds 0 .. n_trials - 1."})
    checkpoint_every: int = field(
        default=50, metadata={"help": "Steps between per-checkpoint records (and the last step is one)."}
    )
    max_train_images_per_domain: int | None = field(
        default=None,
        metadata={
            "help": "A stratified sample of this many in-part images per training domain (validation "
            "shrinks in proportion); unset: all."
        },
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the stratified samples."})
    eval_batch_size: int = field(default=64, metadata={"help": "Images per batch when scoring checkpoints."})
    eval_reasoning_every: int = field(
        default=0,
        metadata={
            "help": "Measure reasoning accuracy (env<i>_in_reasoning_acc of the test environments) at "
            "checkpoints whose step is a multiple of this; 0: on the checkpoint training-domain validation selects "
            "only."
        },
    )
    reasoning_eval_limit: int | None = field(
        default=None, metadata={"help": "A stratified sample of this many test images for reasoning accuracy."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per chain (reasoning)."})
    launcher: str = field(
        default="local",
        metadata={
            "help": "'local' (one run after another), 'parallel' (--jobs runs at once, each on its own GPU "
            "or one CPU thread) or 'submitit' (a Slurm job array through submitit).",
            "choices": list(LAUNCHERS),
        },
    )
    jobs: int = field(default=1, metadata={"help": "Runs at once with --launcher parallel."})
    submitit_cluster: str | None = field(
        default=None,
        metadata={"help": "submitit's cluster: unset picks Slurm when there is one; 'local' and 'debug' run here."},
    )
    submitit_partition: str | None = field(default=None, metadata={"help": "Slurm partition."})
    submitit_timeout_min: int = field(default=24 * 60, metadata={"help": "Time limit of each run, in minutes."})
    submitit_gpus_per_node: int = field(default=1, metadata={"help": "GPUs per run."})
    submitit_cpus_per_task: int | None = field(default=None, metadata={"help": "CPUs per run."})
    submitit_array_parallelism: int = field(default=256, metadata={"help": "Most runs of the array at once."})
    submitit_parameters: dict | str | None = field(
        default_factory=dict,
        metadata={"help": 'Further submitit parameters (e.g. {"slurm_account": "x"}; JSON on the command line).'},
    )
    submitit_wait: bool = field(
        default=True,
        metadata={"help": "Wait for the job array to finish (false: submit, print its id and return)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.dataset_config, str):  # a single name in the YAML
            self.dataset_config = [self.dataset_config]
        if isinstance(self.submitit_parameters, str):
            self.submitit_parameters = json.loads(self.submitit_parameters)
        self.submitit_parameters = dict(self.submitit_parameters or {})
        check_methods(self.methods)
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"Unknown launcher {self.launcher!r}. Valid launchers: {', '.join(LAUNCHERS)}.")
        if self.test_domain is not None:
            raise ValueError(
                f"A sweep holds out every environment in turn; test_domain={self.test_domain!r} is a single run's. "
                "Use test_envs to restrict the sweep."
            )
        for name in ("jobs", "n_trials", "n_hparams", "checkpoint_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more; got {getattr(self, name)!r}.")
        if not 0 <= self.n_hparams_from < self.n_hparams:
            raise ValueError(
                f"hparams seeds run from n_hparams_from to n_hparams - 1; got {self.n_hparams_from} to "
                f"{self.n_hparams - 1}. Set n_hparams above n_hparams_from."
            )
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(
                "holdout_fraction must be in (0, 1): every environment needs an out part; "
                f"got {self.holdout_fraction}."
            )


def job_hash(args: dict[str, Any]) -> str:
    """The run folder's name: the MD5 of the run's arguments as sorted JSON (DomainBed's sweep.py)."""
    return hashlib.md5(json.dumps(args, sort_keys=True).encode("utf-8")).hexdigest()


def test_env_sets(environments: int, test_envs: Sequence[int], pairs: bool) -> list[list[int]]:
    """Each test environment alone, then (``pairs``) every pair of environments holding one of them out."""
    sets = [[i] for i in test_envs]
    if pairs:
        sets += [[i, j] for i, j in itertools.combinations(range(environments), 2) if i in test_envs or j in test_envs]
    return sets


def _explicit(values: Any, defaults: Any, drop: Sequence[str]) -> dict[str, Any]:
    """The fields of a config that differ from its defaults (what the user set), as JSON; no tokens."""
    given, default = (c.to_dict() if hasattr(c, "to_dict") else asdict(c) for c in (values, defaults))
    return {
        k: v for k, v in sorted(given.items()) if v != default.get(k) and k not in drop and not k.endswith("token")
    }


@dataclass
class SweepJob:
    """One run of a sweep: its arguments (what its records carry) and its folder."""

    args: dict[str, Any]
    run_dir: Path

    @property
    def state(self) -> str:
        """``done``, ``running``, ``incomplete`` or ``not launched``."""
        if (self.run_dir / DONE_FILE).exists():
            return "done"
        if not self.run_dir.exists():
            return "not launched"
        try:
            with FolderLock(self.run_dir, "sweep run", lock_file=self.run_dir / LOCK_FILE):
                return "incomplete"
        except FolderBusyError:
            return "running"

    def describe(self) -> str:
        a = self.args
        return (
            f"{self.run_dir}: {a['dataset']} {a['algorithm']} test_envs={a['test_envs']} "
            f"hparams_seed={a['hparams_seed']} trial_seed={a['trial_seed']}"
        )


class Sweep:
    """The runs of a sweep's settings, their states, launching and deleting (see the module docstring)."""

    def __init__(self, sweep_args: SweepArguments, training_args: SARRConfig, model_args: ModelConfig):
        if "mode" in _explicit(training_args, SARRConfig(output_dir=training_args.output_dir), ()):
            raise ValueError(
                f"mode={training_args.mode!r}: a sweep sets each run's MTCT mode from its method "
                f"({', '.join(f'{m}: {s.mode}' for m, s in METHODS.items())}). Remove mode and choose methods."
            )
        # The recipes' default when unset: a tiny LLaVA, built on first launch (its path is part of each run's hash).
        model_args.model_name_or_path = embedded_model_path(
            sweep_args, model_args.model_name_or_path, DEFAULT_TINY_MODEL
        )
        self.sweep_args, self.training_args, self.model_args = sweep_args, training_args, model_args
        self.out = Path(training_args.output_dir)
        for config in sweep_args.dataset_config:
            if config not in BENCHMARKS:
                raise ValueError(f"Unknown dataset {config!r}. Valid datasets: {', '.join(BENCHMARKS)}.")
        self.training = _explicit(
            training_args, SARRConfig(output_dir=training_args.output_dir), ("output_dir", "seed")
        )
        self.model = _explicit(model_args, ModelConfig(), ("model_name_or_path",))

    def environments(self, config: str) -> list[str]:
        """The environments of a dataset config, in DomainBed's order."""
        return list(get_benchmark(config).domains)

    def jobs(self) -> list[SweepJob]:
        """Every run of the sweep, in order (dataset, method, trial seed, test environments, hparams seed).

        Raises:
            ValueError: naming a test environment that a dataset does not have, and its environments.
        """
        s = self.sweep_args
        jobs = []
        for config in s.dataset_config:
            environments = self.environments(config)
            test_envs = check_test_envs(s.test_envs or range(len(environments)), environments)
            for method, trial_seed, envs, hparams_seed in itertools.product(
                [m for m in METHODS if m in s.methods],
                range(s.n_trials),
                test_env_sets(len(environments), test_envs, s.test_env_pairs),
                range(s.n_hparams_from, s.n_hparams),
            ):
                args = self.run_args(config, method, envs, hparams_seed, trial_seed)
                jobs.append(SweepJob(args, self.out / job_hash(args)))
        return jobs

    def run_args(self, config: str, method: str, test_envs: list[int], hparams_seed: int, trial_seed: int) -> dict:
        """The arguments of one run (hashed into its folder's name; every record carries them)."""
        s = self.sweep_args
        dataset = domainbed_dataset_name(get_benchmark(config))
        return {
            "dataset": dataset,
            "algorithm": method,
            "test_envs": test_envs,
            "hparams_seed": hparams_seed,
            "trial_seed": trial_seed,
            "holdout_fraction": s.holdout_fraction,
            "seed": domainbed_seed_hash(dataset, method, test_envs, hparams_seed, trial_seed),
            "steps": self.training_args.max_steps if self.training_args.max_steps > 0 else None,
            "checkpoint_freq": s.checkpoint_every,
            "dataset_name": s.dataset_name,
            "dataset_config": config,
            "model_name_or_path": self.model_args.model_name_or_path,
            "holdout_style": s.holdout_style,
            "max_train_images_per_domain": s.max_train_images_per_domain,
            "sample_seed": s.sample_seed,
            "eval_batch_size": s.eval_batch_size,
            "eval_reasoning_every": s.eval_reasoning_every,
            "reasoning_eval_limit": s.reasoning_eval_limit,
            "max_new_tokens": s.max_new_tokens,
            "training": self.training,
            "model": self.model,
        }

    def status(self, jobs: Sequence[SweepJob] | None = None) -> tuple[list[str], dict[str, int]]:
        """One line per run and the count of runs per state."""
        jobs = self.jobs() if jobs is None else jobs
        states = [job.state for job in jobs]
        lines = [f"{state}: {job.describe()}" for job, state in zip(jobs, states)]
        counts = {state: states.count(state) for state in ("done", "running", "incomplete", "not launched")}
        lines.append(
            f"{len(jobs)} runs: {counts['done']} done, {counts['running']} running, {counts['incomplete']} "
            f"incomplete, {counts['not launched']} not launched."
        )
        return lines, counts

    def delete_incomplete(self) -> int:
        """Remove the folders of incomplete runs (not running ones); returns how many."""
        deleted = 0
        for job in self.jobs():
            if job.state != "incomplete":
                continue
            try:
                with FolderLock(job.run_dir, "sweep run", lock_file=job.run_dir / LOCK_FILE):
                    shutil.rmtree(job.run_dir)
                deleted += 1
            except FolderBusyError:
                logger.info("%s started meanwhile; kept.", job.run_dir)
        return deleted

    def launch(self) -> dict[str, Any]:
        """Check every input, then run every run that is neither done nor running with the sweep's launcher.

        Returns:
            ``{"launched": n, "failed": [run folders], "skipped": {state: n}}``.
        """
        check_launcher(self.sweep_args)
        s = self.sweep_args
        for config in s.dataset_config:  # inputs built and checked before any run
            prepare_embedded_default(s, s.dataset_name, config, self.model_args.model_name_or_path)
            self._check_dataset(config)
        jobs = self.jobs()
        lines, counts = self.status(jobs)
        print("\n".join(lines[-1:]))
        to_run = [job for job in jobs if job.state in ("not launched", "incomplete")]
        for job in to_run:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(job.run_dir / ARGS_FILE, {**job.args, "output_dir": str(job.run_dir)}, sort_keys=True)
        print(f"Launching {len(to_run)} runs ({self.sweep_args.launcher}).")
        failed = launch(self.sweep_args, [job.run_dir for job in to_run], self.out)
        return {
            "launched": len(to_run),
            "failed": failed,
            "skipped": {k: v for k, v in counts.items() if k in ("done", "running")},
        }

    def _check_dataset(self, config: str) -> None:
        """Load a dataset config once: it exists and holds every environment (before any run starts)."""
        from datasets import load_dataset

        from ..protocol.environments import dataset_environments

        name = self.sweep_args.dataset_name
        try:
            dataset = load_dataset(name, config)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"Dataset {name!r}, config {config!r} cannot be loaded: {error}") from error
        dataset_environments(dataset)
