"""``rdmldg analyze``: the paper's analyses and plots on your own model and adapters.

    rdmldg analyze class-probs --adapter OUT [--model BASE] [--with-base] --out figs/
    rdmldg analyze token-probs --adapter OUT --with-base --chains teacher self --out figs/
    rdmldg analyze entropy --before OUT/stages/mtct/final --after OUT --top 15 --out figs/
    rdmldg analyze losses --run OUT --out figs/

``--model`` defaults to the base model recorded in the adapter's ``rdmldg_config.json``;
``--dataset`` defaults to the embedded benchmark (built once into the Hugging Face cache).
Each analysis writes PNG figures, a CSV of each figure's numbers, the per-item numbers
and ``manifest.json``, and prints where they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import add_device_arguments, device_kwargs

ANALYSES = ("class-probs", "token-probs", "entropy", "losses")
BASE = "base"


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset", help="Dataset folder or Hub id (default: the embedded benchmark, built on first use)."
    )
    group.add_argument("--config", help="Dataset config (default: the run's benchmark, else the embedded one).")
    group.add_argument(
        "--domains",
        nargs="+",
        help="Domains (splits) to analyse (default: all; token-probs and entropy: the training domains).",
    )
    group.add_argument("--test-domain", help="The held-out (target) domain (default: the run's test_domain).")
    group.add_argument(
        "--max-images",
        type=int,
        default=32,
        help="Images per domain: a seeded sample, stratified by class (default: 32).",
    )
    group.add_argument("--seed", type=int, default=0, help="Seed of the image sample.")
    group.add_argument("--batch-size", type=int, default=16, help="Sequences per forward pass (default: 16).")
    group.add_argument(
        "--max-new-tokens", type=int, default=256, help="Most tokens of a generated chain (default: 256)."
    )
    add_device_arguments(parser.add_argument_group("device"))


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--model", help="Base model folder or Hub id (default: the base model in the adapter's rdmldg_config.json)."
    )
    group.add_argument(
        "--adapter",
        nargs="+",
        default=[],
        help="Training outputs to compare: adapter folders (loaded on the base model) or "
        "full model folders; 'base' = the base model.",
    )
    group.add_argument("--labels", nargs="+", help="Legend label per model (default: folder names).")
    group.add_argument(
        "--with-base", action="store_true", help="Also analyse the base model without adapter (zero-shot), first."
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    p = sub.add_parser(
        "class-probs",
        help="Probability of the correct class: direct, after the teacher chain, after a generated chain.",
    )
    _model_arguments(p)
    _data_arguments(p)
    p.add_argument(
        "--conditions", nargs="+", default=None, help="direct teacher_chain generated_chain (default: all)."
    )
    p.add_argument("--bins", type=int, default=20, help="Histogram bins.")
    p.add_argument("--out", required=True, help="Folder for figures and numbers.")

    p = sub.add_parser("token-probs", help="Distribution of the teacher-forced probability of every chain token.")
    _model_arguments(p)
    _data_arguments(p)
    p.add_argument(
        "--chains",
        nargs="+",
        default=["teacher"],
        choices=["teacher", "self"],
        help="teacher: the dataset's chains; self: chains the last model writes (default: teacher).",
    )
    p.add_argument(
        "--self-filter",
        default="correct",
        choices=["correct", "valid", "all"],
        help="Which self-written chains to keep (default: correct conclusions, as SARR).",
    )
    p.add_argument("--bins", type=int, default=20, help="Histogram bins.")
    p.add_argument("--out", required=True, help="Folder for figures and numbers.")

    p = sub.add_parser("entropy", help="Entropy reduction per token type and stage between two checkpoints.")
    p.add_argument("--model", help="Base model (default: from the adapters' rdmldg_config.json).")
    p.add_argument("--before", required=True, help="Checkpoint before: adapter or model folder, or 'base'.")
    p.add_argument("--after", required=True, help="Checkpoint after: adapter or model folder, or 'base'.")
    _data_arguments(p)
    p.add_argument(
        "--chains", default="teacher", choices=["teacher", "self"], help="Chains scored by both (default: teacher)."
    )
    p.add_argument(
        "--self-filter", default="correct", choices=["correct", "valid", "all"], help="Self chains to keep."
    )
    p.add_argument("--top", type=int, default=15, help="Tokens in the top-k chart (default: 15).")
    p.add_argument(
        "--min-count", type=int, default=3, help="Least occurrences of a token type to be ranked (default: 3)."
    )
    p.add_argument("--examples", type=int, default=3, help="Marked examples per top token (default: 3).")
    p.add_argument("--out", required=True, help="Folder for figures and numbers.")

    p = sub.add_parser("losses", help="Classification vs reasoning loss per step, one line per round.")
    p.add_argument("--run", required=True, help="An MTCT/SARR output folder, or a trainer_state.json.")
    p.add_argument("--out", required=True, help="Folder for figures and numbers.")


def _label(path: str) -> str:
    if path == BASE:
        return BASE
    p = Path(path)
    return p.parent.name if p.name in ("final", "") else p.name


def _run_config(paths: list[str]) -> Any:
    from ..models import RUN_CONFIG_NAME, RunConfig

    for path in reversed(paths):
        if path != BASE and (Path(path) / RUN_CONFIG_NAME).is_file():
            return RunConfig.load(path)
    return None


def _base_model(args: argparse.Namespace, run: Any) -> str | None:
    """``--model``, else the base model the run recorded (None when neither is known)."""
    if args.model:
        return args.model
    return run.base_model if run is not None and run.base_model else None


def _loaders(
    base: str | None, checkpoints: list[str], labels: list[str] | None, placement: dict[str, Any]
) -> list[tuple[str, Any]]:
    """``(label, loader)`` per checkpoint: ``base``, an adapter folder (on ``base``) or a full model folder, each
    loaded with the ``placement`` keywords (device, dtype, use_kernels)."""
    from ..models import load_model_and_processor

    names = labels or [_label(c) for c in checkpoints]
    if len(names) != len(checkpoints):
        raise ValueError(f"{len(names)} --labels for {len(checkpoints)} models; give one label per model.")
    for checkpoint in checkpoints:
        if checkpoint == BASE or _is_adapter(checkpoint):
            if base is None:
                raise ValueError(
                    f"{checkpoint!r} needs the base model: pass --model (no rdmldg_config.json names one)."
                )
        elif not Path(checkpoint).is_dir() and not Path(checkpoint).exists():
            raise FileNotFoundError(f"No model or adapter folder at {checkpoint!r}.")

    def loader(checkpoint: str):
        def load():
            if checkpoint == BASE:
                return load_model_and_processor(base, **placement)
            if _is_adapter(checkpoint):
                return load_model_and_processor(base, adapter=checkpoint, **placement)
            return load_model_and_processor(checkpoint, **placement)

        return load

    return [(name, loader(checkpoint)) for name, checkpoint in zip(names, checkpoints)]


def _is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _embedded_dataset() -> str:
    from huggingface_hub import constants

    from ..benchmarks import EMBEDDED_BENCHMARK
    from ..data.build import build_embedded_once

    folder = Path(constants.HF_HOME) / "rdmldg" / f"embedded-{EMBEDDED_BENCHMARK}"
    if build_embedded_once(folder) is not None:
        print(f"Built the embedded benchmark into {folder} (once).")
    return str(folder)


def _data(args: argparse.Namespace, run: Any):
    from datasets import load_dataset

    from ..analysis.reports import load_analysis_data
    from ..benchmarks import EMBEDDED_BENCHMARK

    source = args.dataset or _embedded_dataset()
    config = args.config or (run.benchmark if run is not None and run.benchmark else EMBEDDED_BENCHMARK)
    dataset = load_dataset(source, config)
    settings = run.settings if run is not None else {}
    return load_analysis_data(
        dataset,
        class_names=run.class_names if run is not None else None,
        domains=args.domains,
        test_domain=args.test_domain or (run.test_domain if run is not None else None),
        holdout_fraction=float(settings.get("holdout_fraction", 0.0) or 0.0),
        holdout_seed=settings.get("holdout_seed"),
        max_images=args.max_images,
        seed=args.seed,
        holdout_style=settings.get("holdout_style", "hash"),
    )


def _training_images(data: Any, args: argparse.Namespace) -> Any:
    """Token analyses run on training images: the target domain is left out unless --domains names it."""
    if args.domains:
        return data
    keep = [i for i, group in enumerate(data.groups) if group != "target"]
    if len(keep) < len(data):
        print(
            f"Scoring chains of the {len(keep)} training-domain images (the held-out domain is "
            "left out; name it in --domains to include it)."
        )
    return data.select(keep)


def _generation(args: argparse.Namespace):
    from ..generation import GenerationSettings

    return GenerationSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)


def run(args: argparse.Namespace) -> int:
    from ..analysis import reports

    out = Path(args.out)
    if args.analysis == "losses":
        report = reports.losses_report(args.run, out)
    elif args.analysis == "entropy":
        adapters = [args.before, args.after]
        run_config = _run_config(adapters)
        labels = [f"{_label(args.before)} (before)", f"{_label(args.after)} (after)"]
        loaders = _loaders(_base_model(args, run_config), adapters, labels, device_kwargs(args))
        report = reports.entropy_report(
            loaders[0],
            loaders[1],
            _training_images(_data(args, run_config), args),
            out,
            args.chains,
            args.top,
            args.min_count,
            args.examples,
            args.self_filter,
            _generation(args),
            args.batch_size,
        )
    else:
        adapters = ([BASE] if args.with_base or not args.adapter else []) + list(args.adapter)
        run_config = _run_config(adapters)
        loaders = _loaders(_base_model(args, run_config), adapters, args.labels, device_kwargs(args))
        data = _data(args, run_config)
        if args.analysis == "class-probs":
            conditions = args.conditions or list(reports.CONDITIONS)
            report = reports.class_probs_report(
                loaders, data, out, conditions, _generation(args), args.batch_size, args.bins
            )
        else:
            report = reports.token_probs_report(
                loaders,
                _training_images(data, args),
                out,
                args.chains,
                args.self_filter,
                _generation(args),
                args.batch_size,
                args.bins,
            )
    print(report.format())
    return 0
