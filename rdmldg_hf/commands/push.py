"""``rdmldg push``: upload a trained adapter with its model card to the Hub, or the demo Space of a model.

rdmldg push --adapter outputs/sarr-officehome-art --repo someone/rdmldg-officehome-art [--private]
rdmldg push --space someone/rdmldg-demo --model someone/rdmldg-officehome-art
"""

from __future__ import annotations

import argparse

from . import CommandError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", help="The rdmldg output folder holding the adapter.")
    parser.add_argument("--repo", help="Model repo ORG/NAME (created if missing).")
    parser.add_argument("--results", help="results.json for the card's model-index (default: the folder's own).")
    parser.add_argument("--base-model", help="Hub id of the base model, when the adapter config names a local folder.")
    parser.add_argument(
        "--dataset", default=None, help="Dataset repo the card names (default rdmldg/domainbed-reasoning)."
    )
    parser.add_argument("--space", metavar="ORG/NAME", help="Push the Gradio demo Space of --model instead.")
    parser.add_argument("--model", metavar="REPO", help="With --space: the model repo the Space serves.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login). Never printed.")


def run(args: argparse.Namespace) -> int:
    import huggingface_hub

    if args.space:
        return push_demo_space(args)
    if not (args.adapter and args.repo):
        raise CommandError("give --adapter FOLDER --repo ORG/NAME (a model), or --space ORG/NAME --model REPO.")
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


def push_demo_space(args: argparse.Namespace) -> int:
    import huggingface_hub

    from ..demo.space import push_space
    from . import hub_offline_error

    if not args.model:
        raise CommandError("--space needs the model repo it serves: --model ORG/NAME.")
    if args.adapter or args.repo:
        raise CommandError("--space pushes a Space only; push the model first with --adapter FOLDER --repo ORG/NAME.")
    if huggingface_hub.is_offline_mode():
        raise hub_offline_error("rdmldg push --space")
    url = push_space(args.space, args.model, private=True if args.private else None, token=args.token)
    print(f"Pushed the demo Space of {args.model} to {args.space}: {url}")
    return 0
