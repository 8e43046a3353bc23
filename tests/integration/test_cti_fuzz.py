"""Schemathesis against a real `cms serve`: generated requests from the OpenAPI document.

Every operation gets examples that fit its schema and examples that break it;
none may get a 5xx. Streams, long polls and logging out are left out (they
hang on purpose or end the session the run uses).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cms_process import CmsProcess, config_text
from cti_client import SUPERVISOR, serve_with_supervisor

from cms.cti import OPENAPI

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

pytestmark = pytest.mark.integration

EXAMPLES = 8  # per operation: the whole run stays well under a minute
LEFT_OUT = ["deleteSession", "eventsWebSocket", "eventsSse", "pollEvents"]
STATUSES: dict[str, set[int]] = {}

# Valid and invalid requests alike.
CONFIG = schemathesis.config.SchemathesisConfig.from_dict({"generation": {"mode": "all"}})
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(OPENAPI)), config=CONFIG).exclude(
    operation_id=LEFT_OUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CmsProcess, str]]:
    """A CMS with three agents and a supervisor; its base URL and a supervisor token."""
    directory: Path = tmp_path_factory.mktemp("fuzz")
    with serve_with_supervisor(directory, config_text(users=3)) as cms:
        login = urllib.request.Request(
            cms.base_url + "/api/v1/sessions", method="POST",
            data=json.dumps({"user": SUPERVISOR[0], "password": SUPERVISOR[1]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(login, timeout=5) as response:
            token = json.loads(response.read())["token"]
        yield cms, token


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case: Any,
                                                  server: tuple[CmsProcess, str]) -> None:
    cms, token = server
    headers = {} if case.headers and "Authorization" in case.headers else {
        "Authorization": f"Bearer {token}"}
    response = case.call(base_url=cms.base_url + "/api/v1", headers=headers, timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, case.query,
                                        case.body, response.text)
    STATUSES.setdefault(case.operation.definition.raw.get("operationId", "?"), set()).add(
        response.status_code)
    if response.status_code >= 400 and response.status_code != 405:
        error = response.json()["error"]
        assert error["code"] and error["message"]


def test_the_generated_requests_reached_the_handlers() -> None:
    """Not just 401s: every operation answered some request past authentication."""
    if not STATUSES:
        pytest.skip("run together with the generated tests")
    unreached = {op: codes for op, codes in STATUSES.items() if codes <= {401, 405}}
    assert not unreached, unreached
