# Copyright the rdmldg_hf authors. Apache-2.0.
"""Sweep launchers: ``parallel --jobs 2`` vs ``local`` on the same 8 runs, same machine, in one run.

    python bench/bench_sweep_parallel.py                 # 8 MTCT runs on the embedded benchmark
    python bench/bench_sweep_parallel.py --steps 100

The 8 runs (every held-out rotdigits domain x 2 trial seeds, MTCT, the tiny LLaVA with phrase tokens, 96 in-part
images per training domain, a record every ``--steps / 2`` steps) are launched twice into fresh folders: by
``local`` (one after another) and by ``parallel --jobs 2`` (two at once); on a CPU machine every run has one
thread either way. Prints both wall times and the speed-up (target: >= 1.7x on 2 cores). The records of both
sweeps must be the same runs (same folders, same number of records).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from trl import ModelConfig

from rdmldg_hf.data.build import build_dataset
from rdmldg_hf.embedded import build_tiny_model
from rdmldg_hf.experiments.sweep import Sweep, SweepArguments
from rdmldg_hf.recipe_setup import parse_recipe_args
from rdmldg_hf.trainers import SARRConfig


def sweep(root: Path, out: str, steps: int, launcher: str) -> Sweep:
    argv = [
        *("--dataset_name", str(root / "data"), "--dataset_config", "rotdigits"),
        *("--model_name_or_path", str(root / "model"), "--use_peft", "false", "--methods", "mtct"),
        *("--n_trials", "2", "--max_train_images_per_domain", "96"),
        *("--max_steps", str(steps), "--checkpoint_every", str(steps // 2), "--per_device_train_batch_size", "8"),
        *("--learning_rate", "2e-3", "--reasoning_eval_limit", "32", "--max_new_tokens", "32"),
        *("--output_dir", str(root / out), "--launcher", launcher, "--jobs", "2"),
    ]
    return Sweep(*parse_recipe_args((SweepArguments, SARRConfig, ModelConfig), argv))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build_dataset("rotdigits", root / "data")
        build_tiny_model(
            root / "model", "llava", vocab_size=1536, phrase_tokens=True, text_hidden=64, vision_hidden=32
        )
        walls, runs = {}, {}
        for launcher in ("local", "parallel"):
            s = sweep(root, launcher, args.steps, launcher)
            start = time.perf_counter()
            outcome = s.launch()
            walls[launcher] = time.perf_counter() - start
            assert not outcome["failed"], outcome
            runs[launcher] = sorted(p.name for p in (root / launcher).iterdir() if (p / "done").exists())
        assert runs["local"] == runs["parallel"] and len(runs["local"]) == 8, runs
    print(f"8 runs ({args.steps} MTCT steps each, one thread per run), {os.cpu_count()} cores:")
    print(f"local {walls['local']:.1f} s, parallel --jobs 2 {walls['parallel']:.1f} s")
    print(f"parallel / local speed-up = {walls['local'] / walls['parallel']:.2f}x (target >= 1.7x)")


if __name__ == "__main__":
    main()
