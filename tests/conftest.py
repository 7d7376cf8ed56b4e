"""Test set-up: one thread, no network, a temporary HF_HOME for every test session; tests marked ``gpu`` are
skipped where torch sees no CUDA GPU. Shared pieces live in ``tests/helpers/``; the session-scoped fixtures here
hand out the ones that are built once (tiny models).

Markers (registered in setup.cfg, ``--strict-markers``): ``slow`` (a few seconds or more each; ``-m "not slow"``
runs the rest), ``multiprocess`` (starts other processes: accelerate, kill and resume tests, sweeps),
``server`` (a real server on loopback: olah, `transformers serve`, the demo), ``browser`` (headless chromium),
``gpu`` (needs a CUDA GPU)."""

import os

from helpers import session_folder

_HF_HOME = str(session_folder("hf-home"))
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_HOME, "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
for _key in ("HF_TOKEN", "OPENAI_API_KEY", "HF_ENDPOINT"):
    os.environ.pop(_key, None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(architecture="llava")``: the folder of the session's tiny model of that architecture (``test``
    preset), built once per session and shared by every test that asks; treat it as read-only."""
    from helpers.mtct import tiny_model_dir

    return tiny_model_dir


@pytest.fixture(scope="session")
def tiny_phrase_model():
    """The folder of the session's tiny llava with whole-phrase tokens (short chains, for SARR rounds), built once."""
    from helpers.sarr import phrase_model_dir

    return phrase_model_dir()
