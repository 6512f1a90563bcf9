"""Finding a guest kernel: an explicit path, the system's libkrunfw, or the copy bundled in the ``microsandbox``
wheel, located without importing that package. Where an explicit path comes from (an option, the environment) is
the caller's business: nothing here reads the environment."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from _vmcore.errors import KernelLoadError

LIB_NAME = "libkrunfw.so"
SYSTEM_LIB_DIRS = ("/usr/local/lib64", "/usr/local/lib", "/usr/lib64", "/usr/lib", "/lib64", "/lib",
                   "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu")


@dataclass(frozen=True)
class KernelLocation:
    path: Path
    source: str  # explicit | system | microsandbox-wheel

    def __str__(self) -> str:
        return f"{self.path} ({self.source})"


def _version_key(path: str) -> tuple:
    tail = path.rsplit(LIB_NAME, 1)[-1]
    return tuple(int(n) for n in re.findall(r"\d+", tail))


def _newest(paths) -> Path | None:
    files = sorted({p for p in paths if os.path.isfile(p)}, key=_version_key)
    return Path(files[-1]) if files else None


def _ldconfig_libkrunfw() -> list[str]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.rsplit("=>", 1)[-1].strip() for line in out.splitlines() if LIB_NAME in line and "=>" in line]


def system_libkrunfw(lib_dirs=SYSTEM_LIB_DIRS) -> Path | None:
    candidates = _ldconfig_libkrunfw()
    for d in lib_dirs:
        candidates += glob.glob(os.path.join(d, LIB_NAME + ".*"))
    return _newest(candidates)


def bundled_libkrunfw(package: str = "microsandbox") -> Path | None:
    """``<package>/_bundled/lib/libkrunfw.so.*`` found through the import system's spec, never imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    paths = []
    for root in spec.submodule_search_locations:
        paths += glob.glob(os.path.join(root, "_bundled", "lib", LIB_NAME + ".*"))
    return _newest(paths)


def find_kernel(explicit: str | os.PathLike | None = None, lib_dirs=SYSTEM_LIB_DIRS,
                package: str = "microsandbox") -> KernelLocation:
    """The first of: ``explicit``, the system's libkrunfw, the microsandbox wheel's copy.

    An explicit path must exist (a typo is an error, not a silent fallback)."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise KernelLoadError(f"kernel {path} does not exist")
        return KernelLocation(path, "explicit")
    found = system_libkrunfw(lib_dirs)
    if found:
        return KernelLocation(found, "system")
    found = bundled_libkrunfw(package)
    if found:
        return KernelLocation(found, "microsandbox-wheel")
    raise KernelLoadError("no guest kernel found: no path given, no libkrunfw installed on the system or in the "
                          f"{package} package")
