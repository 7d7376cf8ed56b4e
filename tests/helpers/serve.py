"""Servers run as subprocesses on a loopback port for tests: any command (:func:`serving`), and `transformers serve`
over a tiny model, a real OpenAI-compatible server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from helpers.hub import free_port

STARTUP_SECONDS = 120


@contextlib.contextmanager
def serving(command: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a server ``command`` (output to ``log``) until the block ends; waits (bounded) until ``ready_url``
    answers 200 first. The server is always stopped."""
    with open(log, "wb") as handle:
        server = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_SECONDS
        try:
            while True:
                assert server.poll() is None, log.read_text(errors="replace")[-3000:]
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"{command[0]} did not start in time: {log}"
                time.sleep(0.25)
            yield
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextlib.contextmanager
def transformers_serve(model_dir: Path, root: Path) -> Iterator[str]:
    """Serve ``model_dir`` on the CPU (log and hub cache under ``root``); yields the base URL ending in ``/v1``."""
    (root / "hub").mkdir(parents=True, exist_ok=True)  # /v1/models fails without an existing HF_HUB_CACHE
    port = free_port()
    env = {**os.environ, "HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).with_name("transformers")), "serve", "--device", "cpu"]
    base = f"http://127.0.0.1:{port}"
    with serving(
        [*command, "--host", "127.0.0.1", "--port", str(port), str(model_dir)],
        f"{base}/health",
        root / "serve.log",
        env,
    ):
        yield f"{base}/v1"
