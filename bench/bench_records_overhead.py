# Copyright the rdmldg_hf authors. Apache-2.0.
"""Per-checkpoint records: time spent scoring every environment's in and out parts vs time spent training, in one run.

    python bench/bench_records_overhead.py                     # the embedded sweep default (sweep_tiny.yaml)
    python bench/bench_records_overhead.py --per-domain 0      # every image of every environment in the records

One MTCT run (paired) on the embedded RotatedDigits benchmark with the sweep's default settings
(``recipes/configs/sweep_tiny.yaml``: the tiny LLaVA with phrase tokens, 192 in-part images per training
domain, batch 16, a record every 50 steps and at the end, rot30 held out, DomainBed's in/out split), one
thread. Time inside the records (direct class scoring of every environment's in and out part at each
checkpoint) is measured around each record; training time is the rest of ``trainer.train()``. Prints both and
their ratio (target: records <= 25% of training time). ``--reasoning`` also measures the chains' accuracy of
128 test images at each checkpoint (what ``eval_reasoning_every`` adds), reported separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from datasets import load_dataset

from rdmldg_hf.data.build import build_dataset
from rdmldg_hf.embedded import build_tiny_model
from rdmldg_hf.evaluation.lodo_cell import cell_training_values, train_cell
from rdmldg_hf.experiments.records import RecordsCallback, RecordWriter, record_args
from rdmldg_hf.models import load_model_and_processor
from rdmldg_hf.protocol import CheckpointSelector, find_benchmark
from rdmldg_hf.protocol.environments import environment_split


class TimedWriter(RecordWriter):
    """A record writer that adds up the seconds spent in its records."""

    seconds = 0.0
    reasoning_seconds = 0.0
    checkpoints = 0

    def accuracies(self, model):
        start = time.perf_counter()
        try:
            return super().accuracies(model)
        finally:
            self.seconds += time.perf_counter() - start
            self.checkpoints += 1

    def reasoning_accuracies(self, model):
        start = time.perf_counter()
        try:
            return super().reasoning_accuracies(model)
        finally:
            self.reasoning_seconds += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--per-domain", type=int, default=192, help="in-part images per training domain (0: all)")
    parser.add_argument("--reasoning", action="store_true", help="also chains' accuracy at each checkpoint")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build_dataset("rotdigits", root / "data")
        model_dir = build_tiny_model(
            root / "model", "llava", vocab_size=1536, phrase_tokens=True, text_hidden=64, vision_hidden=32
        )
        dataset = load_dataset(str(root / "data"), "rotdigits")
        split = environment_split(
            dataset, [1], 0.2, 0, holdout_style="domainbed", max_train_images_per_domain=args.per_domain or None
        )
        benchmark = find_benchmark(dataset)
        model, processor = load_model_and_processor(str(model_dir))
        writer = TimedWriter(
            root / "run",
            record_args(benchmark, "mtct", [1], hparams_seed=0, trial_seed=0, holdout_fraction=0.2),
            {},
            split,
            processor,
            benchmark,
            batch_size=64,
            reasoning_limit=128,
            max_new_tokens=96,
        )
        records = RecordsCallback(
            writer, args.every, CheckpointSelector(), reasoning_every=args.every if args.reasoning else 0
        )
        values = cell_training_values(
            root / "run" / "train",
            dict(per_device_train_batch_size=16, learning_rate=2e-3, max_steps=args.steps, warmup_steps=10),
        )
        start = time.perf_counter()
        train_cell(
            "mtct", model, processor, split.train, values, benchmark=benchmark, base_model=str(model_dir),
            callbacks=[records],
        )  # fmt: skip
        total = time.perf_counter() - start
    training = total - writer.seconds - writer.reasoning_seconds
    images = len(writer.rows)
    print(
        f"MTCT {args.steps} steps, {len(split.train)} training images, "
        f"{writer.checkpoints} records of {images} images "
        f"(every environment's in and out part), {args.threads} thread(s)"
    )
    print(f"training {training:.1f} s; records (direct scoring) {writer.seconds:.1f} s "
          f"({images * writer.checkpoints / writer.seconds:.0f} images/s)")  # fmt: skip
    print(f"records / training = {writer.seconds / training:.3f} (target <= 0.25)")
    if args.reasoning:
        print(f"reasoning accuracy at every record: {writer.reasoning_seconds:.1f} s "
              f"({writer.reasoning_seconds / training:.3f} of training)")  # fmt: skip


if __name__ == "__main__":
    main()
