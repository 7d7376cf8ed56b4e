"""The demo's Space (written locally and pushed through the Hub's commit boundary) and the commands' errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata

import pytest
import yaml

from helpers.demo import reasoning_model
from helpers.hub import FakeHub
from rdmldg_hf.cli import main
from rdmldg_hf.demo.space import SPACE_FILES, write_space


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def test_space_folder_names_the_model_and_the_dataset_of_its_card(tmp_path):
    model = shutil.copytree(reasoning_model(), tmp_path / "model")
    (model / "README.md").write_text("---\ndatasets:\n- rdmldg/domainbed-reasoning\n- ./local-folder\n---\n")
    space = write_space(tmp_path / "space", str(model))
    assert sorted(p.name for p in space.iterdir()) == sorted(SPACE_FILES)
    meta = front_matter((space / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == metadata.version("gradio")
    assert meta["app_file"] == "app.py" and meta["models"] == [str(model.resolve())]
    assert meta["datasets"] == ["rdmldg/domainbed-reasoning"]  # Hub datasets only
    assert (space / "requirements.txt").read_text() == f"rdmldg_hf[demo]=={metadata.version('rdmldg_hf')}\n"
    app = (space / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert f"launch_demo({str(model.resolve())!r}, host=None, port=None)" in app

    hub_space = write_space(tmp_path / "hub-space", "me/rdmldg-model", datasets=[])
    meta = front_matter((hub_space / "README.md").read_text())
    assert meta["models"] == ["me/rdmldg-model"] and "datasets" not in meta
    assert "launch_demo('me/rdmldg-model'" in (hub_space / "app.py").read_text()


def test_push_space_uploads_the_folder_so_the_model_page_lists_it(tmp_path, capsys):
    with FakeHub(tmp_path / "hub") as hub:
        code = main(["push", "--space", "me/rdmldg-demo", "--model", "me/rdmldg-model", "--token", "hf_secret123"])
    assert code == 0
    assert hub.created == [{"repo_id": "me/rdmldg-demo", "private": None, "repo_type": "space"}]
    (repo_id, added, _), *_ = hub.commits
    assert repo_id == "me/rdmldg-demo" and sorted(added) == sorted(SPACE_FILES)
    meta = front_matter((hub.repo("me/rdmldg-demo") / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["models"] == ["me/rdmldg-model"] and meta["title"] == "rdmldg-demo"
    out = capsys.readouterr()
    assert "me/rdmldg-demo" in out.out and "hf_secret123" not in out.out + out.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["push", "--space", "me/demo"], "--space needs the model repo it serves: --model ORG/NAME"),
        (["push", "--space", "me/demo", "--model", "./outputs/sarr-tiny"], "is not a Hub repo id"),
        (["push", "--space", "demo", "--model", "me/model"], "--space 'demo': give the Space as ORG/NAME"),
        (["push", "--adapter", "outputs/x"], "give --adapter FOLDER --repo ORG/NAME"),
        (["push", "--space", "me/demo", "--model", "me/m", "--adapter", "x"], "--space pushes a Space only"),
    ],
)
def test_push_arguments_are_checked_before_any_upload(argv, message, tmp_path, capsys):
    with FakeHub(tmp_path / "hub") as hub:
        assert main(argv) == 2
    assert message in capsys.readouterr().err and hub.commits == []


@pytest.mark.slow
@pytest.mark.multiprocess
def test_demo_without_gradio_says_which_extra_to_install(tmp_path):
    code = (
        "import sys; sys.modules['gradio'] = None\n"  # as if Gradio were not installed
        "from rdmldg_hf.cli import main; sys.exit(main(['demo', 'outputs/sarr-tiny']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert 'pip install "rdmldg_hf[demo]"' in result.stderr and "Traceback" not in result.stderr
