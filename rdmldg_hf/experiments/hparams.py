"""The hyperparameters a sweep draws, as DomainBed's ``hparams_registry`` draws its own.

``hparams_seed`` 0 is the config's values. Any other seed draws every field from its distribution
below, with a NumPy ``RandomState`` seeded by ``seed_hash(seed_hash(hparams_seed, trial_seed), field)``
(DomainBed's ``misc.seed_hash``; a trial draws its own values, as in DomainBed's ``train.py``):

==============================  ==========================================================
field                           distribution (``d``: the config's value)
==============================  ==========================================================
``learning_rate``               log-uniform in [d / 10, d * 10 ** 0.5]
``per_device_train_batch_size`` ``int(2 ** uniform(log2 d - 1, log2 d + 1))``, at least 1
``weight_decay``                ``10 ** uniform(-6, -2)``
``lora_r``                      one of 4, 8, 16 (only when the run trains a LoRA adapter)
==============================  ==========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..protocol.holdout import domainbed_seed_hash

__all__ = ["HParam", "HPARAMS", "default_hparams", "random_hparams", "run_hparams"]


@dataclass(frozen=True)
class HParam:
    """A swept field: its distribution in words and ``draw(random_state, config_value) -> value``."""

    distribution: str
    draw: Callable[[np.random.RandomState, Any], Any]


HPARAMS: dict[str, HParam] = {
    "learning_rate": HParam(
        "log-uniform in [d / 10, d * 10 ** 0.5]",
        lambda r, d: float(10 ** r.uniform(math.log10(d) - 1, math.log10(d) + 0.5)),
    ),
    "per_device_train_batch_size": HParam(
        "int(2 ** uniform(log2 d - 1, log2 d + 1)), at least 1",
        lambda r, d: max(1, int(2 ** r.uniform(math.log2(d) - 1, math.log2(d) + 1))),
    ),
    "weight_decay": HParam("10 ** uniform(-6, -2)", lambda r, d: float(10 ** r.uniform(-6, -2))),
    "lora_r": HParam("one of 4, 8, 16", lambda r, d: int(r.choice([4, 8, 16]))),
}


def default_hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's values of the swept fields it has (``lora_r`` only when it is set: a LoRA run)."""
    return {name: config[name] for name in HPARAMS if config.get(name) is not None}


def random_hparams(config: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Every swept field of ``config`` drawn from its distribution, each with its own seeded ``RandomState``."""
    return {
        name: HPARAMS[name].draw(np.random.RandomState(domainbed_seed_hash(seed, name)), value)
        for name, value in default_hparams(config).items()
    }


def run_hparams(config: Mapping[str, Any], hparams_seed: int, trial_seed: int) -> dict[str, Any]:
    """The hyperparameters of a run: the config's for ``hparams_seed`` 0, else drawn (see the module docstring)."""
    if hparams_seed == 0:
        return default_hparams(config)
    return random_hparams(config, domainbed_seed_hash(hparams_seed, trial_seed))
