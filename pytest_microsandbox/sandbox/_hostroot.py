"""The ``host`` image: the host's programs and libraries, read-only, over a generated root with a minimal ``/etc``.

The root is a small directory tree made once per home (``<home>/sandboxes/host-root-v1``): the top-level links of a
merged-/usr system (``/bin -> usr/bin``), empty mount points, and an ``/etc`` holding only what programs need to run
(users, hosts, the dynamic linker's cache, alternatives links) and nothing secret (no shadow, no keys, no tokens).
The host's ``/usr``, ``/bin``, ``/sbin``, ``/lib*`` and the running interpreter's prefix are bound over it read-only.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

from pytest_microsandbox.agent import GuestMount

ROOT_VERSION = "v1"
_TOP_LEVEL = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_EMPTY_DIRS = ("dev", "proc", "sys", "tmp", "run", "root", "home", "mnt", "opt", "srv", "var/tmp", "var/lib",
               "var/cache", "var/log")
# Files copied from the host's /etc: public, needed to run programs (the linker's cache finds multiarch libraries).
_ETC_COPIES = ("ld.so.cache", "ld.so.conf", "os-release", "nsswitch.conf", "localtime", "mime.types")
_ETC_TREES = ("ld.so.conf.d", "alternatives", "ssl/certs", "python3", "python3.11")
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def host_root(home: Path) -> Path:
    """The generated root directory (made on first use, atomically)."""
    root = home / "sandboxes" / f"host-root-{ROOT_VERSION}"
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".making-{uuid.uuid4().hex[:12]}"
    try:
        _build(staging)
        os.rename(staging, root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not root.is_dir():  # another process won the race otherwise
            raise
    return root


def _build(root: Path) -> None:
    root.mkdir(mode=0o755)
    for name in _TOP_LEVEL:
        host = Path("/") / name
        if host.is_symlink():
            os.symlink(os.readlink(host), root / name)
        elif host.is_dir():
            (root / name).mkdir()
    for name in _EMPTY_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var" / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(_PASSWD)
    (etc / "group").write_text(_GROUP)
    (etc / "hosts").write_text(_HOSTS)
    (etc / "hostname").write_text("sandbox\n")
    (etc / "resolv.conf").write_text("")  # loopback only: no resolver
    for name in _ETC_COPIES:
        src = Path("/etc") / name
        if src.is_symlink():
            os.symlink(os.readlink(src), etc / name)
        elif src.is_file():
            shutil.copyfile(src, etc / name)
    for name in _ETC_TREES:
        src = Path("/etc") / name
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, etc / name, symlinks=True, dirs_exist_ok=True)


def host_mounts() -> list[GuestMount]:
    """The host's program directories (real directories only: links are in the skeleton), each as a private
    overlay: programs may install into ``/usr`` or ``site-packages`` inside the sandbox, as they would on a machine of
    their own, while the host's files sit read-only below and never change."""
    mounts = []
    for name in _TOP_LEVEL:
        host = Path("/") / name
        if host.is_dir() and not host.is_symlink():
            mounts.append(GuestMount("overlay", f"/{name}", str(host), nodev=True))
    covered = [m.target for m in mounts]
    for prefix in {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}:
        if prefix != "/" and not any(prefix == c or prefix.startswith(c + "/") for c in covered):
            mounts.append(GuestMount("overlay", prefix, prefix, nodev=True))
            covered.append(prefix)
    return mounts


def interpreter_path() -> str | None:
    """PATH entry for the running interpreter when it lives outside the usual directories (pyenv, a venv).

    A venv's own ``bin`` (its directory resolved, never its ``python`` link): the guest's ``python3`` then finds the
    venv's ``pyvenv.cfg`` and packages, as the test run's interpreter does, not the base interpreter's alone."""
    bindir = os.path.realpath(os.path.dirname(os.path.abspath(sys.executable)))
    return None if bindir in ("/usr/bin", "/usr/local/bin", "/bin") else bindir
