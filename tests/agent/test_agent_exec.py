"""Exec over the native socketpair: output, exit codes, signals, stdin, big output, concurrency, timeouts, kill."""

from __future__ import annotations

import hashlib
import signal
import threading
import time

import pytest

from pytest_microsandbox.agent import AgentClient
from pytest_microsandbox.errors import BootError, ExecError, ExecTimeoutError


def test_echo(client: AgentClient) -> None:
    r = client.exec("echo", "hello", "world")
    assert (r.exit_code, r.stdout, r.stderr, r.signal) == (0, "hello world\n", "", None)
    assert r.ok and r.duration > 0 and r.pid


@pytest.mark.parametrize("code", [0, 1, 2, 42, 255])
def test_exit_codes(client: AgentClient, code: int) -> None:
    r = client.shell(f"echo out; echo err >&2; exit {code}")
    assert (r.exit_code, r.stdout, r.stderr, r.signal) == (code, "out\n", "err\n", None)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
def test_killed_by_signal(client: AgentClient, sig: signal.Signals) -> None:
    r = client.shell(f"kill -{int(sig)} $$")
    assert r.exit_code is None and r.signal == sig
    assert sig.name in r.describe()


def test_stdin_bytes(client: AgentClient) -> None:
    data = bytes(range(256)) * 1000
    r = client.exec("cat", stdin=data)
    assert r.stdout_bytes == data


def test_stdin_empty_and_null(client: AgentClient) -> None:
    assert client.exec("cat", stdin=b"").stdout == ""
    assert client.exec("cat").stdout == ""  # /dev/null: does not hang


def test_stdin_stream(client: AgentClient) -> None:
    h = client.start("sh", "-c", "while read line; do echo got:$line; done", stdin_stream=True)
    for i in range(3):
        h.write_stdin(f"{i}\n")
    h.close_stdin()
    assert h.wait(30).stdout == "got:0\ngot:1\ngot:2\n"


def test_stdin_stream_larger_than_pipe(client: AgentClient) -> None:
    data = b"x" * (3 << 20)
    h = client.start("sha256sum", stdin_stream=True)
    h.write_stdin(data)
    h.close_stdin()
    assert h.wait(60).stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_ten_mib_of_output(client: AgentClient) -> None:
    size = 10 << 20
    r = client.shell(f"yes 0123456789abcdef | head -c {size}; echo done >&2")
    assert len(r.stdout_bytes) == size
    assert r.stdout_bytes == (b"0123456789abcdef\n" * (size // 17 + 1))[:size]
    assert r.stderr == "done\n"


def test_output_interleaving_kept_per_stream(client: AgentClient) -> None:
    r = client.shell("for i in 1 2 3; do echo o$i; echo e$i >&2; done")
    assert (r.stdout, r.stderr) == ("o1\no2\no3\n", "e1\ne2\ne3\n")


def test_fifty_concurrent_execs(client: AgentClient) -> None:
    handles = [client.start("sh", "-c", f"sleep 0.2; echo {i}; exit {i % 7}") for i in range(50)]
    results = [h.wait(60) for h in handles]
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(50)]
    assert [r.exit_code for r in results] == [i % 7 for i in range(50)]
    assert len({r.pid for r in results}) == 50


def test_concurrent_execs_from_threads(client: AgentClient) -> None:
    out: dict[int, str] = {}

    def run(i: int) -> None:
        out[i] = client.exec("echo", str(i)).stdout

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {i: f"{i}\n" for i in range(20)}


def test_timeout_kills_the_process_group(client: AgentClient) -> None:
    with pytest.raises(ExecTimeoutError) as info:
        client.shell("echo before; sleep 30 & sleep 30; echo never", timeout=1.5)
    partial = info.value.result
    assert partial.timed_out and partial.signal == signal.SIGKILL and partial.stdout == "before\n"
    # the background sleep was in the same process group: nothing of it is left holding the pipe
    assert client.exec("true").exit_code == 0


def test_timeout_not_reached(client: AgentClient) -> None:
    r = client.exec("echo", "quick", timeout=30)
    assert r.stdout == "quick\n" and not r.timed_out


def test_kill(client: AgentClient) -> None:
    h = client.start("sleep", "60")
    assert h.pid() > 0
    h.kill(signal.SIGTERM)
    r = h.wait(30)
    assert r.signal == signal.SIGTERM and r.exit_code is None


def test_kill_after_exit_is_harmless(client: AgentClient) -> None:
    h = client.start("true")
    h.wait(30)
    h.kill()
    assert client.exec("echo", "alive").stdout == "alive\n"


def test_background_child_does_not_block_exit(client: AgentClient) -> None:
    r = client.shell("sleep 30 & echo started", timeout=20)
    assert r.exit_code == 0 and r.stdout == "started\n"


def test_command_not_found(client: AgentClient) -> None:
    with pytest.raises(ExecError, match="No such file"):
        client.exec("/definitely/not/here")


def test_bad_cwd(client: AgentClient) -> None:
    with pytest.raises(ExecError, match="No such file"):
        client.exec("true", cwd="/definitely/not/here")


def test_env_and_cwd(client: AgentClient, tmp_path) -> None:
    r = client.shell("echo $GREETING; pwd", env={"GREETING": "hi there"}, cwd=str(tmp_path))
    assert r.stdout == f"hi there\n{tmp_path}\n"


def test_path_is_searched(client: AgentClient) -> None:
    assert client.exec("sh", "-c", "command -v sh").exit_code == 0


def test_pty(client: AgentClient) -> None:
    r = client.exec("sh", "-c", "test -t 0 && test -t 1 && stty size", pty=True)
    assert r.exit_code == 0
    assert r.stdout.strip() == "24 80"


def test_streaming_callbacks(client: AgentClient) -> None:
    seen_out: list[bytes] = []
    seen_err: list[bytes] = []
    r = client.shell("echo a; echo b >&2; echo c", on_stdout=seen_out.append, on_stderr=seen_err.append)
    assert b"".join(seen_out) == b"a\nc\n" == r.stdout_bytes
    assert b"".join(seen_err) == b"b\n"


def test_failing_callback_fails_its_exec_and_kills_it(client: AgentClient) -> None:
    def explode(_chunk: bytes) -> None:
        raise RuntimeError("callback broke")

    with pytest.raises(RuntimeError, match="callback broke"):
        client.exec("sh", "-c", "echo first; sleep 60", on_stdout=explode, timeout=30)
    assert client.exec("echo", "still fine").stdout == "still fine\n"


def test_invalid_argv_is_a_config_error(client: AgentClient) -> None:
    from pytest_microsandbox.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError):
        client.exec()
    with pytest.raises(InvalidConfigError):
        client.exec("true", env={"A=B": "x"})


def test_wait_ready_and_a_dead_agent(native_agent, client: AgentClient) -> None:
    assert client.wait_ready(10).pid == native_agent.proc.pid
    native_agent.proc.kill()
    native_agent.proc.wait()
    with pytest.raises(BootError):
        client.wait_ready(10)


def test_ping_and_hello(client: AgentClient) -> None:
    assert client.ping(b"\x00\xffpayload") == b"\x00\xffpayload"
    info = client.hello()
    assert info.version == 1 and info.name == "msb-agent" and not info.booted and info.kernel_release


def test_shutdown_ends_a_native_agent(native_agent, client: AgentClient) -> None:
    client.shutdown()
    assert native_agent.proc.wait(10) == 0


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_host_hangup_kills_running_commands(native_agent, client: AgentClient) -> None:
    h = client.start("sleep", "60")
    pid = h.pid()
    assert _alive(pid)
    native_agent.stop()
    assert native_agent.proc.returncode == 0
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)


def test_port_on_a_tty_is_made_raw() -> None:
    """`--port` on a terminal (how an hvc console port looks): the agent puts it in raw mode before speaking."""
    import os
    import subprocess
    import termios

    from agent_harness import AGENT

    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    os.close(slave)
    proc = subprocess.Popen([str(AGENT), "--port", slave_path], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while termios.tcgetattr(master)[3] & termios.ICANON:  # the agent's cfmakeraw shows on our side too
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        client = AgentClient(master, request_timeout=30)
        data = bytes(range(256)) * 64  # every byte value, CR and LF and ^D and ^C included
        assert client.exec("cat", stdin=data).stdout_bytes == data
        client.shutdown()
        assert proc.wait(10) == 0
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stdin_window_keeps_the_connection_free(client: AgentClient) -> None:
    """A command that never reads stdin: our writer waits on its window, and KILL still gets through."""
    h = client.start("sleep", "60", stdin_stream=True)
    h.pid()
    writer = threading.Thread(target=h.write_stdin, args=(b"z" * (20 << 20),))
    writer.start()
    assert client.exec("echo", "connection still free").stdout == "connection still free\n"
    h.kill()
    assert h.wait(30).signal == 9
    writer.join(30)
    assert not writer.is_alive()


def test_stdin_acks_let_big_streams_through(client: AgentClient) -> None:
    data = bytes(range(256)) * (40 << 12)  # 40 MiB, far past the window
    h = client.start("sha256sum", stdin_stream=True)
    h.write_stdin(data)
    h.close_stdin()
    assert h.wait(120).stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_close_from_a_callback(native_agent) -> None:
    from pytest_microsandbox.errors import AgentError

    c = AgentClient(native_agent.sock, owns_transport=False)
    with pytest.raises(AgentError):
        c.exec("sh", "-c", "echo x; sleep 30", on_stdout=lambda _chunk: c.close(), timeout=20)
    with pytest.raises(AgentError):
        c.exec("true")
    c.close()


@pytest.mark.parametrize("pty", [False, True])
def test_commands_inherit_no_agent_fds(client: AgentClient, pty: bool) -> None:
    busy = client.start("sleep", "30", stdin_stream=True, pty=True)  # other live streams hold fds in the agent
    busy.pid()
    fds = client.exec("ls", "-1", "/proc/self/fd", pty=pty).stdout.split()
    assert fds == ["0", "1", "2", "3"]  # stdio, and the directory ls is reading
    busy.kill()
    busy.wait(30)


def test_interactive_stdin_from_a_callback(client: AgentClient) -> None:
    """Answering output with input from inside the callback (the reader thread) must not deadlock."""
    holder: dict[str, object] = {}

    def on_out(chunk: bytes) -> None:
        if b"name?" in chunk:
            holder["h"].write_stdin(b"x" * (3 << 20) + b"\nworld\n")  # more than a window, from the reader thread

    h = client.start(
        "sh",
        "-c",
        "read go; echo name?; read junk; read who; echo hello $who",
        stdin_stream=True,
        on_stdout=on_out,
        timeout=60,
    )
    holder["h"] = h
    h.write_stdin(b"go\n")  # only now may the command ask: the callback then finds the handle
    assert h.wait().stdout == "name?\nhello world\n"


def test_input_after_the_command_closed_its_stdin_is_dropped_not_an_error(client: AgentClient) -> None:
    """A command may close its stdin and go on running (or be killed while input is on its way): what the host
    sends after that is dropped, and the command's result is still its own."""
    h = client.start("sh", "-c", "exec 0<&-; sleep 1; echo done", stdin_stream=True)
    h.pid()
    time.sleep(0.3)  # its stdin is closed by now
    for _ in range(3):
        h.write_stdin(b"x" * 100_000)  # the first write finds the pipe closed; the later ones arrive after that
    result = h.wait(30)
    assert (result.exit_code, result.stdout) == (0, "done\n")
