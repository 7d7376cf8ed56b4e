"""Direct class scoring at real scale: one prefill per image, every class name scored from its cache.

    python bench/bench_direct_scoring.py [--threads 2] [--images 16] [--batch-size 16] [--repeats 3]

On the tiny LLaVA (``embedded`` preset, whose tokenizer splits most OfficeHome and DomainNet
names into several tokens) and random images, in one run:

1. OfficeHome's 65 names: images/s of ``score_classes`` vs one forward pass of the same prompt
   (``logits_to_keep=1``, processor call included in both), and vs the previous algorithm, kept
   below (every (image, class) continuation as its own full sequence, same batches), with the
   largest difference of their probabilities.
2. DomainNet's 345 names: ``score_classes`` vs one forward pass.
3. Peak memory with a 150k-entry vocabulary (embeddings resized): scoring one batch vs one forward
   pass with ``logits_to_keep=1``, each in a fresh process (peak RSS above the RSS right before
   the call, the peak reset through ``/proc/self/clear_refs``; Linux only).
4. ``direct`` vs ``direct-generate`` on OfficeHome names (generation of up to the longest
   answer's tokens plus the end of turn).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.embedded import build_tiny_model
from rdmldg_hf.evaluation.predict import predict
from rdmldg_hf.generation import ModelBackend, batch_indices
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.prompts import prompt_messages
from rdmldg_hf.scoring import AnswerTree, answer_token_ids, class_logprobs, score_classes

BIG_VOCABULARY = 150_000


def previous_score_classes(model: Any, processor: Any, images: Sequence[Any], names: Sequence[str], batch_size: int):
    """The algorithm before the shared prefix: one left-padded row per (image, class), full-sequence logits."""
    backend = ModelBackend(model, processor)
    answers = answer_token_ids(processor, names)
    messages = prompt_messages("classification", names)
    rows = []
    for indices in batch_indices(len(images), batch_size):
        row_images = [images[i] for i in indices for _ in names]
        inputs = backend.encode([messages] * len(row_images), row_images, suffixes=list(names) * len(indices))
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(**inputs).logits.float(), dim=-1)
        ids = inputs["input_ids"]
        scores = torch.zeros(len(row_images))
        for row in range(len(row_images)):
            length = len(answers[row % len(names)])
            positions = torch.arange(ids.shape[1] - length, ids.shape[1])
            scores[row] = logprobs[row, positions - 1, ids[row, positions]].sum()
        rows.append(torch.softmax(scores.reshape(len(indices), len(names)), dim=-1))
    return torch.cat(rows)


def forward_pass(model: Any, processor: Any, images: Sequence[Any], names: Sequence[str], batch_size: int) -> None:
    """One processor call and one forward pass (last position's logits only) per batch of the same prompts."""
    backend = ModelBackend(model, processor)
    messages = prompt_messages("classification", names)
    for indices in batch_indices(len(images), batch_size):
        inputs = backend.encode([messages] * len(indices), [images[i] for i in indices])
        with torch.inference_mode():
            model(**inputs, logits_to_keep=1)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_times(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """The shortest of ``repeats`` runs of each function, run in turn (so that load from other jobs hits all alike)."""
    times: dict[str, float] = {name: float("inf") for name in fns}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds, results[name] = timed(fn)
            times[name] = min(times[name], seconds)
    return times, results


def random_images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]


def peak_rss_child(model_dir: str, what: str, images: int, threads: int) -> None:
    """In a fresh process: peak RSS (bytes) above the current RSS of one batch, scored or forwarded."""
    torch.set_num_threads(threads)
    model, processor = load_model_and_processor(model_dir)
    model.eval()
    names = get_benchmark("officehome").class_names
    tree = AnswerTree.from_answers(answer_token_ids(processor, names))
    messages = [prompt_messages("classification", names)] * images
    inputs = ModelBackend(model, processor).encode(messages, random_images(images))
    status = Path("/proc/self/status")

    def kib(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+)", status.read_text()).group(1))

    before = kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    with torch.inference_mode():
        if what == "score":
            class_logprobs(model, inputs, tree)
        else:
            model(**inputs, logits_to_keep=1)
    print(json.dumps({"peak_above_rss": (kib("VmHWM") - before) * 1024}))


def peak_rss(model_dir: Path, what: str, images: int, threads: int, repeats: int = 3) -> int:
    """Median over ``repeats`` fresh processes of :func:`peak_rss_child`."""
    values = []
    for _ in range(repeats):
        command = [
            sys.executable,
            __file__,
            "--peak-rss-child",
            what,
            "--model-dir",
            str(model_dir),
            "--images",
            str(images),
            "--threads",
            str(threads),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        values.append(json.loads(output.strip().splitlines()[-1])["peak_above_rss"])
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="Alternating timed runs of each way; the best counts.")
    parser.add_argument("--peak-rss-child", choices=["score", "forward"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_rss_child:
        peak_rss_child(args.model_dir, args.peak_rss_child, args.images, args.threads)
        return
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="rdmldg-bench-scoring-"))
    model, processor = load_model_and_processor(build_tiny_model(work / "model", "llava", preset="embedded"))
    model.eval()
    images = random_images(args.images)
    batch = args.batch_size
    print(f"tiny LLaVA (embedded preset), {len(images)} random images, batch {batch}, {args.threads} thread(s)")

    for benchmark in ("officehome", "domainnet"):
        names = list(get_benchmark(benchmark).class_names)
        tree = AnswerTree.from_answers(answer_token_ids(processor, names))
        longest = max(len(ids) for ids in answer_token_ids(processor, names))
        score_classes(model, processor, images[:2], names, batch)  # warm-up
        runs = {
            "forward": lambda: forward_pass(model, processor, images, names, batch),
            "direct": lambda: score_classes(model, processor, images, names, batch),
        }
        if benchmark == "officehome":
            runs["generate"] = lambda: predict(
                model, processor, images, names, "direct-generate", batch_size=batch, max_new_tokens=longest + 1
            )
        times, results = best_times(runs, args.repeats)
        print(
            f"--- {benchmark}: {len(names)} names of up to {longest} tokens, {tree.num_nodes} answer-trie tokens "
            f"after the prompt (best of {args.repeats} alternating runs)"
        )
        print(f"one forward pass:  {len(images) / times['forward']:8.1f} images/s")
        print(
            f"direct scoring:    {len(images) / times['direct']:8.1f} images/s -> "
            f"{times['forward'] / times['direct']:.2f}x a forward pass"
        )
        if benchmark == "officehome":
            print(
                f"direct-generate ({longest + 1} new tokens): {len(images) / times['generate']:8.1f} images/s -> "
                f"direct is {times['generate'] / times['direct']:.2f}x faster"
            )
            # Once (it is slow), same batches: 16 images x 65 names are 1,040 full sequences (~3 GB peak RSS).
            previous_s, previous = timed(lambda: previous_score_classes(model, processor, images, names, batch))
            print(
                f"previous scoring:  {len(images) / previous_s:8.2f} images/s -> direct is "
                f"{previous_s / times['direct']:.1f}x faster (a forward pass {previous_s / times['forward']:.1f}x); "
                f"largest probability difference {(previous - results['direct']).abs().max():.1e}"
            )

    model.resize_token_embeddings(BIG_VOCABULARY)
    model.save_pretrained(work / "big-vocabulary")
    processor.save_pretrained(work / "big-vocabulary")
    score = peak_rss(work / "big-vocabulary", "score", batch, args.threads)
    forward = peak_rss(work / "big-vocabulary", "forward", batch, args.threads)
    print(
        f"--- peak memory, vocabulary {BIG_VOCABULARY:,}, one batch of {batch} OfficeHome prompts "
        "(median of 3 processes)"
    )
    print(f"forward pass (logits_to_keep=1): {forward / 2**20:7.1f} MiB above RSS")
    print(f"direct scoring (65 names):       {score / 2**20:7.1f} MiB above RSS -> {score / forward:.2f}x")


if __name__ == "__main__":
    main()
