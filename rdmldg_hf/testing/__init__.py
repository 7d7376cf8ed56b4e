"""The way to test code that uses rdmldg_hf (and rdmldg_hf itself): offline stand-ins for models and servers.

* :func:`build_tiny_model` -- a tiny model of each supported architecture (``ARCHITECTURES``) with its
  processor and chat template, written to a folder, built offline in seconds (re-exported from
  :mod:`rdmldg_hf.embedded`, where the embedded default's models are made);
* :class:`ScriptedBackend` -- generation whose outputs come from a function, accepted wherever rdmldg_hf
  generates with a model (relabeling, evaluation, ``SARRTrainer(backend=...)``);
* :class:`LoopbackServer` -- an OpenAI-compatible chat-completions server on 127.0.0.1 with scripted
  replies, for the teacher (``rdmldg build --teacher ... --base-url server.base_url``);
  :class:`LoopbackBatchServer` adds the files and batches endpoints of the Batch API mode;
* :class:`LMHeadCalls` -- counts the rows the LM head computes; :func:`oversized_png` -- a tiny file
  whose header claims a huge image.

Example::

    from rdmldg_hf.chains import render_chain
    from rdmldg_hf.testing import LoopbackServer, ScriptedBackend, build_tiny_model

    model_dir = build_tiny_model(tmp_path / "model", "qwen2_vl", preset="test")
    chain = render_chain("Name the animal.", "A dog.", "Four legs, fur.", "Nothing contradicts it.", "dog")
    backend = ScriptedBackend(lambda messages, image: chain)        # instead of a model that generates
    with LoopbackServer(lambda body: [chain] * body.get("n", 1)) as teacher:
        ...  # point the code under test at teacher.base_url

Names are imported on first use, so that a test needing only the loopback server does not import
transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

# public name -> module defining it (relative to this package); the tiny models are the embedded default's
_EXPORTS: dict[str, str] = {
    "ARCHITECTURES": ".embedded.tiny_models",
    "TINY_PRESETS": ".embedded.tiny_models",
    "TinyModelSpec": ".embedded.tiny_models",
    "build_tiny_model": ".embedded.tiny_models",
    "chat_template": ".embedded.tiny_models",
    "llava_from_language_model": ".embedded.tiny_models",
    "project_corpus": ".embedded.tiny_models",
    "train_tokenizer": ".embedded.tiny_models",
    "ScriptedBackend": "scripted_backend",
    "LoopbackServer": "loopback",
    "Scripted": "loopback",
    "chat_completion": "loopback",
    "LoopbackBatchServer": "batch_loopback",
    "LMHeadCalls": "lm_head",
    "oversized_png": "oversized",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
