"""Mount the project's source read-only: the code under test can read it but never change it."""

from pathlib import Path

SOURCE = Path(__file__).parent


def test_source_is_readable_not_writable(sandbox_factory, bind_mount):
    sb = sandbox_factory(volumes={"/src": bind_mount(SOURCE, readonly=True)})
    assert "def test_source_is_readable_not_writable" in sb.shell("cat /src/test_readonly_source.py").stdout
    denied = sb.shell("echo x >> /src/test_readonly_source.py")
    assert denied.exit_code != 0 and "Read-only file system" in denied.stderr
