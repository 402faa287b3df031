"""The version has one source (``hmt_cli.__version__``): the installed distribution must report it too."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from hmt_cli import __version__


def test_distribution_version_is_the_package_version() -> None:
    assert importlib.metadata.version("hmt-cli") == __version__


def test_pyproject_takes_the_version_from_the_package() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hmt_cli.__version__"}
