"""The ``callbridge`` command.

    callbridge serve [--config FILE] [--log-level LEVEL]   run until SIGINT/SIGTERM
    callbridge config check [--config FILE]                validate, print effective settings
    callbridge account|key|callerid|agent|calls|callbacks  onboarding and inspection (admin.py)
    callbridge sandbox [--host H] [--port P]               the simulated carrier on its own
    callbridge demo [--data-dir DIR] [--keep-running]      a real call end to end, on loopback
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
    _add_sandbox_command(commands)
    _add_demo_command(commands)
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


def _add_sandbox_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sandbox = commands.add_parser(
        "sandbox", help="run the simulated carrier (see callbridge.sandbox) until SIGINT/SIGTERM")
    sandbox.add_argument("--host", default="127.0.0.1", help="SIP and RTP address (127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=5070, help="SIP port, UDP (5070; 0: any)")
    sandbox.add_argument("--ring", type=float, default=0.5, metavar="SECONDS",
                         help="180 to 200 on answering numbers (0.5)")
    sandbox.add_argument("--early-media", type=float, default=1.0, metavar="SECONDS",
                         help="183 to 200 on numbers ending 05 (1.0)")
    sandbox.add_argument("--hangup-after", type=float, default=5.0, metavar="SECONDS",
                         help="answer to BYE on numbers ending 04 (5.0)")
    sandbox.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default="info")
    sandbox.set_defaults(command=_sandbox)


def _add_demo_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    demo = commands.add_parser(
        "demo", help="start everything on loopback with the sandbox carrier and place one call")
    demo.add_argument("--data-dir", type=Path, metavar="DIR",
                      help="keep the database and recordings here (default: a temporary folder)")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the server up afterwards, for your own calls")
    demo.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default="warning")
    demo.set_defaults(command=_demo)


def _demo(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    from callbridge.demo import run_demo

    try:
        return asyncio.run(run_demo(args.data_dir, args.keep_running))
    except CallbridgeError as exc:
        print(f"callbridge: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _sandbox(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    from callbridge.sandbox import SandboxCarrier, SandboxTimings
    from callbridge.sandbox.carrier import run_standalone

    def ready(carrier: SandboxCarrier) -> None:
        host, port = carrier.address
        print(f"callbridge sandbox: SIP on {host}:{port} (udp)\n"
              f'use it with [trunk] mode = "sip", host = "{host}", port = {port}', flush=True)

    try:
        timings = SandboxTimings(args.ring, args.early_media, args.hangup_after)
        asyncio.run(run_standalone(SandboxCarrier(timings), args.host, args.port, ready))
    except (CallbridgeError, ValueError) as exc:
        print(f"callbridge: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK
