"""Write to many non-blocking stream sockets with one system call (io_uring).

Pushing one event to 500 CTI clients is 500 `send(2)` calls; from Python each also costs
a transport method call and its bookkeeping, about as much again as the kernel's own
work. A `BatchWriter` hands all of them to the kernel as one io_uring submission built
with numpy, and reads every result back at once. Each send is non-blocking
(MSG_DONTWAIT): what a socket cannot take now comes back as a short count or -EAGAIN for
the caller to queue, so the call never waits on a slow reader.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np

from .uring import MSG_DONTWAIT, MSG_NOSIGNAL, OP_SEND, Ring, UringError

BATCH = 1024  # entries per submission (more sockets go in several)


class BatchWriter:
    """Sends bytes to many sockets at once; one per event loop thread."""

    def __init__(self, entries: int = BATCH) -> None:
        self._ring = Ring(entries, cq_entries=2 * entries)
        self._entries = self._ring.sq_entries

    @staticmethod
    def available() -> bool:
        """Whether io_uring works here; without it callers write socket by socket."""
        return Ring.available()

    def write(self, fds: Sequence[int], payloads: Sequence[bytes]) -> np.ndarray:
        """Send `payloads[i]` on `fds[i]` for every i; each result is what send(2) returned.

        A result shorter than the payload (or -EAGAIN) means the socket's buffer is
        full: the rest is the caller's to queue. Other negative results are -errno.
        """
        count = len(fds)
        results = np.zeros(count, dtype=np.int32)
        if not count:
            return results
        # Each distinct payload's buffer (bytes objects, alive in `payloads` until the sends
        # return) and length, looked up once: a fan-out repeats the same few payloads.
        known: dict[int, tuple[int, int]] = {}
        spans = []
        for payload in payloads:
            span = known.get(id(payload))
            if span is None:
                address = ctypes.cast(ctypes.c_char_p(payload), ctypes.c_void_p).value or 0
                span = known[id(payload)] = (address, len(payload))
            spans.append(span)
        addrs, lengths = np.array(spans, dtype=np.uint64).T
        descriptors = np.asarray(fds, dtype=np.int32)
        ring = self._ring
        for start in range(0, count, self._entries):
            end = min(count, start + self._entries)
            ring.prepare(OP_SEND, descriptors[start:end], addrs[start:end],
                         lengths[start:end], np.arange(start, end, dtype=np.uint64),
                         count=end - start, op_flags=MSG_DONTWAIT | MSG_NOSIGNAL)
            # Non-blocking sends complete within the submission: waiting cannot block.
            ring.submit(wait=end - start)
            done = ring.completions()
            if len(done) != end - start:
                raise UringError(0, f"{len(done)} of {end - start} sends completed")
            results[done["user_data"].astype(np.intp)] = done["res"]
        return results

    def close(self) -> None:
        self._ring.close()
