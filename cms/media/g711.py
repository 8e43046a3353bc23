"""G.711 μ-law (PCMU) and A-law (PCMA) with numpy lookup tables, and direct transcoding tables.

Each code decodes to the midpoint of its quantisation interval (ITU-T G.711 Tables 1 and 2),
scaled to 16-bit PCM: μ-law spans ±32124, A-law ±32256. Encoding truncates the magnitude into
its interval, so decode(encode(x)) is the nearest reconstruction level.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]
Codes = npt.NDArray[np.uint8]

_ULAW_BIAS = 0x84  # 132: shifts the μ-law segments so that each starts at a power of two.
_ULAW_CLIP = 32635  # Largest magnitude that still fits the top segment after the bias.


def _build_ulaw_decode() -> Samples:
    codes = ~np.arange(256, dtype=np.uint8)  # μ-law codes are sent with all bits inverted.
    exponent = (codes.astype(np.int32) >> 4) & 0x07
    mantissa = codes.astype(np.int32) & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_decode() -> Samples:
    codes = np.arange(256, dtype=np.int32) ^ 0x55  # A-law codes are sent with even bits inverted.
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


def _segment(magnitude: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Segment number 0..7: position of the highest set bit among bits 7..14."""
    exponent = np.zeros_like(magnitude)
    for bit in range(8, 15):
        exponent += (magnitude >> bit) > 0
    return exponent


def _all_samples() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its uint16 bit pattern (the encode tables' index)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> Codes:
    samples = _all_samples()
    magnitude = np.minimum(np.abs(samples), _ULAW_CLIP) + _ULAW_BIAS
    exponent = _segment(magnitude)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    sign = np.where(samples < 0, 0x80, 0)
    codes: Codes = (~(sign | exponent << 4 | mantissa) & 0xFF).astype(np.uint8)
    return codes


def _build_alaw_encode() -> Codes:
    samples = _all_samples()
    magnitude = np.minimum(np.abs(samples), 32767)
    exponent = _segment(magnitude)
    mantissa = np.where(exponent == 0, magnitude >> 4, magnitude >> (exponent + 3)) & 0x0F
    sign = np.where(samples < 0, 0, 0x80)
    codes: Codes = ((sign | exponent << 4 | mantissa) ^ 0x55).astype(np.uint8)
    return codes


ULAW_DECODE: Samples = _build_ulaw_decode()
ALAW_DECODE: Samples = _build_alaw_decode()
ULAW_ENCODE: Codes = _build_ulaw_encode()
ALAW_ENCODE: Codes = _build_alaw_encode()
# Byte-to-byte transcoding through linear PCM, as `bytes.translate` tables for the relay.
ULAW_TO_ALAW: bytes = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)].tobytes()
ALAW_TO_ULAW: bytes = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)].tobytes()
for _table in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE):
    _table.flags.writeable = False


def ulaw_encode(samples: Samples) -> bytes:
    """Encode 16-bit PCM samples as μ-law bytes."""
    return ULAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_encode(samples: Samples) -> bytes:
    """Encode 16-bit PCM samples as A-law bytes."""
    return ALAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> Samples:
    """Decode μ-law bytes to 16-bit PCM samples."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes | bytearray | memoryview) -> Samples:
    """Decode A-law bytes to 16-bit PCM samples."""
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_to_alaw(data: bytes | bytearray) -> bytes:
    """Transcode μ-law bytes to A-law bytes."""
    return bytes(data).translate(ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes | bytearray) -> bytes:
    """Transcode A-law bytes to μ-law bytes."""
    return bytes(data).translate(ALAW_TO_ULAW)
