"""``rdmldg push``: upload a trained adapter with its model card to the Hub.

rdmldg push --adapter outputs/sarr-officehome-art --repo someone/rdmldg-officehome-art [--private]
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", required=True, help="The rdmldg output folder holding the adapter.")
    parser.add_argument("--repo", required=True, help="Model repo ORG/NAME (created if missing).")
    parser.add_argument("--results", help="results.json for the card's model-index (default: the folder's own).")
    parser.add_argument("--base-model", help="Hub id of the base model, when the adapter config names a local folder.")
    parser.add_argument(
        "--dataset", default=None, help="Dataset repo the card names (default rdmldg/domainbed-reasoning)."
    )
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login). Never printed.")


def run(args: argparse.Namespace) -> int:
    import huggingface_hub

    from ..data.hub_layout import DEFAULT_REPO_ID
    from ..evaluation.sharing import push_adapter
    from . import hub_offline_error

    if huggingface_hub.is_offline_mode():
        raise hub_offline_error("rdmldg push")

    url = push_adapter(
        args.adapter,
        args.repo,
        results=args.results,
        base_model=args.base_model,
        dataset=args.dataset or DEFAULT_REPO_ID,
        private=True if args.private else None,
        token=args.token,
    )
    print(f"Pushed {args.adapter} to {args.repo}: {url}")
    return 0
