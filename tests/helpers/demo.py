"""The demo tests' pieces: a tiny model that reasons in valid chains, the demo served on a loopback port, and a
headless chromium driven by selenium."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Iterator

from helpers import session_folder
from helpers.hub import free_port
from helpers.mtct import chain_for, config, load_tiny, lodo_trainer, tiny_dataset
from helpers.serve import serving
from rdmldg_hf.embedded import embedded_source_images

# The class the reasoning model always concludes, and its chain.
REASONED_CLASS = "seven"
CHAIN = chain_for(7, 1)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# chromium's flags here: headless, and no background connections (refused on this network).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1200",
)


@functools.lru_cache(maxsize=None)
def reasoning_model() -> Path:
    """The tiny model (full weights) trained until it answers every image with one valid chain concluding
    :data:`REASONED_CLASS` (a few seconds); saved once per session with its ``rdmldg_config.json``."""
    out = session_folder("demo-model")
    rows = tiny_dataset(4, without_chain=()).map(lambda row: {"label": 7, "reasoning": CHAIN})
    model, processor = load_tiny()
    args = config(out / "train", max_steps=150, per_device_train_batch_size=1, learning_rate=2e-2, logging_steps=50)
    trainer = lodo_trainer(model, processor, args, rows)
    trainer.train()
    trainer.save_model(str(out / "model"))
    return out / "model"


def example_png(tmp_path: Path, index: int = 0) -> Path:
    """An image of the embedded benchmark written as a PNG file."""
    image = embedded_source_images()[index]
    path = tmp_path / f"{image.domain}-{index}.png"
    path.write_bytes(image.read_bytes())
    return path


def demo_env(root: Path) -> dict[str, str]:
    """The environment of a demo server in a test: offline, one thread, Gradio's files under ``root``."""
    return {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "OMP_NUM_THREADS": "1",
    }


@contextlib.contextmanager
def demo_server(root: Path, *arguments: str, app: Path | None = None) -> Iterator[str]:
    """``rdmldg demo ARGUMENTS`` (or ``python APP``, a Space's app.py) on a free loopback port until the block
    ends; yields its URL."""
    port = free_port()
    env = demo_env(root)
    if app is not None:
        command = [sys.executable, str(app)]
        env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    else:
        command = [sys.executable, "-m", "rdmldg_hf.cli", "demo", *arguments, "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    with serving(command, url, root / "demo.log", env):
        yield url


@contextlib.contextmanager
def chromium(root: Path) -> Iterator[object]:
    """A headless chromium (Debian's, through its chromedriver) with a fresh profile under ``root``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={root / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(root / "chromedriver.log")), options=options
    )
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
