"""How a sweep's runs are started: ``local``, ``parallel`` or ``submitit``.

* ``local``: one run after another, each in its own process (as DomainBed's ``local`` launcher);
* ``parallel``: ``jobs`` runs at once on this machine, each in its own process: on a GPU machine each
  on its own GPU (``CUDA_VISIBLE_DEVICES``), else each on one CPU thread (``OMP_NUM_THREADS``;
  ``cpu_threads`` to give each more);
* ``submitit``: one job array through the ``submitit`` library (Slurm; its ``local`` and ``debug``
  clusters run the same code path on this machine).

A run's process is ``python -m rdmldg_hf.experiments.sweep_run RUN_DIR`` (stdout and stderr to the
run folder's ``out.txt`` and ``err.txt``); it ends itself when its launcher dies, so that a killed
launcher leaves nothing writing (launch again to run what did not finish).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["LAUNCHERS", "LAUNCHER_ENV", "check_launcher", "launch", "run_processes", "visible_gpus"]

LAUNCHERS: tuple[str, ...] = ("local", "parallel", "submitit")
# Set in a run's environment by the local launchers: the process id the run watches (it stops when that one dies).
LAUNCHER_ENV = "RDMLDG_SWEEP_LAUNCHER_PID"


def visible_gpus() -> list[str]:
    """The GPUs runs can be given: ``CUDA_VISIBLE_DEVICES`` when set, else every CUDA device (none on a CPU)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _start(run_dir: Path, gpu: str | None, threads: int) -> subprocess.Popen:
    env = {**os.environ, LAUNCHER_ENV: str(os.getpid())}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    else:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(run_dir / "out.txt", "w") as out, open(run_dir / "err.txt", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "rdmldg_hf.experiments.sweep_run", str(run_dir)], stdout=out, stderr=err, env=env
        )


def check_launcher(sweep_args: Any) -> None:
    """Check that the sweep's launcher can run here, before any run folder is made.

    Raises:
        ValueError: for more parallel jobs than visible GPUs on a GPU machine, or submitit missing.
    """
    if sweep_args.launcher == "parallel":
        gpus = visible_gpus()
        if gpus and sweep_args.jobs > len(gpus):
            raise ValueError(
                f"--jobs {sweep_args.jobs} runs at once, one per GPU, but {len(gpus)} GPU(s) are visible "
                f"({', '.join(gpus)}). Use --jobs {len(gpus)} or fewer."
            )
    if sweep_args.launcher == "submitit":
        try:
            import submitit  # noqa: F401
        except ImportError as error:
            raise ValueError(
                "--launcher submitit needs the submitit library: pip install submitit (or the package's [sweeps] "
                "extra)."
            ) from error


def run_processes(run_dirs: Sequence[Path], jobs: int, threads: int = 1) -> list[str]:
    """Run every run in its own process, ``jobs`` at once (see the module docstring); returns the failed runs."""
    gpus = visible_gpus()
    queue = list(run_dirs)
    running: dict[int, tuple[Path, subprocess.Popen]] = {}
    failed: list[str] = []
    try:
        while queue or running:
            for slot in range(jobs):
                if slot not in running and queue:
                    run_dir = queue.pop(0)
                    running[slot] = (run_dir, _start(run_dir, gpus[slot] if gpus else None, threads))
            for slot, (run_dir, process) in list(running.items()):
                code = process.poll()
                if code is not None:
                    del running[slot]
                    if code != 0:
                        failed.append(str(run_dir))
                        print(f"Run {run_dir} failed (exit {code}); see {run_dir / 'err.txt'}.", file=sys.stderr)
            time.sleep(0.1)
    finally:  # interrupted: stop the runs started here
        for _, process in running.values():
            process.terminate()
        for _, process in running.values():
            process.wait(timeout=30)
    return failed


def _submitit(sweep_args: Any, run_dirs: Sequence[Path], out: Path) -> list[str]:
    import submitit

    from .sweep_run import run_job

    executor = submitit.AutoExecutor(folder=out / "submitit", cluster=sweep_args.submitit_cluster)
    parameters: dict[str, Any] = {
        "timeout_min": sweep_args.submitit_timeout_min,
        "gpus_per_node": sweep_args.submitit_gpus_per_node,
        "slurm_array_parallelism": sweep_args.submitit_array_parallelism,
        "name": "rdmldg-sweep",
    }
    if sweep_args.submitit_partition:
        parameters["slurm_partition"] = sweep_args.submitit_partition
    if sweep_args.submitit_cpus_per_task:
        parameters["cpus_per_task"] = sweep_args.submitit_cpus_per_task
    parameters.update(sweep_args.submitit_parameters)
    executor.update_parameters(**parameters)
    jobs = executor.map_array(run_job, [str(run_dir) for run_dir in run_dirs])
    if jobs:
        print(f"Submitted job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs; logs in {out / 'submitit'}).")
    if not sweep_args.submitit_wait:
        return []
    failed = []
    for run_dir, job in zip(run_dirs, jobs):
        try:
            job.result()
        except Exception as error:  # noqa: BLE001 - a failed run is reported, the others go on
            failed.append(str(run_dir))
            print(f"Run {run_dir} failed: {type(error).__name__}: {error}", file=sys.stderr)
    return failed


def launch(sweep_args: Any, run_dirs: Sequence[Path], out: Path) -> list[str]:
    """Run ``run_dirs`` with ``sweep_args.launcher``; returns the runs that failed."""
    if not run_dirs:
        return []
    threads = sweep_args.cpu_threads or 1
    if sweep_args.launcher == "submitit":
        return _submitit(sweep_args, run_dirs, out)
    return run_processes(run_dirs, sweep_args.jobs if sweep_args.launcher == "parallel" else 1, threads)
