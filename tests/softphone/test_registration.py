"""The soft phone registers with a real `cms serve` (digest auth), retries with back-off,
and unregisters when it stops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cms_process import free_port, user_password
from softphone_process import EventRecorder, StartSoftphone, wait_until

pytestmark = pytest.mark.integration


def account(cms: Any, user: str, password: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": extra.pop("name", user),
        "user": user,
        "password": user_password(user) if password is None else password,
        "registrar": cms.sip_target if not isinstance(cms, str) else cms,
        **extra,
    }


@pytest.mark.parametrize("digest_algorithms", [None, ["MD5"]],
                         ids=["cms-default-digest", "cms-md5-only"])
def test_registers_with_digest_and_unregisters_when_stopped(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
    digest_algorithms: list[str] | None,
) -> None:
    cms = start_cms(digest_algorithms=digest_algorithms)
    phone = start_softphone("a", accounts=[account(cms, "agent0001")])

    registration = phone.wait_for_registration("registered")

    assert registration["code"] == 200 and registration["expires"] > 0
    assert registration["uri"] == f"sip:agent0001@{cms.sip_target}"
    assert cms.wait_for_bindings(1, timeout=2) == 1
    assert phone.stop() == 0
    assert cms.wait_for_bindings(0, timeout=3) == 0, "the soft phone did not unregister"


def test_several_accounts_register_each_with_its_own_credentials(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    cms = start_cms()
    phone = start_softphone("a", accounts=[
        account(cms, "agent0001", name="sales"),
        account(cms, "10002", password=user_password("agent0002"), auth_user="10002",
                name="extension"),
    ])

    phone.wait_for_registration("registered", name="sales")
    phone.wait_for_registration("registered", name="extension")

    assert cms.wait_for_bindings(2, timeout=2) == 2


def test_wrong_password_fails_and_is_retried_with_growing_delays(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    cms = start_cms()
    phone = start_softphone("a", accounts=[
        account(cms, "agent0001", password="wrong", retry_initial=0.1, retry_max=5.0)])
    events = EventRecorder(phone)
    try:
        assert wait_until(
            lambda: len([e for e in events.events if e["type"] == "registration.failed"]) >= 3,
            6.0), events.types()
    finally:
        events.close()

    failures = [e["registration"] for e in events.events if e["type"] == "registration.failed"]
    assert all(f["code"] == 403 for f in failures), failures
    delays = [f["retry_in"] for f in failures[:3]]  # 0.1, 0.2, 0.4, ... each ±10 %
    assert delays[0] <= 0.25, delays
    assert delays[1] / delays[0] == pytest.approx(2.0, rel=0.25), delays
    assert delays[2] / delays[1] == pytest.approx(2.0, rel=0.25), delays
    assert cms.bindings() == 0


def test_registers_once_the_cms_comes_up_after_the_phone(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    # Over TCP a registrar that is down is noticed at once (connection refused); over UDP
    # PJSIP waits for its transaction timeout (32 s) before it reports the failure.
    port = free_port()
    phone = start_softphone("a", accounts=[
        account(f"127.0.0.1:{port}", "agent0001", transport="tcp", retry_initial=0.2,
                retry_max=0.5)])
    failed = phone.wait_for_registration("failed", timeout=10)
    assert failed["retry_in"] is not None

    cms = start_cms(extra_args=["--sip", f"127.0.0.1:{port}"])
    assert cms.sip_port == port

    phone.wait_for_registration("registered", timeout=5)
    assert cms.wait_for_bindings(1, timeout=2) == 1
