"""The ``airflow-tokenrefresh`` command line.

``dialects`` lists the built-in dialects; ``emulate`` starts the emulated vendor endpoints on
127.0.0.1 and prints an ``airflow connections add`` line per dialect (the emulator's throwaway demo
credentials and a fresh seed); ``status`` and ``refresh`` work on Airflow connections through the
same store and lock as tasks. No subcommand ever prints a real connection's secret.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any


def cmd_dialects(args: argparse.Namespace) -> int:
    """List the built-in dialects and what each sends and expects."""
    from airflow_provider_tokenrefresh.dialects import PRESETS

    rows = [spec.summary() for spec in PRESETS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']}: {row['title']}\n  sends:   {row['sends']}\n  expects: {row['expects']}")
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    """Start emulated vendor endpoints and print how to point connections at them."""
    from airflow_provider_tokenrefresh.testing import EMULATORS, serve
    from airflow_provider_tokenrefresh.testing.connections import connections_add_command

    names = args.dialect or sorted(EMULATORS)
    emulators = serve(
        names,
        host=args.host,
        base_port=args.port,
        rotation=not args.no_rotation,
        reuse_detection=not args.no_reuse_detection,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        lines = []
        for name, emulator in zip(names, emulators, strict=True):
            seed = emulator.issue_tokens()
            info = {
                "dialect": name,
                "base_url": emulator.base_url,
                "token_path": emulator.token_path,
                "sample_path": emulator.sample_path,
                "client_id": emulator.client_id,
            }
            print(json.dumps(info))
            # The emulator's throwaway demo credentials and a fresh seed, ready to paste.
            lines.append(
                connections_add_command(f"demo_{name}", emulator, seed.refresh_token, seed.access_token)
            )
            if args.show_seed_tokens:
                # Explicitly requested, for trying things out with throwaway emulator tokens only.
                print(
                    json.dumps(
                        {
                            "dialect": name,
                            "refresh_token": seed.refresh_token,
                            "access_token": seed.access_token,
                        }
                    )
                )
        if not args.no_connection_lines:
            print("\n# Demo connections (emulator credentials and seeds, for trying things out only):")
            for line in lines:
                print(line)
        sys.stdout.flush()
        print("emulators running; Ctrl-C to stop", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        for emulator in emulators:
            emulator.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="airflow-tokenrefresh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("dialects", help="list the built-in dialects")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_dialects)

    p = sub.add_parser("emulate", help="start emulated vendor endpoints on 127.0.0.1")
    p.add_argument("dialect", nargs="*", help="dialects to emulate (default: all five)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=None, help="first port; the others follow (default: free ports)"
    )
    p.add_argument("--no-rotation", action="store_true", help="keep refresh tokens valid after use")
    p.add_argument("--no-reuse-detection", action="store_true", help="do not revoke families on reuse")
    p.add_argument(
        "--show-seed-tokens",
        action="store_true",
        help="print a fresh emulator token pair per dialect (throwaway test tokens)",
    )
    p.add_argument(
        "--no-connection-lines",
        action="store_true",
        help="do not print the ready-to-paste `airflow connections add` lines (demo credentials and seeds)",
    )
    p.set_defaults(func=cmd_emulate)

    _add_airflow_commands(sub)
    return parser


def _add_airflow_commands(sub: Any) -> None:
    # Imports nothing from Airflow until a command runs: `dialects` and `emulate` stay fast.
    from airflow_provider_tokenrefresh.cli_airflow import add_commands

    add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from airflow_provider_tokenrefresh.errors import TokenRefreshError

    # A command that failed as a whole: 2, except where a monitoring check reads the code (status: 3,
    # "could not tell").
    failed: int = getattr(args, "failure_exit", 2)
    try:
        result: int = args.func(args)
    except TokenRefreshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return failed
    except Exception as exc:  # noqa: BLE001 - e.g. an unknown connection: one clear line, no traceback
        from airflow_provider_tokenrefresh.redaction import redact

        print(f"error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return failed
    return result
