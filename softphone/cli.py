"""Command line of the soft phone: `softphone run --profile PATH --http HOST:PORT --audio SPEC`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import webbrowser
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from softphone.audio.spec import AUDIO_HELP, parse_spec
from softphone.profile import PhoneProfile, ProfileError, split_host_port

log = logging.getLogger("softphone")


def host_port(value: str) -> str:
    """Check a HOST:PORT argument (as the profile's http and sip) and return it unchanged."""
    try:
        split_host_port(value)
    except ProfileError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}") from None
    return value


def audio_spec(value: str) -> str:
    """Check an --audio argument (null, device or wav:IN:OUT) and return it unchanged."""
    try:
        parse_spec(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {AUDIO_HELP}, got {value!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for the `softphone` command."""
    parser = argparse.ArgumentParser(
        prog="softphone",
        description="SIP soft phone with a local HTTP API (/api/v1) and web UI.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="register with a profile and serve the local API")
    run.add_argument(
        "--profile", metavar="PATH", type=Path,
        help="TOML profile: SIP accounts, registrar, credentials (sip_profiles/softphone.toml)",
    )
    run.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=host_port,
        help="address of the local HTTP API and web UI (default: the profile's, else "
             "127.0.0.1:8765; port 0: any free port)",
    )
    run.add_argument("--audio", metavar="SPEC", type=audio_spec, default=None,
                     help=AUDIO_HELP + "; default: the profile's")
    run.add_argument("--sip", metavar="HOST:PORT", type=host_port,
                     help="local SIP address (UDP; default: the profile's, else 0.0.0.0:0)")
    run.add_argument("--no-browser", action="store_true",
                     help="do not open the web UI in a browser")
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="more logging (-vv: also pjsip's)")
    return parser


def desktop_browser_available() -> bool:
    """A graphical browser can be opened (never a console browser taking the terminal)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `softphone` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """`softphone run`: until SIGTERM or Ctrl-C; 0 on a clean stop."""
    from softphone.profile import load_profile

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.verbose < 2:
        logging.getLogger("softphone.pjsip").setLevel(logging.WARNING)
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        print(f"softphone: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("http", args.http), ("audio", args.audio), ("sip", args.sip))
                 if v is not None}
    if args.no_browser:
        overrides["open_browser"] = False
    profile = replace(profile, **overrides)
    try:
        return asyncio.run(serve(profile))
    except KeyboardInterrupt:
        return 130


async def serve(profile: PhoneProfile) -> int:
    """Start the phone and the HTTP server, wait for a signal, stop both in order."""
    from aiohttp import web

    from softphone.api.app import allowed_hosts, build_app
    from softphone.audio.engine import AudioEngine
    from softphone.audio.spec import open_backend
    from softphone.errors import PhoneError
    from softphone.history import CallHistory
    from softphone.phone import SoftPhone
    from softphone.profile import is_loopback

    # Signals first: a SIGTERM during start-up must still end in a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        backend = open_backend(profile.audio, profile.input_device, profile.output_device)
    except (ValueError, OSError) as exc:
        print(f"softphone: audio: {exc}", file=sys.stderr)
        return 2
    engine = AudioEngine(backend)
    engine.update(speaker_volume=profile.speaker_volume, mic_volume=profile.mic_volume)
    phone = SoftPhone(profile, engine, CallHistory(profile.history_path, profile.history_limit))
    try:
        await phone.start()
    except PhoneError as exc:  # expected failures (address in use, ...): no traceback
        log.error("cannot start the soft phone: %s", exc.message)
        return 1
    except Exception as exc:
        log.error("cannot start the soft phone: %s", exc, exc_info=True)
        return 1
    log.info("listening for SIP udp=%s%s", phone.ua.sip_address,
             f" tcp={phone.ua.tcp_address}" if phone.ua.tcp_address else "")

    host, port = split_host_port(profile.http)
    token = None if is_loopback(host) else (profile.api_token or secrets.token_urlsafe(24))
    hosts: set[str] = set()
    runner = web.AppRunner(build_app(phone, token, hosts), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen for HTTP on %s: %s", profile.http, exc)
        await phone.stop()
        await runner.cleanup()
        return 1
    bound_port = _bound_port(runner, port)
    hosts.update(allowed_hosts(host, bound_port))
    if host in ("0.0.0.0", "::"):
        hosts.update(allowed_hosts("127.0.0.1", bound_port))
        hosts.add(f"{os.uname().nodename}:{bound_port}".lower())
    log.info("listening for HTTP http=%s:%d", host, bound_port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{bound_port}/" + (f"?token={token}" if token else "")
    print(f"softphone ready: {url}", flush=True)
    if profile.open_browser and desktop_browser_available():
        with contextlib.suppress(Exception):
            webbrowser.open(url)

    await stop.wait()
    log.info("stopping")
    await phone.stop()
    await runner.cleanup()
    log.info("stopped")
    return 0


def _bound_port(runner: object, default: int) -> int:
    for address in getattr(runner, "addresses", []):
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return default


if __name__ == "__main__":
    sys.exit(main())
