"""One writer per folder: concurrent builds, a killed build, and SARR/LODO output folders, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.scripts import TEACHER_BUILD
from helpers.teacher import built_rows, pacs_build_arguments, pixel_teacher, sigkill_build_when, write_images
from rdmldg_hf.benchmarks import get_benchmark
from rdmldg_hf.cli import main
from rdmldg_hf.locking import FolderBusyError, FolderLock, lock_path
from rdmldg_hf.testing import LoopbackServer

PACS = get_benchmark("pacs")


def holder_pid(lock_file: Path) -> int | None:
    """The pid a lock file names (None while it is empty or absent)."""
    try:
        text = lock_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def wait_for(condition, process: subprocess.Popen, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, f"the first process ended before {what}"
        assert time.monotonic() < deadline, f"waited {limit:.0f} s for {what}"
        time.sleep(0.01)


@pytest.fixture
def folder(tmp_path):
    """A PACS folder of four images (one per domain, all of the first class)."""
    write_images(tmp_path / "PACS", PACS, 4, classes=1)
    return tmp_path / "PACS"


def build_arguments(folder: Path, out: Path, base_url: str, store: Path) -> list[str]:
    arguments = pacs_build_arguments(
        folder, out, base_url, "--concurrency", "1", "--teacher-store", str(store), candidates=1, max_rounds=0
    )
    return arguments[1:]  # the options of `rdmldg build`


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_second_build_of_the_same_folder_or_store_refuses_and_the_first_finishes_as_alone(folder, tmp_path, capsys):
    out, store = tmp_path / "out", tmp_path / "store"
    with LoopbackServer(pixel_teacher(PACS), delay=0.6) as server:  # a slow teacher keeps the first build running
        arguments = build_arguments(folder, out, server.base_url, store)
        first = subprocess.Popen(
            [sys.executable, str(TEACHER_BUILD), *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for(lambda: server.count >= 1, first, "its first teacher request")
            assert holder_pid(lock_path(out)) == first.pid
            code = main(["build", *build_arguments(folder, out, server.base_url, tmp_path / "other-store")])
            refused_out = capsys.readouterr().err
            code_store = main(["build", *build_arguments(folder, tmp_path / "out2", server.base_url, store)])
            refused_store = capsys.readouterr().err
            assert first.poll() is None  # both refused at once, while the first still runs
            output, _ = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        assert first.returncode == 0, output
        busy = f"is being written by another process (pid {first.pid}"
        assert code == 2 and f"{out} {busy}" in refused_out
        (store_folder,) = [path for path in store.iterdir() if path.is_dir()]
        assert code_store == 2 and f"{store_folder} {busy}" in refused_store
        assert not (tmp_path / "out2").exists() and not (tmp_path / "other-store").exists()
        server.delay = 0
        alone = build_arguments(folder, tmp_path / "alone", server.base_url, tmp_path / "alone-store")
        assert main(["build", *alone]) == 0
    assert built_rows(out, PACS) == built_rows(tmp_path / "alone", PACS)
    assert holder_pid(lock_path(out)) is None  # released: the lock file no longer names a holder


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_build_killed_while_holding_the_lock_does_not_block_the_next(folder, tmp_path):
    out, store = tmp_path / "out", tmp_path / "store"
    with LoopbackServer(pixel_teacher(PACS), delay=0.4) as server:
        arguments = build_arguments(folder, out, server.base_url, store)
        sigkill_build_when(
            arguments, lambda: server.count >= 1 and holder_pid(lock_path(out)) is not None, "the lock is held"
        )
        assert holder_pid(lock_path(out)) is not None  # the dead holder's pid is still written there
        server.delay = 0
        assert main(["build", *arguments]) == 0
    assert len(built_rows(out, PACS)) == 4


@pytest.mark.multiprocess
def test_sarr_and_lodo_refuse_an_output_folder_another_process_writes(tmp_path):
    from helpers.sarr import tiny_rows
    from rdmldg_hf.evaluation.lodo_config import LodoConfig
    from rdmldg_hf.experiments.lodo import LodoRunner
    from rdmldg_hf.trainers import SARRConfig, SARRTrainer

    sarr_out, lodo_out = tmp_path / "sarr", tmp_path / "lodo"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom rdmldg_hf.locking import FolderLock\n"
            "locks = [FolderLock(path).acquire() for path in sys.argv[1:]]\nprint('held', flush=True)\ntime.sleep(60)",
            str(sarr_out),
            str(lodo_out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        args = SARRConfig(
            output_dir=str(sarr_out),
            num_rounds=1,
            report_to="none",
            bf16=False,
            activation_checkpointing=False,
            save_strategy="no",
        )
        busy = rf"is being written by another process \(pid {holder.pid}"
        with pytest.raises(FolderBusyError, match=rf"{sarr_out} {busy}"):
            SARRTrainer(None, args, tiny_rows(2), None)
        with pytest.raises(FolderBusyError, match=rf"{lodo_out} {busy}"):
            LodoRunner(LodoConfig(output_dir=str(lodo_out)))
    finally:
        holder.kill()
        holder.wait()
    assert not sarr_out.exists() and not lodo_out.exists()  # refused before writing anything


@pytest.mark.multiprocess
def test_the_lock_is_reentrant_in_a_process_and_released_by_the_last_holder(tmp_path):
    folder = tmp_path / "out"
    with FolderLock(folder, "build") as outer:
        with FolderLock(folder, "build"):
            assert holder_pid(outer.path) == os.getpid()
        assert holder_pid(outer.path) == os.getpid()  # the outer holder still holds it
    assert holder_pid(outer.path) is None
    take = f"from rdmldg_hf.locking import FolderLock\nFolderLock({str(folder)!r}).acquire()"
    check = subprocess.run([sys.executable, "-c", take])
    assert check.returncode == 0  # free for another process
