"""Registration of a real SIP user agent, baresip 1.0, against a real `cms serve`.

What baresip 1.0 does, as observed: it registers at start (MD5 digest), prints
`agent0001@127.0.0.1: {0/UDP/v4} 200 OK () [1 binding]`, and on SIGTERM it sends
REGISTER with `expires=0` for its contact (answering the 401 again), then exits 0.

Its SIP stack (libre 1.1) gives up with ENOSYS ("Register: Function not implemented") when
*any* WWW-Authenticate of a 401 names an algorithm other than MD5, whatever the order, so
each test runs against the CMS as installed (default digest algorithms) and against a CMS
configured with `digest_algorithms = ["MD5"]`.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from baresip_runner import Baresip as BaresipProcess
from cms_process import CmsProcess, StartCms, user_password, wait_until

BARESIP = shutil.which("baresip")
MODULE_PATH = Path("/usr/lib/baresip/modules")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        BARESIP is None or not (MODULE_PATH / "account.so").exists(),
        reason="baresip is not installed",
    ),
]

# Headless: no stdio/menu (no terminal), no audio driver; registration needs only the
# account loader and one codec. sip_listen port 0: baresip binds a free port itself.
CONFIG = f"""\
poll_method		epoll
sip_listen		127.0.0.1:0
net_interface		127.0.0.1
module_path		{MODULE_PATH}
module			g711.so
module_tmp		account.so
"""


# "agent0001@127.0.0.1: {0/UDP/v4} 200 OK () [1 binding]" or
# "reg: sip:agent0002@127.0.0.1:5060: 403 Forbidden (wrong credentials) ()" or
# "reg: sip:agent0001@127.0.0.1:5060: Register: Function not implemented"
_REG_RESULT = re.compile(r"\{\d+/\w+/v\d\} (\d{3} [^(\[]*)|reg: \S+: (?:Register: )?(.*)")


class Baresip(BaresipProcess):
    """baresip with the registration-only config, and a reader of its REGISTER verdict."""

    def __init__(self, directory: Path, account: str) -> None:
        super().__init__(directory, account, CONFIG)

    def registration_result(self, timeout: float = 10.0) -> str:
        """Wait for baresip's verdict on its REGISTER: the status line it printed
        ("200 OK", "403 Forbidden", ...) or the local error ("Function not implemented")."""
        found: list[str] = []

        def verdict() -> bool:
            for line in self.lines:
                match = _REG_RESULT.search(line)
                if match:
                    found.append(match.group(1) or match.group(2))
                    return True
            return False

        wait_until(verdict, timeout)
        return found[0] if found else "(nothing within the timeout)"


StartBaresip = Callable[[CmsProcess, str, str], Baresip]


@pytest.fixture
def start_baresip(tmp_path: Path) -> Iterator[StartBaresip]:
    started: list[Baresip] = []

    def start(cms: CmsProcess, user: str, password: str) -> Baresip:
        account = f"<sip:{user}@{cms.sip_target}>;auth_pass={password};regint=60"
        phone = Baresip(tmp_path / f"baresip-{len(started)}", account)
        started.append(phone)
        return phone

    yield start
    for phone in started:
        phone.terminate()


DIGEST_CONFIGS = pytest.mark.parametrize(
    "digest_algorithms", [None, ["MD5"]], ids=["cms-default-digest", "cms-md5-only"]
)


@DIGEST_CONFIGS
def test_baresip_registers_and_unregisters_on_quit(
    start_cms: StartCms, start_baresip: StartBaresip, digest_algorithms: list[str] | None
) -> None:
    cms_server = start_cms(digest_algorithms=digest_algorithms)
    phone = start_baresip(cms_server, "agent0001", user_password("agent0001"))

    result = phone.registration_result(timeout=10)

    assert result.startswith("200 OK"), f"{result}; baresip said:\n{phone.output}"
    assert cms_server.wait_for_bindings(1, timeout=2) == 1

    started = time.monotonic()
    code = phone.terminate()

    assert code == 0, phone.output
    assert time.monotonic() - started < 5, "baresip took long to quit: unregister unanswered?"
    seen = cms_server.wait_for_bindings(0, timeout=5)
    assert seen == 0, f"baresip quit but {seen} binding(s) remain; it said:\n{phone.output}"


@DIGEST_CONFIGS
def test_baresip_with_wrong_password_is_never_registered(
    start_cms: StartCms, start_baresip: StartBaresip, digest_algorithms: list[str] | None
) -> None:
    cms_server = start_cms(digest_algorithms=digest_algorithms)
    phone = start_baresip(cms_server, "agent0002", "not-the-password")

    result = phone.registration_result(timeout=10)

    assert result.startswith("403"), f"{result}; baresip said:\n{phone.output}"
    time.sleep(0.5)  # would a retry slip through?
    assert cms_server.bindings() == 0
    assert "200 OK" not in phone.output
    assert phone.terminate() == 0, phone.output
