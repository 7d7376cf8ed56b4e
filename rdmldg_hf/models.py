"""Models: loading base + adapter (device, dtype, Hub kernels), LoRA defaults, the run record of a trained output
and its card's results.

Tiny offline models for the embedded default (and tests) live in :mod:`rdmldg_hf.embedded`.

The processors of Qwen2-VL, Qwen2.5-VL and InternVL ask for a video processor, which needs
torchvision; importing this module registers a no-video subclass of each
(:data:`NO_VIDEO_PROCESSORS`) with ``AutoProcessor`` so such folders load as a real processor
(call :func:`register_processors` again in a fresh process that did not import this module).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.models.internvl.processing_internvl import InternVLProcessor
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

from .atomic import atomic_write_json
from .benchmarks import Benchmark
from .generation import process_state
from .prompts import PROMPT_VERSION

if TYPE_CHECKING:
    from huggingface_hub import EvalResult
    from peft import PeftConfig

__all__ = [
    "WithoutVideoProcessor",
    "NO_VIDEO_PROCESSORS",
    "Qwen2VLProcessorNoVideo",
    "Qwen2_5_VLProcessorNoVideo",
    "InternVLProcessorNoVideo",
    "register_processors",
    "Placement",
    "resolve_placement",
    "use_hub_kernels",
    "describe_placement",
    "load_model_and_processor",
    "ADAPTER_CONFIG_NAME",
    "AdapterError",
    "check_adapter",
    "reload_weights",
    "LORA_TARGET_MODULES",
    "default_lora_config",
    "lora_target_names",
    "model_towers",
    "lora_modules_per_tower",
    "check_lora_covers_both_towers",
    "RUN_CONFIG_NAME",
    "RunConfig",
    "build_run_record",
    "accuracy_result",
]


# --------------------------------------------------------------------------- processors


class WithoutVideoProcessor:
    """Mixin for a processor class built without its video processor (which needs torchvision).

    ``class XProcessorNoVideo(WithoutVideoProcessor, XProcessor)`` works exactly as ``XProcessor``
    on images and text; videos are not supported. ``video_processor`` is dropped from the
    sub-processors, so the processor is created, saved and loaded without one.
    """

    video_processor = None

    @classmethod
    def get_attributes(cls) -> list[str]:
        return [name for name in super().get_attributes() if name != "video_processor"]  # type: ignore[misc]


class Qwen2VLProcessorNoVideo(WithoutVideoProcessor, Qwen2VLProcessor):
    """Qwen2-VL's processor without a video processor."""


class Qwen2_5_VLProcessorNoVideo(WithoutVideoProcessor, Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without a video processor."""


class InternVLProcessorNoVideo(WithoutVideoProcessor, InternVLProcessor):
    """InternVL's processor without a video processor."""


NO_VIDEO_PROCESSORS: tuple[type[ProcessorMixin], ...] = (
    Qwen2VLProcessorNoVideo,
    Qwen2_5_VLProcessorNoVideo,
    InternVLProcessorNoVideo,
)


def register_processors() -> None:
    """Register the project's processor classes (:data:`NO_VIDEO_PROCESSORS`) with ``AutoProcessor`` (idempotent).

    ``AutoProcessor.from_pretrained`` resolves a saved folder's ``processor_class`` by name
    among registered classes; without this, such a folder loads as a bare tokenizer.
    """
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    registered = set(PROCESSOR_MAPPING._extra_content.values())
    for processor_class in NO_VIDEO_PROCESSORS:
        if processor_class not in registered:
            # Keyed by a private config class so the stock config -> processor mappings are left
            # untouched; lookup happens by the saved class name.
            name = processor_class.__name__
            key = type(f"_{name}Key", (PretrainedConfig,), {"model_type": f"rdmldg_{name}"})
            AutoProcessor.register(key, processor_class, exist_ok=True)


register_processors()

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- device, dtype, Hub kernels

DEVICE_HELP = "auto (this process's GPU when there is one, else the CPU), cpu, cuda or cuda:N"
DTYPE_HELP = "auto (bfloat16 on a GPU that supports it, else the saved dtype), bfloat16, float16 or float32"
DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Placement:
    """Where a model is loaded to run, and in which dtype (``"auto"``: the dtype its weights were saved in)."""

    device: torch.device
    dtype: torch.dtype | str


def resolve_placement(device: str | torch.device = "auto", dtype: str | torch.dtype = "auto") -> Placement:
    """The device and dtype to run a model on: the one place that decides them.

    Args:
        device: ``"auto"`` (this process's accelerator under accelerate, e.g. ``cuda:1`` for the second of two
            processes; the CPU when there is none), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or another accelerator
            torch has here, e.g. ``"mps"``).
        dtype: ``"auto"`` (bfloat16 on a device that computes in it natively, a CUDA GPU of compute capability
            8.0 or later, or another accelerator; else the saved dtype), or ``"bfloat16"``, ``"float16"``,
            ``"float32"`` (or a torch dtype).

    Raises:
        ValueError: naming the value and the valid ones, for a device torch does not know or that this machine
            does not have, and for an unknown dtype.
    """
    resolved = process_state().device if device in ("auto", None) else _checked_device(device)
    if isinstance(dtype, str) and dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}.")
        dtype = DTYPES[dtype]
    if dtype in ("auto", None):
        dtype = torch.bfloat16 if _computes_in_bf16(resolved) else "auto"
    return Placement(resolved, dtype)


def _checked_device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device: use {DEVICE_HELP}.") from error
    if resolved.type == "cpu":
        return resolved
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is None or accelerator.type != resolved.type:
        found = f"the accelerator here is {accelerator.type!r}" if accelerator is not None else "none is visible"
        raise ValueError(
            f"device {str(device)!r}: torch has no {resolved.type!r} device on this machine ({found}); use "
            f"{DEVICE_HELP}."
        )
    if resolved.index is not None and resolved.index >= torch.accelerator.device_count():
        raise ValueError(
            f"device {str(device)!r}: this machine has {torch.accelerator.device_count()} {resolved.type} device(s), "
            f"numbered from 0; use {DEVICE_HELP}."
        )
    return resolved


def _computes_in_bf16(device: torch.device) -> bool:
    if device.type == "cpu":
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8  # Ampere and later; older GPUs emulate it slowly
    return True


def use_hub_kernels(model: PreTrainedModel, device: str | torch.device) -> bool:
    """Turn on Hub kernels (transformers' ``use_kernels``) for ``model`` trained or run on ``device``.

    The kernels of both modes (training and inference) are fetched now, before any training step; a kernel
    that cannot be had (offline and not cached, ``kernels`` missing, ``USE_HUB_KERNELS=0``) leaves the PyTorch
    layers in place with one warning naming the option. Returns whether the kernels are on.
    """
    target = {"": str(torch.device(device))}
    try:
        from kernels import Mode

        # Both modes' kernels now (training, then the mode the model is in), so none is fetched mid-run.
        for mode in (Mode.INFERENCE, Mode.TRAINING) if model.training else (Mode.TRAINING, Mode.INFERENCE):
            model.set_use_kernels(True, mode=mode, device_map=target)
    except Exception as error:  # whatever stops a kernel (offline, no package, a failed download): reported below
        if model.kernels_mode is not None:  # some layers may have been replaced before the failure
            model.reset_kernels()
        logger.warning(
            "use_kernels=True: a Hub kernel for %s on %s cannot be had (%s: %s); running the PyTorch layers "
            "instead. Fetch the kernels while online (the same load, once), or set use_kernels to false.",
            type(model).__name__,
            target[""],
            type(error).__name__,
            str(error).splitlines()[0][:300],
        )
        return False
    return True


def describe_placement(model: torch.nn.Module) -> str:
    """Where a model runs, in words for a run's log: ``"cuda:0, bfloat16 weights, Hub kernels off"``."""
    kernels = "on" if getattr(model, "use_kernels", False) else "off"
    return f"{model.device}, {str(model.dtype).removeprefix('torch.')} weights, Hub kernels {kernels}"


# --------------------------------------------------------------------------- loading


def load_model_and_processor(
    path: str | Path,
    adapter: str | Path | None = None,
    dtype: torch.dtype | str = "auto",
    merge_adapter: bool = False,
    *,
    device: str | torch.device | None = None,
    use_kernels: bool = False,
    kernels_device: str | torch.device | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a vision-language model and its processor, optionally with a PEFT adapter.

    Args:
        path: base model folder or Hub id.
        adapter: a PEFT adapter folder or Hub id to load on top (its processor is used when
            it saved one, e.g. a trained run's output folder).
        dtype: passed to ``from_pretrained`` (``"auto"`` keeps the saved dtype; with ``device``, see
            :func:`resolve_placement`).
        merge_adapter: merge the adapter weights into the base and return a plain model.
        device: where to load the model to run it (:func:`resolve_placement`: ``"auto"``, ``"cpu"``,
            ``"cuda:N"``, ...); the log names the device and dtype. None: where ``from_pretrained`` puts it
            (the CPU), for a trainer to move.
        use_kernels: turn on Hub kernels (:func:`use_hub_kernels`) for ``kernels_device`` (default: ``device``,
            else this process's device). Off by default: kernels are code fetched from the Hub when a model
            is trained or run, and offline a missing one would stop the run.
        model_kwargs: further ``from_pretrained`` arguments (``device_map``, ...).

    Raises:
        AdapterError: saying what is wrong with the adapter (:func:`check_adapter`).
    """
    register_processors()
    if device is not None:
        placement = resolve_placement(device, dtype)
        dtype = placement.dtype
        model_kwargs.setdefault("device_map", {"": str(placement.device)})
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, use_kernels=False, **model_kwargs)
    if use_kernels:
        use_hub_kernels(model, kernels_device or (placement.device if device is not None else process_state().device))
    processor_source = path
    if adapter is not None:
        from peft import PeftModel

        check_adapter(adapter, model)
        model = PeftModel.from_pretrained(model, adapter)
        if merge_adapter:
            model = model.merge_and_unload()
        if (Path(adapter) / "processor_config.json").exists() or (Path(adapter) / "tokenizer_config.json").exists():
            processor_source = adapter
    processor = AutoProcessor.from_pretrained(processor_source)
    if device is not None:
        logger.info("Loaded %s on %s.", adapter or path, describe_placement(model))
    return model, processor


def reload_weights(model: PreTrainedModel, folder: str | Path) -> PreTrainedModel:
    """The full weights saved in ``folder`` (e.g. a checkpoint of ``model``), in a new model of ``model``'s class
    with Hub kernels as ``model`` has them (transformers would otherwise turn them on)."""
    return type(model).from_pretrained(folder, use_kernels=getattr(model, "use_kernels", False))


# --------------------------------------------------------------------------- adapters


ADAPTER_CONFIG_NAME = "adapter_config.json"
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


_RESAVE = "Restore the file saved with the adapter (save_pretrained writes it)."


class AdapterError(ValueError):
    """A PEFT adapter that cannot be used as it is; the message names the folder, what is wrong and the fix."""


def check_adapter(
    adapter: str | Path, model: torch.nn.Module | None = None, base_model: str | None = None
) -> PeftConfig | None:
    """Check a local PEFT adapter folder before it is loaded; returns its ``PeftConfig`` (None for a Hub id).

    Checked: ``adapter_config.json`` is a JSON object with a known ``peft_type`` that PEFT accepts, and names
    its base model (unless ``model`` or ``base_model`` gives one); the weights file is there; LoRA weights
    have the rank the config says; with ``model`` (the base model), the config's ``target_modules`` match
    at least one of its modules.

    Raises:
        AdapterError: naming the folder, the bad value and what to do.
    """
    from peft import PeftConfig, PeftType

    folder = Path(adapter)
    if not folder.is_dir():
        return None  # a Hub id: PEFT downloads it (DGClassifier checks the downloaded folder)
    where = f"The adapter {str(adapter)!r}"
    config_file = folder / ADAPTER_CONFIG_NAME
    if not config_file.is_file():
        raise AdapterError(f"{where} has no {ADAPTER_CONFIG_NAME}: it is not a PEFT adapter folder.")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterError(f"{where}: {ADAPTER_CONFIG_NAME} is not valid JSON ({error}). {_RESAVE}") from None
    if not isinstance(data, dict):
        raise AdapterError(
            f"{where}: {ADAPTER_CONFIG_NAME} holds a JSON {type(data).__name__}, not an object. {_RESAVE}"
        )
    valid_types = [t.value for t in PeftType]
    if "peft_type" not in data:
        raise AdapterError(f"{where}: {ADAPTER_CONFIG_NAME} has no peft_type, so it is no PEFT config. {_RESAVE}")
    if data["peft_type"] not in valid_types:
        raise AdapterError(
            f"{where}: {ADAPTER_CONFIG_NAME} has peft_type {data['peft_type']!r}, which is not a PEFT method "
            f"(valid: {', '.join(valid_types)}). {_RESAVE}"
        )
    base = data.get("base_model_name_or_path")
    if model is None and base_model is None and (not isinstance(base, str) or not base.strip()):
        raise AdapterError(
            f"{where}: {ADAPTER_CONFIG_NAME} names no base model (base_model_name_or_path is {base!r}). Pass the "
            "base model it was trained on: --model FOLDER_OR_HUB_ID (model=... in Python)."
        )
    try:
        config = PeftConfig.from_peft_type(**data)
    except (TypeError, ValueError, KeyError) as error:
        raise AdapterError(
            f"{where}: {ADAPTER_CONFIG_NAME} is not a valid {data['peft_type']} config ({error})."
        ) from None
    weights = [folder / name for name in _ADAPTER_WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise AdapterError(
            f"{where} has no {_ADAPTER_WEIGHTS[0]}: the adapter's weights are missing. Copy the file from the "
            "training output, or save the adapter again (save_pretrained)."
        )
    if data["peft_type"] == "LORA" and weights[0].suffix == ".safetensors":
        _check_lora_rank(weights[0], config, where)
    if model is not None and getattr(config, "target_modules", None):
        from peft.tuners.tuners_utils import check_target_module_exists

        if not any(check_target_module_exists(config, name) for name, _ in model.named_modules()):
            raise AdapterError(
                f"{where} targets the modules {data['target_modules']!r} (target_modules of {ADAPTER_CONFIG_NAME}), "
                f"but the base model {type(model).__name__} has none of them: the adapter belongs to another base "
                "model, or its config was edited. Pass the base model it was trained on (--model, or model=...)."
            )
    return config


def _check_lora_rank(weights: Path, config: Any, where: str) -> None:
    """Raise an AdapterError when the LoRA weights' rank is not the config's ``r`` (nor a ``rank_pattern`` value)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as file:
            ranks = {key: file.get_slice(key).get_shape()[0] for key in file.keys() if key.endswith("lora_A.weight")}
    except (SafetensorError, OSError) as error:
        raise AdapterError(f"{where}: {weights.name} is not a readable safetensors file ({error}).") from None
    if not ranks:
        raise AdapterError(f"{where}: {weights.name} holds no LoRA weights (no lora_A tensors).")
    expected = {config.r, *(config.rank_pattern or {}).values()}
    wrong = {key: rank for key, rank in ranks.items() if rank not in expected}
    if wrong:
        key, rank = next(iter(wrong.items()))
        raise AdapterError(
            f"{where}: {weights.name} holds LoRA weights of rank {rank} (e.g. {key}), but {ADAPTER_CONFIG_NAME} "
            f"says r={config.r}: the config does not belong to these weights. {_RESAVE}"
        )


# --------------------------------------------------------------------------- LoRA


# Linear layers of attention and MLP blocks, in the vision tower and in the language model,
# across architectures: LLaVA (vision_tower / language_model, CLIP q/k/v/out_proj, fc1/fc2),
# Qwen2-VL/2.5-VL (visual blocks attn.qkv/proj, mlp.fc1/fc2 or gate/up/down), InternVL
# (vision_tower ... attention.q/k/v/projection_layer, mlp.fc1/fc2), Idefics3/SmolVLM
# (vision_model / text_model). Projectors and LM heads are left out.
LORA_TARGET_MODULES = (
    r".*(?:vision_tower|vision_model|visual|language_model|text_model)\..*"
    r"\.(?:q_proj|k_proj|v_proj|o_proj|out_proj|qkv|proj|projection_layer|fc1|fc2|"
    r"gate_proj|up_proj|down_proj|query|key|value|dense)$"
)


def default_lora_config(
    r: int = 8,
    alpha: int | None = None,
    dropout: float = 0.05,
    target_modules: str | Sequence[str] | None = None,
    **kwargs: Any,
):
    """The paper's LoRA: rank ``r`` on both the vision encoder and the language model.

    ``task_type`` is left unset so the adapter config records an ``auto_mapping`` and
    ``AutoPeftModel.from_pretrained`` can reload any supported architecture.
    """
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha if alpha is not None else 2 * r,
        lora_dropout=dropout,
        target_modules=target_modules if target_modules is not None else LORA_TARGET_MODULES,
        **kwargs,
    )


def lora_target_names(model: torch.nn.Module, target_modules: str = LORA_TARGET_MODULES) -> list[str]:
    """The module names a LoRA target regex selects in ``model`` (to check coverage)."""
    pattern = re.compile(target_modules)
    linear = ((name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear))
    return [name for name, _ in linear if pattern.fullmatch(name)]


def model_towers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The ``"vision"`` tower and the ``"language"`` model of a vision-language model (or of a PEFT model's base).

    Raises:
        ValueError: naming the model class, when either cannot be found.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    towers = {"vision": base.get_encoder(modality="image"), "language": base.get_decoder()}
    for tower, module in towers.items():
        if module is base or module is getattr(base, "base_model", None):
            raise ValueError(
                f"Cannot find the {tower} tower of {type(base).__name__} "
                "(get_encoder(modality='image') / get_decoder() do not find it)."
            )
    return towers


def lora_modules_per_tower(model: torch.nn.Module) -> dict[str, int]:
    """How many modules a PEFT model wraps with adapter layers in its vision tower and in its language model.

    Raises:
        ValueError: naming the model class, when the vision tower or the language model cannot be found.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {
        tower: sum(isinstance(m, BaseTunerLayer) for m in module.modules())
        for tower, module in model_towers(model).items()
    }


def check_lora_covers_both_towers(model: torch.nn.Module) -> dict[str, int]:
    """Check that a PEFT model's adapter wraps modules of both the vision tower and the language model.

    The paper applies LoRA to both; a target list that misses one tower (e.g. the default names on an
    architecture they do not know) must not train the language model alone without a word.

    Returns:
        the number of wrapped modules per tower (:func:`lora_modules_per_tower`).

    Raises:
        ValueError: naming the model class, the counts and how to pass ``lora_target_modules``.
    """
    counts = lora_modules_per_tower(model)
    missing = [tower for tower, count in counts.items() if count == 0]
    if missing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
        targets = getattr(config, "target_modules", None)
        raise ValueError(
            f"The LoRA targets {targets!r} wrap {counts['vision']} modules of the vision tower and "
            f"{counts['language']} of the language model of {type(base).__name__}: none in the "
            f"{' and the '.join(missing)} tower. The LoRA defaults do not know this architecture's module names; "
            "pass them with --lora_target_modules (a regex or a list of names; "
            "rdmldg_hf.models.lora_target_names(model, regex) lists what a regex selects), or "
            "default_lora_config(target_modules=...) in Python."
        )
    return counts


# --------------------------------------------------------------------------- run config


RUN_CONFIG_NAME = "rdmldg_config.json"


@dataclass
class RunConfig:
    """What a trained output needs to be used without anything else (saved as ``rdmldg_config.json``).

    Attributes:
        method: the stage that produced it (``"mtct"``, ``"sarr"``, ...).
        benchmark: registry name, or None for a custom dataset.
        classes: ``ClassLabel`` names, label order.
        class_names: the names prompts and answers use, label order.
        domains: domains trained on.
        test_domain: the held-out domain (None when none was held out).
        prompt_version: ``prompts.PROMPT_VERSION`` the model was trained with.
        base_model: base model id or path.
        adapter: whether the folder holds a PEFT adapter (else full weights).
        settings: method settings (mode, weights, normalisation, holdout, rounds, ...).
    """

    method: str
    benchmark: str | None
    classes: list[str]
    class_names: list[str]
    domains: list[str]
    test_domain: str | None
    prompt_version: str
    base_model: str | None = None
    adapter: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``rdmldg_config.json`` into ``out_dir``; returns the file path."""
        path = Path(out_dir) / RUN_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, asdict(self), sort_keys=True)

    @classmethod
    def load(cls, path: str | Path, **hub_kwargs: Any) -> "RunConfig":
        """Read it from a folder, the file itself, or a Hub repo id (``hub_kwargs`` go to ``hf_hub_download``).

        Raises:
            FileNotFoundError: naming the path, when there is no ``rdmldg_config.json``.
        """
        local = Path(path)
        if local.is_dir():
            local = local / RUN_CONFIG_NAME
        if not local.is_file():
            if Path(path).exists() or str(path).startswith((".", "/")):
                raise FileNotFoundError(f"No {RUN_CONFIG_NAME} in {str(path)!r}: it is not an rdmldg training output.")
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(str(path), RUN_CONFIG_NAME, **hub_kwargs))
        data = json.loads(local.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def build_run_record(
    method: str,
    benchmark: Benchmark | None,
    *,
    domains: Iterable[str],
    base_model: str | None,
    adapter: bool,
    split_record: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> RunConfig:
    """The run record of a trained output: what every run (MTCT, SARR, a LODO cell, a sweep run) saves.

    Args:
        method: what trained it (``"mtct"``, ``"sarr"``, a LODO row such as ``"labels_only"``).
        benchmark: its benchmark; None for a custom dataset, whose ``classes`` and ``class_names`` are then given.
        domains: the domains of its training rows (recorded sorted, once each).
        base_model: base model id or path.
        adapter: whether the output is a PEFT adapter (else full weights).
        split_record: how its rows were split (:meth:`rdmldg_hf.protocol.LodoSplit.record`): ``test_domain`` is
            recorded as such, every other key joins ``settings``.
        settings: the method's settings.
        classes, class_names: label order; default: the benchmark's.

    Raises:
        ValueError: without a benchmark, when ``classes`` or ``class_names`` is missing.
    """
    if benchmark is not None:
        classes = benchmark.classes if classes is None else classes
        class_names = benchmark.class_names if class_names is None else class_names
    if classes is None or class_names is None:
        raise ValueError("A run record without a benchmark needs its classes and class_names.")
    split = dict(split_record or {})
    test_domain = split.pop("test_domain", None)
    return RunConfig(
        method=method,
        benchmark=benchmark.name if benchmark is not None else None,
        classes=list(classes),
        class_names=list(class_names),
        domains=sorted(set(domains)),
        test_domain=test_domain,
        prompt_version=PROMPT_VERSION,
        base_model=base_model,
        adapter=adapter,
        settings={**(settings or {}), **split},
    )


# --------------------------------------------------------------------------- model card results


def accuracy_result(accuracy: float, **fields: Any) -> EvalResult:
    """A ``model-index`` entry (huggingface_hub ``EvalResult``) of an accuracy given as a fraction in [0, 1].

    Every card of the project writes accuracy in percent, as the Hub's leaderboards show it (0.875 -> 87.5,
    two decimals). ``fields`` are the other ``EvalResult`` fields (task, dataset, split, metric name).

    Raises:
        ValueError: for an accuracy outside [0, 1] (a percent given twice, or not an accuracy).
    """
    from huggingface_hub import EvalResult

    if not 0.0 <= float(accuracy) <= 1.0:
        raise ValueError(f"An accuracy is a fraction in [0, 1]; got {accuracy!r}.")
    return EvalResult(metric_type="accuracy", metric_value=round(100 * float(accuracy), 2), **fields)
