"""Generate the CMS's spoken prompts (8 kHz mono WAV) with espeak-ng.

The prompts are committed under `sip_profiles/sounds/`, so neither the CMS nor
the tests need espeak-ng; run this again (with Debian `espeak-ng` installed) to
change the voice or the wording:

    python -m scripts.make_prompts [--out sip_profiles/sounds] [--voice en-us]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

TARGET_RATE = 8000
PEAK_DBFS = -3.0
SILENCE_THRESHOLD = 200  # int16 magnitude below which leading/trailing audio is trimmed

# File name (without .wav) -> what it says.
PROMPTS: dict[str, str] = {
    "position": "You are caller number",
    **{f"number-{n}": str(n) for n in range(0, 21)},
    "all-agents-busy": "All our agents are busy. Please call again later. Goodbye.",
}


def speak(text: str, voice: str, speed: int) -> tuple[np.ndarray, int]:
    """Run espeak-ng and return its samples and sample rate."""
    wav_bytes = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise RuntimeError("espeak-ng gave something other than mono 16-bit audio")
        rate = wav.getframerate()
        # espeak-ng streams to stdout with a placeholder length: read what is there.
        frames = wav.readframes(10**9)
    return np.frombuffer(frames, dtype="<i2").astype(np.float64), rate


def resample(samples: np.ndarray, rate: int, target: int, half_taps: int = 24) -> np.ndarray:
    """Band-limited resampling by evaluating a windowed sinc at each output instant."""
    if rate == target:
        return samples
    count = int(len(samples) * target / rate)
    positions = np.arange(count) * (rate / target)  # in input samples
    cutoff = min(1.0, target / rate) * 0.9  # keep below the lower Nyquist frequency
    base = np.floor(positions).astype(np.int64)
    out = np.zeros(count)
    for offset in range(-half_taps + 1, half_taps + 1):
        index = base + offset
        valid = (index >= 0) & (index < len(samples))
        distance = positions - index
        window = 0.5 + 0.5 * np.cos(np.pi * distance / half_taps)
        weight = cutoff * np.sinc(cutoff * distance) * window
        out[valid] += samples[index[valid]] * weight[valid]
    return out


def finish(samples: np.ndarray) -> np.ndarray:
    """Trim silence at both ends and scale to the target peak."""
    loud = np.flatnonzero(np.abs(samples) > SILENCE_THRESHOLD)
    if loud.size:
        samples = samples[max(0, loud[0] - 80):loud[-1] + 80]
    peak = float(np.max(np.abs(samples))) or 1.0
    scale = 32767.0 * 10 ** (PEAK_DBFS / 20) / peak
    return np.clip(np.rint(samples * scale), -32768, 32767).astype("<i2")


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(TARGET_RATE)
        wav.writeframes(samples.tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="sip_profiles/sounds", help="output directory")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice")
    parser.add_argument("--speed", type=int, default=150, help="words per minute")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed (Debian package espeak-ng)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in PROMPTS.items():
        samples, rate = speak(text, args.voice, args.speed)
        audio = finish(resample(samples, rate, TARGET_RATE))
        write_wav(out / f"{name}.wav", audio)
        print(f"{name}.wav  {len(audio) / TARGET_RATE:.2f} s  {text!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
