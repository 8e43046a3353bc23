"""Fixtures for the soft phone tests: soft phone processes, tone files, a real CMS."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# Helper modules live next to this file and in tests/integration (the CMS runner); tests/
# is not a package (pytest runs with --import-mode=importlib), so make them importable.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

from phone_factory import PhoneFactory, write_tones  # noqa: E402
from softphone_process import StartSoftphone  # noqa: E402


@pytest.fixture
def tone_files(tmp_path: Path) -> dict[str, Path]:
    """The tone files in tmp_path (see write_tones)."""
    return write_tones(tmp_path)


@pytest.fixture
def start_softphone(tmp_path: Path) -> Iterator[StartSoftphone]:
    """Start soft phones for one test (see PhoneFactory); stopped cleanly at teardown."""
    factory = PhoneFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def start_cms(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start real `cms serve` processes (tests/integration/cms_process.py)."""
    from cms_process import CmsProcess, write_config

    servers: list[CmsProcess] = []

    def start(digest_algorithms: Sequence[str] | None = None,
              extra_args: list[str] | None = None) -> CmsProcess:
        index = len(servers)
        config = write_config(tmp_path, users=5, digest_algorithms=digest_algorithms,
                              name=f"cms-{index}.toml")
        server = CmsProcess(config, tmp_path / f"cms-data-{index}", extra_args=extra_args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        server.check_clean_exit()
