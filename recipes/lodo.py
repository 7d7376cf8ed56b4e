# Copyright the rdmldg_hf authors. Apache-2.0.
"""Leave-one-domain-out ablation: labels only, reasoning only, MTCT, SARR and full RD-MLDG,
each trained once per held-out domain, selected by training-domain validation and tested on
the whole held-out domain. Writes results.json and results.md (the paper's table shape).

    # the embedded default on a laptop CPU (builds the dataset and a tiny model on first use)
    accelerate launch recipes/lodo.py --config recipes/configs/lodo_tiny.yaml

    # some rows or domains only; a killed run resumes with its next unfinished pair
    accelerate launch recipes/lodo.py --config ... --methods labels_only mtct --test_domains rot30

The YAML holds :class:`rdmldg_hf.evaluation.lodo.LodoConfig` fields; ``training`` is passed to
every method's MTCTConfig (SARRConfig for sarr/full, plus the ``sarr`` section), ``tiny_sizes`` to
:class:`rdmldg_hf.testing.TinyModelSpec`; a field that none of them reads is an error naming it and the file.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields
from typing import Any

import yaml
from accelerate import PartialState

from rdmldg_hf.evaluation.lodo import METHODS, LodoConfig, LodoRunner
from rdmldg_hf.recipe_setup import unknown_fields_error
from rdmldg_hf.testing import TinyModelSpec
from rdmldg_hf.trainers import MTCTConfig
from rdmldg_hf.trainers.sarr import SARRConfig


# The YAML's sections and the fields each may hold.
SECTION_FIELDS = {"training": MTCTConfig, "sarr": SARRConfig, "tiny_sizes": TinyModelSpec}


def check_config_fields(config_path: str, values: dict[str, Any]) -> None:
    """Refuse a field no one reads, at the top level or in a section, naming it and the file."""
    sections = [(None, values, LodoConfig)]
    sections += [(name, values.get(name) or {}, kind) for name, kind in SECTION_FIELDS.items()]
    for section, given, kind in sections:
        valid = {f.name for f in fields(kind)}
        unknown = [key for key in given if key not in valid]
        if unknown:
            raise unknown_fields_error(config_path, unknown, valid, section)


def parse_args(argv: list[str] | None = None) -> tuple[LodoConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file of LodoConfig fields (default: all defaults).")
    parser.add_argument("--output_dir", help="Override output_dir.")
    parser.add_argument("--test_domains", nargs="+", help="Override the held-out domains.")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="Override the methods (ablation rows).")
    parser.add_argument("--overwrite", action="store_true", help="Start again in an output_dir holding other settings.")
    args = parser.parse_args(argv)
    values = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        check_config_fields(args.config, values)
    for key in ("output_dir", "test_domains", "methods"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return LodoConfig.from_dict(values), args.overwrite


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, overwrite = parse_args(argv)
    runner = LodoRunner(config, overwrite=overwrite)
    runner.run()
    if PartialState().is_main_process:
        print((runner.out / "results.md").read_text())
        print(f"Wrote {runner.results_path} and {runner.out / 'results.md'}")
    PartialState().wait_for_everyone()


if __name__ == "__main__":
    main()
