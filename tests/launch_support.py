"""`accelerate launch` of several CPU processes (DDP over gloo), as the multi-process tests start them."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for the processes' rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_launch(num_processes: int = 2) -> list[str]:
    """The command prefix that starts ``num_processes`` CPU processes of a script (the venv's accelerate)."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    return [
        *(accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())),
    ]
