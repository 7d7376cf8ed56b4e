"""What the tests share, in one package (``from helpers.mtct import tiny_dataset``); fixtures over it are in
``tests/conftest.py``.

- ``mtct``: tiny rotated-digit datasets, chains, test configs, and the session's tiny model of each architecture.
- ``sarr``: rows and scripted model replies for the generation and SARR tests.
- ``evaluation``: a tiny LoRA adapter trained once per session, images, embedded-benchmark folders.
- ``analysis``: a tiny MTCT/SARR-shaped run folder for the analysis tests.
- ``teacher``: images whose pixels encode their class and a scripted teacher that reads them; kill helpers.
- ``hub``: a real Hub download server (olah) on loopback, git mirrors, DomainBed-layout image folders.
- ``officehome``, ``pacs``: DomainBed-format folders of those benchmarks built into DomainBed-Reasoning.
- ``domainbed_selection``: DomainBed's model selection and error written out from its definitions.
- ``devices``: inputs on the model's device, devices compared by intent, tolerances that name their precision.
- ``launch``, ``serve``, ``demo``: `accelerate launch` on CPU processes, servers on loopback ports, the demo in
  headless chromium.
- ``scripts``: the programs the kill, resume and multi-process tests start as subprocesses.

Folders built for the whole session go under :func:`session_folder`, removed when the process exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_ROOT: Path | None = None


def session_folder(prefix: str) -> Path:
    """A new empty folder under this process's test-session root; the root is removed when the process exits."""
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="rdmldg-tests-"))
        atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=_ROOT))
