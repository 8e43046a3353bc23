"""relay: concurrent G.711 calls the CMS relays on one core, beside rtpengine (userspace).

Runs `python -m cms.media.bench_relay` in a child process (it pins itself, the load
generator, to core 0 and the relays to core 1): per call count, the load with no relay
(the generator's ceiling and latency baseline), then through Debian's rtpengine-daemon
(calls allocated over its ng protocol, `--table=-1 --num-threads=1`) and through the CMS
relay (calls allocated through MediaService in a relay-server process), back to back.
Prints each step, the largest clean step of each relay (<= 0.1% lost or later than 50 ms),
its CPU µs per relayed packet and added latency there, and the CMS/rtpengine ratios.
Without rtpengine installed (make setup-bench) only the CMS is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .bench import say
from .bench_common import conditions, conditions_line

FULL_CALLS = (400, 600, 800, 1000, 1200)
QUICK_CALLS = (400, 800)
FULL_SECONDS, QUICK_SECONDS = 6.0, 3.0
ROOT = Path(__file__).resolve().parent.parent


def run_relay_bench(quick: bool) -> dict[str, Any]:
    counts = QUICK_CALLS if quick else FULL_CALLS
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    cond = conditions({
        "calls": list(counts), "seconds": seconds,
        "pinning": "relays (rtpengine, cms) on core 1, load generator on core 0 (taskset)",
        "packets_per_call_per_s": 100, "max_loss_pct": 0.1, "late_ms": 50,
    })
    say(f"relay benchmark: calls {','.join(map(str, counts))}, {seconds:g} s each; "
        f"{conditions_line(cond)}")
    with tempfile.TemporaryDirectory(prefix="cms-bench-relay-") as workdir:
        figures = Path(workdir) / "relay.json"
        argv = [sys.executable, "-m", "cms.media.bench_relay", "--calls", *map(str, counts),
                "--seconds", str(seconds), "--json", str(figures)]
        with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True) as child:
            assert child.stdout is not None
            for line in child.stdout:
                say("  " + line.rstrip())
        if child.returncode != 0 or not figures.exists():
            say(f"  relay benchmark failed (exit {child.returncode})")
            return {"benchmark": "relay", "conditions": cond, "error": "failed",
                    "summary": ["relay: the benchmark failed; see its output above"]}
        document: dict[str, Any] = json.loads(figures.read_text())
    cond["load_average_after"] = conditions()["load_average"]
    document["conditions"] = {**document.get("conditions", {}), **cond}
    document["summary"] = ["relay: " + line for line in document.get("summary", [])] + [
        "relay: figures from one shared, noisy VM; compare cms with rtpengine from the same "
        "run (back to back), and repeat a run before trusting a small difference"]
    return document
