#!/usr/bin/env bash
# Prepare a checkout: Debian packages, the .venv virtualenv and the Python deps.
# Idempotent and quick when everything is in place.
#
#   scripts/setup.sh           runtime and test packages
#   scripts/setup.sh --bench   also what the benchmarks need (kamailio, rtpengine, taskset)
#
# Environment: PY (interpreter for the venv, default python3), VENV (default
# .venv in the checkout), BENCH=1 (same as --bench).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-python3}"
VENV="${VENV:-$ROOT/.venv}"
BENCH="${BENCH:-0}"

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
    case "$arg" in
        --bench) BENCH=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- (a) Debian packages ----------------------------------------------------
# sip-tester: sipp (tests, benchmarks); baresip: a real SIP phone for tests;
# libportaudio2: audio devices for the soft phone (sounddevice); chromium: the
# browser the web UI tests drive (playwright never downloads its own).
APT_PACKAGES=(sip-tester baresip libportaudio2 chromium)
if [[ "$BENCH" == 1 ]]; then
    # rtpengine-daemon: the userspace RTP relay the relay benchmark compares against (run
    # with --table=-1, so no kernel module is needed).
    APT_PACKAGES+=(kamailio rtpengine-daemon util-linux)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get; install them by hand"
    if [[ "$(id -u)" == 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        die "missing packages (${missing[*]}); run as root or install sudo"
    fi
    # Another apt/dpkg may hold the lock (unattended upgrades, a parallel
    # setup): wait for it instead of failing.
    APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q
         -o DPkg::Lock::Timeout=300)
    say "installing ${missing[*]}"
    for try in 1 2 3; do
        if "${APT[@]}" update; then
            break
        fi
        ((try < 3)) || die "apt-get update failed"
        say "apt-get update failed, retrying in 10 s"
        sleep 10
    done
    "${APT[@]}" install -y --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
fi
say "Debian packages ok (${APT_PACKAGES[*]})"

# --- (b) virtualenv -----------------------------------------------------------
if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    command -v "$PY" >/dev/null || die "$PY not found; install python3 (>= 3.11) and python3-venv"
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PY is $("$PY" -V 2>&1); need Python >= 3.11 (set PY=...)"
    say "creating $VENV with $("$PY" -V 2>&1)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || die "venv failed; on Debian: apt-get install python3-venv"
    rm -f "$VENV/.installed"
fi
say "virtualenv ok ($VENV, $("$VENV/bin/python" -V 2>&1))"

# --- (c) Python dependencies ----------------------------------------------------
STAMP="$VENV/.installed"
if [[ ! -e "$STAMP" || "$ROOT/pyproject.toml" -nt "$STAMP" ]]; then
    say "pip install -e '.[dev]'"
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q -e '.[dev]')
    touch "$STAMP"
fi
say "Python packages ok"
