"""Build of the compiled parts: every ``_vmcore/**/*.pyx`` becomes an extension module, and every
``_vmcore/guest/src/<name>/`` folder of C sources becomes a static guest binary ``_vmcore/guest/bin/<name>``.

Discovery by glob keeps this file stable while modules are added.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
GUEST_SRC = Path("_vmcore/guest/src")
GUEST_CFLAGS = ["-static", "-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-D_GNU_SOURCE"]


def _extensions() -> list[Extension]:
    modules = []
    for pyx in sorted(Path("_vmcore").rglob("*.pyx")):
        name = ".".join(pyx.with_suffix("").parts)
        modules.append(Extension(name, [str(pyx)], extra_compile_args=["-O2", "-D_GNU_SOURCE"]))
    return cythonize(modules, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


class BuildWithGuest(build_ext):
    """build_ext that also compiles the static guest binaries (next to the sources when --inplace)."""

    def run(self) -> None:
        super().run()
        base = ROOT if self.inplace else Path(self.build_lib)
        for src_dir in sorted(p for p in GUEST_SRC.iterdir() if p.is_dir()) if GUEST_SRC.is_dir() else []:
            sources = sorted(str(c) for c in src_dir.glob("*.c"))
            if not sources:
                continue
            out = base / "_vmcore" / "guest" / "bin" / src_dir.name
            out.parent.mkdir(parents=True, exist_ok=True)
            cc = shlex.split(os.environ.get("CC", "cc"))
            cmd = [*cc, *GUEST_CFLAGS, "-I", str(src_dir), "-o", str(out), *sources]
            self.announce(" ".join(cmd), level=2)
            subprocess.run(cmd, check=True)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildWithGuest})
