"""The embedded RotatedDigits benchmark, kept importable here: it lives in :mod:`rdmldg_hf.embedded.benchmark`."""

from ..embedded.benchmark import *  # noqa: F401,F403
from ..embedded.benchmark import __all__  # noqa: F401
