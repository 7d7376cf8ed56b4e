"""The one place that splits data and selects models.

* :mod:`.holdout` -- the in/out split of every domain (our seeded hash of ``image_id``, or DomainBed's own);
* :mod:`.subsets` -- seeded samples stratified by class and domain, drawn after the holdout;
* :mod:`.lodo` -- leave-one-domain-out splits (train, validation, test: the whole held-out domain or its in-part);
* :mod:`.selection` -- training-domain validation: the selection rule and the best-checkpoint selector;
* :mod:`.domains` -- a benchmark's domain splits as one ``Dataset``, and the benchmark of its labels;
* :mod:`.choices` -- checking a setting against its valid values.
"""

from .domains import find_benchmark, match_benchmark, merge_domains
from .holdout import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_HOLDOUT_SEED,
    DEFAULT_HOLDOUT_STYLE,
    HOLDOUT_STYLES,
    check_holdout_style,
    holdout_ids,
    split_holdout,
)
from .lodo import TEST_SPLITS, LodoSplit, check_domains, check_test_split, lodo_split
from .selection import (
    DEFAULT_SELECTION_RULE,
    SELECTION_RULES,
    CheckpointSelector,
    check_selection_rule,
    selection_score,
)
from .subsets import DEFAULT_SAMPLE_SEED, describe_rows, sample_record, stratified_sample

__all__ = [
    "find_benchmark",
    "match_benchmark",
    "merge_domains",
    "DEFAULT_HOLDOUT_FRACTION",
    "DEFAULT_HOLDOUT_SEED",
    "DEFAULT_HOLDOUT_STYLE",
    "HOLDOUT_STYLES",
    "check_holdout_style",
    "holdout_ids",
    "split_holdout",
    "TEST_SPLITS",
    "LodoSplit",
    "check_domains",
    "check_test_split",
    "lodo_split",
    "DEFAULT_SELECTION_RULE",
    "SELECTION_RULES",
    "CheckpointSelector",
    "check_selection_rule",
    "selection_score",
    "DEFAULT_SAMPLE_SEED",
    "describe_rows",
    "sample_record",
    "stratified_sample",
]
