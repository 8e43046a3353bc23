"""The soft phone benchmark of `python -m scripts.bench --only softphone` (issue 5).

Two soft phones (`softphone run`, WAV audio backends) call each other peer to peer on
loopback, no CMS in between. Phone A's microphone plays a 1 s loop: a 2000 Hz tone at
-29 dBFS with a 40 ms 1000 Hz burst at -9 dBFS at its start; phone B's microphone plays a
steady 1500 Hz tone at -9 dBFS. Three figures:

cpu: the CPU time (utime + stime, /proc/PID/stat) of the answering phone B over a call,
    minus its CPU time over as long idle before the call: a share of one core per call.
latency: mouth to ear through both phones. The mouth time is when A's bridge read the
    burst's block from its microphone, recovered by polling A's `GET /api/v1/audio/levels`
    (the microphone meter is fed at that read) and snapped to A's 20 ms bridge tick,
    which is when A's output WAV grew (the WAV backend writes each block unbuffered, at
    the tick, so its growth is the tick's wall clock). The ear time is when B's bridge
    wrote the block holding the burst's onset, from the growth of B's output WAV, plus the
    onset's place in the block. It includes A's and B's own buffering, G.711 coding, RTP
    on loopback and B's pjmedia jitter buffer; the soft phone's own buffering is printed
    beside it (block size, and the device backend's FIFO depth).
volume: with B's steady tone in A's ear, `PUT /api/v1/audio {speaker_volume: 0.5}` on A;
    the first 20 ms block of A's output WAV at least 4.5 dB below the level before, and
    the wall time its write was seen (growth of the file) give the delay, from the
    request's sending and from its answer.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softphone.audio.dsp import rms_dbfs
from softphone.audio.wav import write_wav

from .bench import BenchError, Processes, load_average, log_tail, say, tree_cpu_seconds
from .bench_common import conditions

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
BLOCK = 320  # 20 ms at 16 kHz: the bridge's block (softphone.audio.backend.AudioFormat)
BLOCK_MS = 20.0
LOOP = RATE  # A's microphone loop: 1 s
BURST = 640  # 40 ms
BURST_AMPLITUDE = 0.5
BACKGROUND_AMPLITUDE = 0.05
ONSET_THRESHOLD = 0.25
TONE_B_HZ = 1500.0

CPU_TARGET_PCT = 5.0
LATENCY_TARGET_MS = 40.0
VOLUME_TARGET_MS = BLOCK_MS
VOLUME_DROP_DB = 4.5  # 0.5 is -6.02 dB; a block below the level before by this much acted

FULL = {"cpu_s": 10.0, "latency_s": 8.0, "volume_trials": 10}
QUICK = {"cpu_s": 5.0, "latency_s": 4.0, "volume_trials": 4}

_HTTP_LINE = re.compile(r"listening for HTTP http=(\S+):(\d+)")
_SIP_LINE = re.compile(r"listening for SIP udp=(\S+):(\d+)")


# ---------------------------------------------------------------- signals and WAV files


def sine(frequency: float, samples: int, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2.0 * math.pi * frequency * np.arange(samples) / RATE)


def burst_loop() -> np.ndarray:
    signal = sine(2000.0, LOOP, BACKGROUND_AMPLITUDE)
    signal[:BURST] += sine(1000.0, BURST, BURST_AMPLITUDE)
    return signal


def wav_samples(path: Path) -> np.ndarray:
    """Samples of a (possibly growing) mono 16-bit WAV: whatever follows the 44-byte header."""
    data = path.read_bytes()[44:]
    data = data[: len(data) - len(data) % 2]
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0


def onsets(samples: np.ndarray) -> list[int]:
    """Sample indexes where the burst starts: above the threshold after 0.5 s below it."""
    loud = np.flatnonzero(np.abs(samples) > ONSET_THRESHOLD)
    found: list[int] = []
    for index in loud:
        if not found or index - found[-1] > RATE // 2:
            found.append(int(index))
    return found


def block_dbfs(samples: np.ndarray, block: int) -> float:
    return rms_dbfs(samples[block * BLOCK:(block + 1) * BLOCK])


# ---------------------------------------------------------------- watching the output files


class GrowthWatch:
    """Polls the size of output WAVs every ~`interval` s on a thread: for each growth, the
    time of the poll before and of the poll that saw it, and the samples then in the file."""

    def __init__(self, paths: Sequence[Path], interval: float = 0.0005) -> None:
        self.paths = list(paths)
        self.interval = interval
        self.seen: dict[Path, list[tuple[float, float, int]]] = {p: [] for p in self.paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GrowthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        sizes = {p: -1 for p in self.paths}
        before = time.monotonic()
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    size = os.stat(path).st_size
                except OSError:
                    continue
                now = time.monotonic()
                if size != sizes[path]:
                    if sizes[path] >= 0:
                        self.seen[path].append((before, now, max(0, size - 44) // 2))
                    sizes[path] = size
            before = time.monotonic()
            time.sleep(self.interval)

    def written_at(self, path: Path, sample: int) -> tuple[float, float] | None:
        """(earliest, latest) wall time of the write that brought `sample` into the file."""
        for before, after, count in self.seen[path]:
            if count > sample:
                return before, after
        return None

    def ticks(self, path: Path) -> list[float]:
        """Midpoints of the growths seen: the bridge's ticks (within the poll interval)."""
        return [(before + after) / 2 for before, after, _ in self.seen[path]]


# ---------------------------------------------------------------- soft phone processes


@dataclass
class Phone:
    name: str
    proc: Any
    log: Path
    out: Path
    http_port: int = 0
    sip_port: int = 0

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/v1{path}",
            data=data,
            method=method,
            headers=headers,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def calls(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/calls")["calls"])


def start_phone(name: str, mic: Path, workdir: Path, procs: Processes) -> Phone:
    profile = workdir / f"{name}.toml"
    profile.write_text(
        "[softphone]\n"
        'auto_answer = "never"\n'
        f'history = "{workdir / (name + "-history.jsonl")}"\n'
        "open_browser = false\n\n"
        f'[[accounts]]\nname = "local"\nuser = "{name}"\n'
    )
    out = workdir / f"{name}-out.wav"
    script = Path(sys.executable).parent / "softphone"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "softphone"]
    command += [
        "run", "--profile", str(profile), "--http", "127.0.0.1:0", "--sip", "127.0.0.1:0",
        "--audio", f"wav:{mic}:{out}", "--no-browser",
    ]
    log = workdir / f"{name}.log"
    home = workdir / f"{name}-home"
    home.mkdir(exist_ok=True)
    extra = {"PYTHONUNBUFFERED": "1", "XDG_DATA_HOME": str(home), "DISPLAY": ""}
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)  # Processes.start passes our environment on
    try:
        proc = procs.start(command, log, ROOT)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Phone(name, proc, log, out)


def wait_ready(phone: Phone, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = phone.log.read_text(errors="replace") if phone.log.exists() else ""
        if "softphone ready:" in text:
            for line in text.splitlines():
                if match := _HTTP_LINE.search(line):
                    phone.http_port = int(match.group(2))
                if match := _SIP_LINE.search(line):
                    phone.sip_port = int(match.group(2))
            if phone.http_port and phone.sip_port:
                return
        if phone.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise BenchError(f"soft phone {phone.name} did not start; log:\n{log_tail(phone.log)}")


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise BenchError(f"timed out waiting for {what}")


def call_in_state(phone: Phone, state: str) -> dict[str, Any] | None:
    return next((c for c in phone.calls() if c["state"] == state), None)


# ---------------------------------------------------------------- the three measurements


def measure_cpu(b: Phone, seconds: float) -> float:
    start = tree_cpu_seconds(b.proc.pid)
    time.sleep(seconds)
    return tree_cpu_seconds(b.proc.pid) - start


@dataclass
class MicPoll:
    """Polls A's microphone meter; rising edges of its peak bracket the burst's read."""

    phone: Phone
    edges: list[tuple[float, float]] = field(default_factory=list)  # (prev sent, this answered)
    polls: int = 0

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        loud_before = True  # ignore a burst already in the meter's window at the start
        sent_before = time.monotonic()
        while time.monotonic() < deadline:
            sent = time.monotonic()
            peak = self.phone.request("GET", "/audio/levels")["microphone"]["peak_dbfs"]
            answered = time.monotonic()
            self.polls += 1
            loud = peak > -12.0  # the burst peaks at -6 dBFS, the background at -26
            if loud and not loud_before:
                self.edges.append((sent_before, answered))
            loud_before = loud
            sent_before = sent


def measure_latency(a: Phone, b: Phone, seconds: float) -> dict[str, Any]:
    poll = MicPoll(a)
    with GrowthWatch([a.out, b.out]) as watch:
        poll.run(seconds)
        time.sleep(0.5)  # the last bursts reach B's file
    a_ticks = np.array(watch.ticks(a.out))
    heard = onsets(wav_samples(b.out))
    heard_at = []
    for sample in heard:
        span = watch.written_at(b.out, sample)
        if span is not None:  # the block's write, plus the onset's place in the block
            heard_at.append((span[0] + span[1]) / 2 + (sample % BLOCK) / RATE)
    delays, snapped = [], 0
    for sent_before, answered in poll.edges:
        inside = a_ticks[(a_ticks > sent_before) & (a_ticks < answered + 0.002)]
        if inside.size == 1:
            said = float(inside[0])
            snapped += 1
        else:
            said = (sent_before + answered) / 2
        later = [t - said for t in heard_at if 0 < t - said < 0.5]
        if later:
            delays.append(1000.0 * min(later))
    brackets = [1000.0 * (answered - before) for before, answered in poll.edges]
    return {
        "delays_ms": delays,
        "bursts": len(poll.edges),
        "snapped": snapped,
        "polls": poll.polls,
        "bracket_ms_median": statistics.median(brackets) if brackets else None,
    }


def measure_volume(a: Phone, trials: int) -> dict[str, Any]:
    results = []
    with GrowthWatch([a.out]) as watch:
        for _ in range(trials):
            a.request("PUT", "/audio", {"speaker_volume": 1.0})
            time.sleep(0.6)
            sent = time.monotonic()
            a.request("PUT", "/audio", {"speaker_volume": 0.5})
            answered = time.monotonic()
            time.sleep(0.3)
            samples = wav_samples(a.out)
            blocks = samples.size // BLOCK
            written = [watch.written_at(a.out, (k + 1) * BLOCK - 1) for k in range(blocks)]
            before = [k for k in range(blocks) if written[k] and written[k][1] < sent]
            reference = statistics.median(block_dbfs(samples, k) for k in before[-20:])
            after = [k for k in range(blocks) if written[k] and written[k][0] > sent - 0.02]
            acted = next(
                (k for k in after if block_dbfs(samples, k) <= reference - VOLUME_DROP_DB), None
            )
            if acted is None:
                results.append(None)
                continue
            span = written[acted]
            assert span is not None
            at = (span[0] + span[1]) / 2
            results.append({
                "from_request_ms": 1000.0 * (at - sent),
                "from_answer_ms": 1000.0 * (at - answered),
                "request_ms": 1000.0 * (answered - sent),
                "drop_db": reference - block_dbfs(samples, acted),
            })
    a.request("PUT", "/audio", {"speaker_volume": 1.0})
    return {"trials": results}


# ---------------------------------------------------------------- the benchmark


def own_buffering() -> str:
    from softphone.audio.backend import AudioFormat
    from softphone.audio.device import FIFO_BLOCKS

    fmt = AudioFormat()
    return (
        f"own buffering by design: bridge block {fmt.block_ms} ms ({fmt.block} samples at "
        f"{fmt.rate} Hz); wav/null backends no FIFO; device backend FIFOs of at most "
        f"{FIFO_BLOCKS} blocks ({FIFO_BLOCKS * fmt.block_ms} ms) per direction"
    )


def fmt_ms(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"median {statistics.median(values):.1f} ms, min {min(values):.1f}, "
        f"max {max(values):.1f} (n={len(values)})"
    )


def run_softphone_bench(quick: bool, workdir: Path) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    load_before = load_average()
    a_mic, b_mic = workdir / "a-mic.wav", workdir / "b-mic.wav"
    write_wav(a_mic, burst_loop(), RATE)
    write_wav(b_mic, sine(TONE_B_HZ, RATE, 0.5), RATE)
    procs = Processes()
    try:
        a = start_phone("a", a_mic, workdir, procs)
        b = start_phone("b", b_mic, workdir, procs)
        wait_ready(a)
        wait_ready(b)
        say(f"softphone benchmark: two soft phones (wav audio, PCMU) peer to peer on loopback; "
            f"work dir {workdir}")
        time.sleep(1.0)
        idle_load = load_average()
        idle_cpu = measure_cpu(b, plan["cpu_s"])
        a.request("POST", "/calls", {"to": f"sip:b@127.0.0.1:{b.sip_port}"})
        incoming = wait_for(lambda: call_in_state(b, "incoming"), 10, "B's incoming call")
        b.request("POST", f"/calls/{incoming['id']}/answer", {})
        wait_for(lambda: call_in_state(a, "established"), 10, "A's established call")
        wait_for(lambda: call_in_state(b, "established"), 10, "B's established call")
        wait_for(lambda: onsets(wav_samples(b.out)), 10, "A's burst in B's output")
        time.sleep(1.0)
        call_load = load_average()
        call_cpu = measure_cpu(b, plan["cpu_s"])
        latency = measure_latency(a, b, plan["latency_s"])
        volume = measure_volume(a, plan["volume_trials"])
        if call_in_state(b, "established") is None:
            raise BenchError("the call did not stay up")
    finally:
        procs.stop_all()
    return report(plan, idle_cpu, call_cpu, latency, volume, load_before, idle_load, call_load)


def report(plan: dict[str, Any], idle_cpu: float, call_cpu: float, latency: dict[str, Any],
           volume: dict[str, Any], load_before: str, idle_load: str,
           call_load: str) -> dict[str, Any]:
    seconds = plan["cpu_s"]
    idle_pct = 100.0 * idle_cpu / seconds
    call_pct = 100.0 * call_cpu / seconds
    per_call = call_pct - idle_pct
    delays = latency["delays_ms"]
    trials = [t for t in volume["trials"] if t is not None]
    from_answer = [t["from_answer_ms"] for t in trials]
    from_request = [t["from_request_ms"] for t in trials]
    worst = max(from_answer) if from_answer else None
    lines = [
        "softphone (issue 5)",
        f"  cpu per active call: {per_call:.1f}% of a core (target <= {CPU_TARGET_PCT:g}%): "
        f"answering phone {call_pct:.1f}% in a call minus {idle_pct:.1f}% idle, "
        f"{seconds:g} s each (load average idle {idle_load}, in call {call_load})",
        f"  mouth-to-ear latency through two soft phones: {fmt_ms(delays)} "
        f"(target <= {LATENCY_TARGET_MS:g} ms for the phone's own buffering); includes both "
        "phones' bridge ticks, PCMU, RTP on loopback and B's pjmedia jitter buffer; "
        f"{latency['bursts']} bursts over {plan['latency_s']:g} s, mouth time from "
        f"{latency['polls']} polls of A's GET /api/v1/audio/levels (median bracket "
        f"{latency['bracket_ms_median'] or 0:.1f} ms), {latency['snapped']} snapped to "
        "A's 20 ms tick",
        f"  {own_buffering()}",
        f"  volume change to effect: from the PUT's answer {fmt_ms(from_answer)} = "
        f"{worst / BLOCK_MS:.2f} blocks at worst (target <= 1 block of {BLOCK_MS:g} ms); "
        f"from the PUT's sending {fmt_ms(from_request)}; {len(trials)}/{len(volume['trials'])} "
        f"trials saw the drop (first 20 ms block of A's output WAV >= {VOLUME_DROP_DB:g} dB "
        "below before, its write timed by the file's growth)"
        if worst is not None
        else f"  volume change to effect: no drop found in {len(volume['trials'])} trials",
    ]
    return {
        "benchmark": "softphone",
        "conditions": conditions(
            {
                "load_average": load_before,
                "load_average_after": load_average(),
                "pinning": "not pinned",
                "cpu_seconds_each": seconds,
            }
        ),
        "cpu": {"idle_pct": idle_pct, "call_pct": call_pct, "per_call_pct": per_call,
                "target_pct": CPU_TARGET_PCT},
        "latency": dict(latency, target_ms=LATENCY_TARGET_MS),
        "volume": dict(volume, target_ms=VOLUME_TARGET_MS),
        "summary": lines,
    }
