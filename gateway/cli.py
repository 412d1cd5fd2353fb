"""`gateway` console script: one sub-command per program, each imported only when chosen.

The sub-commands live in their own modules so that `gateway call` (a light client) never pays for
importing the server stack, and `gateway model` never imports the media plane.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, help). Each module exposes `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("gateway.serve", "run the media plane (mod_audio_stream WebSocket) and the admin API"),
    "model": ("gateway.engine.server", "run the embedded Realtime-protocol engine (offline default model)"),
    "call": ("gateway.client.call", "place a simulated call exactly as mod_audio_stream would"),
    "dial": ("gateway.outbound.dial", "place outbound calls (a number or a CSV campaign) via the admin API"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in {"-h", "--help"}:
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
