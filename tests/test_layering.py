"""The layering contract (pyproject.toml [tool.importlinter]) holds: lint-imports passes.

The contracts: the bus imports nothing of ours; the protocol package imports no actor
and not the application library; the application library imports no actor; actors
never import one another; nothing imports tools.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lint_imports() -> str:
    found = Path(sys.executable).with_name("lint-imports")
    return str(found) if found.exists() else shutil.which("lint-imports")


def test_import_contracts_are_kept():
    proc = subprocess.run([lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 kept, 0 broken" in proc.stdout


def test_a_broken_contract_is_caught(tmp_path):
    """The linter really looks: an actor importing another actor breaks the contract."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__",
                                                                ".pytest_cache", ".hypothesis", "tests"))
    echo = tree / "actors" / "echo" / "main.py"
    echo.write_text(echo.read_text() + "\nfrom ..router.core import RouterCore  # noqa\n")
    proc = subprocess.run([lint_imports(), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "Actors never import one another BROKEN" in proc.stdout
