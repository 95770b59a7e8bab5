"""The package layers of docs/architecture.md hold: `lint-imports` (import-linter) checks
the contracts in pyproject.toml, so CI fails on an import that points up a layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under `root`, with `root`'s pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_imports_keep_the_layer_contracts() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_installed_package_is_under_the_contract() -> None:
    """A new top-level package outside root_packages would escape every check."""
    config = _config()
    installed = {
        name.rstrip("*") for name in config["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    checked = set(config["tool"]["importlinter"]["root_packages"])
    assert installed == checked
    layered = {
        name.strip()
        for contract in config["tool"]["importlinter"]["contracts"]
        if contract["type"] == "layers"
        for layer in contract["layers"]
        for name in layer.split("|")
    }
    assert checked - layered == {"migrations"}, "migrations has its own (forbidden) contract"


def test_an_import_up_a_layer_fails_the_check(tmp_path: Path) -> None:
    """The way the contract breaks: the lowest layer importing a package above it."""
    packages = _config()["tool"]["importlinter"]["root_packages"]
    for package in packages:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    assert _lint_imports(tmp_path).returncode == 0

    db = tmp_path / "models" / "db.py"
    db.write_text(db.read_text() + "\nfrom ingest.pipeline import Pipeline  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "models is not allowed to import ingest" in result.stdout
