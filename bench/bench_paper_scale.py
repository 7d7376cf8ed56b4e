"""Paper-scale figures with random weights of the released shapes (no download), measured in one run, as JSON.

    python bench/bench_paper_scale.py --size 7b --out paper_scale.json    # one GPU (bash .gpu/check.sh bench)
    python bench/bench_paper_scale.py --size tiny --out tiny.json          # the same code on a CPU, < 1 minute

``7b`` builds Qwen2.5-VL-7B's and InternVL3-8B's shapes (the released config.json dimensions) with random bf16
weights on the device; ``tiny`` uses the tiny models of :mod:`rdmldg_hf.testing` in fp32. Both take the tiny
factory's processors at the paper's image size (448 px: 256 image tokens per image for both architectures).
Stages, each optional (``--stages``); a failing stage records its traceback and the next one runs, and the JSON
is rewritten after every stage:

``padding``
    MTCT batches at the paper's shapes (448-px images, ~200-word chains, 8 images = 16 rows per step) through
    the real collator and sampler, counted, not timed: real and computed (real + padding) tokens with one
    padded batch and random sampling (TRL's collation, MTCT before task groups), and with MTCT's defaults
    (task sub-batches, length-grouped sampling). Counts do not depend on the hardware or on the weights, so the
    tiny model is used at every size.
``train``
    Per architecture, LoRA r=8 on both towers, activation checkpointing: step time of MTCT (defaults), of MTCT
    with one padded batch, and of ``SFTTrainer`` on the same rows; images/s, real and computed tokens per step,
    MFU (6 x non-embedding parameters x real tokens / step time / the device's peak bf16 FLOP/s) and peak memory.
``scoring``
    Direct scoring of the benchmark's class names vs one forward pass of the same prompts (images/s, ratio).
``relabel``
    Greedy chains/s one image at a time and at the largest batch that fits (halved on out-of-memory), through
    :func:`rdmldg_hf.trainers.relabel.relabel`; ms per token at batch 1 vs reading the weights once per token.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("USE_HUB_KERNELS", "0")  # the GPU machine is offline: never fetch Hub kernels

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoConfig, AutoModelForImageTextToText, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from rdmldg_hf.benchmarks import get_benchmark  # noqa: E402
from rdmldg_hf.chains import render_chain  # noqa: E402
from rdmldg_hf.data.schema import dataset_features  # noqa: E402
from rdmldg_hf.data.training_rows import build_training_rows  # noqa: E402
from rdmldg_hf.embedded import build_tiny_model  # noqa: E402
from rdmldg_hf.generation import GenerationSettings, ModelBackend  # noqa: E402
from rdmldg_hf.models import default_lora_config, load_model_and_processor  # noqa: E402
from rdmldg_hf.prompts import prompt_messages  # noqa: E402
from rdmldg_hf.scoring import score_classes  # noqa: E402
from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer  # noqa: E402
from rdmldg_hf.trainers.mtct import batch_groups  # noqa: E402
from rdmldg_hf.trainers.relabel import relabel  # noqa: E402

BENCHMARK = get_benchmark("officehome")  # 65 classes, as the paper's OfficeHome runs
ARCHITECTURES = ("qwen2_5_vl", "internvl")
STAGES = ("padding", "train", "scoring", "relabel")
IMAGE_SIZE = 448  # the paper's: 256 image tokens per image for both architectures
PATCH = {"qwen2_5_vl": 28, "internvl": 14}  # the tiny factory's processor patch giving 256 tokens at 448 px

# config.json of Qwen/Qwen2.5-VL-7B-Instruct, and InternVL3-8B (InternViT-300M + Qwen2.5-7B).
QWEN_7B_TEXT = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
}
RELEASED_SHAPES = {
    "qwen2_5_vl": {
        "text_config": {
            **QWEN_7B_TEXT,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        },
        "vision_config": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
    },
    "internvl": {
        "text_config": {**QWEN_7B_TEXT, "vocab_size": 151674, "max_position_embeddings": 32768},
        "vision_config": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
        },
    },
}
# Dense bf16 peak (TFLOP/s) and memory bandwidth (TB/s) from the vendors' data sheets; first match of the name wins.
DEVICES = (
    ("H200", 989.0, 4.8),
    ("H100 PCIe", 756.0, 2.0),
    ("H100 NVL", 835.0, 3.9),
    ("H100", 989.0, 3.35),
    ("A100", 312.0, 2.0),
    ("L40S", 362.0, 0.864),
    ("A10G", 70.0, 0.6),
    ("L4", 121.0, 0.3),
)
WORDS = (
    "the object shows a clear outline with straight edges and a flat base while its surface texture colour and "
    "parts match a typical example of this class rather than the other options in the list because the shape "
    "handle screen keys wheels legs lid cable and proportions are visible"
).split()


@dataclass(frozen=True)
class Plan:
    """What one ``--size`` runs: the stages' sizes and step counts."""

    chain_words: int  # mean words per chain (sd: a fifth of it)
    padding_units: int  # images in the padding stage's dataset (the length-grouped sampler draws from all)
    padding_steps: int
    batch_images: int  # images per training step (x2 rows)
    padding_batch_images: int
    warmup_steps: int
    timed_steps: int
    scoring_images: int
    scoring_batch: int
    relabel_single: int  # images relabeled one at a time
    relabel_batches: tuple[int, ...]  # batch sizes tried, largest first, for the largest that fits
    relabel_new_tokens: int


PLANS = {
    "7b": Plan(200, 2048, 32, 8, 8, 1, 3, 64, 16, 2, (256, 128, 64), 128),
    "tiny": Plan(40, 256, 3, 2, 8, 1, 2, 4, 2, 2, (4,), 8),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory() -> None:
    """Give the device's memory of dropped models and trainers back (a no-op on a CPU, where it only costs time)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- models and data


def tiny_folder(work: Path, architecture: str) -> Path:
    """The tiny model and its paper-shaped processor (448 px -> 256 image tokens), built once per run."""
    folder = work / architecture
    if not folder.exists():
        build_tiny_model(
            folder, architecture, image_size=IMAGE_SIZE, patch_size=PATCH[architecture], preset="test", vocab_size=2048
        )
    return folder


class Models:
    """One model on the device at a time: the last one built is kept for the next stage that asks for it."""

    def __init__(self, work: Path, size: str, device: str):
        self.work, self.size, self.device = work, size, device
        self.architecture: str | None = None
        self.model = self.processor = None

    def get(self, architecture: str) -> tuple[Any, Any]:
        if architecture != self.architecture:
            self.model = self.processor = self.architecture = None
            free_memory()
            self.model, self.processor = build_model(self.work, architecture, self.size, self.device)
            self.architecture = architecture
        return self.model, self.processor


def build_model(work: Path, architecture: str, size: str, device: str) -> tuple[Any, Any]:
    """(model on ``device``, processor): tiny weights, or random bf16 weights of the released shape."""
    model, processor = load_model_and_processor(tiny_folder(work, architecture))
    if size == "7b":
        config = AutoConfig.from_pretrained(tiny_folder(work, architecture))
        fields = config.to_dict()
        for part, update in RELEASED_SHAPES[architecture].items():  # rebuilt so that derived fields follow
            fields[part] = {k: v for k, v in fields[part].items() if k not in ("layer_types", "head_dim")} | update
        config = type(config).from_dict(fields)
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
        for key in ("pad_token_id", "eos_token_id"):
            setattr(model.generation_config, key, getattr(processor.tokenizer, key))
    return model.to(device), processor


def chain(rng: np.random.Generator, name: str, words: int) -> str:
    """A five-stage chain of about ``words`` words concluding ``name``."""
    stage = lambda share: " ".join(rng.choice(WORDS, max(1, round(words * share)))).capitalize() + "."  # noqa: E731
    return render_chain(stage(0.15), stage(0.3), stage(0.4), stage(0.15), name)


def image_rows(n: int, mean_words: int, seed: int = 0) -> Dataset:
    """``n`` 448-px images (a few solid colours: the pixels do not matter, their count does) with chains whose
    lengths vary as written ones do (normal, sd = mean / 5, at least a third of the mean)."""
    rng = np.random.default_rng(seed)
    colours = [png(Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (31 * c, 255 - 29 * c, 97))) for c in range(8)]
    lengths = np.maximum(mean_words // 3, rng.normal(mean_words, mean_words / 5, n).round()).astype(int)
    rows = []
    for i in range(n):
        label = i % BENCHMARK.num_classes
        rows.append(
            {
                "image": {"bytes": colours[i % len(colours)], "path": None},
                "label": label,
                "domain": BENCHMARK.domains[i % len(BENCHMARK.domains)],
                "image_id": f"bench/{i}.png",
                "reasoning": chain(rng, BENCHMARK.class_names[label], int(lengths[i])),
                "chain_source": "bench",
                "prompt_version": "bench",
                "num_candidates": 1,
                "num_valid": 1,
                "num_correct": 1,
                "rejection_reasons": [],
            }
        )
    return Dataset.from_list(rows, features=dataset_features(BENCHMARK))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def training_config(config_class: type, work: Path, device: str, **values: Any) -> Any:
    """A training config for a bench run: bf16 on a GPU, activation checkpointing, no saving or reporting."""
    return config_class(
        output_dir=str(work / "run"),
        learning_rate=5e-4,
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        activation_checkpointing=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        max_length=None,
        dataloader_num_workers=4 if device == "cuda" else 0,
        **values,
    )


# --------------------------------------------------------------------------- padding


def count_tokens(batches) -> dict[str, int]:
    """Real and computed (real + padding) tokens of collated batches, over their task sub-batches."""
    real = computed = forwards = 0
    for batch in batches:
        for group in batch_groups(batch):
            real += int(group["attention_mask"].sum())
            computed += group["input_ids"].numel()
            forwards += 1
    padding = round(1 - real / computed, 4)
    return {"real_tokens": real, "computed_tokens": computed, "padding": padding, "forwards": forwards}


def padding_stage(work: Path, device: str, plan: Plan, chain_words: int) -> dict[str, Any]:
    dataset = image_rows(plan.padding_units, chain_words)
    words = [len(text.split()) for text in dataset["reasoning"]]
    spread = {"mean": round(statistics.mean(words)), "sd": round(statistics.stdev(words))}
    out: dict[str, Any] = {
        "images": plan.padding_units,
        "steps": plan.padding_steps,
        "images_per_step": plan.padding_batch_images,
        "chain_words": {**spread, "min": min(words), "max": max(words)},
    }
    for architecture in ARCHITECTURES:
        model, processor = load_model_and_processor(tiny_folder(work, architecture))
        variants = {
            "before": {"group_by_task": False, "train_sampling_strategy": "random"},
            "after": {},  # MTCT's defaults
        }
        figures = {}
        for name, overrides in variants.items():
            args = training_config(
                MTCTConfig,
                work,
                device,  # the run's device: one accelerate state per process
                per_device_train_batch_size=plan.padding_batch_images,
                benchmark=BENCHMARK.name,
                **overrides,
            )
            trainer = MTCTTrainer(model, args=args, train_dataset=dataset, processing_class=processor)
            loader = iter(trainer.get_train_dataloader())
            figures[name] = count_tokens(next(loader) for _ in range(plan.padding_steps))
            figures[name]["sampler"] = args.train_sampling_strategy
            figures[name]["group_by_task"] = args.group_by_task
        before, after = figures["before"], figures["after"]
        figures["padding_before_vs_after"] = round(before["padding"] / max(after["padding"], 1e-6), 1)
        figures["computed_per_real_token_after_vs_before"] = round(
            (after["computed_tokens"] / after["real_tokens"]) / (before["computed_tokens"] / before["real_tokens"]), 3
        )
        figures["real_tokens_per_image"] = round(
            after["real_tokens"] / (plan.padding_steps * plan.padding_batch_images)
        )
        figures["chain_tokens_mean"] = round(
            statistics.mean(len(ids) for ids in processor.tokenizer(dataset["reasoning"][:256])["input_ids"])
        )
        out[architecture] = figures
        log(
            f"== padding {architecture}: {before['padding']:.1%} -> {after['padding']:.1%} of computed tokens "
            f"({figures['padding_before_vs_after']}x less padding; computed tokens per real token "
            f"x{figures['computed_per_real_token_after_vs_before']}; {figures['real_tokens_per_image']} real tokens "
            f"per image, chains of {figures['chain_tokens_mean']} tokens)"
        )
    return out


# --------------------------------------------------------------------------- training steps


class StepTimer(TrainerCallback):
    """Wall time between consecutive optimizer steps (the device synchronised)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        now = time.perf_counter()
        if self._last is not None:
            self.seconds.append(now - self._last)
        self._last = now


@contextlib.contextmanager
def decoder_tokens(model: torch.nn.Module):
    """Counts real and computed tokens of every language-model forward inside the block."""
    counts = {"real": 0, "computed": 0, "forwards": 0}

    def count(module, args, kwargs):
        embeds, mask = kwargs.get("inputs_embeds"), kwargs.get("attention_mask")
        if embeds is None or not torch.is_grad_enabled():
            return
        counts["computed"] += embeds.shape[0] * embeds.shape[1]
        counts["real"] += (
            int(mask.sum()) if mask is not None and mask.dim() == 2 else embeds.shape[0] * embeds.shape[1]
        )
        counts["forwards"] += 1

    handle = model.get_decoder().register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


def peak_memory_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def non_embedding_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def run_trainer(
    make: Callable[[list], Any], model: torch.nn.Module, plan: Plan, peak: float | None
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train ``warmup + timed`` steps: the figures of the timed ones, and the model with its LoRA unloaded.

    A step's time runs from the end of the step before: the first (warm-up) step is never timed."""
    timer = StepTimer()
    trainer = make([timer])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with decoder_tokens(model) as counts:
        trainer.train()
    steps = plan.warmup_steps + plan.timed_steps
    seconds = statistics.median(timer.seconds[plan.warmup_steps - 1 :])
    real, computed = counts["real"] / steps, counts["computed"] / steps
    flops = 6 * non_embedding_parameters(model) * real
    result = {
        "step_s": round(seconds, 4),
        "timed_steps": len(timer.seconds[plan.warmup_steps - 1 :]),
        "images_per_s": round(plan.batch_images / seconds, 3),
        "real_tokens_per_step": round(real),
        "computed_tokens_per_step": round(computed),
        "padding": round(1 - real / computed, 4),
        "forwards_per_step": counts["forwards"] / steps,
        "real_tokens_per_s": round(real / seconds),
        "mfu": round(flops / seconds / (peak * 1e12), 5) if peak else None,
        "peak_memory_gib": peak_memory_gib(),
        "loss": [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e],
    }
    base = trainer.model.unload() if hasattr(trainer.model, "unload") else trainer.model  # LoRA off, weights kept
    del trainer
    free_memory()
    return result, base


def train_stage(models: Models, plan: Plan, peak: float | None) -> dict[str, Any]:
    # Qwen2.5-VL last: the scoring and relabel stages use the model it leaves on the device.
    return {arch: train_architecture(models, arch, plan, peak) for arch in ("internvl", "qwen2_5_vl")}


def train_architecture(models: Models, architecture: str, plan: Plan, peak: float | None) -> dict[str, Any]:
    """MTCT (defaults), MTCT with one padded batch and SFTTrainer on the same rows, one after the other on the
    same weights (each run's LoRA adapter unloaded after it)."""
    model, processor = models.get(architecture)
    steps = plan.warmup_steps + plan.timed_steps
    dataset = image_rows(2 * plan.batch_images * steps, plan.chain_words)
    rows = build_training_rows(dataset, BENCHMARK.class_names, "paired").select_columns(
        ["image", "prompt", "completion"]
    )
    lora = default_lora_config(r=8, alpha=16)
    figures: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "non_embedding_parameters": non_embedding_parameters(model),
        "images_per_step": plan.batch_images,
        "rows_per_step": 2 * plan.batch_images,
        "attention": model.config._attn_implementation,
        "dtype": str(next(model.parameters()).dtype),
    }

    def trainer(config_class: type, trainer_class: type, train_dataset: Dataset, **values: Any):
        args = training_config(config_class, models.work, models.device, max_steps=steps, **values)
        return lambda callbacks: trainer_class(
            model,
            args=args,
            train_dataset=train_dataset,
            processing_class=processor,
            peft_config=copy.deepcopy(lora),
            callbacks=callbacks,
        )

    mtct = {"per_device_train_batch_size": plan.batch_images, "benchmark": BENCHMARK.name}
    variants = {
        "mtct": trainer(MTCTConfig, MTCTTrainer, dataset, **mtct),
        "mtct_one_padded_batch": trainer(
            MTCTConfig, MTCTTrainer, dataset, **mtct, group_by_task=False, train_sampling_strategy="sequential"
        ),
        # Flat rows, an image's two consecutive: sequential batches of 2B rows are MTCT's batches of B images.
        "sft": trainer(
            SFTConfig,
            SFTTrainer,
            rows,
            per_device_train_batch_size=2 * plan.batch_images,
            train_sampling_strategy="sequential",
        ),
    }
    for name, make in variants.items():
        figures[name], model = run_trainer(make, model, plan, peak)
    models.model = model  # the same weights, LoRA unloaded
    figures["mtct_vs_sft_step"] = round(figures["mtct"]["step_s"] / figures["sft"]["step_s"], 3)
    figures["mtct_vs_one_padded_batch_step"] = round(
        figures["mtct"]["step_s"] / figures["mtct_one_padded_batch"]["step_s"], 3
    )
    m = figures["mtct"]
    log(
        f"== train {architecture}: MTCT {m['step_s']:.3f} s/step, {m['images_per_s']} images/s, MFU {m['mfu']}, "
        f"padding {m['padding']:.1%}, peak {m['peak_memory_gib']} GiB; x{figures['mtct_vs_sft_step']} "
        f"SFTTrainer, x{figures['mtct_vs_one_padded_batch_step']} one padded batch"
    )
    return figures


# --------------------------------------------------------------------------- scoring and relabel


def scoring_stage(models: Models, plan: Plan) -> dict[str, Any]:
    model, processor = models.get("qwen2_5_vl")
    model.eval()
    images = [row["image"] for row in image_rows(plan.scoring_images, 10)]
    names = BENCHMARK.class_names
    backend = ModelBackend(model, processor)
    messages = prompt_messages("classification", names)
    n, batch = plan.scoring_images, plan.scoring_batch

    def forward():
        for start in range(0, n, batch):
            inputs = backend.encode([messages] * len(images[start : start + batch]), images[start : start + batch])
            with torch.inference_mode():
                model(**inputs, logits_to_keep=1)
        synchronize()

    def score():
        probabilities = score_classes(model, processor, images, names, batch_size=batch)
        synchronize()
        return probabilities

    probabilities = score()
    forward()  # warm-up of both
    best = {"forward": float("inf"), "score": float("inf")}
    for _ in range(3):  # alternating, best of 3
        for name, fn in (("forward", forward), ("score", score)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    result = {
        "images": n,
        "batch": batch,
        "classes": len(names),
        "forward_images_per_s": round(n / best["forward"], 2),
        "score_images_per_s": round(n / best["score"], 2),
        "score_vs_forward_speed": round(best["forward"] / best["score"], 3),
        "probabilities_sum_to_one": bool(
            torch.allclose(probabilities.float().sum(-1).cpu(), torch.ones(n), atol=1e-3)
        ),
    }
    log(f"== scoring: {result['score_vs_forward_speed']}x a forward pass ({len(names)} classes, batch {batch})")
    return result


def relabel_stage(models: Models, plan: Plan, bandwidth: float | None, cache: str | None) -> dict[str, Any]:
    model, processor = models.get("qwen2_5_vl")
    model.eval()
    backend = ModelBackend(model, processor)
    dataset = image_rows(max(plan.relabel_batches), 20)
    tokenizer = processor.tokenizer

    def run(images: int, batch: int) -> dict[str, Any]:
        settings = GenerationSettings(
            batch_size=batch, max_new_tokens=plan.relabel_new_tokens, cache_implementation=cache
        )
        synchronize()
        start = time.perf_counter()
        chains = relabel(backend, dataset.select(range(images)), BENCHMARK.class_names, settings)
        synchronize()
        seconds = time.perf_counter() - start
        tokens = sum(len(tokenizer(c[0], add_special_tokens=False)["input_ids"]) for c in chains)
        return {
            "images": images,
            "batch": batch,
            "seconds": round(seconds, 3),
            "chains_per_s": round(images / seconds, 3),
            "new_tokens_approx": tokens,
            "ms_per_decoding_step": round(1e3 * seconds / (plan.relabel_new_tokens * math.ceil(images / batch)), 2),
        }

    run(1, 1)  # warm-up (and, with a static cache on a GPU, compilation)
    single = run(plan.relabel_single, 1)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out: dict[str, Any] = {
        "max_new_tokens": plan.relabel_new_tokens,
        "cache_implementation": cache or "dynamic",
        "one_at_a_time": single,
        "weights_gib": round(weights / 2**30, 2),
        "memory_bound_ms_per_token": round(1e3 * weights / (bandwidth * 1e12), 2) if bandwidth else None,
        "tried": [],
    }
    for batch in sorted(plan.relabel_batches, reverse=True):
        try:
            out["largest_batch"] = run(batch, batch)
        except torch.OutOfMemoryError:
            out["tried"].append({"batch": batch, "error": "out of memory"})
        free_memory()
        if "largest_batch" in out:
            break
    if "largest_batch" in out:
        out["largest_vs_one_at_a_time"] = round(out["largest_batch"]["chains_per_s"] / single["chains_per_s"], 2)
    bound = out["memory_bound_ms_per_token"]
    log(
        f"== relabel: {single['chains_per_s']} chains/s one at a time ({single['ms_per_decoding_step']} ms/step"
        f"{f', memory bound {bound} ms' if bound else ''}), {out.get('largest_batch', {}).get('chains_per_s')} at "
        f"batch {out.get('largest_batch', {}).get('batch')} (x{out.get('largest_vs_one_at_a_time')})"
    )
    return out


# --------------------------------------------------------------------------- main


def device_figures(device: str, peak: float | None, bandwidth: float | None) -> tuple[str, float | None, float | None]:
    """The device's name, peak bf16 TFLOP/s and bandwidth (TB/s): the flags, else the table, else None."""
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    for key, table_peak, table_bandwidth in DEVICES:
        if device == "cuda" and key in name:
            return name, peak or table_peak, bandwidth or table_bandwidth
    return name, peak, bandwidth


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(PLANS), default="7b")
    parser.add_argument("--out", default="bench_paper_scale.json", help="JSON file written after every stage")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s of the device (default: its data sheet)")
    parser.add_argument("--bandwidth-tbs", type=float, help="memory bandwidth, TB/s (default: its data sheet)")
    parser.add_argument("--relabel-cache", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument(
        "--padding-chain-words", type=int, default=200, help="mean words per chain in the padding stage (paper: ~200)"
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads)
    name, peak, bandwidth = device_figures(device, args.peak_tflops, args.bandwidth_tbs)
    plan = PLANS[args.size]
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "size": args.size,
            "device": name,
            "threads": torch.get_num_threads(),
            "peak_tflops": peak,
            "bandwidth_tbs": bandwidth,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "plan": plan.__dict__,
        },
        "seconds": {},
        "errors": {},
    }
    out = Path(args.out)
    cache = None if args.relabel_cache == "dynamic" else "static"
    stages = {
        "padding": lambda models: padding_stage(models.work, device, plan, args.padding_chain_words),
        "train": lambda models: train_stage(models, plan, peak),
        "scoring": lambda models: scoring_stage(models, plan),
        "relabel": lambda models: relabel_stage(models, plan, bandwidth, cache),
    }
    log(f"== bench_paper_scale --size {args.size} on {name}: stages {' '.join(args.stages)}")
    with tempfile.TemporaryDirectory() as folder:
        models = Models(Path(folder), args.size, device)
        for stage in args.stages:
            start = time.perf_counter()
            try:
                results[stage] = stages[stage](models)
            except Exception:
                results["errors"][stage] = traceback.format_exc()[-4000:]
                log(f"== {stage} failed:\n{traceback.format_exc()}")
            results["seconds"][stage] = round(time.perf_counter() - start, 1)
            free_memory()
            out.write_text(json.dumps(results, indent=2))
    log(f"== wrote {out} ({sum(results['seconds'].values()):.0f} s)")
    return results


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
