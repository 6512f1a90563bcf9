"""Run one fuzz target under atheris (libFuzzer) against the instrumented build, its corpus kept in the repo.

    python3 fuzz/build.py                                  # once: the instrumented copy of _vmcore
    python3 fuzz/run.py fuse_request -max_total_time=60    # any libFuzzer option after the target's name
    python3 fuzz/run.py all -max_total_time=10             # each target in turn (what CI runs)

New inputs that reach new code are added to ``fuzz/corpus/<target>/``; a crash leaves ``crash-*`` in the current
directory and a non-zero exit. AddressSanitizer runs with the build (atheris's runtime, preloaded).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "fuzz" / "build"
CORPUS = ROOT / "fuzz" / "corpus"
NAMES = ("fuse_request", "virtqueue", "fs_chain", "agent_frames")


def _environment() -> dict[str, str]:
    import atheris

    env = dict(os.environ)
    env["LD_PRELOAD"] = os.path.join(atheris.path(), "asan_with_fuzzer.so")
    env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1"  # CPython's own allocations are not ours
    env["PYTHONPATH"] = os.pathsep.join([str(BUILD), str(ROOT), env.get("PYTHONPATH", "")])
    env["MSB_FUZZ_CHILD"] = "1"
    return env


def main(argv: list[str]) -> int:
    if not argv or (argv[0] not in NAMES and argv[0] != "all"):
        print(f"usage: fuzz/run.py {{{'|'.join(NAMES)}|all}} [libFuzzer options]", file=sys.stderr)
        return 2
    if not (BUILD / "_vmcore").is_dir():
        print("no instrumented build: run python3 fuzz/build.py first", file=sys.stderr)
        return 2
    names = NAMES if argv[0] == "all" else (argv[0],)
    for name in names:
        corpus = CORPUS / name
        corpus.mkdir(parents=True, exist_ok=True)
        # cwd: the build, so that it (and not the checkout's uninstrumented _vmcore) comes first on sys.path
        code = subprocess.call([sys.executable, "-c", CHILD, name, *argv[1:], str(corpus)], env=_environment(),
                               cwd=BUILD)
        if code:
            print(f"fuzz target {name} failed (exit {code})", file=sys.stderr)
            return code
    return 0


CHILD = """
import sys
import atheris
from fuzz.targets import TARGETS
import _vmcore
assert _vmcore.__file__.startswith(sys.argv[0] if False else __import__("os").getcwd()), _vmcore.__file__
name = sys.argv[1]
atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
atheris.Fuzz()
"""

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
