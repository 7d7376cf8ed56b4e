# Copyright the rdmldg_hf authors. Apache-2.0.
"""Relabel throughput: batched generation (left padding, one processor call per batch) vs one
image at a time, same model, same images, same machine, in one run.

    python bench/bench_relabel.py                   # tiny embedded-preset LLaVA, 64 images, batch 16
    python bench/bench_relabel.py --images 128 --batch-size 32 --threads 2

Both runs go through :func:`rdmldg_hf.trainers.relabel.relabel` (what SARR calls) and must
give identical chains (greedy). A randomly initialised model rarely stops early, so every
chain is ``--max-new-tokens`` long in both runs: the comparison is token for token.
Prints chains/s of each and the ratio (target: >= 4x at batch 16).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from datasets import Dataset

from rdmldg_hf.benchmarks import EMBEDDED_BENCHMARK, get_benchmark
from rdmldg_hf.data.build import source_rows
from rdmldg_hf.data.schema import dataset_features
from rdmldg_hf.embedded import build_tiny_model, embedded_chains, embedded_source_images
from rdmldg_hf.generation import GenerationSettings, ModelBackend
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.trainers.relabel import relabel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--preset", default="embedded", help="tiny model preset (rdmldg_hf.testing.TINY_PRESETS)")
    parser.add_argument("--architecture", default="llava")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    benchmark = get_benchmark(EMBEDDED_BENCHMARK)
    images = [image for image in embedded_source_images() if image.domain != "rot30"][: args.images]
    dataset = Dataset.from_list(
        list(source_rows(images, embedded_chains(images))), features=dataset_features(benchmark)
    )
    with tempfile.TemporaryDirectory() as folder:
        model, processor = load_model_and_processor(
            build_tiny_model(folder, args.architecture, preset=args.preset, phrase_tokens=True, vocab_size=1536)
        )
    backend = ModelBackend(model, processor)
    names = benchmark.class_names
    relabel(backend, dataset.select(range(2)), names, GenerationSettings(batch_size=2, max_new_tokens=4))  # warm-up

    timings, outputs = {}, {}
    for label, batch_size in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
        settings = GenerationSettings(batch_size=batch_size, max_new_tokens=args.max_new_tokens)
        start = time.perf_counter()
        outputs[label] = relabel(backend, dataset, names, settings)
        timings[label] = time.perf_counter() - start

    (single, batched) = timings
    print(
        f"relabel {len(dataset)} images, {args.max_new_tokens} new tokens each, {args.architecture}/{args.preset}, "
        f"{args.threads} thread(s)"
    )
    print(f"{'mode':<16}{'seconds':>10}{'chains/s':>10}")
    for label, seconds in timings.items():
        print(f"{label:<16}{seconds:>10.2f}{len(dataset) / seconds:>10.2f}")
    print(f"identical outputs: {outputs[single] == outputs[batched]}")
    print(f"speed-up (batched / one at a time): {timings[single] / timings[batched]:.2f}x")


if __name__ == "__main__":
    main()
