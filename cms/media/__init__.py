"""Real media for the B2BUA: RTP legs, relay and transcoding, generated audio, DTMF, stats.

Layers, each import pointing down:
- `service` (MediaService: clock + port range + legs) and `relay` (Leg, bridge, connect);
- `endpoint` (one leg's socket and peer rule), `reactor` (one epoll set for all sockets),
  `ports` (even ports from a range), `clock` (the shared 20 ms tick), `stream` (outgoing
  SSRC/sequence/timestamp continuity);
- `rtp`, `g711`, `formats`, `dtmf`, `stats`, `sources`: pure, no sockets or event loop.
`bench_relay` measures the relay's CPU per packet on loopback; `bench_relay_ab` compares two
checkouts' relay paths in one process (steadier on a shared machine).
"""
