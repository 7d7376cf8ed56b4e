"""The demo of a trained model: a Gradio app (direct class probabilities, the reasoning chain streamed as it is
generated) and the Hugging Face Space it ships as.

* :mod:`.app` -- the Gradio Blocks app (``build_demo``) and its launcher (``launch_demo``, what ``rdmldg demo``
  and a Space's ``app.py`` call);
* :mod:`.streaming` -- the reasoning chain of ``DGClassifier`` streamed token by token (``stream_reasoning``);
* :mod:`.rendering` -- the chain as the page shows it (stages, conclusion);
* :mod:`.facts` -- the model's card facts shown beside it; :mod:`.examples` -- example images per domain;
* :mod:`.space` -- the Space folder (``write_space``) and its upload (``push_space``).

Gradio is an optional dependency (``pip install "rdmldg_hf[demo]"``): only :mod:`.app` imports it, when called.
Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule defining it
_EXPORTS: dict[str, str] = {
    "build_demo": "app",
    "launch_demo": "app",
    "read_upload": "app",
    "UploadError": "app",
    "stream_reasoning": "streaming",
    "ReasoningUpdate": "streaming",
    "TokenTextStreamer": "streaming",
    "ModelFacts": "facts",
    "Example": "examples",
    "write_examples": "examples",
    "write_space": "space",
    "push_space": "space",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
