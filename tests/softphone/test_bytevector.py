"""Fast copies in and out of pjsua2's ByteVector match SWIG's own (slow) conversion."""

from __future__ import annotations

import pytest

pj = pytest.importorskip("pjsua2")

from softphone.sip.bytevector import FrameIO  # noqa: E402


def test_the_fast_path_is_used_with_the_installed_pjsua2() -> None:
    assert FrameIO(pj).fast


def test_a_frame_filled_fast_reads_back_the_same_through_swig() -> None:
    frames = FrameIO(pj)
    frame = pj.MediaFrame()
    data = bytes(range(256)) * 2 + b"\x01\x02"

    frames.fill(frame, data)

    assert frame.size == len(data)
    assert frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO
    assert bytes(frame.buf) == data
    assert frames.read(frame) == data


def test_read_stops_at_the_frame_size() -> None:
    frame = pj.MediaFrame()
    frame.buf = pj.ByteVector(b"abcdef")
    frame.size = 4

    assert FrameIO(pj).read(frame) == b"abcd"
