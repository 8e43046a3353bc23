"""The `cms` command line (contract: DESIGN.md §5)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from cms.config import ConfigError, load_config, split_hostport
from cms.log import setup_logging

log = logging.getLogger("cms")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `cms`."""
    parser = argparse.ArgumentParser(
        prog="cms", description="SIP CMS emulator: registrar, ACD and CTI for contact centres."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the CMS (SIP on UDP and TCP, CTI over HTTP)")
    serve.add_argument("--config", default="sip_profiles/default.toml",
                       help="TOML configuration (default: %(default)s)")
    serve.add_argument("--sip", metavar="HOST:PORT",
                       help="SIP listen address for UDP and TCP; port 0 picks a free port "
                            "(default: [cms] sip of the config)")
    serve.add_argument("--http", metavar="HOST:PORT",
                       help="HTTP listen address; port 0 picks a free port "
                            "(default: [cms] http of the config)")
    serve.add_argument("--data-dir", metavar="DIR",
                       help="where state is kept (default: [cms] data_dir of the config)")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--log-format", default="text", choices=["text", "json"])
    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cms` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "check-config":
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"cms: {exc}", file=sys.stderr)
            return 1
        print(f"{args.config}: {len(config.users)} users, {len(config.work_centres)} work "
              f"centres, {len(config.queues)} queues")
        return 0

    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
        sip = split_hostport(args.sip or config.cms.sip, 5060)
        http = split_hostport(args.http or config.cms.http, 8080)
    except ConfigError as exc:
        print(f"cms: {exc}", file=sys.stderr)
        return 1
    data_dir = args.data_dir or config.cms.data_dir

    from cms.server import run_server

    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(run_server(config, sip, http, data_dir))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
