"""What the recipes share: CPU threads of a single process, models loaded as TRL's ModelConfig says."""

from dataclasses import dataclass, fields

import pytest
import torch
from transformers.utils import import_utils
from trl import ModelConfig

from helpers.mtct import tiny_model_dir
from rdmldg_hf.model_config import HONOURED_FIELDS, check_model_config, lora_config_from, model_loading_kwargs
from rdmldg_hf.models import LORA_TARGET_MODULES
from rdmldg_hf.recipe_setup import load_model_for_training, use_cpu_cores
from rdmldg_hf.trainers import MTCTConfig


def test_single_cpu_process_gets_the_threads_asked_for(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    try:
        assert use_cpu_cores(2) == 2
        assert use_cpu_cores(1) == 1
    finally:
        torch.set_num_threads(1)


def test_one_of_several_processes_keeps_its_threads(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    torch.set_num_threads(1)
    assert use_cpu_cores(2) == 1


# --------------------------------------------------------------------------- TRL's ModelConfig


def _model_args(**values) -> ModelConfig:
    return ModelConfig(model_name_or_path=str(tiny_model_dir()), **values)


def test_every_model_config_field_is_honoured_or_refused():
    assert {spec.name for spec in fields(ModelConfig)} <= set(HONOURED_FIELDS)

    @dataclass
    class NewerModelConfig(ModelConfig):  # a TRL option this code does not know
        fused_kernels: bool = False

    check_model_config(NewerModelConfig())
    with pytest.raises(ValueError, match="ModelConfig.fused_kernels=True is not supported"):
        check_model_config(NewerModelConfig(fused_kernels=True))


def test_fields_reach_the_loaded_model_and_its_lora_config():
    model, _, lora = load_model_for_training(
        _model_args(
            dtype="bfloat16",
            attn_implementation="eager",
            use_peft=True,
            lora_r=4,
            lora_alpha=5,
            lora_dropout=0.0,
            lora_modules_to_save=["multi_modal_projector"],
            use_rslora=True,
        )
    )
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.use_rslora, lora.use_dora) == (4, 5, 0.0, True, False)
    assert lora.modules_to_save == ["multi_modal_projector"] and lora.target_modules == LORA_TARGET_MODULES
    assert lora.task_type is None  # saved without a task type, so AutoPeftModel reloads it
    chosen = lora_config_from(_model_args(use_peft=True, lora_target_modules=["q_proj", "v_proj"]))
    assert chosen.target_modules == {"q_proj", "v_proj"}
    assert load_model_for_training(_model_args())[2] is None


@pytest.mark.parametrize("option", ["load_in_4bit", "load_in_8bit"])
def test_quantized_loading_without_bitsandbytes_or_gpu_stops_before_loading(option, monkeypatch):
    args = ModelConfig(model_name_or_path="/nonexistent/model", use_peft=True, dtype="bfloat16", **{option: True})
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(import_utils, "is_bitsandbytes_available", lambda: False)  # as here: not installed
    missing_both = rf"--{option} \(QLoRA\) needs bitsandbytes and a GPU; missing here: bitsandbytes>=.*; a GPU"
    with pytest.raises(RuntimeError, match=missing_both):
        load_model_for_training(args)
    monkeypatch.setattr(import_utils, "is_bitsandbytes_available", lambda: True)
    with pytest.raises(RuntimeError, match=r"missing here: a GPU \(no accelerator"):
        load_model_for_training(args)


def test_quantization_follows_the_model_config_as_in_trl(monkeypatch):
    monkeypatch.setattr(import_utils, "is_bitsandbytes_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    args = _model_args(
        use_peft=True,
        load_in_4bit=True,
        dtype="bfloat16",
        bnb_4bit_quant_type="fp4",
        use_bnb_nested_quant=True,
        bnb_4bit_quant_storage="bfloat16",
    )
    check_model_config(args)
    kwargs = model_loading_kwargs(args)
    quantization = kwargs["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_use_double_quant
    assert quantization.bnb_4bit_quant_type == "fp4"
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16 == quantization.bnb_4bit_quant_storage
    assert kwargs["device_map"] == {"": 0} and kwargs["dtype"] == "bfloat16"
    assert model_loading_kwargs(_model_args(use_peft=True, load_in_8bit=True))["quantization_config"].load_in_8bit
    assert "quantization_config" not in model_loading_kwargs(_model_args())


@pytest.mark.parametrize(
    "values, message",
    [
        ({"load_in_4bit": True, "dtype": "bfloat16"}, "cannot be trained in full; add --use_peft"),
        ({"load_in_4bit": True, "use_peft": True, "dtype": "auto"}, "set --dtype bfloat16"),
        ({"bnb_4bit_quant_type": "fp4"}, "bnb_4bit_quant_type='fp4' only applies with --load_in_4bit: add"),
        ({"load_in_8bit": True, "use_peft": True, "use_bnb_nested_quant": True}, "use_bnb_nested_quant=True only"),
        ({"lora_r": 8, "use_dora": True}, "lora_r=8 only applies with --use_peft: add --use_peft or drop it"),
        ({"use_peft": True, "lora_task_type": "SEQ_CLS"}, "lora_task_type='SEQ_CLS'.*leave it at 'CAUSAL_LM'"),
    ],
)
def test_values_the_recipes_cannot_honour_are_refused_before_loading(values, message):
    with pytest.raises(ValueError, match=message):
        load_model_for_training(ModelConfig(model_name_or_path="/nonexistent/model", **values))


def test_trust_remote_code_is_refused():
    with pytest.raises(ValueError, match="trust_remote_code=True.*drop --trust_remote_code"):
        load_model_for_training(
            _model_args(), MTCTConfig(output_dir="unused", activation_checkpointing=False, trust_remote_code=True)
        )
