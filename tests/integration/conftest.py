"""Fixtures for integration tests: a real `cms serve` process with a generated configuration."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# Helper modules (cms_process, sip_client, sipp_runner) live next to this file; tests/ is not a
# package (pytest runs with --import-mode=importlib), so make them importable by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))
# ... and the repository root, for the drivers under scripts/ (not an installed package).
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from cms_process import USER_COUNT, CmsProcess, StartCms, write_config  # noqa: E402


@pytest.fixture
def start_cms(tmp_path: Path) -> Iterator[StartCms]:
    """Start CMS processes: `start_cms(digest_algorithms=None)`; each gets its own data dir.

    The configuration (written into tmp_path): agent0001..agent0300 with password
    "pw-<name>" and extensions 10001.., work centre desk-12 (2012, "deskpw"), queue sales (600).
    Keyword options: `users` (how many agents), and `ring_timeout`, `wrap_up` and
    `max_no_answer` of the sales queue.

    At teardown each gets SIGTERM and must exit 0 within 10 s without logging a traceback:
    a clean shutdown is part of the contract (DESIGN.md §5). `restart()` keeps the data dir.
    """
    servers: list[CmsProcess] = []

    def start(digest_algorithms: Sequence[str] | None = None, users: int = USER_COUNT,
              **queue: Any) -> CmsProcess:
        index = len(servers)
        config = write_config(tmp_path, users, digest_algorithms=digest_algorithms,
                              name=f"cms-{index}.toml", **queue)
        server = CmsProcess(config, tmp_path / f"data-{index}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        server.check_clean_exit()


@pytest.fixture
def cms_server(start_cms: StartCms) -> CmsProcess:
    """A started CMS with the test configuration, on free ports (SIP UDP+TCP, HTTP)."""
    return start_cms()
