"""A media process may open as many sockets as the hard limit allows (two per leg)."""

from __future__ import annotations

import resource

from cms.media.service import raise_open_file_limit


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        raised = raise_open_file_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised == now > lowered
        if hard != resource.RLIM_INFINITY:
            assert now == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
