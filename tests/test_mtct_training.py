"""MTCT training on the tiny model: losses go down, LoRA and full fine-tuning, save and reload."""

import pytest
import torch
from transformers import AutoModelForImageTextToText

from helpers.devices import FP32_REORDERED, model_inputs, placed_like
from helpers.mtct import config, load_tiny, lodo_trainer, tiny_dataset, tiny_model_dir
from rdmldg_hf.models import RunConfig, default_lora_config, load_model_and_processor
from rdmldg_hf.prompts import PROMPT_VERSION
from rdmldg_hf.trainers import MTCTTrainer


def _train(tmp_path, peft_config=None, architecture="llava", **overrides):
    model, processor = load_tiny(architecture)
    args = config(
        tmp_path,
        max_steps=12,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        logging_steps=4,
        eval_strategy="no",
        **overrides,
    )
    rows = tiny_dataset(32)
    trainer = lodo_trainer(model, processor, args, rows, holdout_fraction=0.25, validate=True, peft_config=peft_config)
    trainer.train()
    return trainer


def _logits(model, trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    model.eval()
    with torch.no_grad():
        return model(**model_inputs(batch, model)).logits


def _assert_losses_fall(trainer):
    logs = [entry for entry in trainer.state.log_history if "cls_loss" in entry]
    assert len(logs) == 3
    for key in ("loss", "cls_loss", "reasoning_loss"):
        assert logs[-1][key] < logs[0][key], (key, logs)
    for key in ("cls_token_accuracy", "reasoning_token_accuracy", "mean_token_accuracy", "entropy", "num_tokens"):
        assert key in logs[-1]


def _assert_run_config(path, adapter):
    run = RunConfig.load(path)
    assert run.method == "mtct" and run.benchmark == "rotdigits" and run.adapter is adapter
    assert run.test_domain == "rot30" and run.domains == ["rot0", "rot60", "rot90"]
    assert run.class_names[3] == "three" and run.prompt_version == PROMPT_VERSION
    assert run.settings["mode"] == "paired" and run.settings["holdout_fraction"] == 0.25
    assert (run.settings["holdout_seed"], run.settings["holdout_style"]) == (0, "hash")
    assert "test_domain" not in run.settings


@pytest.mark.parametrize("architecture", ["llava", "qwen2_vl"])
def test_lora_trains_saves_and_reloads(tmp_path, architecture):
    trainer = _train(tmp_path, peft_config=default_lora_config(r=4), architecture=architecture)
    _assert_losses_fall(trainer)
    base = placed_like(AutoModelForImageTextToText.from_pretrained(tiny_model_dir(architecture)), trainer.model)
    peft_state = {k.replace("base_layer.", ""): v for k, v in trainer.model.named_parameters()}
    for name, value in base.named_parameters():  # the base weights did not move
        torch.testing.assert_close(peft_state[f"base_model.model.{name}"], value)
    # Held-out validation: the out-part of the training domains, with the same logged parts.
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_cls_loss", "eval_reasoning_loss", "eval_mean_token_accuracy"} <= set(metrics)
    trainer.save_model()
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "processor_config.json").exists()
    _assert_run_config(tmp_path, adapter=True)
    reloaded, processor = load_model_and_processor(tiny_model_dir(architecture), adapter=tmp_path)
    torch.testing.assert_close(_logits(placed_like(reloaded, trainer.model), trainer), _logits(trainer.model, trainer))


def test_full_fine_tuning_trains_saves_and_reloads(tmp_path):
    trainer = _train(tmp_path, reasoning_normalization="per_token")
    _assert_losses_fall(trainer)
    trainer.save_model()
    _assert_run_config(tmp_path, adapter=False)
    reloaded, _ = load_model_and_processor(tmp_path)
    torch.testing.assert_close(_logits(placed_like(reloaded, trainer.model), trainer), _logits(trainer.model, trainer))


def test_gradient_accumulation_gives_the_same_step(tmp_path):
    """One SGD step on 8 images equals two accumulated micro-batches of 4 (loss and updated weights)."""
    runs = []
    for batch, accumulation in ((8, 1), (4, 2)):
        model, processor = load_tiny()
        args = config(
            tmp_path / f"b{batch}",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_grad_norm=0.0,
            optim="sgd",
            learning_rate=0.1,
        )
        trainer = MTCTTrainer(model, args=args, train_dataset=tiny_dataset(16), processing_class=processor)
        trainer.train()
        runs.append((trainer.state.log_history[0], {k: v.detach().clone() for k, v in model.named_parameters()}))
    (log_a, weights_a), (log_b, weights_b) = runs
    for key in ("loss", "cls_loss", "reasoning_loss"):
        assert log_a[key] == pytest.approx(log_b[key], rel=1e-5)
    for name, value in weights_a.items():
        torch.testing.assert_close(weights_b[name], value, **FP32_REORDERED)


def test_the_trainer_trains_and_evaluates_on_the_rows_it_is_given(tmp_path):
    """No domain or holdout is taken out inside the trainer: every given row is a unit; without a split record
    the run records no held-out domain and no holdout."""
    model, processor = load_tiny()
    rows = tiny_dataset(12)
    trainer = MTCTTrainer(
        model,
        args=config(tmp_path),
        train_dataset=rows,
        eval_dataset=tiny_dataset(5, seed=1),
        processing_class=processor,
    )
    assert len(trainer.train_dataset) == 12 and len(trainer.eval_dataset) == 5
    assert sorted(trainer.train_dataset["image_id"]) == sorted(rows["image_id"])
    assert trainer.mtct_data.domains == ["rot0", "rot30", "rot60", "rot90"]
    trainer.save_model()
    run = RunConfig.load(tmp_path)
    assert run.test_domain is None and not {"holdout_fraction", "holdout_seed", "holdout_style"} & set(run.settings)
