"""`transformers serve` over a tiny model on a loopback port: a real OpenAI-compatible server for tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from helpers_hub import free_port

STARTUP_SECONDS = 120


@contextlib.contextmanager
def transformers_serve(model_dir: Path, root: Path) -> Iterator[str]:
    """Serve ``model_dir`` on the CPU (log and hub cache under ``root``); yields the base URL ending in ``/v1``."""
    (root / "hub").mkdir(parents=True, exist_ok=True)  # /v1/models fails without an existing HF_HUB_CACHE
    port = free_port()
    env = {**os.environ, "HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).with_name("transformers")), "serve", "--device", "cpu"]
    with open(root / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), str(model_dir)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        try:
            while True:
                assert server.poll() is None, (root / "serve.log").read_text()[-3000:]
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "transformers serve did not start in time"
                time.sleep(0.25)
            yield f"{base}/v1"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
