"""relay: the media relay's CPU per relayed packet and its loss (cms.media.bench_relay).

Each call count runs in a child Python (the relay pinned to core 0 and the
generator to core 1 by cms.media.bench_relay itself): N bridged G.711 calls
of 50 packets/s per direction. Prints µs CPU per relayed packet, the loss, and
the largest call count with at most 0.1% loss, beside the target (1000 calls).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .bench import say
from .bench_common import conditions

FULL_CALLS = (100, 300, 500, 800)
QUICK_CALLS = (100, 300)
FULL_SECONDS, QUICK_SECONDS = 10.0, 4.0
WARMUP_S = 2.0
MAX_LOSS = 0.001
TARGET_CALLS = 1000
ROOT = Path(__file__).resolve().parent.parent

_CHILD = (
    "import dataclasses, json, sys\n"
    "from cms.media.bench_relay import run\n"
    "r = run(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))\n"
    "print('RESULT ' + json.dumps(dataclasses.asdict(r)))\n"
)


def measure(calls: int, seconds: float) -> dict[str, Any] | None:
    argv = [sys.executable, "-c", _CHILD, str(calls), str(seconds), str(WARMUP_S)]
    try:
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                             timeout=seconds + WARMUP_S + 60, check=False)
    except subprocess.TimeoutExpired:
        say(f"  relay run with {calls} calls timed out")
        return None
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    say(f"  relay run with {calls} calls gave no result: {out.stderr[-800:]}")
    return None


def run_relay_bench(quick: bool) -> dict[str, Any]:
    counts = QUICK_CALLS if quick else FULL_CALLS
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    cond = conditions({
        "calls": list(counts), "seconds": seconds, "warmup_s": WARMUP_S,
        "pinning": "relay on core 0, generator on core 1 (cms.media.bench_relay)",
        "packets_per_call_per_s": 100, "max_loss_pct": 100 * MAX_LOSS,
    })
    say(f"relay benchmark: calls {','.join(map(str, counts))}, {seconds:g} s each after "
        f"{WARMUP_S:g} s warm-up; {cond['pinning']}; nproc {cond['nproc']}; "
        f"load average {cond['load_average']}")
    steps = []
    for calls in counts:
        result = measure(calls, seconds)
        if result is None:
            continue
        result["load_average"] = conditions()["load_average"]
        result["ok"] = result["loss"] <= MAX_LOSS
        steps.append(result)
        say(f"  relay calls {calls:5d}  in {result['packets_in_per_second']:7.0f} pkt/s  "
            f"cpu {result['cpu_us_per_packet']:5.2f} us/pkt (user "
            f"{result['user_us_per_packet']:.2f} + sys {result['system_us_per_packet']:.2f})  "
            f"loss {100 * result['loss']:.3f}%  relay busy {100 * result['busy']:.0f}% of a "
            f"core  load {result['load_average']}  "
            f"{'ok' if result['ok'] else 'loss > 0.1%'}")
    good = [s["calls"] for s in steps if s["ok"]]
    largest = max(good) if good else 0
    met = largest >= TARGET_CALLS
    all_ok = bool(steps) and all(s["ok"] for s in steps)
    bound = "a lower bound: every step run was clean" if all_ok else "a larger step lost more"
    verdict = "met" if met else "NOT met"
    if not met and all_ok:
        verdict += f" (steps stop at {max(counts)} calls)"
    summary = [
        f"relay: largest step with <= 0.1% loss {largest} calls ({bound}); "
        f"target >= {TARGET_CALLS} calls: {verdict}",
        "rtpengine comparison: not run (no ng-protocol driver for the generator yet; "
        "Debian's rtpengine-daemon is installable but not installed)",
    ]
    cond["load_average_after"] = conditions()["load_average"]
    return {
        "benchmark": "relay", "conditions": cond, "steps": steps,
        "largest_clean_calls": largest, "target_calls": TARGET_CALLS, "target_met": met,
        "rtpengine": "not run", "summary": summary,
    }
