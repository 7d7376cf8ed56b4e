"""What tests and benchmarks of rdmldg_hf (and of code built on it) use: tiny offline models, an LM-head probe."""

from .lm_head import LMHeadCalls
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
    "LMHeadCalls",
    "ARCHITECTURES",
    "TINY_PRESETS",
    "TinyModelSpec",
    "build_tiny_model",
    "chat_template",
    "llava_from_language_model",
    "project_corpus",
    "train_tokenizer",
]
