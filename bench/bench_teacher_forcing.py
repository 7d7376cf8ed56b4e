"""Teacher-forced scoring: images/s in batches of 16 vs one image at a time, same run, same model.

Each image is scored twice, as the analyses do: its class name after the direct question
and its five-stage template chain after the reasoning question (every answer token's
probability and predictive entropy). The model is the tiny ``embedded`` preset
(LLaVA, ~0.9M parameters, random weights); the images are the embedded benchmark's.

    python bench/bench_teacher_forcing.py [--images 64] [--batch-size 16] [--repeats 3] [--threads 1]

The two settings run alternately ``--repeats`` times and the best rate of each counts
(as ``timeit`` does); the scores of both settings are checked to agree.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from rdmldg_hf.analysis import ForcedExample, teacher_force
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.embedded import build_tiny_model, embedded_source_images, template_chain
from rdmldg_hf.models import load_model_and_processor


def examples(num_images: int) -> list[ForcedExample]:
    from io import BytesIO

    from PIL import Image

    names = get_benchmark("rotdigits").class_names
    out = []
    for source in embedded_source_images()[:num_images]:
        image = Image.open(BytesIO(source.read_bytes())).convert("RGB")
        out.append(ForcedExample(image, source.label))
        out.append(ForcedExample(image, source.label, "reasoning", template_chain(names[source.label])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = build_tiny_model(tempfile.mkdtemp(prefix="rdmldg-bench-tf-"), preset="embedded")
    model, processor = load_model_and_processor(model_dir)
    names = get_benchmark("rotdigits").class_names
    rows = examples(args.images)
    tokens = None
    best = {1: 0.0, args.batch_size: 0.0}
    results = {}
    teacher_force(model, processor, rows[:4], names, batch_size=2)  # warm-up
    for _ in range(args.repeats):
        for batch_size in best:
            started = time.perf_counter()
            results[batch_size] = teacher_force(model, processor, rows, names, batch_size=batch_size)
            best[batch_size] = max(best[batch_size], args.images / (time.perf_counter() - started))
    one, batched = results[1], results[args.batch_size]
    tokens = sum(len(s.token_ids) for s in one)
    worst = max(abs(a - b) for x, y in zip(one, batched) for a, b in zip(x.probs, y.probs))
    assert all(x.token_ids == y.token_ids for x, y in zip(one, batched)) and worst < 1e-4, worst
    print(
        f"teacher-forced scoring, tiny 'embedded' model, {args.images} images x 2 rows ({tokens} answer tokens), "
        f"{args.threads} thread(s), best of {args.repeats}"
    )
    print(f"  one at a time : {best[1]:8.1f} images/s")
    print(f"  batch of {args.batch_size:<4} : {best[args.batch_size]:8.1f} images/s")
    print(f"  ratio         : {best[args.batch_size] / best[1]:8.2f}x  (max |prob difference| {worst:.1e})")


if __name__ == "__main__":
    main()
