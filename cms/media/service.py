"""The media layer as the B2BUA uses it: one clock, one port range, legs made on demand."""

from __future__ import annotations

import logging
import resource
import select

from cms.net.uring import Ring

from .clock import MediaClock
from .endpoint import RtpEndpoint
from .fastpath import compile_kernels
from .ports import DEFAULT_RANGE, PortAllocator
from .reactor import EpollReactor
from .relay import DtmfListener, Leg
from .uring_reactor import UringEndpoint, UringReactor

log = logging.getLogger("cms.media.service")


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one: a leg holds two sockets (its port and
    a connected companion), so the usual soft 1024 would cap a process near 500 legs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


class MediaService:
    """Owns the shared media clock and the RTP port range; opens and tracks legs."""

    def __init__(self, host: str = "0.0.0.0", ports: tuple[int, int] = DEFAULT_RANGE, *,
                 kernel_filter: bool = False, epoll: bool = True,
                 companion: bool = True, uring: bool = True) -> None:
        self._epoll = epoll and hasattr(select, "epoll")
        # Peer-connected sockets received and relayed in batches (see cms.media.uring_reactor)
        # where io_uring works; the epoll reactor otherwise.
        self.uring = uring and self._epoll and Ring.available()
        # A connected companion socket per leg for its peer's packets (see RtpEndpoint): the
        # ports are bound shareable (SO_REUSEPORT) for it.
        self.companion = companion and self._epoll and not kernel_filter
        self.allocator = PortAllocator(host, *ports, shared=self.companion)
        self.clock = MediaClock()
        self.kernel_filter = kernel_filter
        self.legs: set[Leg] = set()
        self.reactor: EpollReactor | None = None

    def start(self) -> None:
        """Start the media clock (needs a running event loop) and have the io_uring relay's
        compiled code ready (its reactor is made with the first leg: not during a call)."""
        self.clock.start()
        if self.uring:
            compile_kernels()

    def open_leg(self, name: str = "", on_dtmf: DtmfListener | None = None) -> Leg:
        """A new leg on a fresh even port (needs a running event loop); configure it once SDP
        is negotiated."""
        if self._epoll and self.reactor is None:
            self.reactor = self._new_reactor()
        sock = self.allocator.open()
        endpoint_type = RtpEndpoint
        if isinstance(self.reactor, UringReactor):
            endpoint_type = UringEndpoint
        endpoint = endpoint_type(sock, kernel_filter=self.kernel_filter,
                                 reactor=self.reactor,  # type: ignore[arg-type]
                                 on_close=self.allocator.release, companion=self.companion)
        leg = Leg(endpoint, self.clock, name=name, on_dtmf=on_dtmf)
        self.legs.add(leg)
        return leg

    def _new_reactor(self) -> EpollReactor:
        if self.uring:
            try:
                return UringReactor()
            except OSError as exc:
                log.warning("io_uring not usable (%s): RTP goes through epoll", exc)
                self.uring = False
        return EpollReactor()

    def close_leg(self, leg: Leg) -> None:
        """Close a leg and forget it."""
        leg.close()
        self.legs.discard(leg)

    def close(self) -> None:
        """Close every leg and stop the clock."""
        for leg in list(self.legs):
            self.close_leg(leg)
        self.clock.stop()
        if self.reactor is not None:
            self.reactor.close()
            self.reactor = None
