"""The VMM's jail (``_vmcore.jail``): its root holds exactly the paths it was given, read-only unless writable, and
building it writes nothing on the host. Probed in a child process (the jail is for the rest of its life), as root
(a mount namespace) and as an unprivileged user (a user namespace too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import errno, json, os, sys
sys.path.insert(0, sys.argv[1])
from _vmcore.jail import Exposed, enter_jail
work = sys.argv[2]
outside = os.stat("/").st_dev
given = [Exposed(f"{work}/ro"), Exposed(f"{work}/rw"), Exposed(f"{work}/rw", writable=True),  # twice: writable wins
         Exposed(f"{work}/kernel"), Exposed(f"{work}/run/console.log", writable=True)]
line = enter_jail(f"{work}/run/vmm-root", given)
def attempt(fn):
    try:
        return fn()
    except OSError as e:
        return errno.errorcode[e.errno]
results = {
    "line": line,
    "own_root": os.stat("/").st_dev != outside,
    "root": sorted(os.listdir("/")),
    "work": sorted(os.listdir(work)),
    "read_ro": attempt(lambda: open(f"{work}/ro/f").read()),
    "write_ro": attempt(lambda: open(f"{work}/ro/new", "w").close()),
    "write_rw": attempt(lambda: open(f"{work}/rw/new", "w").write("from the jail")),
    "kernel": attempt(lambda: open(f"{work}/kernel").read()),
    "write_kernel": attempt(lambda: open(f"{work}/kernel", "a").close()),
    "log": attempt(lambda: open(f"{work}/run/console.log", "a").write("logged")),
    "secret": attempt(lambda: open(f"{work}/secret").read()),
    "etc": os.path.exists("/etc/passwd"),
    "new_root_copy": sorted(os.listdir(f"{work}/run")) if os.path.isdir(f"{work}/run") else None,
}
print(json.dumps(results))
"""


def _work(tmp_path: Path, owner: int | None = None) -> Path:
    work = tmp_path / "work"
    for d in ("ro", "rw", "run/vmm-root"):
        (work / d).mkdir(parents=True)
    (work / "ro/f").write_text("shared")
    (work / "kernel").write_text("kernel")
    (work / "secret").write_text("not for the VMM")
    (work / "run/console.log").touch()
    if owner is not None:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            os.chown(path, owner, owner)
    return work


def _probe(work: Path, prefix: list[str] = ()) -> dict:
    done = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(ROOT), str(work)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _check(work: Path, results: dict) -> None:
    assert results["own_root"] is True
    assert str(work) not in Path("/proc/self/mountinfo").read_text()  # nothing of it was mounted out here
    assert results["root"] == [work.parts[1]]  # nothing else of the host: no /etc, /usr, /home, /proc
    assert results["work"] == ["kernel", "ro", "run", "rw"]  # the secret beside them is not there
    assert results["read_ro"] == "shared" and results["write_ro"] == "EROFS"
    assert results["write_rw"] == len("from the jail") and (work / "rw/new").read_text() == "from the jail"
    assert results["kernel"] == "kernel" and results["write_kernel"] == "EROFS"
    assert results["log"] == len("logged") and (work / "run/console.log").read_text() == "logged"
    assert results["secret"] == "ENOENT" and results["etc"] is False
    # Building it wrote nothing on the host: no mount points in the host's directories.
    assert sorted(p.name for p in work.iterdir()) == ["kernel", "ro", "run", "rw", "secret"]
    assert list((work / "run/vmm-root").iterdir()) == [] and not (work / "ro/new").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root: a plain mount namespace")
def test_the_jail_holds_only_what_it_was_given(tmp_path: Path) -> None:
    work = _work(tmp_path)
    results = _probe(work)
    assert results["line"] == "jailed: own mount namespace, root holds 4 paths"
    _check(work, results)


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged user with setpriv")
def test_an_unprivileged_vmm_is_jailed_in_a_user_namespace() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="msb-jail-") as tmp:  # pytest's base is root's own (0700)
        os.chmod(tmp, 0o755)
        work = _work(Path(tmp), owner=65534)
        nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--"]
        results = _probe(work, nobody)
        assert results["line"] == "jailed: own user and mount namespace, root holds 4 paths"
        _check(work, results)


def test_a_shared_directory_holding_the_jail_does_not_show_it(tmp_path: Path) -> None:
    """A share of a directory above the sandbox's run directory (the host image shares '/') would carry the jail's
    own tmpfs and what is bound in it into the guest's view: that copy is taken away."""
    work = _work(tmp_path)
    script = PROBE.replace('Exposed(f"{work}/ro")', 'Exposed(work)')
    done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(work)], capture_output=True, text=True,
                          timeout=60)
    if os.geteuid() != 0 and "EPERM" in done.stderr:
        pytest.skip("no user namespaces for this user here")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["new_root_copy"] == ["console.log", "vmm-root"]
    assert results["secret"] == "not for the VMM"  # the whole directory was shared, as asked
    assert not any((work / "run/vmm-root").iterdir())


def test_a_path_that_is_a_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    """The paths come resolved; one that is a symlink by the time the jail is built was swapped meanwhile (by a
    guest writing the directory above it): refused, never bound where it leads."""
    work = _work(tmp_path)
    (work / "lnk").symlink_to(work / "secret")
    script = PROBE.replace('Exposed(f"{work}/kernel")', 'Exposed(f"{work}/lnk")')
    done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(work)], capture_output=True, text=True,
                          timeout=60)
    if os.geteuid() != 0 and "EPERM" in done.stderr:
        pytest.skip("no user namespaces for this user here")
    assert done.returncode != 0 and "a path the VMM needs changed while its jail was built" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="as root: a plain mount namespace")
def test_a_shared_root_comes_without_the_hosts_proc(tmp_path: Path) -> None:
    """The host image shares '/': the jail then holds the host's root, read-only, but none of the file systems the
    host kernel answers itself (/proc, /sys), where /proc/PID/root would lead into every other process's files."""
    work = _work(tmp_path)
    probe = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from _vmcore.jail import Exposed, enter_jail
work = sys.argv[2]
enter_jail(f"{work}/run/vmm-root", [Exposed("/"), Exposed(f"{work}/rw", writable=True)])
def writes(path):
    try:
        open(path, "w").close()
        return "ok"
    except OSError as e:
        return e.strerror
print(json.dumps({"passwd": os.path.exists("/etc/passwd"), "proc": os.path.exists("/proc/self"),
                  "sys": os.path.exists("/sys/kernel"), "tmp": writes(f"{work}/new"), "rw": writes(f"{work}/rw/new")}))
"""
    done = subprocess.run([sys.executable, "-c", probe, str(ROOT), str(work)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"passwd": True, "proc": False, "sys": False, "tmp": "Read-only file system",
                                       "rw": "ok"}
