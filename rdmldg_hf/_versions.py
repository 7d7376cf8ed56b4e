"""The oldest library versions rdmldg_hf works with, checked when the package is imported.

Older versions would fail late or, worse, train silently wrong (e.g. a Trainer without
``loss_is_scaled_for_ga`` divides the MTCT loss by the accumulation steps a second time).
``setup.cfg`` states the same floors.
"""

from __future__ import annotations

from importlib import metadata

from packaging.version import Version

__all__ = ["MINIMUM_VERSIONS", "check_versions"]

# Distribution -> oldest working version, and what needs it.
MINIMUM_VERSIONS: dict[str, str] = {
    "torch": "2.6",  # torch.accelerator
    # Trainer.loss_is_scaled_for_ga (5.19), TrainingArguments.activation_checkpointing (5.23),
    # models taking the KV cache as `cache=` (5.24; direct scoring continues from it)
    "transformers": "5.24.0",
    "trl": "1.16.0",  # SFTTrainer's fused LM head (1.15), without Triton on CPUs (1.16)
    "peft": "0.18.0",  # the first release that imports with transformers 5
    "datasets": "4.7.0",  # TRL's floor
    "huggingface_hub": "1.31.0",  # transformers' floor
    "accelerate": "1.10.1",  # TRL's floor
    "evaluate": "0.4.0",  # evaluate.load of a local metric module
    # built on httpx2 (as huggingface_hub 2 is), whose replies the teacher reads; 1.x and 2.x use httpx
    "openai": "3.0.0",
}


def check_versions() -> None:
    """Raise if an installed library is older than :data:`MINIMUM_VERSIONS` (or missing).

    Raises:
        ImportError: naming each library, the installed and the needed version, and the pip command.
    """
    problems, needed = [], []
    for name, minimum in MINIMUM_VERSIONS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        # A pre-release of the floor itself (5.24.0.dev0) is accepted.
        if installed is None or Version(installed).release < Version(minimum).release:
            problems.append(f"{name} {installed} is installed" if installed else f"{name} is not installed")
            needed.append(f"{name}>={minimum}")
    if problems:
        raise ImportError(
            f"rdmldg_hf needs {', '.join(needed)}, but {'; '.join(problems)}. "
            f"Upgrade with: pip install -U {' '.join(repr(requirement) for requirement in needed)}"
        )
