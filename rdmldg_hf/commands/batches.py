"""``rdmldg batches``: the Batch API jobs of a build, read from its teacher stores (never written).

rdmldg batches --out ./domainbed-reasoning
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "batch_status"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="The dataset folder given to `rdmldg build`.")
    parser.add_argument(
        "--teacher-store",
        default=None,
        metavar="DIR",
        help="The reply stores' folder, when `rdmldg build` was given one (default: <out>.teacher-store).",
    )
    parser.add_argument("--json", action="store_true", help="Print the status as JSON.")


def batch_status(store_root: Path) -> list[dict[str, Any]]:
    """Per store (teacher, prompt, benchmark, sampling): its batches, requests pending, tokens and cost."""
    from ..teacher.accounting import estimate_cost, price_for
    from ..teacher.store import TeacherStore

    stores = []
    for folder in sorted(path for path in store_root.iterdir() if (path / TeacherStore.SETTINGS).is_file()):
        key = TeacherStore.read_settings(folder)
        if not (folder / TeacherStore.REPLIES).exists():
            continue
        with TeacherStore(folder, key, read_only=True) as store:
            totals = store.totals
            batches = [
                {
                    "batch_id": batch_id,
                    "shard": record["shard"],
                    "status": record["done"] or "submitted",
                    "requests": record["custom_ids"]
                    if isinstance(record["custom_ids"], int)
                    else len(record["custom_ids"]),
                }
                for batch_id, record in store.batches.items()
            ]
            stores.append(
                {
                    "store": folder.name,
                    "teacher": key["model"],
                    "benchmark": key["benchmark"],
                    "prompt_version": key["prompt_version"],
                    "batches": batches,
                    "requests_pending": len(store.pending_ids()),
                    "replies": totals.replies,
                    "tokens": totals.prompt_tokens + totals.completion_tokens,
                    "estimated_cost_usd": estimate_cost(
                        totals.prompt_tokens,
                        totals.completion_tokens,
                        price_for(key["model"]),
                        totals.batch_prompt_tokens,
                        totals.batch_completion_tokens,
                    ),
                }
            )
    return stores


def run(args: argparse.Namespace) -> int:
    from ..teacher.arguments import default_store_root

    root = Path(args.teacher_store) if args.teacher_store else default_store_root(args.out)
    if not root.is_dir():
        raise FileNotFoundError(
            f"No teacher stores in {root}: build with `rdmldg build --out {args.out} --teacher ...` first."
        )
    stores = batch_status(root)
    if args.json:
        print(json.dumps(stores, indent=2))
        return 0
    for store in stores:
        cost = "unknown" if store["estimated_cost_usd"] is None else f"${store['estimated_cost_usd']:,.2f}"
        print(
            f"{store['benchmark']} / {store['teacher']} / {store['prompt_version']}: {len(store['batches'])} batches, "
            f"{store['requests_pending']} requests pending, {store['replies']} replies, "
            f"{store['tokens']:,} tokens, cost {cost}"
        )
        for batch in store["batches"]:
            print(
                f"  {batch['batch_id']:<24} {batch['status']:<10} {batch['requests']:>7} "
                f"requests  shard {batch['shard']}"
            )
    return 0
