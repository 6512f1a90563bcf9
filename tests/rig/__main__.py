"""``python -m tests.rig prepare`` fetches and builds L1's kernel and initramfs; ``python -m tests.rig run [--timeout
S] -- CMD ...`` runs CMD inside L1 (cwd and environment as here), streams its output and exits with its status."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.rig.kernel import RigUnavailable, prepare
from tests.rig.l1 import L1Run


def _run(command: list[str], timeout: float) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="msb-rig-"))
    run = L1Run(workdir, command, cwd=os.getcwd(), env=dict(os.environ, MSB_RIG_INNER="1"), timeout=timeout)
    run.start()
    output = run.job / "output"
    shown = 0
    try:
        while run.running():
            time.sleep(0.5)
            shown = _show_new(output, shown)
        result = run.wait()
        _show_new(output, shown)
    finally:
        run.kill()
    if result.status is None:
        print(result.describe(), file=sys.stderr)
        return 125
    shutil.rmtree(workdir, ignore_errors=True)
    return result.status


def _show_new(path: Path, shown: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(shown)
            chunk = f.read()
    except FileNotFoundError:
        return shown
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    return shown + len(chunk)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("prepare", help="fetch and build L1's kernel and initramfs (cached)")
    run = sub.add_parser("run", help="run a command inside L1")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds before L1 is stopped (default 3600)")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.action == "prepare":
            boot = prepare()
            print(f"kernel {boot.kernel}\ninitramfs {boot.initramfs}")
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a command after --")
        return _run(command, args.timeout)
    except RigUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
