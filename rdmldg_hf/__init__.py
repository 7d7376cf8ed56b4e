"""rdmldg_hf: RD-MLDG (reasoning-driven multimodal LLMs for domain generalization) on the Hugging Face stack."""

from __future__ import annotations

from ._lazy import lazy_exports
from ._versions import check_versions

__version__ = "0.1.0"

check_versions()  # a too-old transformers/TRL/... fails here, naming the version needed

# Public name -> module that defines it; imported on first use so `import rdmldg_hf` stays light.
_LAZY = {
    "Benchmark": "benchmarks",
    "BENCHMARKS": "benchmarks",
    "get_benchmark": "benchmarks",
    "Chain": "chains",
    "check_chain": "chains",
    "parse_chain": "chains",
    "render_chain": "chains",
    "PROMPT_VERSION": "prompts",
    "MTCTConfig": "trainers.mtct_config",
    "MTCTTrainer": "trainers.mtct",
    "SARRConfig": "trainers.sarr_config",
    "SARRTrainer": "trainers.sarr",
    "DGClassifier": "evaluation.classifier",
}

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
