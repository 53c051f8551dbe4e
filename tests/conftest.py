"""Shared fixtures: labs that always come down, even when a test fails."""
from __future__ import annotations

import pytest

from tests.labutil import is_root, lab_name, write_topology


def pytest_collection_modifyitems(config, items):
    if is_root():
        return
    skip = pytest.mark.skip(reason="lab tests need root (network namespaces)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


def _lab_maker(tmp_path):
    """make(base="router", defaults=..., nodes=...) -> an up Lab; then down_all()."""
    from tools.lab import Lab

    made = []

    def _make(base: str = "router", defaults: dict | None = None, nodes: dict | None = None,
              timeout: float = 30.0):
        lab = Lab(lab_name())
        made.append(lab)
        lab.up(write_topology(tmp_path, base, defaults, nodes), timeout=timeout)
        return lab

    def down_all():
        for lab in made:
            left = lab.down()
            assert not left, f"lab {lab.name} left behind: {left}"

    return _make, down_all


@pytest.fixture
def make_lab(tmp_path):
    """make_lab(base="router", defaults=..., nodes=...) -> an up Lab; downed at teardown."""
    make, down_all = _lab_maker(tmp_path)
    yield make
    down_all()


@pytest.fixture(scope="module")
def make_lab_module(tmp_path_factory):
    """make_lab for a lab shared by the tests of one module."""
    make, down_all = _lab_maker(tmp_path_factory.mktemp("lab"))
    yield make
    down_all()
