"""The paper-scale benchmark's ``--size tiny`` run (the code a GPU runs with ``--size 7b``): every figure is there
and sane, and MTCT's defaults keep padding under 5% of computed tokens at the paper's shapes."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_paper_scale.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("bench_paper_scale", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    returned = bench.main(["--size", "tiny", "--out", str(out), "--peak-tflops", "1", "--threads", "1"])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    return written


def test_every_stage_ran_and_is_recorded(results):
    assert results["errors"] == {}
    assert set(results["seconds"]) == {"padding", "train", "scoring", "relabel"}
    meta = results["meta"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"  # the run's: a GPU if there is one
    assert meta["size"] == "tiny" and meta["device"] == device and meta["threads"] == 1 and meta["peak_tflops"] == 1
    assert "--size tiny" in meta["command"] and meta["date"] and meta["plan"]["batch_images"] == 2


@pytest.mark.parametrize("architecture", ["qwen2_5_vl", "internvl"])
def test_padding_at_the_papers_shapes(results, architecture):
    padding = results["padding"]
    assert padding["images_per_step"] == 8 and 150 <= padding["chain_words"]["mean"] <= 250
    figures = padding[architecture]
    before, after = figures["before"], figures["after"]
    steps = padding["steps"]
    assert (before["sampler"], before["group_by_task"], before["forwards"]) == ("random", False, steps)
    assert (after["sampler"], after["group_by_task"], after["forwards"]) == ("group_by_length", True, 2 * steps)
    for counts in (before, after):
        assert 0 < counts["real_tokens"] <= counts["computed_tokens"]
        assert counts["padding"] == pytest.approx(1 - counts["real_tokens"] / counts["computed_tokens"], abs=1e-4)
    assert after["padding"] <= 0.05 < before["padding"]
    assert figures["padding_before_vs_after"] > 4 and figures["computed_per_real_token_after_vs_before"] < 0.9
    assert figures["real_tokens_per_image"] > 2 * 256  # two rows, each with the image's 256 tokens


@pytest.mark.parametrize("architecture", ["qwen2_5_vl", "internvl"])
def test_training_steps(results, architecture):
    figures = results["train"][architecture]
    assert figures["rows_per_step"] == 2 * figures["images_per_step"] == 4
    assert 0 < figures["non_embedding_parameters"] < figures["parameters"]
    for name, forwards in (("mtct", 2), ("mtct_one_padded_batch", 1), ("sft", 1)):
        run = figures[name]
        assert run["timed_steps"] == 2 and run["step_s"] > 0 and run["forwards_per_step"] == forwards
        assert run["images_per_s"] == pytest.approx(2 / run["step_s"], rel=1e-2)
        assert 0 < run["real_tokens_per_step"] <= run["computed_tokens_per_step"]
        assert 0 < run["mfu"] < 1
        assert (run["peak_memory_gib"] is None) is (not torch.cuda.is_available())  # GPU memory, on a GPU only
        assert len(run["loss"]) == 3 and all(math.isfinite(x) for x in run["loss"])
    # SFTTrainer and MTCT with one padded batch see the same batches; MTCT's defaults pad less.
    assert figures["sft"]["computed_tokens_per_step"] == figures["mtct_one_padded_batch"]["computed_tokens_per_step"]
    assert figures["mtct"]["padding"] < figures["mtct_one_padded_batch"]["padding"]
    assert figures["mtct_vs_sft_step"] == pytest.approx(figures["mtct"]["step_s"] / figures["sft"]["step_s"], rel=1e-2)


def test_scoring_and_relabel(results):
    scoring = results["scoring"]
    assert scoring["classes"] == 65 and scoring["probabilities_sum_to_one"]
    assert scoring["score_vs_forward_speed"] == pytest.approx(
        scoring["score_images_per_s"] / scoring["forward_images_per_s"], rel=2e-2
    )
    relabel = results["relabel"]
    single, largest = relabel["one_at_a_time"], relabel["largest_batch"]
    assert (single["batch"], largest["batch"], largest["images"], relabel["tried"]) == (1, 4, 4, [])
    assert single["chains_per_s"] > 0 and largest["chains_per_s"] > 0 and relabel["max_new_tokens"] == 8
    # Per decoding step: two chains one at a time are two runs of 8 steps; a batch of 4 is one.
    assert single["ms_per_decoding_step"] == pytest.approx(1e3 * single["seconds"] / 16, rel=0.02)
    assert largest["ms_per_decoding_step"] == pytest.approx(1e3 * largest["seconds"] / 8, rel=0.02)
    assert relabel["largest_vs_one_at_a_time"] == pytest.approx(largest["chains_per_s"] / single["chains_per_s"], 0.02)
    if not torch.cuda.is_available():
        assert relabel["memory_bound_ms_per_token"] is None  # no bandwidth known for a CPU
