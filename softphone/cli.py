"""Command line of the soft phone: `softphone run --profile PATH --http HOST:PORT --audio SPEC`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

AUDIO_HELP = "null | wav:IN.wav:OUT.wav | device (default: device)"


def host_port(value: str) -> str:
    """Check a HOST:PORT argument and return it unchanged."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def audio_spec(value: str) -> str:
    """Check an --audio argument (null, device or wav:IN:OUT) and return it unchanged."""
    if value in ("null", "device"):
        return value
    parts = value.split(":")
    if len(parts) == 3 and parts[0] == "wav" and parts[1] and parts[2]:
        return value
    raise argparse.ArgumentTypeError(f"expected {AUDIO_HELP}, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for the `softphone` command."""
    parser = argparse.ArgumentParser(
        prog="softphone",
        description="SIP soft phone with a local HTTP API (/api/v1) and web UI.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="register with a profile and serve the local API")
    run.add_argument(
        "--profile", metavar="PATH", help="TOML profile: SIP account, registrar, credentials"
    )
    run.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=host_port,
        help="address of the local HTTP API and web UI",
    )
    run.add_argument("--audio", metavar="SPEC", type=audio_spec, default="device", help=AUDIO_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `softphone` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    print("softphone: not implemented yet (see issue 5)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
