"""The rdmldg command: subcommand dispatch, lazy imports, user errors."""

import subprocess
import sys

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


def test_only_the_requested_subcommand_is_imported():
    code = (
        "import sys; from rdmldg_hf.cli import build_parser; build_parser(['build']);"
        "print(sorted(m for m in sys.modules if m.startswith('rdmldg_hf.') and m.endswith('_command')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['rdmldg_hf.data.build_command']"
