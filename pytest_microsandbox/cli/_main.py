"""``msb``: argument parsing and dispatch to the sub-command modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pytest_microsandbox.errors import MicrosandboxError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msb", description="microVM sandboxes and volumes for tests")
    parser.add_argument("--home", help="state directory (default: $MSB_HOME or ~/.microsandbox)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from pytest_microsandbox.cli import doctor, image, sandbox, snapshot, volume

    sandbox.register(sub)
    volume.register(sub)
    image.register(sub)
    snapshot.register(sub)
    doctor.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after the first "--" is the guest command (msb run/exec), never our options
    tail: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if tail and not hasattr(args, "command_argv"):
        parser.error(f"unrecognized arguments after --: {' '.join(tail)}")
    if hasattr(args, "command_argv"):
        args.command_argv = args.command_argv + tail
    try:
        return int(args.handler(args) or 0)
    except MicrosandboxError as err:
        print(f"msb: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
