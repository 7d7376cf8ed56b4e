"""The tiny-model factory, kept importable here for tests written against this path: it lives in
:mod:`rdmldg_hf.embedded.tiny_models` (the embedded default's models are product)."""

from ..embedded.tiny_models import *  # noqa: F401,F403
from ..embedded.tiny_models import __all__  # noqa: F401
