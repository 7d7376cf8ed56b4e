# Copyright the rdmldg_hf authors. Apache-2.0.
"""Leave-one-domain-out ablation: labels only, reasoning only, MTCT, SARR and full RD-MLDG,
each trained once per held-out domain, selected by training-domain validation and tested on
the whole held-out domain. Writes results.json and results.md (the paper's table shape).

    # no arguments: the embedded default (the packaged lodo_tiny.yaml) on a laptop CPU; builds the dataset and
    # a tiny model on first use
    accelerate launch recipes/lodo.py

    # some rows or domains only; a killed run resumes with its next unfinished pair
    accelerate launch recipes/lodo.py --config ... --methods labels_only mtct --test_domains rot30

Every :class:`rdmldg_hf.evaluation.lodo_config.LodoConfig` field can be given in the YAML or on the
command line (the command line wins; the sections ``training`` (MTCTConfig fields of every
method), ``sarr`` (SARRConfig fields of the sarr/full rows) and ``tiny_sizes``
(:class:`rdmldg_hf.embedded.TinyModelSpec`) as JSON there). A field that nothing reads, at the top
level or in a section, is an error naming it and the file. ``rdmldg train lodo`` launches the same.
"""

from __future__ import annotations

from rdmldg_hf.evaluation.lodo_config import LodoConfig
from rdmldg_hf.training import parse_method_args, run_recipe


def parse_args(argv: list[str] | None = None) -> LodoConfig:
    """The run's settings from ``argv`` (default: the command line; none: the packaged lodo_tiny.yaml) and its
    ``--config`` YAML."""
    (config,) = parse_method_args("lodo", argv)
    return config


def main(argv: list[str] | None = None) -> None:
    run_recipe("lodo", argv)


if __name__ == "__main__":
    main()
