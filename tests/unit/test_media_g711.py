"""G.711 μ-law and A-law tables against ITU-T G.711 values, round trips and transcoding."""

from __future__ import annotations

import numpy as np
import pytest

from cms.media import g711

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


@pytest.mark.parametrize("code, value", [
    (0xFF, 0), (0x7F, 0),  # Positive and negative zero.
    (0x80, 32124), (0x00, -32124),  # Ends of the range.
    (0xFE, 8), (0x7E, -8),  # First step of segment 0.
    (0xEF, 132), (0xDF, 396),  # Segment boundaries (14-bit ±33, ±99, scaled by 4).
])
def test_ulaw_decodes_to_g711_values(code: int, value: int) -> None:
    assert g711.ULAW_DECODE[code] == value


@pytest.mark.parametrize("code, value", [
    (0xD5, 8), (0x55, -8),  # The smallest magnitudes; A-law has no zero code.
    (0xAA, 32256), (0x2A, -32256),  # Ends of the range.
    (0xC5, 264), (0xF5, 528),  # Segment boundaries (13-bit 33, 66, scaled by 8).
])
def test_alaw_decodes_to_g711_values(code: int, value: int) -> None:
    assert g711.ALAW_DECODE[code] == value


def test_encoding_known_samples() -> None:
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(samples) == bytes([0xFF, 0xFF, 0x7F, 0x80, 0x00])
    assert g711.alaw_encode(samples) == bytes([0xD5, 0xD5, 0x55, 0xAA, 0x2A])


def test_tables_have_the_documented_shapes() -> None:
    assert g711.ULAW_DECODE.shape == g711.ALAW_DECODE.shape == (256,)
    assert g711.ULAW_DECODE.dtype == g711.ALAW_DECODE.dtype == np.int16
    assert g711.ULAW_ENCODE.shape == g711.ALAW_ENCODE.shape == (65536,)
    assert len(g711.ULAW_TO_ALAW) == len(g711.ALAW_TO_ULAW) == 256


def test_decoding_is_monotonic_in_magnitude() -> None:
    # Within each sign, a larger code magnitude decodes to a larger level.
    ulaw = g711.ULAW_DECODE[np.arange(0xFF, 0x7F, -1)]  # 0xFF (0) up to 0x80 (max)
    assert np.all(np.diff(ulaw.astype(int)) > 0)
    alaw = g711.ALAW_DECODE[np.arange(128) ^ 0x55 | 0x80]  # positive codes in order
    alaw_sorted = np.sort(alaw)
    assert np.array_equal(np.unique(alaw), alaw_sorted)


def test_ulaw_round_trip_error_is_within_half_a_step() -> None:
    decoded = g711.ulaw_decode(g711.ulaw_encode(ALL_SAMPLES)).astype(np.int32)
    error = np.abs(decoded - ALL_SAMPLES.astype(np.int32))
    magnitude = np.abs(ALL_SAMPLES.astype(np.int32))
    inside = magnitude <= 32635
    # Half a quantisation step in segment e is 2**(e+2) <= (|x| + 132) / 32.
    assert np.all(error[inside] <= (magnitude[inside] + 132) / 32)
    assert error.max() <= 32768 - 32124


def test_alaw_round_trip_error_is_within_half_a_step() -> None:
    decoded = g711.alaw_decode(g711.alaw_encode(ALL_SAMPLES)).astype(np.int32)
    error = np.abs(decoded - ALL_SAMPLES.astype(np.int32))
    magnitude = np.abs(ALL_SAMPLES.astype(np.int32))
    assert np.all(error <= np.maximum(8, magnitude / 32))


def test_every_code_survives_decode_then_encode() -> None:
    ulaw = np.frombuffer(g711.ulaw_encode(g711.ULAW_DECODE[ALL_CODES]), dtype=np.uint8)
    # Only μ-law "negative zero" (0x7F) comes back as positive zero (0xFF).
    assert np.array_equal(np.nonzero(ulaw != ALL_CODES)[0], [0x7F])
    alaw = np.frombuffer(g711.alaw_encode(g711.ALAW_DECODE[ALL_CODES]), dtype=np.uint8)
    assert np.array_equal(alaw, ALL_CODES)


def test_transcoding_tables_match_decode_then_encode() -> None:
    data = bytes(range(256))
    assert g711.ulaw_to_alaw(data) == g711.alaw_encode(g711.ulaw_decode(data))
    assert g711.alaw_to_ulaw(data) == g711.ulaw_encode(g711.alaw_decode(data))


def test_transcoding_there_and_back_stays_close() -> None:
    data = bytes(range(256))
    back = g711.ULAW_DECODE[np.frombuffer(g711.alaw_to_ulaw(g711.ulaw_to_alaw(data)),
                                          dtype=np.uint8)].astype(np.int32)
    original = g711.ULAW_DECODE[ALL_CODES].astype(np.int32)
    assert np.all(np.abs(back - original) <= np.maximum(16, np.abs(original) / 16))


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError):
        g711.ULAW_DECODE[0] = 1
