#!/usr/bin/env bash
# `make run`: the CMS on the default profile, plus agent1's soft phone and its web UI.
# AUDIO=device uses the sound card (the default when one exists); AUDIO=null runs without.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=${CONFIG:-sip_profiles/default.toml}
PROFILE=${PROFILE:-sip_profiles/softphone.toml}
if [[ -z "${AUDIO:-}" ]]; then
    if [[ -e /dev/snd/controlC0 ]]; then AUDIO=device; else AUDIO=null; fi
fi

.venv/bin/cms serve --config "$CONFIG" &
cms_pid=$!
phone_pid=
stop() {
    [[ -n "$phone_pid" ]] && kill -TERM "$phone_pid" 2>/dev/null || true
    kill -TERM "$cms_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

# The soft phone registers with retries, but starting it once the CMS listens is tidier.
for _ in $(seq 50); do
    if ! kill -0 "$cms_pid" 2>/dev/null; then
        echo "run: the CMS exited; see its log above" >&2
        exit 1
    fi
    if .venv/bin/python - "$CONFIG" <<'PY' 2>/dev/null; then break; fi
import socket, sys, tomllib
with open(sys.argv[1], "rb") as f:
    host, _, port = tomllib.load(f)["cms"]["http"].rpartition(":")
socket.create_connection((host, int(port)), timeout=0.2).close()
PY
    sleep 0.2
done

.venv/bin/softphone run --profile "$PROFILE" --audio "$AUDIO" &
phone_pid=$!
echo "run: CMS and agent1's soft phone are up (audio: $AUDIO); Ctrl-C stops both"
wait -n "$cms_pid" "$phone_pid"
