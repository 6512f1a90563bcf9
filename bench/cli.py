"""Benchmark: wall time of ``msb`` commands that start no VM, ours against microsandbox's own ``msb``, one run.

    python3 bench/cli.py [--rounds 30] [--warmup 3] [--dir /var/tmp]

Peers, each timed as a whole process (fork, exec, run, exit) and interleaved command by command, in an order rotated
per round so drift on a shared machine hits all alike:

- ``python -c pass``: the floor, the interpreter the ``msb`` script runs under, starting and doing nothing;
- ours: the installed ``msb`` console script (``pytest_microsandbox.cli:main``), as this environment runs it, and
  again with its bytecode cached (``PYTHONPYCACHEPREFIX``, as a wheel install's ``.pyc`` files give; with
  ``PYTHONDONTWRITEBYTECODE`` set, as here, every start compiles our modules);
- theirs: the ``msb`` binary the microsandbox 0.7.11 wheel bundles (``microsandbox/_bundled/bin/msb``);
- and both of ours again without ``site`` (``python -S``, the package put on ``sys.path`` by hand), next to
  ``python -S -c pass``: what the same commands cost where no ``.pth`` hooks run at every start (an editable
  install's finder and whatever else the environment adds there are part of the plain floor).

Each side gets its own fresh home. Prints medians (ms), ours/theirs and ours minus the floor (what our imports and
work cost on top of Python's own start).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

# (row, our arguments, their arguments); {n} is the round's volume name
COMMANDS = [
    ("msb --help", ["--help"], ["--help"]),
    ("msb volume create NAME", ["volume", "create", "{n}"], ["volume", "create", "{n}"]),
    ("msb volume ls", ["volume", "ls"], ["volume", "ls"]),
    ("msb volume inspect NAME", ["volume", "inspect", "{n}"], ["volume", "inspect", "{n}"]),
    ("msb volume rm NAME", ["volume", "rm", "{n}"], ["volume", "rm", "{n}"]),
    ("msb image ls", ["image", "ls"], ["image", "ls"]),
    ("msb ps / msb ls", ["ps"], ["ls"]),
]
PEERS = ("floor", "ours", "ours .pyc", "theirs", "floor -S", "ours -S .pyc")
# ``python -S -c BOOT PATHS ARGS``: our msb with sys.path set by hand (no site, so no .pth hooks)
BOOT = ("import sys; sys.path[:0] = sys.argv[1].split(':'); del sys.argv[1]; "
        "from pytest_microsandbox.cli import main; sys.exit(main())")


def our_script() -> Path:
    """The ``msb`` console script pip installed for this interpreter (not a shim in front of it)."""
    script = Path(sysconfig.get_path("scripts")) / "msb"
    if "pytest_microsandbox.cli" not in script.read_text(errors="replace"):
        sys.exit(f"{script} is not pytest-microsandbox's msb script")
    return script


def their_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("microsandbox")
    if spec is None or spec.origin is None:
        sys.exit("microsandbox (the SDK wheel) is not installed")
    binary = Path(spec.origin).parent / "_bundled" / "bin" / "msb"
    if not os.access(binary, os.X_OK):
        sys.exit(f"no msb binary in the microsandbox wheel at {binary}")
    return binary


def our_paths() -> list[str]:
    """What ``sys.path`` needs for our package without ``site``: its source tree, then site-packages."""
    import pytest_microsandbox

    return [str(Path(pytest_microsandbox.__file__).resolve().parents[1]), sysconfig.get_path("purelib"),
            sysconfig.get_path("platlib")]


def run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp", help="where the homes and the bytecode cache are made")
    args = parser.parse_args()
    script, binary = our_script(), their_binary()
    python = script.read_text().splitlines()[0].removeprefix("#!").strip()  # the interpreter the script runs under
    with tempfile.TemporaryDirectory(prefix="msb-cli-bench-", dir=args.dir) as tmp:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MSB_")}
        envs = {
            "floor": base,
            "ours": {**base, "MSB_HOME": f"{tmp}/ours"},
            "ours .pyc": {**base, "MSB_HOME": f"{tmp}/ours-pyc", "PYTHONPYCACHEPREFIX": f"{tmp}/pyc",
                          "PYTHONDONTWRITEBYTECODE": ""},
            "theirs": {**base, "MSB_HOME": f"{tmp}/theirs"},
        }
        envs["floor -S"] = envs["floor"]
        envs["ours -S .pyc"] = {**envs["ours .pyc"], "MSB_HOME": f"{tmp}/ours-nosite"}
        paths = ":".join(our_paths())
        argv = {"ours": [str(script)], "ours .pyc": [str(script)], "theirs": [str(binary)],
                "ours -S .pyc": [python, "-S", "-c", BOOT, paths]}
        results: dict[str, dict[str, list[float]]] = {row: {p: [] for p in PEERS} for row, _, _ in COMMANDS}
        for rnd in range(args.warmup + args.rounds):
            name = f"bench-{rnd:04d}"
            shift = rnd % len(PEERS)
            order = PEERS[shift:] + PEERS[:shift]
            for row, ours, theirs in COMMANDS:
                for peer in order:
                    if peer.startswith("floor"):
                        cmd = [python, *peer.split()[1:], "-c", "pass"]
                    else:
                        words = theirs if peer == "theirs" else ours
                        cmd = argv[peer] + [w.format(n=name) for w in words]
                    elapsed = run(cmd, envs[peer])
                    if rnd >= args.warmup:
                        results[row][peer].append(elapsed)
    bytecode = "off (compiles our modules at every start)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
    print(f"# medians of {args.rounds} interleaved rounds (ms, whole process); {os.cpu_count()} CPUs; bytecode "
          f"writing here: {bytecode}")
    print(f"# floor: {python} -c pass; ours: {script}; theirs: {binary}")
    header = (f"| {'command (ours / theirs)':<24} | {'floor':>5} | {'ours':>5} | {'ours .pyc':>9} | {'theirs':>6} "
              f"| {'.pyc/theirs':>11} | {'.pyc - floor':>12} | {'floor -S':>8} | {'ours -S .pyc':>12} "
              f"| {'-S - floor -S':>13} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for row, _, _ in COMMANDS:
        ms = {peer: statistics.median(times) * 1e3 for peer, times in results[row].items()}
        print(f"| {row:<24} | {ms['floor']:>5.1f} | {ms['ours']:>5.1f} | {ms['ours .pyc']:>9.1f} "
              f"| {ms['theirs']:>6.1f} | {ms['ours .pyc'] / ms['theirs']:>11.1f} "
              f"| {ms['ours .pyc'] - ms['floor']:>12.1f} | {ms['floor -S']:>8.1f} | {ms['ours -S .pyc']:>12.1f} "
              f"| {ms['ours -S .pyc'] - ms['floor -S']:>13.1f} |")


if __name__ == "__main__":
    main()
