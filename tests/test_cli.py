"""The rdmldg command: subcommand dispatch, lazy imports, user errors."""

import json
import subprocess
import sys

import pytest

from rdmldg_hf.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)


def test_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["build", "--benchmark", "imagenet", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Unknown benchmark 'imagenet'" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.multiprocess
def test_only_the_requested_subcommand_is_imported():
    """`rdmldg --help` imports no subcommand module; `rdmldg NAME` imports NAME's alone."""
    code = (
        "import json, sys; from rdmldg_hf.cli import SUBCOMMANDS, build_parser; loaded = {}\n"
        "for argv in ([], *([name] for name in SUBCOMMANDS)):\n"
        "    build_parser(argv)\n"
        "    loaded[' '.join(argv)] = sorted(m for m in sys.modules if m.startswith('rdmldg_hf.commands.'))\n"
        "    for m in loaded[' '.join(argv)]: del sys.modules[m]\n"
        "print(json.dumps(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert loaded.pop("") == []
    assert loaded == {name: [module] for name, (module, _) in SUBCOMMANDS.items()}
