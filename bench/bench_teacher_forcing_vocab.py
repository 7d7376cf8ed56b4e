"""Teacher forcing with a real-size vocabulary: LM head at answer positions only vs over the whole sequence.

The analyses score every answer token by teacher forcing. With Qwen2.5-VL's and InternVL3's
151,936-entry vocabulary, ``[batch, sequence, vocab]`` float32 logits over prompt and image tokens
cost ~0.6 MB per position; ``teacher_force`` asks the model (``logits_to_keep``) for the positions
that predict an answer token only. Both ways run in the same process on the same rows (a tiny
random model of the architecture, its vocabulary resized; images of different sizes, so prompts
differ in length); the scores are checked to agree.

    python bench/bench_teacher_forcing_vocab.py [--architecture qwen2_5_vl] [--images 8] [--batch-size 4]
        [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from unittest import mock

import numpy as np
import torch
from PIL import Image

from rdmldg_hf.analysis import ForcedExample, teacher_force, teacher_forcing
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.embedded import ARCHITECTURES, build_tiny_model, template_chain
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.prompts import TASKS
from rdmldg_hf.testing import LMHeadCalls

VOCAB = 151_936  # Qwen2.5-VL's (InternVL3's is 151,674)


def examples(num_images: int) -> list[ForcedExample]:
    """Per image (sides 32-64 px) its class name after the direct question and its template chain."""
    names = get_benchmark("rotdigits").class_names
    rng = np.random.default_rng(0)
    out = []
    for i in range(num_images):
        width, height = 32 * (1 + i % 2), 32 + 16 * (i % 3)
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        out.append(ForcedExample(image, i % 10))
        out.append(ForcedExample(image, i % 10, "reasoning", template_chain(names[i % 10])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="qwen2_5_vl", choices=ARCHITECTURES)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = build_tiny_model(tempfile.mkdtemp(prefix="rdmldg-bench-vocab-"), args.architecture, preset="test")
    model, processor = load_model_and_processor(folder)
    model.resize_token_embeddings(VOCAB, mean_resizing=False)
    names = get_benchmark("rotdigits").class_names
    rows = examples(args.images)
    ways = ("answer positions", "whole sequence")
    head_rows = {(way, task): 0 for way in ways for task in TASKS}
    best, results = dict.fromkeys(ways, 0.0), {}
    for _ in range(args.repeats):
        for way in ways:
            # The naive way: taken not to support logits_to_keep, the model returns every position's logits.
            naive = mock.patch.object(teacher_forcing, "_logits_to_keep_supported", lambda model: False)
            with naive if way == "whole sequence" else contextlib.nullcontext():
                started, results[way] = time.perf_counter(), []
                for task in TASKS:
                    with LMHeadCalls(model) as counter:
                        task_rows = [row for row in rows if row.task == task]
                        results[way] += teacher_force(model, processor, task_rows, names, batch_size=args.batch_size)
                    head_rows[way, task] = counter.positions
                best[way] = max(best[way], args.images / (time.perf_counter() - started))
    kept, full = results["answer positions"], results["whole sequence"]
    worst = max(abs(a - b) for x, y in zip(kept, full) for a, b in zip(x.probs, y.probs))
    assert all(x.token_ids == y.token_ids for x, y in zip(kept, full)) and worst < 1e-4, worst
    print(
        f"teacher forcing, tiny {args.architecture} with a {VOCAB:,}-entry vocabulary, "
        f"{args.images} images x 2 rows, batches of {args.batch_size}, {args.threads} thread(s), "
        f"best of {args.repeats}"
    )
    for task in TASKS:
        answer, whole = head_rows["answer positions", task], head_rows["whole sequence", task]
        print(
            f"  {task:14s} rows: LM head applied to {answer:6d} vs {whole:6d} positions "
            f"({answer * VOCAB * 4 / 2**20:7.1f} vs {whole * VOCAB * 4 / 2**20:7.1f} MB of float32 logits): "
            f"{whole / answer:5.1f}x fewer"
        )
    print(
        f"  speed: {best['answer positions']:.2f} vs {best['whole sequence']:.2f} images/s, "
        f"{best['answer positions'] / best['whole sequence']:.2f}x  (max |prob difference| {worst:.1e})"
    )


if __name__ == "__main__":
    main()
