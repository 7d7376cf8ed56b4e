"""Dependency floors: setup.cfg states the versions the import-time check enforces; too old fails the import."""

import configparser
import importlib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import rdmldg_hf
from rdmldg_hf._versions import MINIMUM_VERSIONS

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def test_setup_cfg_states_the_floors_checked_at_import():
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    requirements = [Requirement(line) for line in config["options"]["install_requires"].splitlines() if line.strip()]
    floors = {
        canonicalize_name(requirement.name): spec.version
        for requirement in requirements
        for spec in requirement.specifier
        if spec.operator == ">="
    }
    assert floors == {canonicalize_name(name): version for name, version in MINIMUM_VERSIONS.items()}


def _report(monkeypatch, versions):
    real = metadata.version

    def version(name):
        if name not in versions:
            return real(name)
        if versions[name] is None:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "version", version)


@pytest.mark.parametrize("name, old", [("transformers", "5.18.0"), ("trl", "1.15.0"), ("peft", "0.17.1")])
def test_a_too_old_library_fails_the_import_naming_the_version_needed(monkeypatch, name, old):
    _report(monkeypatch, {name: old})
    needed = f"{name}>={MINIMUM_VERSIONS[name]}"
    with pytest.raises(ImportError, match=rf"needs {needed}, but {name} {old} is installed\. .*-U '{needed}'$"):
        importlib.reload(rdmldg_hf)


def test_missing_library_is_named_and_a_prerelease_of_the_floor_passes(monkeypatch):
    _report(monkeypatch, {"peft": None, "transformers": MINIMUM_VERSIONS["transformers"] + ".dev0"})
    with pytest.raises(ImportError, match=r"needs peft>=\S+, but peft is not installed\.") as info:
        importlib.reload(rdmldg_hf)
    assert "transformers" not in str(info.value)
