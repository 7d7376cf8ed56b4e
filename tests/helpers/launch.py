"""`accelerate launch` of several CPU processes (DDP over gloo), as the multi-process tests start them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from helpers.hub import free_port


def cpu_launch(num_processes: int = 2) -> list[str]:
    """The command prefix that starts ``num_processes`` CPU processes of a script (the venv's accelerate); GPUs are
    hidden from them, so that they are CPU processes on a GPU machine too."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    return [
        *("env", "CUDA_VISIBLE_DEVICES="),
        *(accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())),
    ]
