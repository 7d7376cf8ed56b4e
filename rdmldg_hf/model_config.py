"""TRL's ``ModelConfig`` read the way TRL's own scripts read it: loading arguments, QLoRA, LoRA.

Every ``ModelConfig`` field is either honoured or, at a value the recipes cannot honour, refused
with an error saying what to do; a field this module does not know (a newer TRL) is refused
unless it keeps its default. 4-bit and 8-bit loading (QLoRA) use ``bitsandbytes`` and need an
accelerator; without either they stop before anything is loaded.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from typing import Any

import torch
from trl import ModelConfig, get_quantization_config

from .generation import process_state
from .models import default_lora_config

__all__ = ["HONOURED_FIELDS", "check_model_config", "model_loading_kwargs", "lora_config_from"]

# ModelConfig field -> where it goes (from_pretrained, BitsAndBytesConfig or LoraConfig).
HONOURED_FIELDS: dict[str, str] = {
    "model_name_or_path": "from_pretrained",
    "model_revision": "from_pretrained(revision)",
    "dtype": "from_pretrained(dtype); the compute dtype of 4-bit layers",
    "attn_implementation": "from_pretrained(attn_implementation)",
    "load_in_4bit": "BitsAndBytesConfig",
    "load_in_8bit": "BitsAndBytesConfig",
    "bnb_4bit_quant_type": "BitsAndBytesConfig",
    "use_bnb_nested_quant": "BitsAndBytesConfig(bnb_4bit_use_double_quant)",
    "bnb_4bit_quant_storage": "BitsAndBytesConfig",
    "use_peft": "LoraConfig",
    "lora_r": "LoraConfig(r)",
    "lora_alpha": "LoraConfig",
    "lora_dropout": "LoraConfig",
    "lora_target_modules": "LoraConfig (default: rdmldg_hf.models.LORA_TARGET_MODULES)",
    "lora_target_parameters": "LoraConfig(target_parameters)",
    "lora_modules_to_save": "LoraConfig(modules_to_save)",
    "lora_task_type": "LoraConfig: only the default (adapters are saved without a task type)",
    "use_rslora": "LoraConfig",
    "use_dora": "LoraConfig",
}
# Fields that only mean something with an option on: option -> its fields (refused without it).
_ONLY_WITH: dict[str, tuple[str, ...]] = {
    "load_in_4bit": ("bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage"),
    "use_peft": (
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "lora_target_parameters",
        "lora_modules_to_save",
        "lora_task_type",
        "use_rslora",
        "use_dora",
    ),
}
_DEFAULT_TASK_TYPE = "CAUSAL_LM"


def _default(spec: Field) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default  # type: ignore[misc]


def check_model_config(model_args: ModelConfig, trust_remote_code: bool = False) -> None:
    """Refuse what the recipes cannot honour, before anything is loaded.

    Args:
        model_args: TRL's ``ModelConfig``.
        trust_remote_code: the training config's ``trust_remote_code`` (refused: the recipes load
            architectures transformers ships).

    Raises:
        ValueError: naming the field, its value and the fix.
        RuntimeError: 4/8-bit loading asked for where ``bitsandbytes`` or an accelerator is missing.
    """
    defaults = {spec.name: _default(spec) for spec in fields(model_args)}
    for name, default in defaults.items():
        value = getattr(model_args, name)
        if name not in HONOURED_FIELDS and value != default:
            raise ValueError(
                f"ModelConfig.{name}={value!r} is not supported by the rdmldg recipes (a TRL option newer "
                "than this code); leave it at its default."
            )
    if trust_remote_code:
        raise ValueError(
            "trust_remote_code=True: the recipes load architectures transformers ships (e.g. the '-hf' InternVL3 "
            "checkpoints); use such a checkpoint and drop --trust_remote_code."
        )
    if model_args.lora_task_type != _DEFAULT_TASK_TYPE:
        raise ValueError(
            f"lora_task_type={model_args.lora_task_type!r}: the recipes train vision-language generation and save "
            f"adapters without a task type (so AutoPeftModel reloads any architecture); leave it at "
            f"{_DEFAULT_TASK_TYPE!r}."
        )
    quantized = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit" if model_args.load_in_8bit else None
    for option, names in _ONLY_WITH.items():
        changed = [name for name in names if getattr(model_args, name) != defaults[name]]
        if changed and not getattr(model_args, option):
            value = getattr(model_args, changed[0])
            raise ValueError(f"{changed[0]}={value!r} only applies with --{option}: add --{option} or drop it.")
    if quantized is None:
        return
    if not model_args.use_peft:
        raise ValueError(f"{quantized}: quantized weights cannot be trained in full; add --use_peft (QLoRA).")
    if model_args.load_in_4bit and model_args.dtype == "auto":
        raise ValueError(
            "load_in_4bit with dtype='auto': 4-bit layers compute in the dtype given; set --dtype bfloat16 "
            "(float16 on GPUs without bfloat16)."
        )
    _require_bitsandbytes_backend(quantized)


def _require_bitsandbytes_backend(option: str) -> None:
    from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION, is_bitsandbytes_available

    missing = []
    if not is_bitsandbytes_available():
        missing.append(f"bitsandbytes>={BITSANDBYTES_MIN_VERSION} (pip install -U bitsandbytes)")
    if not torch.accelerator.is_available():
        missing.append("a GPU (no accelerator is visible to torch)")
    if missing:
        raise RuntimeError(
            f"--{option} (QLoRA) needs bitsandbytes and a GPU; missing here: {'; '.join(missing)}. Run on a GPU "
            f"machine with bitsandbytes installed, or drop --{option} to train LoRA on unquantized weights."
        )


def model_loading_kwargs(model_args: ModelConfig) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments: revision, attention, dtype and, for 4/8-bit, TRL's
    ``BitsAndBytesConfig`` with the whole model on this process's accelerator (the device map of
    TRL's former ``get_kbit_device_map``)."""
    kwargs: dict[str, Any] = {"dtype": model_args.dtype or "auto"}
    optional = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation}
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": process_state().local_process_index}  # each process loads onto its own device
    return kwargs


def lora_config_from(model_args: ModelConfig) -> Any:
    """The LoRA config of ``model_args`` (None without ``use_peft``), on the project's default targets
    (vision encoder and language model) unless ``lora_target_modules`` is given."""
    if not model_args.use_peft:
        return None
    target_parameters = model_args.lora_target_parameters
    extra = {} if target_parameters is None else {"target_parameters": target_parameters}  # as in TRL: when asked for
    return default_lora_config(
        r=model_args.lora_r,
        alpha=model_args.lora_alpha,
        dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        modules_to_save=model_args.lora_modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        **extra,
    )
