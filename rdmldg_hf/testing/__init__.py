"""What tests and benchmarks of rdmldg_hf (and of code built on it) use: tiny offline models."""

from .tiny_models import (
    ARCHITECTURES,
    TINY_PRESETS,
    TinyModelSpec,
    build_tiny_model,
    chat_template,
    llava_from_language_model,
    project_corpus,
    train_tokenizer,
)

__all__ = [
    "ARCHITECTURES",
    "TINY_PRESETS",
    "TinyModelSpec",
    "build_tiny_model",
    "chat_template",
    "llava_from_language_model",
    "project_corpus",
    "train_tokenizer",
]
