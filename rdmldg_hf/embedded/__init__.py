"""The embedded default, which is product: its benchmark and the tiny models it trains, built offline.

* :mod:`.benchmark` -- RotatedDigits, made from the handwritten digits scikit-learn ships: four rotated
  domains, every image with a template chain (:func:`embedded_source_images`, :func:`embedded_chains`);
* :mod:`.tiny_models` -- :func:`build_tiny_model`, a tiny random model of each supported architecture
  (``ARCHITECTURES``) with its processor and chat template, sized by a preset (``TINY_PRESETS``) and
  :class:`TinyModelSpec` overrides.

``rdmldg_hf.testing`` re-exports the factory for tests; this package never imports ``testing``.
Names are imported on first use, so that the benchmark's images come without transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

# public name -> submodule defining it
_EXPORTS: dict[str, str] = {
    "ARCHITECTURES": "tiny_models",
    "TINY_PRESETS": "tiny_models",
    "TinyModelSpec": "tiny_models",
    "build_tiny_model": "tiny_models",
    "check_tiny_model": "tiny_models",
    "chat_template": "tiny_models",
    "chatml_template": "tiny_models",
    "llava_from_language_model": "tiny_models",
    "project_corpus": "tiny_models",
    "train_tokenizer": "tiny_models",
    "EMBEDDED_SEED": "benchmark",
    "IMAGE_SIZE": "benchmark",
    "TEMPLATE_CHAIN_SOURCE": "benchmark",
    "domain_angle": "benchmark",
    "embedded_chains": "benchmark",
    "embedded_source_images": "benchmark",
    "load_digits_arrays": "benchmark",
    "template_chain": "benchmark",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
