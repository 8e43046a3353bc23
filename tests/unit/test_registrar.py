"""The registrar's REGISTER handling, in memory: digest, bindings, expiry rules."""

from __future__ import annotations

from cms.config import parse_config
from cms.registrar.bindings import BindingChange
from cms.registrar.service import Registrar
from cms.sip.digest import DigestClient
from cms.sip.headers import header_values
from cms.sip.message import Headers, Request, Response

CONFIG = parse_config(
    {
        "cms": {"realm": "cms.local", "min_expires": 60, "max_expires": 3600, "max_contacts": 3},
        "users": [
            {"name": "agent1", "password": "secret1", "extension": "1001", "queues": ["sales"]},
            {"name": "agent2", "password": "secret2", "extension": "1002"},
        ],
        "work_centres": [{"name": "desk-12", "extension": "2012", "password": "deskpw"}],
        "queues": [{"name": "sales", "number": "600"}],
    }
)
NOW = 1_000_000.0


class Phone:
    """A minimal registering UA: builds REGISTERs and answers challenges."""

    def __init__(self, user: str, password: str, contact: str = "sip:phone@192.0.2.10:5062"):
        self.user = user
        self.client = DigestClient(user, password)
        self.contact = contact
        self.cseq = 0
        self.call_id = f"call-{user}@192.0.2.10"

    def request(self, contact: str | None = "default", expires: str | None = None,
                authorization: str | None = None) -> Request:
        self.cseq += 1
        headers = Headers.of([
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{self.cseq}x"),
            ("From", f"<sip:{self.user}@cms.local>;tag=ft{self.user}"),
            ("To", f"<sip:{self.user}@cms.local>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Max-Forwards", "70"),
        ])
        if contact == "default":
            contact = f"<{self.contact}>"
        if contact is not None:
            headers.add("Contact", contact)
        if expires is not None:
            headers.add("Expires", expires)
        if authorization is not None:
            headers.add("Authorization", authorization)
        return Request("REGISTER", "sip:cms.local", headers)

    def register(self, registrar: Registrar, now: float = NOW, **kwargs: str | None) -> Response:
        first = registrar.handle(self.request(**kwargs), "UDP 192.0.2.10:5062", now)
        if first.status != 401:
            return first
        challenge = first.headers.all("www-authenticate")[0]
        auth = self.client.authorization("REGISTER", "sip:cms.local", challenge)
        return registrar.handle(self.request(authorization=auth, **kwargs),
                                "UDP 192.0.2.10:5062", now)


def contacts_of(response: Response) -> list[str]:
    return header_values(response.headers.all("contact"), "contact")


def test_register_without_credentials_is_challenged_md5_first() -> None:
    registrar = Registrar(CONFIG)
    response = registrar.handle(Phone("agent1", "x").request(), "UDP 192.0.2.10:5062", NOW)
    assert response.status == 401
    challenges = response.headers.all("www-authenticate")
    assert "algorithm=MD5" in challenges[0]
    assert "algorithm=SHA-256" in challenges[1]


def test_register_with_right_password_binds_the_contact() -> None:
    registrar = Registrar(CONFIG)
    response = Phone("agent1", "secret1").register(registrar)
    assert response.status == 200
    assert contacts_of(response) == ["<sip:phone@192.0.2.10:5062>;expires=3600"]
    assert [b.contact for b in registrar.lookup("agent1", NOW)] == ["sip:phone@192.0.2.10:5062"]


def test_register_with_wrong_password_is_rejected() -> None:
    registrar = Registrar(CONFIG)
    response = Phone("agent1", "wrong").register(registrar)
    assert response.status == 403
    assert registrar.lookup("agent1", NOW) == []


def test_extension_is_an_alias_of_the_user() -> None:
    registrar = Registrar(CONFIG)
    assert Phone("1001", "secret1").register(registrar).status == 200
    assert len(registrar.lookup("agent1", NOW)) == 1


def test_work_centre_registers_its_desk_phone() -> None:
    registrar = Registrar(CONFIG)
    assert Phone("2012", "deskpw").register(registrar).status == 200
    assert len(registrar.lookup("desk-12", NOW)) == 1


def test_one_user_cannot_register_another_users_address() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    first = registrar.handle(phone.request(), "UDP 192.0.2.10:5062", NOW)
    auth = phone.client.authorization("REGISTER", "sip:cms.local",
                                      first.headers.all("www-authenticate")[0])
    request = Phone("agent2", "").request(authorization=auth)
    assert registrar.handle(request, "UDP 192.0.2.10:5062", NOW).status == 403


def test_unknown_user_with_valid_digest_shape_is_refused() -> None:
    registrar = Registrar(CONFIG)
    assert Phone("nobody", "pw").register(registrar).status in (403, 404)


def test_expires_zero_removes_the_binding() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    phone.register(registrar)
    response = phone.register(registrar, expires="0")
    assert response.status == 200
    assert contacts_of(response) == []
    assert registrar.lookup("agent1", NOW) == []


def test_star_contact_with_expires_zero_removes_all_bindings() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    phone.register(registrar)
    phone.register(registrar, contact="<sip:other@192.0.2.11>")
    assert len(registrar.lookup("agent1", NOW)) == 2
    assert phone.register(registrar, contact="*", expires="0").status == 200
    assert registrar.lookup("agent1", NOW) == []


def test_star_contact_without_expires_zero_is_a_bad_request() -> None:
    registrar = Registrar(CONFIG)
    assert Phone("agent1", "secret1").register(registrar, contact="*").status == 400


def test_too_brief_expiry_gets_423_with_min_expires() -> None:
    registrar = Registrar(CONFIG)
    response = Phone("agent1", "secret1").register(registrar, expires="10")
    assert response.status == 423
    assert response.headers.first("min-expires") == "60"


def test_long_expiry_is_capped_to_max_expires() -> None:
    registrar = Registrar(CONFIG)
    response = Phone("agent1", "secret1").register(registrar, expires="99999")
    assert contacts_of(response) == ["<sip:phone@192.0.2.10:5062>;expires=3600"]


def test_non_ascii_digits_in_expires_are_a_bad_request() -> None:
    # "²" passes str.isdigit() but not int(): a 400, not an exception.
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    assert phone.register(registrar, expires="6\u00b2").status == 400
    response = phone.register(registrar, contact="<sip:phone@192.0.2.10>;expires=6\u00b2")
    assert response.status == 400


def test_absurdly_long_expires_is_capped_not_an_error() -> None:
    registrar = Registrar(CONFIG)
    response = Phone("agent1", "secret1").register(registrar, expires="9" * 5000)
    assert contacts_of(response) == ["<sip:phone@192.0.2.10:5062>;expires=3600"]


def test_several_contacts_per_address_of_record() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    phone.register(registrar)
    response = phone.register(registrar, contact="<sip:soft@192.0.2.20:5070>;expires=120")
    assert sorted(contacts_of(response)) == [
        "<sip:phone@192.0.2.10:5062>;expires=3600",
        "<sip:soft@192.0.2.20:5070>;expires=120",
    ]


def test_refresh_extends_the_binding_and_query_lists_it() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    phone.register(registrar, expires="120")
    phone.register(registrar, now=NOW + 100, expires="120")
    assert registrar.lookup("agent1", NOW + 200)
    query = phone.register(registrar, now=NOW + 200, contact=None)
    assert contacts_of(query) == ["<sip:phone@192.0.2.10:5062>;expires=20"]


def test_bindings_expire() -> None:
    registrar = Registrar(CONFIG)
    Phone("agent1", "secret1").register(registrar, expires="120")
    assert registrar.lookup("agent1", NOW + 121) == []


def test_out_of_order_cseq_from_the_same_call_is_refused() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    phone.register(registrar)
    phone.cseq -= 5
    assert phone.register(registrar).status == 500


def test_contacts_beyond_the_limit_evict_the_oldest() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    for i in range(5):
        phone.register(registrar, now=NOW + i, contact=f"<sip:p{i}@192.0.2.{i + 1}>")
    contacts = sorted(b.contact for b in registrar.lookup("agent1", NOW + 5))
    assert contacts == ["sip:p2@192.0.2.3", "sip:p3@192.0.2.4", "sip:p4@192.0.2.5"]


def test_changes_are_reported_for_persistence() -> None:
    changes: list[BindingChange] = []
    registrar = Registrar(CONFIG, on_change=changes.append)
    phone = Phone("agent1", "secret1")
    phone.register(registrar)
    phone.register(registrar, expires="0")
    assert [len(c.upserted) for c in changes] == [1, 0]
    assert [len(c.removed) for c in changes] == [0, 1]


def test_nonce_from_another_server_is_challenged_again_not_refused() -> None:
    phone = Phone("agent1", "secret1")
    other = Registrar(CONFIG)
    first = other.handle(phone.request(), "UDP 192.0.2.10:5062", NOW)
    auth = phone.client.authorization("REGISTER", "sip:cms.local",
                                      first.headers.all("www-authenticate")[0])
    response = Registrar(CONFIG).handle(phone.request(authorization=auth), "UDP x", NOW)
    assert response.status == 401


def test_to_with_a_non_sip_uri_is_a_bad_request() -> None:
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    first = registrar.handle(phone.request(), "UDP 192.0.2.10:5062", NOW)
    auth = phone.client.authorization("REGISTER", "sip:cms.local",
                                      first.headers.all("www-authenticate")[0])
    request = phone.request(authorization=auth)
    request.headers["to"] = ["<http://example.com/agent1>"]
    assert registrar.handle(request, "UDP x", NOW).status == 400


def test_baresip_is_offered_only_the_first_algorithm() -> None:
    # libre (baresip 1.0) aborts authentication when any challenge names SHA-256.
    registrar = Registrar(CONFIG)
    request = Phone("agent1", "x").request()
    request.headers["user-agent"] = ["baresip v1.0.0 (x86_64/linux)"]
    challenges = registrar.handle(request, "UDP 192.0.2.10:5062", NOW).headers.all(
        "www-authenticate"
    )
    assert len(challenges) == 1
    assert "algorithm=MD5" in challenges[0]


def test_contact_with_bad_q_is_a_bad_request_every_time() -> None:
    # Parsed contacts are memoized: the second identical REGISTER must fail the same way.
    registrar = Registrar(CONFIG)
    phone = Phone("agent1", "secret1")
    for _ in range(2):
        response = phone.register(registrar, contact="<sip:phone@192.0.2.10>;q=high")
        assert response.status == 400


def test_invite_authentication_uses_407_and_proxy_authorization() -> None:
    registrar = Registrar(CONFIG)
    invite = Phone("agent1", "secret1").request()
    invite.method = "INVITE"
    invite.headers["cseq"] = ["1 INVITE"]
    challenge = registrar.authenticate(invite, NOW, proxy=True)
    assert isinstance(challenge, Response) and challenge.status == 407
    value = challenge.headers.all("proxy-authenticate")[0]
    answer = DigestClient("agent1", "secret1").authorization("INVITE", "sip:cms.local", value)
    invite.headers["proxy-authorization"] = [answer]
    assert registrar.authenticate(invite, NOW, proxy=True) == "agent1"
    invite.headers["proxy-authorization"] = [
        DigestClient("agent1", "wrong").authorization("INVITE", "sip:cms.local", value)
    ]
    refused = registrar.authenticate(invite, NOW, proxy=True)
    assert isinstance(refused, Response) and refused.status == 403
