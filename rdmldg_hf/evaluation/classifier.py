"""``DGClassifier``: a trained rdmldg output (adapter or full model) as an image classifier.

    clf = DGClassifier.from_pretrained("someone/rdmldg-officehome-art")   # or a local folder
    clf.predict([img1, img2], mode="direct")      # labels and class probabilities
    clf.predict([img1], mode="reasoning")         # labels and chains

It reads ``rdmldg_config.json`` (classes, benchmark, prompt version), loads the base model
named in the adapter config (or ``model=``), applies the adapter with PEFT and asks the
questions of :mod:`rdmldg_hf.prompts`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from huggingface_hub.errors import HfHubHTTPError

from ..benchmarks import get_benchmark
from ..models import (
    ADAPTER_CONFIG_NAME,
    AdapterError,
    RunConfig,
    check_adapter,
    load_model_and_processor,
    resolve_placement,
)
from ..prompts import PROMPT_VERSION
from .predict import MODES, predict

__all__ = ["ClassifierOutput", "DGClassifier", "BaseModelNotFound", "resolve_folder"]

logger = logging.getLogger(__name__)

# A base model from the Hub is fetched as one snapshot of these files (one revision for all of
# them; weights in safetensors only; no probing of files the repo lacks).
BASE_MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]


class BaseModelNotFound(FileNotFoundError):
    """The base model an adapter names cannot be loaded."""


@dataclass(frozen=True)
class ClassifierOutput:
    """One image's prediction: the class (None for an invalid output), its probabilities
    (``direct`` mode) and the generated text (generating modes)."""

    label: str | None
    index: int
    probabilities: dict[str, float] | None = None
    text: str | None = None


def resolve_folder(path_or_repo: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """A local folder as is; a Hub repo id downloaded (``snapshot_download``, cached) to a folder."""
    local = Path(path_or_repo)
    if local.is_dir():
        return local
    if local.exists() or str(path_or_repo).startswith((".", "/")):
        raise FileNotFoundError(f"{str(path_or_repo)!r} is not a folder (nor a Hub repo id ORG/NAME).")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_repo), **hub_kwargs))


class DGClassifier:
    """A vision-language model trained by rdmldg, with its classes and prompts."""

    def __init__(self, model: Any, processor: Any, run_config: RunConfig, source: str = ""):
        self.model = model
        self.processor = processor
        self.run_config = run_config
        self.source = source
        if run_config.prompt_version != PROMPT_VERSION:
            logger.warning(
                "%s was trained with prompts %s; this rdmldg_hf asks %s: answers may differ.",
                source or "The model",
                run_config.prompt_version,
                PROMPT_VERSION,
            )

    @property
    def classes(self) -> list[str]:
        """The class labels, in label order."""
        return list(self.run_config.classes)

    @property
    def class_names(self) -> list[str]:
        """The class names the questions offer, in label order."""
        return list(self.run_config.class_names)

    @property
    def benchmark(self) -> str | None:
        return self.run_config.benchmark

    @property
    def aliases(self) -> dict[str, tuple[str, ...]] | None:
        """Extra accepted spellings of each class name in answers (the benchmark's), if any."""
        return dict(get_benchmark(self.benchmark).class_aliases) if self.benchmark else None

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike,
        model: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        token: str | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        use_kernels: bool = False,
        **model_kwargs: Any,
    ) -> "DGClassifier":
        """Load from a local output folder or a Hub repo id.

        Args:
            path_or_repo: folder or repo holding ``rdmldg_config.json`` and the adapter (or full weights).
            model: the base model (folder or repo id) to use instead of the adapter config's
                ``base_model_name_or_path``.
            revision, token: for the Hub download.
            device: where the model runs: ``"auto"`` (the GPU when there is one), ``"cpu"``, ``"cuda"``,
                ``"cuda:N"`` (:func:`rdmldg_hf.models.resolve_placement`).
            dtype: ``"auto"`` (bfloat16 on a GPU that supports it, else the saved dtype), ``"bfloat16"``, ...
            use_kernels: Hub kernels (transformers' ``use_kernels``); off by default.
            model_kwargs: passed to ``from_pretrained`` of the base model (``device_map``, ``attn_implementation``).

        Raises:
            AdapterError: the adapter itself is broken (says what is wrong; :func:`rdmldg_hf.models.check_adapter`).
            BaseModelNotFound: the adapter's base model cannot be loaded (says which, and how to pass ``model``).
            ValueError: a device this machine does not have, or an unknown dtype (naming it and the valid ones).
        """
        placement = resolve_placement(device, dtype)  # a bad device or dtype stops before any download
        model_kwargs.update(device=placement.device, dtype=placement.dtype, use_kernels=use_kernels)
        folder = resolve_folder(path_or_repo, revision=revision, token=token)
        run = RunConfig.load(folder)
        if not (folder / ADAPTER_CONFIG_NAME).is_file():
            loaded, processor = load_model_and_processor(model or folder, **model_kwargs)
            return cls(loaded, processor, run, str(path_or_repo))
        config = check_adapter(folder, base_model=None if model is None else str(model))
        base = str(model) if model is not None else config.base_model_name_or_path
        try:
            local_base = resolve_folder(base, allow_patterns=BASE_MODEL_FILES, revision=None, token=token)
            loaded, processor = load_model_and_processor(local_base, adapter=str(folder), **model_kwargs)
        except AdapterError:
            raise
        except (OSError, ValueError, HfHubHTTPError) as error:
            if not _missing(error):
                raise
            raise BaseModelNotFound(
                f"The base model {base!r} of adapter {str(path_or_repo)!r} cannot be found ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}). Pass the base model yourself: "
                f"DGClassifier.from_pretrained(..., model='<folder or repo id>'), or --model on the command line."
            ) from error
        return cls(loaded, processor, run, str(path_or_repo))

    def predict(
        self, images: Sequence[Any], mode: str = "direct", *, batch_size: int = 16, max_new_tokens: int | None = None
    ) -> list[ClassifierOutput]:
        """Predict each image's class in one of ``direct``, ``direct-generate``, ``reasoning``."""
        result = predict(
            self.model,
            self.processor,
            images,
            self.class_names,
            mode,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            aliases=self.aliases,
        )
        outputs = []
        for i, index in enumerate(result.indices):
            probabilities = None
            if result.probabilities is not None and result.probabilities[i] is not None:
                probabilities = dict(zip(self.classes, result.probabilities[i]))
            outputs.append(
                ClassifierOutput(self.classes[index] if index >= 0 else None, index, probabilities, result.texts[i])
            )
        return outputs

    modes = MODES


def _missing(error: BaseException) -> bool:
    """Whether a loading error means 'no such model' (rather than a broken one)."""
    text = str(error).lower()
    return isinstance(error, (OSError, HfHubHTTPError)) or any(
        phrase in text
        for phrase in ("not a valid", "does not appear", "can't load", "is not a local folder", "not found", "no such")
    )
