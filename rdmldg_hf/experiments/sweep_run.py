"""One run of a sweep: train its method on its split, write a record at each checkpoint, then ``done``.

``python -m rdmldg_hf.experiments.sweep_run RUN_DIR`` (what the launchers start; submitit calls
:func:`run_job`) reads ``RUN_DIR/args.json`` (written by ``rdmldg sweep launch``). The run holds its
folder's lock while it runs: a second process given the same folder leaves it alone, and a done
run is never run again. An incomplete run (killed, failed) starts over: its records are replaced.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

__all__ = ["run_job", "train_run"]

logger = logging.getLogger(__name__)


def _watch_launcher() -> None:
    """End this process when the launcher that started it is gone (its parent changes), so nothing writes after
    a killed launcher."""
    from .launchers import LAUNCHER_ENV

    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher or os.getppid() != int(launcher):
        return

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def run_job(run_dir: str) -> str:
    """Run the sweep run of ``run_dir`` unless it is done or running elsewhere; returns what happened."""
    from ..locking import FolderBusyError, FolderLock
    from .records import ARGS_FILE, DONE_FILE, RESULTS_FILE, mark_done
    from .sweep import LOCK_FILE

    folder = Path(run_dir)
    try:
        lock = FolderLock(folder, "sweep run", lock_file=folder / LOCK_FILE).acquire()
    except FolderBusyError:
        return "running elsewhere"
    try:
        if (folder / DONE_FILE).exists():
            return "done before"
        args = json.loads((folder / ARGS_FILE).read_text())
        (folder / RESULTS_FILE).unlink(missing_ok=True)  # an incomplete run starts over
        shutil.rmtree(folder / "train", ignore_errors=True)
        began = time.perf_counter()
        train_run({k: v for k, v in args.items() if k != "output_dir"}, folder)
        mark_done(folder)
        return f"done in {time.perf_counter() - began:.0f} s"
    finally:
        lock.release()


def _hparam_config(args: dict[str, Any]) -> dict[str, Any]:
    """The config's values of the swept fields: the run's settings over the configs' defaults (``lora_r`` of a
    LoRA run only)."""
    from trl import ModelConfig

    from ..trainers import SARRConfig

    training = {**{f.name: f.default for f in fields(SARRConfig)}, **args["training"]}
    model = {**{f.name: f.default for f in fields(ModelConfig)}, **args["model"]}
    return {
        "learning_rate": training["learning_rate"],
        "per_device_train_batch_size": training["per_device_train_batch_size"],
        "weight_decay": training["weight_decay"],
        "lora_r": model["lora_r"] if model["use_peft"] else None,
    }


def train_run(args: dict[str, Any], run_dir: Path) -> None:
    """Train ``args["algorithm"]`` on the run's split with per-checkpoint records in ``run_dir``."""
    import torch
    from datasets import load_dataset
    from trl import ModelConfig

    from ..evaluation.lodo_cell import cell_training_values, train_cell
    from ..protocol import CheckpointSelector, find_benchmark
    from ..protocol.environments import environment_split
    from ..recipe_setup import load_model_for_training
    from .hparams import run_hparams
    from .records import RecordsCallback, RecordWriter

    dataset = load_dataset(args["dataset_name"], args["dataset_config"])
    split = environment_split(
        dataset,
        args["test_envs"],
        args["holdout_fraction"],
        args["trial_seed"],
        holdout_style=args["holdout_style"],
        max_train_images_per_domain=args["max_train_images_per_domain"],
        sample_seed=args["sample_seed"],
    )
    benchmark = find_benchmark(dataset)
    hparams = run_hparams(_hparam_config(args), args["hparams_seed"], args["trial_seed"])
    model_values = {**args["model"], **({"lora_r": hparams["lora_r"]} if "lora_r" in hparams else {})}
    model_args = ModelConfig(model_name_or_path=args["model_name_or_path"], **model_values)
    torch.manual_seed(args["seed"])  # LoRA initialisation
    model, processor, peft_config = load_model_for_training(model_args)
    writer = RecordWriter(
        run_dir,
        args,
        hparams,
        split,
        processor,
        benchmark,
        batch_size=args["eval_batch_size"],
        reasoning_limit=args["reasoning_eval_limit"],
        max_new_tokens=args["max_new_tokens"],
        sample_seed=args["sample_seed"],
    )
    records = RecordsCallback(
        writer, args["checkpoint_freq"], CheckpointSelector(), reasoning_every=args["eval_reasoning_every"]
    )
    swept = {k: v for k, v in hparams.items() if k != "lora_r"}
    values = cell_training_values(run_dir / "train", args["training"], swept, {"seed": args["seed"]})
    model, _ = train_cell(
        args["algorithm"],
        model,
        processor,
        split.train,
        values,
        benchmark=benchmark,
        base_model=args["model_name_or_path"],
        peft_config=peft_config,
        split_record=split.record(),
        callbacks=[records],
    )
    if not args["eval_reasoning_every"] and split.test_envs:  # reasoning accuracy of the selected checkpoint
        records.selector.restore(model)
        writer.add_reasoning(model, records.selected_step())
    shutil.rmtree(run_dir / "train", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rdmldg_hf.experiments.sweep_run RUN_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _watch_launcher()
    import datasets
    import transformers

    datasets.disable_progress_bars()  # err.txt keeps the logs, not progress bars
    transformers.utils.logging.disable_progress_bar()
    print(f"{argv[0]}: {run_job(argv[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
