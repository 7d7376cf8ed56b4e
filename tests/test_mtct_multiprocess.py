"""The same global batch on 2 processes (DDP, gloo on CPU) gives the same loss and step as on 1 process
(and as 2 accumulated micro-batches on 1 process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.launch import cpu_launch
from helpers.mtct import tiny_model_dir
from helpers.scripts import MTCT_MULTIPROCESS, TESTS
from helpers.scripts.mtct_multiprocess import main as one_step


def _run(command: list[str], out_dir: Path) -> tuple[dict, dict]:
    out_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out_dir / "result.json").read_text()), torch.load(out_dir / "weights.pt")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one(tmp_path):
    model_dir = str(tiny_model_dir())
    two, two_weights = _run(
        [
            *cpu_launch(2),
            str(MTCT_MULTIPROCESS),
            model_dir,
            str(tmp_path / "two"),
            "4",
        ],
        tmp_path / "two",
    )
    one, one_weights = one_step(model_dir, str(tmp_path / "one"), 8)  # one process, batch 8
    accumulated, accumulated_weights = one_step(model_dir, str(tmp_path / "acc"), 4, 2)  # 2 x 4 accumulated
    assert (two["processes"], one["processes"]) == (2, 1)
    for other in (one, accumulated):
        for key in ("loss", "cls_loss", "reasoning_loss", "grad_norm", "mean_token_accuracy", "num_tokens"):
            assert two[key] == pytest.approx(other[key], rel=1e-5), key
    for name, value in one_weights.items():
        torch.testing.assert_close(two_weights[name], value, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(accumulated_weights[name], value, rtol=1e-5, atol=1e-7)
