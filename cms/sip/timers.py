"""RFC 3261 transaction timer values (§17, Table 4) and RFC 6026's Timers L and M.

Kept apart from the transaction machines so that other layers (the dialog's own
2xx retransmission, for one) read the same configuration.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """Base timer values in seconds; the lettered timers are derived from them.

    The lettered values are those of an unreliable transport. Over a reliable one
    (TCP, TLS, WS) Timers A, E and G never run and D, I, J and K are zero
    (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    # Timer D is "at least 32 s" rather than a multiple of T1 (RFC 3261 Table 4).
    timer_d: float = 32.0
    # Delay before an INVITE server transaction sends 100 Trying on the TU's behalf
    # (RFC 3261 §17.2.1: "unless ... the TU will respond within 200 ms").
    # None leaves sending 100 Trying to the TU.
    trying: float | None = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timers need 0 < T1 <= T2")
        if self.t4 <= 0 or self.timer_d <= 0:
            raise ValueError("T4 and Timer D must be positive")
        if self.trying is not None and self.trying < 0:
            raise ValueError("the 100 Trying delay cannot be negative")

    @property
    def timer_a(self) -> float:
        """INVITE client: first retransmission interval, doubled each time."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE client: give up waiting for any response."""
        return 64 * self.t1

    @property
    def timer_e(self) -> float:
        """Non-INVITE client: first retransmission interval, doubled up to T2."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client: give up waiting for a final response."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE server: first retransmission interval of a non-2xx final, doubled up to T2."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """INVITE server: give up waiting for the ACK of a non-2xx final."""
        return 64 * self.t1

    @property
    def timer_i(self) -> float:
        """INVITE server: absorb ACK retransmissions (unreliable transports)."""
        return self.t4

    @property
    def timer_j(self) -> float:
        """Non-INVITE server: absorb request retransmissions (unreliable transports)."""
        return 64 * self.t1

    @property
    def timer_k(self) -> float:
        """Non-INVITE client: absorb response retransmissions (unreliable transports)."""
        return self.t4

    @property
    def timer_l(self) -> float:
        """INVITE server (RFC 6026): linger in Accepted to absorb INVITE retransmissions."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """INVITE client (RFC 6026): linger in Accepted to pass up forked or repeated 2xx."""
        return 64 * self.t1
