"""Fixtures shared by the test modules.

The fixture rootfs (tests/rootfs_fixture.py) is built once per test session; a
test that changes files copies it first with ``copy_fixture_rootfs``.
"""

from __future__ import annotations

import pytest

from rootfs_fixture import FixtureRootfs, build_fixture_rootfs


@pytest.fixture(scope="session")
def fixture_rootfs(tmp_path_factory: pytest.TempPathFactory) -> FixtureRootfs:
    return build_fixture_rootfs(tmp_path_factory.mktemp("fixture") / "rootfs")
