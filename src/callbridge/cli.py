"""The ``callbridge`` command.

    callbridge serve [--config FILE] [--log-level LEVEL]   run until SIGINT/SIGTERM
    callbridge config check [--config FILE]                validate, print effective settings
    callbridge account|key|callerid|agent|calls|callbacks  onboarding and inspection (admin.py)
    callbridge --version

Every command reads its settings the same way: defaults, then ``--config FILE``, then
``CALLBRIDGE_<SECTION>_<KEY>`` environment variables (see ``callbridge.config``). A bad setting
prints ``callbridge: config error: <key>: <message>`` on stderr and exits with status 2.
"""

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from callbridge import __version__, admin
from callbridge.config import LOG_LEVELS, LogSettings, Settings, load_settings, render_settings
from callbridge.errors import CallbridgeError, ConfigError
from callbridge.logs import setup_logging

#: Exit statuses: 2 is also what argparse uses for a bad command line.
EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge", description="Self-hosted click-to-call server (a SIP B2BUA)."
    )
    parser.add_argument("--version", action="version", version=f"callbridge {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the server until SIGINT or SIGTERM")
    add_config_argument(serve)
    serve.add_argument(
        "--log-level", type=str.lower, choices=LOG_LEVELS, help="override [log] level"
    )
    serve.set_defaults(command=_serve)

    config = commands.add_parser("config", help="inspect the configuration")
    actions = config.add_subparsers(metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate and print the effective settings")
    add_config_argument(check)
    check.set_defaults(command=_config_check)

    admin.add_commands(commands, add_config_argument)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, shared by every command that reads settings."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML settings file (default: built-in defaults; CALLBRIDGE_* variables apply)",
    )


def settings_or_report(config: Path | None) -> Settings | None:
    """Load settings from ``config`` and the process environment; on a ``ConfigError``
    report it on stderr and return None."""
    try:
        return load_settings(config, os.environ)
    except ConfigError as exc:
        print(f"callbridge: config error: {exc}", file=sys.stderr)
        return None


def _config_check(args: argparse.Namespace) -> int:
    settings = settings_or_report(args.config)
    if settings is None:
        return EXIT_CONFIG
    print(render_settings(settings), end="")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    settings = settings_or_report(args.config)
    if settings is None:
        return EXIT_CONFIG
    if args.log_level:
        settings = dataclasses.replace(settings, log=LogSettings(level=args.log_level))
    setup_logging(settings.log.level)
    # Imported here so that `callbridge --help` and `config check` need none of the server.
    from callbridge.server import serve_forever

    try:
        # serve_forever installs its own SIGINT/SIGTERM handlers and returns on shutdown.
        asyncio.run(serve_forever(settings))
    except ConfigError as exc:
        print(f"callbridge: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CallbridgeError as exc:
        print(f"callbridge: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # Ctrl-C before the service's handlers were installed
        return EXIT_INTERRUPTED
    return EXIT_OK
