"""Build the fuzz copy of ``_vmcore``: the Cython modules the targets run, compiled by clang with libFuzzer's coverage
instrumentation and AddressSanitizer (``-fsanitize=address,fuzzer-no-link``), in ``fuzz/build/`` (the Python
files copied beside them), so atheris sees which branches of our C a mutated input reaches.

    python3 fuzz/build.py          # needs clang (Debian's clang) and atheris; about a minute
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "fuzz" / "build"
FLAGS = ["-fsanitize=address,fuzzer-no-link", "-g", "-O1", "-D_GNU_SOURCE", "-Wno-unused-function"]
# What the targets (fuzz/targets.py) import; every other module of the copy stays pure Python or absent.
FUZZED = ["_vmcore/memory.pyx", "_vmcore/devices/virtqueue.pyx",
          *sorted(f"_vmcore/fs/{pyx.name}" for pyx in (ROOT / "_vmcore" / "fs").glob("*.pyx"))]  # the FUSE server's


def main() -> int:
    from Cython.Build import cythonize
    from setuptools import Extension
    from setuptools.dist import Distribution

    if shutil.which("clang") is None:
        print("fuzz/build.py needs clang (apt-get install clang)", file=sys.stderr)
        return 1
    shutil.rmtree(BUILD, ignore_errors=True)
    shutil.copytree(ROOT / "_vmcore", BUILD / "_vmcore",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__", "guest"))
    os.chdir(BUILD)
    os.environ.update(CC="clang", LDSHARED="clang -shared", CFLAGS="", LDFLAGS="")
    modules = [Extension(".".join(Path(p).with_suffix("").parts), [p], extra_compile_args=FLAGS,
                         extra_link_args=["-fsanitize=address,fuzzer-no-link"]) for p in FUZZED]
    ext = cythonize(modules, language_level=3, quiet=True,
                    compiler_directives={"boundscheck": False, "wraparound": False})
    dist = Distribution({"ext_modules": ext, "script_name": "fuzz-build"})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    cmd.parallel = os.cpu_count()
    dist.run_command("build_ext")
    print(f"fuzz build in {BUILD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
