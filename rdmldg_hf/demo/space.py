"""The demo shipped as a Hugging Face Space: ``app.py`` calling the package, ``requirements.txt`` pinning it,
and a ``README.md`` whose metadata (``sdk: gradio``, ``models:``, ``datasets:``) makes the model's page list it.

    write_space("space/", "someone/rdmldg-officehome-art")       # the folder; `python space/app.py` serves it
    push_space("someone/rdmldg-demo", "someone/rdmldg-officehome-art")   # written and uploaded
"""

from __future__ import annotations

import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

from huggingface_hub import ModelCard, SpaceCard, SpaceCardData
from huggingface_hub.errors import HfHubHTTPError

from ..evaluation.sharing import is_repo_id
from .facts import card_datasets

__all__ = ["SPACE_FILES", "space_card", "write_space", "push_space"]

logger = logging.getLogger(__name__)

SPACE_FILES = ("app.py", "requirements.txt", "README.md")
PACKAGE = "rdmldg_hf"

_APP = '''"""The rdmldg demo of {model}: direct class probabilities and the reasoning chain, streamed."""

from rdmldg_hf.demo.app import launch_demo

if __name__ == "__main__":
    launch_demo({model!r}, host=None, port=None)  # host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
'''

_BODY = """
# {title}

The [rdmldg_hf]({package_url}) demo of [{model}]({model_url}): upload an image and see the model's
direct answer (every class's probability) and its five-stage reasoning chain, streamed as it is generated.

Run it locally: `pip install "rdmldg_hf[demo]" && rdmldg demo {model}`.
"""


def _gradio_version() -> str:
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        raise ImportError('A Space runs Gradio, an optional dependency: pip install "rdmldg_hf[demo]".') from None


def _card_datasets(model: str) -> list[str]:
    """The Hub datasets the model card of ``model`` (folder or Hub repo id) names; [] when it has no card."""
    local = Path(model)
    source = local / "README.md" if local.is_dir() else model
    if local.is_dir() and not source.is_file():
        return []
    try:
        datasets = card_datasets(ModelCard.load(source).data)
    except (OSError, HfHubHTTPError) as error:
        logger.warning("The Space names no dataset: the model card of %s cannot be read (%s).", model, error)
        return []
    return [name for name in datasets if is_repo_id(name)]


def space_card(model: str, title: str, datasets: list[str] | None = None) -> SpaceCard:
    """The Space's README: metadata (``sdk: gradio``, the Gradio version, ``models: [model]``, ``datasets``) and
    a short description."""
    data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=_gradio_version(),
        app_file="app.py",
        models=[model],
        datasets=datasets or None,
        tags=["rdmldg", "domain-generalization", "image-classification"],
        short_description="Direct class probabilities and a reasoning chain, streamed",
    )
    return SpaceCard.from_template(
        data,
        template_str="---\n{{ card_data }}\n---\n" + _BODY,
        title=title,
        model=model,
        model_url=f"https://huggingface.co/{model}" if is_repo_id(model) else model,
        package_url="https://pypi.org/project/rdmldg_hf/",
    )


def write_space(
    out: str | os.PathLike, model: str, *, title: str | None = None, datasets: list[str] | None = None
) -> Path:
    """Write the Space folder of ``model`` (a Hub repo id; a local folder serves locally only) into ``out``.

    ``datasets`` defaults to the Hub datasets the model card names. Returns the folder.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not is_repo_id(model):
        model = str(Path(model).resolve())
        logger.warning("%s is a local folder: this Space folder serves it here, not on the Hub.", model)
    title = title or f"rdmldg demo: {model.rstrip('/').split('/')[-1]}"
    datasets = _card_datasets(model) if datasets is None else datasets
    (out / "app.py").write_text(_APP.format(model=model), encoding="utf-8")
    (out / "requirements.txt").write_text(f"{PACKAGE}[demo]=={metadata.version(PACKAGE)}\n", encoding="utf-8")
    space_card(model, title, datasets).save(out / "README.md")
    return out


def push_space(
    space_id: str,
    model: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    datasets: list[str] | None = None,
) -> str:
    """Write the Space of ``model`` (a Hub repo id) and upload it to ``space_id`` (created if missing);
    returns the commit URL. The token is never printed.

    Raises:
        ValueError: a Space id that is not ``ORG/NAME``, or a model that is not a Hub repo id.
    """
    from huggingface_hub import HfApi

    if len(space_id.split("/")) != 2 or not all(space_id.split("/")):
        raise ValueError(f"--space {space_id!r}: give the Space as ORG/NAME, e.g. 'someone/rdmldg-demo'.")
    if not is_repo_id(model):
        raise ValueError(
            f"--model {model!r} is not a Hub repo id: a Space loads its model from the Hub. Push it first "
            "(rdmldg push --adapter FOLDER --repo ORG/NAME) and pass that ORG/NAME."
        )
    api = HfApi(token=token, library_name=PACKAGE)
    with tempfile.TemporaryDirectory(prefix="rdmldg-space-") as folder:
        write_space(folder, model, title=space_id.split("/")[1], datasets=datasets)
        space_id = api.create_repo(
            space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
        ).repo_id
        info = api.upload_folder(
            repo_id=space_id, folder_path=folder, repo_type="space", commit_message=f"rdmldg demo of {model}"
        )
    return str(getattr(info, "commit_url", info))
