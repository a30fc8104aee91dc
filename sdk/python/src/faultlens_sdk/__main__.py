"""``python -m faultlens_sdk codes``: the error-code catalogue, for API docs.

Codes are registered when their exception classes are defined, so name the modules
that define them: ``python -m faultlens_sdk codes --module myapp.errors --format
markdown > docs/errors.md``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from faultlens_sdk.errors import registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faultlens_sdk")
    commands = parser.add_subparsers(dest="command", required=True)
    codes = commands.add_parser("codes", help="print every registered error code")
    codes.add_argument(
        "--module",
        "-m",
        action="append",
        default=[],
        help="import this module first (repeatable); it defines error classes",
    )
    codes.add_argument("--format", choices=("json", "markdown"), default="json")
    args = parser.parse_args(argv)
    for name in args.module:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            parser.error(f"cannot import {name}: {exc}")
    out = registry.to_json() if args.format == "json" else registry.to_markdown()
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
