"""Direct class scoring vs. direct-generate on the same images and model, in one run.

    python bench/bench_direct_vs_generate.py [--images 256] [--batch-size 32] [--train-steps 40]

Builds the tiny model (embedded preset) and predicts the same held-out images with
``direct`` (one forward pass per batch, class log-likelihoods) and ``direct-generate``
(greedy generation of up to 16 tokens, parsed), twice:

1. zero-shot (the untrained model, which, like a chat model answering in a sentence, does
   not stop after a class name), and
2. after a short training on labels, when the model answers a class name and stops
   (two generated tokens: the name and the end of turn).

Prints times, ratios, and how often the two modes agree where the generated answer is a valid class.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from datasets import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rdmldg_hf.benchmarks import get_benchmark
    from rdmldg_hf.data.build import build_dataset
    from rdmldg_hf.embedded import build_tiny_model
    from rdmldg_hf.evaluation.predict import predict
    from rdmldg_hf.models import load_model_and_processor
    from rdmldg_hf.protocol import lodo_split
    from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer

    work = Path(tempfile.mkdtemp(prefix="rdmldg-bench-direct-"))
    build_dataset("rotdigits", work / "data")
    dataset = load_dataset(str(work / "data"), "rotdigits")
    model, processor = load_model_and_processor(
        build_tiny_model(work / "model", preset="embedded", phrase_tokens=True, vocab_size=1536)
    )
    images = dataset["rot30"].select(range(args.images))["image"]
    names = get_benchmark("rotdigits").class_names
    predict(model, processor, images[: args.batch_size], names, "direct", batch_size=args.batch_size)  # warm-up

    def compare(title: str) -> None:
        start = time.perf_counter()
        direct = predict(model, processor, images, names, "direct", batch_size=args.batch_size)
        direct_s = time.perf_counter() - start
        start = time.perf_counter()
        generated = predict(model, processor, images, names, "direct-generate", batch_size=args.batch_size)
        generate_s = time.perf_counter() - start
        valid = [i for i, index in enumerate(generated.indices) if index >= 0]
        agree = sum(direct.indices[i] == generated.indices[i] for i in valid)
        print(f"--- {title}: {len(images)} images, batch {args.batch_size}, {args.threads} thread(s)")
        print(f"direct (class scoring):  {direct_s:7.2f} s  ({len(images) / direct_s:7.1f} img/s)")
        print(f"direct-generate:         {generate_s:7.2f} s  ({len(images) / generate_s:7.1f} img/s)")
        print(f"speed-up direct vs direct-generate: {generate_s / direct_s:.2f}x")
        print(f"generated answers naming a class: {len(valid)}/{len(images)}; agreement there: {agree}/{len(valid)}")

    compare("zero-shot (untrained tiny model)")
    config = MTCTConfig(
        output_dir=str(work / "train"),
        mode="cls_only",
        max_steps=args.train_steps,
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        report_to="none",
        save_strategy="no",
        activation_checkpointing=False,
        disable_tqdm=True,
        logging_steps=args.train_steps,
    )
    train = lodo_split(dataset, "rot30", holdout_fraction=0.0).train
    MTCTTrainer(model, args=config, train_dataset=train, processing_class=processor).train()
    compare(f"after {args.train_steps} steps on labels (answers a class name and stops)")


if __name__ == "__main__":
    main()
