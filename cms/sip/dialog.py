"""SIP dialogs (RFC 3261 §12): the state shared by the requests of one call leg.

A dialog is created from an INVITE and its 2xx (or 1xx with a To tag for an
early dialog), on either side, and then builds the in-dialog requests (BYE,
re-INVITE, ACK, REFER, INFO) with the right Request-URI, Route, tags and CSeq.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import LocalProtocolError, ParseError
from .headers import NameAddr, header_values, parse_cseq, parse_name_addr
from .message import Headers, Request, Response
from .transaction import new_branch


@dataclass(slots=True)
class Dialog:
    """One side's view of a dialog; `local_*` is us, `remote_*` the peer."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_address: str  # our From/To header value without tag, e.g. "<sip:600@cms.local>"
    remote_address: str
    remote_target: str  # the peer's Contact URI: where in-dialog requests go
    local_contact: str  # our Contact URI
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    early: bool = False
    terminated: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag): how incoming requests find the dialog."""
        return self.call_id, self.local_tag, self.remote_tag

    @classmethod
    def from_uac(cls, request: Request, response: Response, local_contact: str) -> Dialog:
        """The caller's dialog, from the INVITE we sent and a 2xx or tagged 1xx."""
        headers = response.headers
        to_address = parse_name_addr(headers.first("to") or "")
        remote_tag = to_address.tag
        if not remote_tag:
            raise ParseError("response without a To tag cannot create a dialog")
        from_address = parse_name_addr(request.headers.first("from") or "")
        local_tag = from_address.tag or ""
        # The UAC's route set is the Record-Route of the response, reversed (§12.1.2).
        routes = header_values(headers.all("record-route"), "record-route")
        routes.reverse()
        cseq, _ = parse_cseq(request.headers.first("cseq") or "")
        return cls(
            call_id=request.headers.first("call-id") or "",
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_address=_without_tag(from_address),
            remote_address=_without_tag(to_address),
            remote_target=_contact_uri(headers) or request.uri,
            local_contact=local_contact,
            route_set=routes,
            local_cseq=cseq,
            early=response.status < 200,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, local_contact: str) -> Dialog:
        """The callee's dialog, from an INVITE we answer with `local_tag` in To."""
        headers = request.headers
        from_address = parse_name_addr(headers.first("from") or "")
        remote_tag = from_address.tag
        if not remote_tag:
            raise ParseError("request without a From tag cannot create a dialog")
        cseq, _ = parse_cseq(headers.first("cseq") or "")
        return cls(
            call_id=headers.first("call-id") or "",
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_address=_strip_tag(headers.first("to") or ""),
            remote_address=_without_tag(from_address),
            remote_target=_contact_uri(headers) or "",
            local_contact=local_contact,
            route_set=header_values(headers.all("record-route"), "record-route"),
            remote_cseq=cseq,
        )

    def new_request(
        self,
        method: str,
        via_sent_by: str,
        transport: str = "UDP",
        headers: Headers | None = None,
        body: bytes = b"",
        cseq: int | None = None,
    ) -> Request:
        """An in-dialog request; CSeq advances except for ACK and CANCEL (which pass `cseq`)."""
        if self.terminated and method not in ("ACK",):
            raise LocalProtocolError(f"dialog {self.call_id} is terminated")
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and ";lr" not in routes[0]:
            # Strict router (RFC 2543): it goes in the Request-URI, the target last in Route.
            uri = routes.pop(0).strip("<>")
            routes.append(f"<{self.remote_target}>")
        out = Headers()
        out["via"] = [f"SIP/2.0/{transport} {via_sent_by};branch={new_branch()};rport"]
        out["max-forwards"] = ["70"]
        out["from"] = [f"{self.local_address};tag={self.local_tag}"]
        out["to"] = [f"{self.remote_address};tag={self.remote_tag}"]
        out["call-id"] = [self.call_id]
        out["cseq"] = [f"{cseq} {method}"]
        if routes:
            out["route"] = routes
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            out["contact"] = [f"<{self.local_contact}>"]
        if headers:
            for name, values in headers.items():
                out[name] = list(values)
        return Request(method, uri, out, body)

    def ack(self, invite_cseq: int, via_sent_by: str, transport: str = "UDP",
            body: bytes = b"", content_type: str | None = None) -> Request:
        """The ACK of a 2xx to our INVITE (a new transaction, §13.2.2.4)."""
        extra = None
        if body and content_type:
            extra = Headers()
            extra["content-type"] = [content_type]
        return self.new_request("ACK", via_sent_by, transport, extra, body, cseq=invite_cseq)

    def receive_request(self, request: Request) -> bool:
        """Check an in-dialog request's CSeq (§12.2.2); False means answer 500.

        A re-INVITE with a Contact refreshes the remote target.
        """
        number, method = parse_cseq(request.headers.first("cseq") or "")
        if method not in ("ACK", "CANCEL"):
            if self.remote_cseq is not None and number <= self.remote_cseq:
                return False
            self.remote_cseq = number
        if method in ("INVITE", "UPDATE"):
            target = _contact_uri(request.headers)
            if target:
                self.remote_target = target
        return True


def dialog_key_of(request: Request) -> tuple[str, str, str] | None:
    """(Call-ID, To tag, From tag) of an incoming in-dialog request, or None without a To tag."""
    headers = request.headers
    try:
        to_tag = parse_name_addr(headers.first("to") or "").tag
        from_tag = parse_name_addr(headers.first("from") or "").tag
    except ParseError:
        return None
    if not to_tag:
        return None
    return headers.first("call-id") or "", to_tag, from_tag or ""


def _contact_uri(headers: Headers) -> str | None:
    contacts = header_values(headers.all("contact"), "contact")
    if not contacts or contacts[0] == "*":
        return None
    try:
        return str(parse_name_addr(contacts[0]).uri)
    except ParseError:
        return None


def _strip_tag(value: str) -> str:
    """The header value without its tag parameter (kept: display name, URI, other params)."""
    return _without_tag(parse_name_addr(value))


def _without_tag(address: NameAddr) -> str:
    """An address as text without its tag parameter (parsed once, for its tag too)."""
    if "tag" not in address.params:
        return str(address)
    params = dict(address.params)
    del params["tag"]
    return str(NameAddr(address.uri, address.display, params))
