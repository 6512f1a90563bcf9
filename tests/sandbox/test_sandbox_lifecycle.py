"""Create, exec, files, stop, kill, remove, get, list; the default backend never falls back to namespaces."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_microsandbox
from _vmcore.host import detect_kvm
from _vmcore.initramfs import AGENT_BINARY
from pytest_microsandbox.errors import (
    ExecError,
    ExecTimeoutError,
    InvalidConfigError,
    KvmUnavailableError,
    SandboxAlreadyExistsError,
    SandboxError,
    SandboxNotFoundError,
)
from pytest_microsandbox.sync import Sandbox, Volume
from tests.timeouts import BOOT, scaled


def test_exec_shell_fs_and_last_exec(make_sandbox) -> None:
    sb = make_sandbox(env={"GREETING": "hi"}, workdir="/work")
    r = sb.exec("python3", "-c", "import os; print(os.environ['GREETING'], os.getcwd())")
    assert (r.exit_code, r.stdout) == (0, "hi /work\n")
    failed = sb.shell("echo out; echo err >&2; exit 3")
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    assert sb.last_exec is not None and sb.last_exec.exit_code == 3 and sb.last_exec.stderr == "err\n"
    assert sb.last_exec.argv == ("/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    assert sb.exec("cat", stdin=b"piped").stdout == "piped"
    assert sb.exec("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sb.exec("sh", "-c", "echo $X", env={"X": "per-exec"}).stdout == "per-exec\n"
    sb.fs.write("/srv/note.txt", "written by the host")
    assert sb.exec("cat", "/srv/note.txt").stdout == "written by the host"
    assert sb.fs.read_text("/etc/hostname").startswith("sandbox")
    with pytest.raises(ExecError):
        sb.exec("/no/such/program")
    with pytest.raises(ExecTimeoutError):
        sb.exec("sleep", "5", timeout=0.3)
    assert sb.last_exec.timed_out


def test_the_guest_is_isolated_from_the_host(make_sandbox, tmp_path: Path) -> None:
    (tmp_path / "host-secret").write_text("secret")
    sb = make_sandbox()
    assert sb.exec("hostname").stdout == f"{sb.name}\n"
    assert not sb.fs.exists(str(tmp_path / "host-secret"))  # the host's /tmp is not the guest's
    assert sb.fs.read("/proc/1/exe") == AGENT_BINARY.read_bytes()  # PID 1 is our agent: its own pid namespace
    assert sorted(e.path.rsplit("/", 1)[-1] for e in sb.fs.list("/sys/class/net")) == ["lo"]  # loopback only
    assert "shadow" not in {e.path.rsplit("/", 1)[-1] for e in sb.fs.list("/etc")}  # a generated /etc
    # /usr is writable in the guest (an overlay, in guest memory); the host's directory below it is read-only, even
    # to a guest root that remounts it
    escape = sb.shell("touch /usr/.msb-escape; for lower in $(awk '$2 ~ \"^/run/msb/overlay[0-9]+/lower$\" "
                      "{print $2}' /proc/mounts); do mount -o remount,rw $lower 2>/dev/null; "
                      "touch $lower/.msb-escape 2>/dev/null && echo WROTE $lower; done; echo checked")
    assert escape.stdout.endswith("checked\n") and "WROTE" not in escape.stdout, escape.stdout
    assert sb.fs.exists("/usr/.msb-escape") and not Path("/usr/.msb-escape").exists()
    host_panic = Path("/proc/sys/kernel/panic").read_text().strip()
    wrote = sb.shell(f"echo {7 if host_panic != '7' else 8} > /proc/sys/kernel/panic")
    assert Path("/proc/sys/kernel/panic").read_text().strip() == host_panic  # the host's kernel is untouched
    if sb.isolation == "namespace":  # the host's kernel, read-only to a user namespace (a vm's guest owns its own)
        assert wrote.exit_code != 0
    devices = {e.path.rsplit("/", 1)[-1] for e in sb.fs.list("/dev")}
    assert {"null", "zero", "urandom", "pts"} <= devices
    if sb.isolation == "namespace":  # no host block device (a vm's are its own virtual disks: no host's can be there)
        assert not any(d.startswith(("sd", "vd", "nvme", "loop")) for d in devices)
    else:
        assert not any(d.startswith(("sd", "nvme")) for d in devices)  # virtio disks only


def test_programs_install_into_usr_privately(make_sandbox, isolation: str) -> None:
    """The host image's /usr is writable in the guest (an installer's home), in memory: the host never sees it, and
    the next sandbox starts from the host's /usr again."""
    if isolation == "namespace" and os.geteuid() != 0:
        pytest.skip("a normal user's namespace sandbox sees /usr as owned by nobody (real root is outside its user "
                    "namespace): nothing can install there; a vm sandbox, or root, can")
    sb = make_sandbox()
    probe = "/usr/local/lib/msb-install-probe"
    installed = sb.shell(f"mkdir -p {probe} && echo installed > {probe}/f && rm -f /usr/local/lib/.msb-none && "
                         f"cat {probe}/f")
    assert installed.exit_code == 0 and installed.stdout == "installed\n", installed.stderr
    assert not Path(probe).exists()
    assert not make_sandbox().fs.exists(f"{probe}/f")


VENV_RUN = """
import sys
from pytest_microsandbox.sync import Sandbox
sb = Sandbox.create(isolation=sys.argv[1], home=sys.argv[2], boot_timeout=float(sys.argv[3]))
try:
    r = sb.exec("python3", "-c", "import msb_venv_probe, sys; print(msb_venv_probe.WHERE, sys.prefix)")
    print(r.exit_code, r.stdout.strip(), r.stderr.strip()[-500:])
finally:
    sb.remove()
"""


def site_dirs() -> list[str]:
    import site

    return [d for d in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(d)]


def test_the_guests_python3_is_the_venvs_when_the_run_is_in_one(isolation: str, home: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = (venv / "lib").glob("python3.*/site-packages")
    (site / "msb_venv_probe.py").write_text("WHERE = 'venv'\n")  # a package only the venv has
    # this run's packages (pytest-microsandbox among them), whether the run itself is in a venv or not
    (site / "this_run.pth").write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in site_dirs()))
    done = subprocess.run([str(venv / "bin" / "python"), "-c", VENV_RUN, isolation, str(home), str(BOOT)],
                          capture_output=True, text=True, timeout=scaled(120) + BOOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "venv", os.path.realpath(venv)], done.stdout


def test_a_fifo_guest_code_puts_where_the_host_writes_is_refused_at_once(make_sandbox) -> None:
    sb = make_sandbox()
    assert sb.exec("mkfifo", "/tmp/input.txt").exit_code == 0
    for attempt in (lambda: sb.fs.write("/tmp/input.txt", "data"), lambda: sb.fs.read("/tmp/input.txt")):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EINVAL
    assert sb.exec("echo", "still serving").stdout == "still serving\n"


def test_stop_kill_remove_get_list(make_sandbox, home: Path) -> None:
    a = make_sandbox(name="alpha")
    b = make_sandbox(name="beta")
    assert Sandbox.get("alpha", home=home) is a
    assert {r.name: r.status for r in Sandbox.list(home=home)} == {"alpha": "running", "beta": "running"}
    a.stop(timeout=scaled(5))
    assert a.status == "stopped"
    with pytest.raises(SandboxError, match="stopped"):
        a.exec("true")
    b.kill()
    assert b.status == "stopped" and not _alive(b.pid)
    a.remove()
    with pytest.raises(SandboxNotFoundError):
        Sandbox.get("alpha", home=home)
    assert [r.name for r in Sandbox.list(home=home)] == ["beta"]


def test_restricted_security(make_sandbox) -> None:
    sb = make_sandbox(security="restricted")
    assert sb.exec("grep", "NoNewPrivs", "/proc/self/status").stdout.split() == ["NoNewPrivs:", "1"]


def test_bad_configs_are_refused(home: Path) -> None:
    for guest_path in ("relative", "/", "/a:b", "/a;b", "/a,b"):
        with pytest.raises(InvalidConfigError):
            Sandbox.create(isolation="namespace", home=home, volumes={guest_path: Volume.tmpfs()})
    with pytest.raises(InvalidConfigError):
        Sandbox.create(isolation="container", home=home)
    with pytest.raises(InvalidConfigError):
        Sandbox.create(name="../evil", isolation="namespace", home=home)
    with pytest.raises(InvalidConfigError):
        Sandbox.create(isolation="namespace", home=home, memory_mib=0)
    assert Sandbox.list(home=home) == []


@pytest.mark.skipif(detect_kvm().runs_guest_userspace, reason="this host has hardware KVM")
def test_default_is_vm_and_never_falls_back(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSB_ISOLATION", raising=False)
    with pytest.raises(KvmUnavailableError) as info:
        Sandbox.create(home=home)
    message = str(info.value)
    assert detect_kvm().reason in message and "isolation='namespace'" in message
    assert "--msb-isolation=namespace" in message
    assert Sandbox.list(home=home) == []


def test_async_face(isolation: str, home: Path) -> None:
    async def main() -> tuple[str, bytes, str]:
        async with await pytest_microsandbox.Sandbox.create(isolation=isolation, home=home) as sb:
            out = (await sb.exec("echo", "async")).stdout
            await sb.fs.write("/tmp/a", b"x")
            data = await sb.fs.read("/tmp/a")
            return out, data, await sb.status()

    assert asyncio.run(main()) == ("async\n", b"x", "running")
    assert [r.status for r in Sandbox.list(home=home)] == []


def _alive(pid: int | None) -> bool:
    return pid is not None and Path(f"/proc/{pid}").exists()


def test_relay_forwards_whole_frames_only() -> None:
    from pytest_microsandbox.agent._wire import Msg, encode_frame
    from pytest_microsandbox.sandbox._detached_owner import FrameBuffer

    a, b = encode_frame(Msg.PING, 1, b"abc"), encode_frame(Msg.PING, 2, b"x" * 70000)
    buf = FrameBuffer()
    assert buf.feed(a[:5]) == []
    assert buf.feed(a[5:] + b[:100]) == [a]
    assert buf.feed(b[100:]) == [b] and buf.data == bytearray()


def test_concurrent_execs_and_a_forked_creator(make_sandbox, isolation: str, home: Path) -> None:
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    sb = make_sandbox()
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: sb.exec("sh", "-c", f"echo {i}").stdout, range(32)))
    assert outs == [f"{i}\n" for i in range(32)]

    def child(q) -> None:  # a forked process starts sandboxes of its own (its own spawner thread)
        with Sandbox.create(isolation=isolation, home=home) as inner:
            q.put(inner.exec("echo", "forked").stdout)

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    assert q.get(timeout=scaled(30)) == "forked\n"
    p.join(30)
    assert p.exitcode == 0


def test_names_are_unique_while_live(make_sandbox) -> None:
    make_sandbox(name="only")
    with pytest.raises(SandboxAlreadyExistsError, match="sandbox already exists: only"):
        make_sandbox(name="only")
