"""Atomic writes: a file or a folder holds the old content or the new, never part of one, after an error or a kill."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import rdmldg_hf
from rdmldg_hf.atomic import atomic_folder, atomic_open, atomic_write, atomic_write_json, publish
from test_locking import wait_for

LINES = 100_000  # lines of one version of the file written in a loop: a write takes a while


def _whole(text: str, lines: int = LINES) -> bool:
    """Whether ``text`` is one complete version: ``lines`` copies of one line."""
    rows = text.split("\n")
    return rows[-1] == "" and len(rows) == lines + 1 and len(set(rows[:-1])) == 1


def _writer(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)])


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_text_bytes_and_json_replace_the_file(tmp_path):
    path = tmp_path / "state.json"
    assert atomic_write(path, "first\n") == path and path.read_text() == "first\n"
    atomic_write(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    atomic_write_json(path, {"b": "é", "a": [1]}, sort_keys=True, ensure_ascii=False)
    assert path.read_text(encoding="utf-8") == '{\n  "a": [\n    1\n  ],\n  "b": "é"\n}\n'
    with atomic_open(path) as handle:
        handle.write("line 1\n")
        assert path.read_text(encoding="utf-8").startswith("{")  # not replaced before the block ends
        handle.write("line 2\n")
    assert path.read_text() == "line 1\nline 2\n"
    assert os.listdir(tmp_path) == ["state.json"]


def test_new_files_get_the_usual_permissions_or_the_ones_asked(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    assert (atomic_write(tmp_path / "open", "x").stat().st_mode & 0o777) == 0o666 & ~umask
    secret = atomic_write(tmp_path / "secret", "x", permissions=0o600)
    assert (secret.stat().st_mode & 0o777) == 0o600 & ~umask


def test_an_error_while_writing_keeps_the_old_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"pairs": 1})
    with pytest.raises(RuntimeError, match="killed"), atomic_open(path) as handle:
        handle.write('{"pairs": ')
        raise RuntimeError("killed mid-write")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"pairs": object()})
    assert path.read_text() == '{\n  "pairs": 1\n}\n'
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "new.jsonl", "wb") as handle:
        handle.write(b"half")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["results.json"]


def test_a_failed_rename_leaves_no_temporary(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "taken", "text")
    assert os.listdir(tmp_path) == ["taken"]
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "file", "text")  # its folder must exist, as with open()


def test_only_whole_file_modes_are_taken(tmp_path):
    for mode in ("a", "r+", "x", "ab"):
        with pytest.raises(ValueError, match=re.escape(f"mode '{mode}'")), atomic_open(tmp_path / "f", mode):
            pass
    assert not any(tmp_path.iterdir())


def test_the_file_is_replaced_not_rewritten_so_a_hard_link_keeps_the_old_content(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("old")
    os.link(path, tmp_path / "live-README.md")
    atomic_write(path, "new")
    assert path.read_text() == "new" and (tmp_path / "live-README.md").read_text() == "old"


def test_publish_puts_a_file_named_at_the_end_in_place(tmp_path):
    handle = open(tmp_path / "shard.partial", "wb")
    handle.write(b"line\n")
    assert publish(handle, tmp_path / "shard-abc.jsonl") == tmp_path / "shard-abc.jsonl"
    assert handle.closed and os.listdir(tmp_path) == ["shard-abc.jsonl"]
    assert (tmp_path / "shard-abc.jsonl").read_bytes() == b"line\n"


_FILE_WRITER = """
    import itertools, sys
    from rdmldg_hf.atomic import atomic_open, atomic_write

    path, lines = sys.argv[1], int(sys.argv[2])
    for version in itertools.count():
        line = f"version {version:09d}\\n"
        if version % 2:
            atomic_write(path, line * lines)
        else:
            with atomic_open(path) as handle:  # streamed, line by line
                for _ in range(lines):
                    handle.write(line)
"""


@pytest.mark.multiprocess
def test_a_writer_killed_in_a_loop_leaves_the_old_or_the_new_file_never_a_torn_one(tmp_path):
    path = tmp_path / "results.jsonl"
    for delay in (0.0, 0.013, 0.031):  # a few moments within a write
        writer = _writer(_FILE_WRITER, path, LINES)
        seen = set()
        try:
            wait_for(lambda: path.exists(), writer, "the first version")
            deadline = time.monotonic() + 0.5 + delay
            while time.monotonic() < deadline or len(seen) < 3:
                text = path.read_text()  # readers meanwhile see whole versions only
                assert _whole(text), f"a reader saw a torn file ({len(text)} characters)"
                seen.add(text[:18])
                assert writer.poll() is None and time.monotonic() < deadline + 60, "the writer stalled"
        finally:
            _kill(writer)
        assert _whole(path.read_text()), "the kill left a torn file"
        assert len(seen) >= 3  # the file was replaced while it was read


_FOLDER_WRITER = """
    import itertools, sys
    from rdmldg_hf.atomic import atomic_folder

    out, files = sys.argv[1], int(sys.argv[2])
    for version in itertools.count():
        with atomic_folder(out) as staging:
            for index in range(files):
                (staging / f"part-{index}.txt").write_text(f"version {version}\\n" * 2000)
"""


@pytest.mark.multiprocess
def test_a_folder_writer_killed_in_a_loop_leaves_a_whole_folder(tmp_path):
    out, files = tmp_path / "layout", 20
    for delay in (0.0, 0.017, 0.029):
        writer = _writer(_FOLDER_WRITER, out, files)
        try:
            wait_for(lambda: out.is_dir(), writer, "the first folder")
            time.sleep(0.3 + delay)
        finally:
            _kill(writer)
        # The next writer first puts back a folder that a kill between the two renames left aside.
        with pytest.raises(RuntimeError), atomic_folder(out):
            raise RuntimeError("only look")
        contents = {path.name: path.read_text() for path in out.iterdir()}
        assert sorted(contents) == sorted(f"part-{i}.txt" for i in range(files))
        assert len(set(contents.values())) == 1, "files of two versions in one folder"
        assert _whole(next(iter(contents.values())), 2000)


def test_a_folder_is_replaced_only_when_complete(tmp_path):
    out = tmp_path / "ds"
    with atomic_folder(out) as staging:
        (staging / "a.txt").write_text("first")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with atomic_folder(out) as staging:
        assert not any(staging.iterdir())  # a fresh folder unless asked to keep the contents
        (staging / "b.txt").write_text("second")
        assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert os.listdir(tmp_path) == ["ds"]  # no staging or previous folder left


def test_an_error_in_a_folder_write_keeps_the_old_folder_and_removes_the_staging(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(out, keep_contents=True) as staging:
        atomic_write(staging / "a.txt", "new")  # a replaced link: the folder in use keeps its file
        assert (out / "a.txt").read_text() == "old"
        raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "old"
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "fresh"):
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == ["ds"]


def test_keep_contents_starts_from_the_folder_and_a_kill_between_the_renames_is_recovered(tmp_path):
    out = tmp_path / "ds"
    with atomic_folder(out) as staging:
        (staging / "a.txt").write_text("a")
    with atomic_folder(out, keep_contents=True) as staging:
        assert (staging / "a.txt").read_text() == "a"
        (staging / "b.txt").write_text("b")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    out.rename(tmp_path / ".ds.previous-deadbeef")  # as if killed after the first rename
    with atomic_folder(out, keep_contents=True) as staging:
        (staging / "c.txt").write_text("c")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "c.txt"]
    assert os.listdir(tmp_path) == ["ds"]


def test_a_file_in_the_way_of_a_folder_is_refused(tmp_path):
    (tmp_path / "ds").write_text("a file")
    with pytest.raises(FileExistsError, match="is a file"), atomic_folder(tmp_path / "ds"):
        pass


def test_no_module_renames_files_into_place_itself():
    """Every replace-by-rename goes through rdmldg_hf.atomic (append-only logs append; they never rename)."""
    package = Path(rdmldg_hf.__file__).parent
    found = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "atomic.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bos\.(replace|rename)\(|\.tmp\b|\btmp\.(replace|rename)\(", line)
    ]
    assert not found, f"write through rdmldg_hf.atomic instead: {', '.join(found)}"
