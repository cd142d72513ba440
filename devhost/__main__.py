"""Command line: `python -m devhost serve` (like `func start`), `python -m devhost run` (`make run`) and
`python -m devhost reset` (`make reset`)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from devhost._keys import HostKeys
from devhost._run import (FUNCTIONS_PORT, TENANT_BASE_PORT, PortTaken, RunOptions, SetupFailed, StillRunning,
                          client_environment, reset, run)
from devhost._server import LoopbackOnlyError, ensure_loopback, serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_command = commands.add_parser("serve", help="serve function_app.app with settings from a file")
    serve_command.add_argument("--settings", type=Path, help="a local.settings.json-shaped file")
    serve_command.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    serve_command.add_argument("--port", type=int, default=FUNCTIONS_PORT)
    serve_command.add_argument("--keys", type=Path, default=RunOptions().keys_path,
                               help="host keys file, created when missing")

    run_command = commands.add_parser("run", help="start the local tenant and the host (make run)")
    run_command.add_argument("--check", action="store_true", help="call GET /api/health once, then exit")
    run_command.add_argument("--port", type=int, default=FUNCTIONS_PORT)
    run_command.add_argument("--base-port", type=int, default=TENANT_BASE_PORT)
    run_command.add_argument("--local-dir", type=Path, default=RunOptions.local_dir)
    run_command.add_argument("--bare", action="store_true",
                             help="a bare tenant (no API registration, no grants): run setup as an operator first, "
                                  "then serve with what it printed (make run BARE=1)")
    reset_command = commands.add_parser(
        "reset", help="forget the local tenant's state, its CA and the host keys (make reset); keeps .venv")
    reset_command.add_argument("--port", type=int, default=FUNCTIONS_PORT)
    reset_command.add_argument("--base-port", type=int, default=TENANT_BASE_PORT)
    reset_command.add_argument("--local-dir", type=Path, default=RunOptions.local_dir)
    env_command = commands.add_parser(
        "env", help="export lines for the client scripts of docs/use-the-registration.md against a running make run (eval them)")
    env_command.add_argument("--local-dir", type=Path, default=RunOptions.local_dir)
    for command in (serve_command, run_command):
        command.add_argument("--app-module", default="function_app", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if arguments.command == "serve":
            ensure_loopback(arguments.host)  # before a keys file is created for nothing
            keys = HostKeys.load_or_create(arguments.keys)
            print(f"function key: {keys.function}  (from {arguments.keys})", flush=True)
            serve(host=arguments.host, port=arguments.port, settings_path=arguments.settings,
                  keys=keys, module_name=arguments.app_module)
            return 0
        if arguments.command == "env":
            try:
                environment = client_environment(RunOptions(local_dir=arguments.local_dir))
            except FileNotFoundError:
                print(f"error: no local tenant in {arguments.local_dir}; start `make run` first", file=sys.stderr)
                return 1
            print("".join(f"export {key}={shlex.quote(value)}\n" for key, value in environment.items()), end="")
            return 0
        if arguments.command == "reset":
            options = RunOptions(local_dir=arguments.local_dir, port=arguments.port, base_port=arguments.base_port)
            removed = reset(options)
            print(f"removed {len(removed)} files from {options.local_dir}; the next make run starts from the seed")
            return 0
        options = RunOptions(
            local_dir=arguments.local_dir,
            port=arguments.port,
            base_port=arguments.base_port,
            module_name=arguments.app_module,
            check=arguments.check,
            bare=arguments.bare,
        )
        return run(options)
    except (LoopbackOnlyError, StillRunning, PortTaken, SetupFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it handled once it has shut down; by then everything is stopped.
        return 0


if __name__ == "__main__":
    sys.exit(main())
