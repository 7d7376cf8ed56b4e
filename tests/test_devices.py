"""Where models run: device and dtype resolution, Hub kernels as a choice (offline never crashes), every entry point
placing its model, and the whole method in bf16 mixed precision and with bf16 weights."""

from __future__ import annotations

import json
import logging
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from kernels import LayerRepository, use_kernel_mapping
from PIL import Image
from transformers import AutoModelForImageTextToText
from trl import ModelConfig

from helpers.analysis import dataset_dir, recipe_args
from helpers.devices import model_inputs
from helpers.evaluation import trained_adapter
from helpers.mtct import config, tiny_dataset, tiny_model_dir
from helpers.sarr import CLASSES
from rdmldg_hf.cli import build_parser, main
from rdmldg_hf.evaluation.classifier import DGClassifier
from rdmldg_hf.generation import ModelBackend
from rdmldg_hf.models import load_model_and_processor, resolve_placement
from rdmldg_hf.prompts import prompt_messages
from rdmldg_hf.recipe_setup import load_model_for_training
from rdmldg_hf.scoring import score_classes
from rdmldg_hf.trainers import MTCTTrainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# A Hub kernel for the language model's RMSNorm on the CPU that no cache holds: offline, fetching it fails as
# fetching kernels-community/rotary failed on a GPU machine without internet.
MISSING_KERNEL = {
    "RMSNorm": {"cpu": LayerRepository(repo_id="rdmldg-tests/absent-kernel", layer_name="RMSNorm", version=1)}
}


@pytest.fixture
def transformers_kernel_default(monkeypatch):
    """transformers' own Hub-kernel default (on), whatever USE_HUB_KERNELS another module of the session set."""
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)


def image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- device and dtype


def test_auto_placement_is_this_process_device_and_keeps_fp32_on_a_cpu():
    placement = resolve_placement()
    if torch.cuda.is_available():  # the GPU test below checks the CUDA side
        pytest.skip("a CPU-only check")
    assert placement.device == torch.device("cpu") and placement.dtype == "auto"  # the saved dtype
    assert resolve_placement("cpu", "bfloat16").dtype == torch.bfloat16
    assert resolve_placement("cpu", torch.float16).dtype == torch.float16


@pytest.mark.parametrize(
    "device,dtype,message",
    [
        ("gpu", "auto", "device 'gpu' is not a device: use auto .*, cpu, cuda or cuda:N"),
        ("cuda:99", "auto", "device 'cuda:99': .*use auto"),
        ("cpu", "bf16", "dtype 'bf16' is not one of auto, bfloat16, float16, float32"),
    ],
)
def test_bad_devices_and_dtypes_are_refused(device, dtype, message):
    with pytest.raises(ValueError, match=message):
        resolve_placement(device, dtype)


def test_a_device_this_machine_lacks_is_refused_before_any_download():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device 'cuda': torch has no 'cuda' device on this machine"):
        DGClassifier.from_pretrained("someone/not-downloaded", device="cuda")


def test_inputs_follow_the_model_device():
    """The processor batch of generation and scoring, and the tests' own inputs, land where the model is."""
    model, processor = load_model_and_processor(tiny_model_dir())
    model.to("meta")  # a device other than the one inputs are built on
    encoded = ModelBackend(model, processor).encode([prompt_messages("classification", CLASSES)], [image()])
    assert {tensor.device.type for tensor in encoded.values()} == {"meta"}
    assert {tensor.device.type for tensor in model_inputs(dict(encoded), model).values()} == {"meta"}


@pytest.mark.gpu
def test_entry_points_load_on_the_gpu_in_bf16():
    placement = resolve_placement()
    assert placement.device.type == "cuda"
    bf16 = torch.cuda.get_device_capability(placement.device)[0] >= 8
    model, processor = load_model_and_processor(tiny_model_dir(), device="auto")
    assert model.device == placement.device and model.dtype == (torch.bfloat16 if bf16 else torch.float32)
    clf = DGClassifier.from_pretrained(trained_adapter())
    assert clf.model.device.type == "cuda"
    on_cpu = DGClassifier.from_pretrained(trained_adapter(), device="cpu", dtype="float32")
    assert on_cpu.model.device.type == "cpu" and on_cpu.model.dtype == torch.float32
    # Direct scoring on the GPU in bf16 and on the CPU in fp32: one distribution, to bf16's precision.
    images = [image(seed) for seed in range(4)]
    gpu, cpu = clf.predict(images), on_cpu.predict(images)
    for a, b in zip(gpu, cpu):
        assert list(a.probabilities.values()) == pytest.approx(list(b.probabilities.values()), abs=2e-2)


# --------------------------------------------------------------------------- Hub kernels


def test_an_offline_load_leaves_hub_kernels_off_unless_asked(caplog, transformers_kernel_default):
    folder = tiny_model_dir()
    assert AutoModelForImageTextToText.from_pretrained(folder).use_kernels  # transformers' own default: on
    assert load_model_and_processor(folder)[0].use_kernels is False
    assert not load_model_for_training(ModelConfig(model_name_or_path=str(folder)))[0].use_kernels
    assert not DGClassifier.from_pretrained(trained_adapter()).model.use_kernels
    # Asked for, for the CPU (no kernel to fetch there): on.
    assert load_model_and_processor(folder, use_kernels=True, kernels_device="cpu")[0].use_kernels is True
    assert DGClassifier.from_pretrained(trained_adapter(), device="cpu", use_kernels=True).model.use_kernels
    # For this process's device: on (offline on a GPU, where the kernels are not cached: off, with the warning).
    with caplog.at_level(logging.WARNING, logger="rdmldg_hf.models"):
        asked = load_model_for_training(ModelConfig(model_name_or_path=str(folder)), use_kernels=True)[0]
    assert asked.use_kernels or "use_kernels=True" in caplog.text


def test_a_kernel_that_cannot_be_had_falls_back_with_one_warning(caplog, transformers_kernel_default):
    folder = tiny_model_dir()
    reference, processor = load_model_and_processor(folder)
    with use_kernel_mapping(MISSING_KERNEL):
        with pytest.raises(ValueError, match="not available in the local cache"):  # what transformers alone does
            AutoModelForImageTextToText.from_pretrained(folder)
        model, _ = load_model_and_processor(folder)  # not asked: nothing is fetched
        with caplog.at_level(logging.WARNING, logger="rdmldg_hf.models"):
            asked, _ = load_model_and_processor(folder, use_kernels=True, kernels_device="cpu")
            asked.train()  # training would kernelize again: it stays on the PyTorch layers
    warnings = [record.getMessage() for record in caplog.records if record.name == "rdmldg_hf.models"]
    assert len(warnings) == 1 and "use_kernels=True" in warnings[0] and "rdmldg-tests/absent-kernel" in warnings[0]
    assert "set use_kernels to false" in warnings[0]
    assert not model.use_kernels and not asked.use_kernels
    inputs = ModelBackend(reference, processor).encode([prompt_messages("classification", CLASSES)], [image()])
    with torch.no_grad():
        torch.testing.assert_close(asked.eval()(**inputs).logits, reference.eval()(**inputs).logits)


def test_recipes_and_commands_have_the_options():
    recipe = runpy.run_path(str(RECIPES / "sarr.py"), run_name="sarr_recipe")
    script, _, _ = recipe["parse_args"](["--use_kernels", "true", "--output_dir", "unused"])
    assert script.use_kernels is True
    script, _, _ = recipe["parse_args"](["--output_dir", "unused"])
    assert script.use_kernels is False
    commands = {
        "eval": ["--dataset", "d", "--config", "c"],
        "analyze": ["class-probs", "--out", "o"],
        "demo": ["model"],
    }
    for command, required in commands.items():
        parse = build_parser([command]).parse_args
        args = parse([command, *required, "--device", "cuda:1", "--dtype", "bfloat16", "--use-kernels"])
        assert (args.device, args.dtype, args.use_kernels) == ("cuda:1", "bfloat16", True), command
        args = parse([command, *required])
        assert (args.device, args.dtype, args.use_kernels) == ("auto", "auto", False), command


@pytest.mark.gpu
def test_asked_for_hub_kernels_never_stop_training_on_a_gpu(tmp_path, caplog, transformers_kernel_default):
    """Offline on a GPU (the kernels not cached) the load warns and trains on the PyTorch layers; online, or with
    them cached, it trains with them."""
    with caplog.at_level(logging.WARNING, logger="rdmldg_hf.models"):
        model, processor = load_model_and_processor(tiny_model_dir(), use_kernels=True)
    assert model.use_kernels or "use_kernels=True" in caplog.text
    args = config(tmp_path, bf16=torch.cuda.is_bf16_supported())
    trainer = MTCTTrainer(model, args=args, train_dataset=tiny_dataset(4), processing_class=processor)
    trainer.train()
    assert trainer.model.device.type == "cuda" and trainer.state.global_step == 1
    # Scoring the model the Trainer left on the GPU under bf16 autocast: inputs follow it, the head check holds.
    scores = score_classes(trainer.model, processor, [image()], list(CLASSES))
    assert scores.shape == (1, len(CLASSES)) and torch.allclose(scores.sum(), torch.tensor(1.0))


# --------------------------------------------------------------------------- entry points


def test_eval_names_the_device_and_dtype_and_refuses_a_bad_device(tmp_path, capsys, caplog):
    common = ["eval", "--dataset", str(dataset_dir()), "--config", "rotdigits", "--domains", "rot30"]
    output = tmp_path / "results.json"
    with caplog.at_level(logging.INFO, logger="rdmldg_hf.models"):
        assert main([*common, "--adapter", str(trained_adapter()), "--device", "cpu", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["runs_on"] == "cpu, float32 weights, Hub kernels off"
    assert any("on cpu, float32 weights, Hub kernels off" in r.getMessage() for r in caplog.records)
    assert main([*common, "--model", str(tiny_model_dir()), "--device", "tpu:0"]) == 2
    assert "device 'tpu:0'" in capsys.readouterr().err
    assert main([*common, "--api", "gpt-4o", "--device", "cpu"]) == 2
    assert "drop them with --api" in capsys.readouterr().err


# --------------------------------------------------------------------------- bf16


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_whole_method_runs_in_bf16_mixed_precision(tmp_path, dtype):
    """The SARR recipe (MTCT stage, a round with relabeling, stage evaluation, reasoning at the end) with bf16 on,
    over fp32 weights and with bf16 weights; then `rdmldg eval` and an analysis of its output."""
    recipe = runpy.run_path(str(RECIPES / "sarr.py"), run_name="sarr_recipe")
    out = tmp_path / "sarr"
    args = recipe_args(
        out,
        0.34,
        *("--bf16", "true", "--dtype", dtype, "--max_steps", "2", "--num_rounds", "1", "--round_max_steps", "1"),
        *("--per_device_train_batch_size", "4", "--eval_batch_size", "12", "--logging_steps", "1"),
        *("--relabel_batch_size", "12", "--relabel_max_new_tokens", "4"),
    )
    script, training_args, model_args = recipe["parse_args"](args)
    assert training_args.bf16
    recipe["main"](script, training_args, model_args)
    results = json.loads((out / "results.json").read_text())
    assert [stage["stage"] for stage in results["stages"]] == ["mtct", "round-1"]
    for stage in results["stages"]:  # held-out accuracy after every stage
        assert 0.0 <= stage["metrics"]["heldout_direct"] <= 1.0
    assert 0.0 <= results["final"]["heldout_reasoning"] <= 1.0
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype
    data = ["--dataset", str(dataset_dir()), "--config", "rotdigits"]
    output = tmp_path / "eval.json"
    assert main(["eval", "--model", str(out), *data, "--domains", "rot30", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["runs_on"].startswith(f"cpu, {dtype} weights")
    analysis = ["analyze", "class-probs", "--adapter", str(out), *data, "--max-images", "1", "--max-new-tokens", "4"]
    assert main([*analysis, "--dtype", "bfloat16", "--out", str(tmp_path / "class-probs")]) == 0
