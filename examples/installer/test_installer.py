"""Test an installer that writes to /usr for real, without touching the machine that runs the tests."""

import os

INSTALLER = """
set -e
mkdir -p /usr/local/bin
cat > /usr/local/bin/hello-tool <<'SH'
#!/bin/sh
echo "hello from the tool"
SH
chmod 755 /usr/local/bin/hello-tool
"""


def test_installer_puts_a_working_tool_on_path(sandbox):
    assert sandbox.shell(INSTALLER).exit_code == 0
    result = sandbox.shell("hello-tool")
    assert result.exit_code == 0 and result.stdout == "hello from the tool\n"
    assert not os.path.exists("/usr/local/bin/hello-tool")  # the host is untouched


def test_each_test_starts_clean(sandbox):
    assert sandbox.shell("command -v hello-tool").exit_code != 0
