"""What the recipes share: CPU threads of a single process."""

import torch

from rdmldg_hf.recipe_setup import use_cpu_cores


def test_single_cpu_process_gets_the_threads_asked_for(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    try:
        assert use_cpu_cores(2) == 2
        assert use_cpu_cores(1) == 1
    finally:
        torch.set_num_threads(1)


def test_one_of_several_processes_keeps_its_threads(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    torch.set_num_threads(1)
    assert use_cpu_cores(2) == 1
