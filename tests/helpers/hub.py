"""Test helpers around the Hub: a real download server (olah) on loopback, git mirrors of
built folders, Hub endpoint switching, and tiny DomainBed-layout image folders.

Reusable for any repo type::

    with OlahServer(mirrors) as server, hub_endpoint(server.endpoint):
        mirror_folder(mirrors, "datasets", "rdmldg/domainbed-reasoning", built_folder)
        load_dataset("rdmldg/domainbed-reasoning", "officehome", split="art")

(models work the same with ``mirror_folder(mirrors, "models", "org/name", folder)``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "free_port",
    "mirror_folder",
    "OlahServer",
    "hub_endpoint",
    "make_domainbed_folder",
    "FakeHub",
]

_GIT = [
    "git",
    "-c",
    "user.name=rdmldg-tests",
    "-c",
    "user.email=tests@rdmldg.invalid",
    "-c",
    "init.defaultBranch=main",
]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mirror_folder(mirrors: Path, repo_type: str, repo_id: str, source: Path, message: str = "Add files") -> Path:
    """Commit the files of ``source`` to the git repo ``mirrors/<repo_type>/<repo_id>`` (created if missing)."""
    if repo_type not in ("datasets", "models", "spaces"):
        raise ValueError(f"repo_type must be datasets, models or spaces; got {repo_type!r}.")
    repo = Path(mirrors, repo_type, repo_id)
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run([*_GIT, "init", "-q"], cwd=repo, check=True)
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(source, repo, dirs_exist_ok=True)
    subprocess.run([*_GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*_GIT, "commit", "-q", "--allow-empty", "-m", message], cwd=repo, check=True)
    return repo


class OlahServer:
    """olah (a Hub download server) in offline mode, serving the git repos under ``mirrors``.

    Started on a free loopback port in its own process; :meth:`stop` (or leaving the
    ``with`` block) always terminates it.
    """

    def __init__(self, mirrors: Path, workdir: Path | None = None, startup_timeout: float = 60.0):
        self.mirrors = Path(mirrors)
        self.workdir = Path(workdir) if workdir else self.mirrors.parent / "olah"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> "OlahServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mirrors.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{self.workdir / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\nmirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "[accessibility]\noffline = true\n",
            encoding="utf-8",
        )
        log = open(self.workdir / "server.log", "wb")
        command = [
            sys.executable,
            "-c",
            "from olah.server import main; main()",
            "-c",
            str(config),
            "--log-path",
            str(self.workdir / "logs"),
        ]
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited with {self.process.returncode}:\n{self.log()}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/api/datasets/ready/probe", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # the server answers (a 404 for an unknown repo is fine)
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"olah did not answer on {self.endpoint} within {self.startup_timeout}s:\n{self.log()}")

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "OlahServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextlib.contextmanager
def hub_endpoint(endpoint: str) -> Iterator[None]:
    """Point huggingface_hub and datasets at ``endpoint`` and allow network access to it."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest_monkeypatch())
        patch.setenv("HF_ENDPOINT", endpoint)
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            patch.setenv(name, "0")
        patch.setattr(hub_constants, "ENDPOINT", endpoint)
        patch.setattr(
            hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        patch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        patch.setattr(datasets.config, "HF_ENDPOINT", endpoint)
        patch.setattr(datasets.config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        patch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
        yield


def _rectangle_image(rng: np.random.Generator, size: int) -> Image.Image:
    """A small RGB picture: a random coloured rectangle on a random background."""
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = rng.integers(0, 256, size=3)
    top, left = rng.integers(0, size // 2, size=2)
    pixels[top : top + size // 2, left : left + size // 2] = rng.integers(0, 256, size=3)
    return Image.fromarray(pixels)


def make_domainbed_folder(
    root: Path,
    folder: str,
    domains: Sequence[str],
    classes: Sequence[str],
    per_class: int = 2,
    size: int = 16,
    seed: int = 0,
    formats: Sequence[str] = ("png",),
) -> dict[str, int]:
    """Write ``root/folder/<domain>/<class>/<i>.<ext>`` with generated images; images per domain."""
    rng = np.random.default_rng(seed)
    counts = {}
    for domain in domains:
        counts[domain] = 0
        for class_name in classes:
            target = Path(root, folder, domain, class_name)
            target.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                ext = formats[index % len(formats)]
                image = _rectangle_image(rng, size)
                image.save(target / f"{index:03d}.{ext}", format="JPEG" if ext in ("jpg", "jpeg") else ext.upper())
                counts[domain] += 1
    return counts


class FakeHub:
    """Intercepts huggingface_hub at the commit boundary: repos are local folders under ``root``.

    Patches ``HfApi.create_repo``, ``repo_info``, ``list_repo_files``, ``preupload_lfs_files``
    and ``create_commit`` (which applies additions and deletions to ``root/<repo_id>``), routes
    ``upload_folder`` through them (YAML of a README checked locally, no Xet pipeline), and the
    filesystem ``DatasetDict.push_to_hub`` reads the repo's README through. ``commits`` records
    ``(repo_id, [paths added], [paths deleted])``; ``created`` records ``create_repo`` calls.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.commits: list[tuple[str, list[str], list[str]]] = []
        self.created: list[dict] = []

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def __enter__(self) -> "FakeHub":
        import datasets.dataset_dict as dataset_dict
        import huggingface_hub.hf_api
        from fsspec.implementations.dirfs import DirFileSystem
        from fsspec.implementations.local import LocalFileSystem
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi
        from huggingface_hub.hf_api import CommitInfo, RepoUrl
        from huggingface_hub.utils import RepositoryNotFoundError

        hub = self
        self._patch = pytest_monkeypatch()
        patch = self._patch.__enter__()

        class _Info:
            def __init__(self, repo_id: str):
                self.id = repo_id
                self.sha = "0" * 40

        def create_repo(api, repo_id, *, private=None, repo_type=None, exist_ok=False, **kwargs):
            hub.created.append({"repo_id": repo_id, "private": private, "repo_type": repo_type})
            hub.repo(repo_id).mkdir(parents=True, exist_ok=True)
            return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

        def repo_info(api, repo_id, *args, **kwargs):
            if not hub.repo(repo_id).is_dir():
                import httpx

                url = f"https://huggingface.co/api/datasets/{repo_id}"
                raise RepositoryNotFoundError(
                    f"{repo_id} not found", response=httpx.Response(404, request=httpx.Request("GET", url))
                )
            return _Info(repo_id)

        def list_repo_files(api, repo_id, **kwargs):
            folder = hub.repo(repo_id)
            return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

        def create_commit(api, repo_id, operations, *, commit_message, **kwargs):
            folder, added, deleted = hub.repo(repo_id), [], []
            for operation in operations:
                target = folder / operation.path_in_repo
                if isinstance(operation, CommitOperationAdd):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = operation.path_or_fileobj
                    data = source if isinstance(source, bytes) else Path(source).read_bytes()
                    target.write_bytes(data)
                    added.append(operation.path_in_repo)
                elif isinstance(operation, CommitOperationDelete):
                    target.unlink()
                    deleted.append(operation.path_in_repo)
            hub.commits.append((repo_id, added, deleted))
            return CommitInfo(
                f"https://huggingface.co/datasets/{repo_id}/commit/{len(hub.commits)}",
                commit_message,
                "",
                str(len(hub.commits)),
            )

        def preupload_lfs_files(api, repo_id, additions, **kwargs):
            for addition in additions:  # the caller may delete its temporary file right after
                if not isinstance(addition.path_or_fileobj, bytes):
                    addition.path_or_fileobj = Path(addition.path_or_fileobj).read_bytes()

        def repo_filesystem(fs, path):
            repo_id = str(path).split("datasets/", 1)[1].split("@", 1)[0]
            return DirFileSystem(path=str(hub.repo(repo_id)), fs=LocalFileSystem())

        patch.setattr(HfApi, "create_repo", create_repo)
        patch.setattr(HfApi, "repo_info", repo_info)
        patch.setattr(HfApi, "list_repo_files", list_repo_files)
        patch.setattr(HfApi, "preupload_lfs_files", preupload_lfs_files)

        def validate_yaml(api, content, **kwargs):  # the Hub's /api/validate-yaml, checked here by parsing it
            DatasetCard(content).data

        patch.setattr(HfApi, "create_commit", create_commit)
        # upload_folder: the card's YAML is checked locally, and without the Xet pipeline (which needs the Hub's
        # storage) it uploads through preupload_lfs_files and create_commit, intercepted above.
        patch.setattr(HfApi, "_validate_yaml", validate_yaml)
        patch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)
        patch.setattr(huggingface_hub, "is_offline_mode", lambda: False)  # this Hub is reachable (tests run offline)
        patch.setattr(dataset_dict, "HfFileSystem", lambda **kwargs: None)
        patch.setattr(dataset_dict, "DirFileSystem", repo_filesystem)
        return self

    def __exit__(self, *exc_info) -> None:
        self._patch.__exit__(*exc_info)


def pytest_monkeypatch():
    """A ``pytest.MonkeyPatch`` context usable outside fixtures."""
    import pytest

    return pytest.MonkeyPatch.context()
