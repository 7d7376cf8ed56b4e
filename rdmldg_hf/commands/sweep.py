"""``rdmldg sweep``: DomainBed-style sweeps (datasets x methods x test environments x hparams x trials).

    rdmldg sweep launch --config recipes/configs/sweep_tiny.yaml --launcher parallel --jobs 2
    rdmldg sweep launch --dataset_name DS --dataset_config pacs --model_name_or_path M --tiny_model llava \\
        --methods mtct --n_trials 2 --n_hparams 2 --test_env_pairs --max_steps 4 --checkpoint_every 2 \\
        --per_device_train_batch_size 4 --output_dir OUT --launcher parallel --jobs 2
    rdmldg sweep status --config ...            # each run: done, running, incomplete or not launched
    rdmldg sweep delete_incomplete --config ... # remove the folders of runs that did not finish

After the action, ``--config FILE`` and any field of the sweep's arguments
(:class:`rdmldg_hf.experiments.sweep.SweepArguments`), of ``SARRConfig`` (training settings of every run) and of
TRL's ``ModelConfig``, as ``--field value``; ``rdmldg sweep launch --help`` lists them. ``rdmldg collect OUT``
makes the results tables.
"""

from __future__ import annotations

import argparse

__all__ = ["ACTIONS", "add_arguments", "run"]

ACTIONS: tuple[str, ...] = ("launch", "status", "delete_incomplete")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="launch, status or delete_incomplete.")
    parser.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        help="--config FILE (YAML) and --field value overrides, read by TRL's TrlParser.",
    )


def run(args: argparse.Namespace) -> int:
    from trl import ModelConfig

    from ..experiments.sweep import Sweep, SweepArguments
    from ..recipe_setup import parse_recipe_args
    from ..trainers import SARRConfig

    parsed = parse_recipe_args(
        (SweepArguments, SARRConfig, ModelConfig), args.arguments, description=f"rdmldg sweep {args.action}"
    )
    sweep = Sweep(*parsed)
    if args.action == "status":
        print("\n".join(sweep.status()[0]))
        return 0
    if args.action == "delete_incomplete":
        print(f"Deleted {sweep.delete_incomplete()} incomplete runs.")
        return 0
    outcome = sweep.launch()
    failed = outcome["failed"]
    print(
        f"Launched {outcome['launched']} runs ({len(failed)} failed); skipped {outcome['skipped'].get('done', 0)} "
        f"done and {outcome['skipped'].get('running', 0)} running. `rdmldg collect {sweep.out}` makes the tables."
    )
    return 1 if failed else 0
