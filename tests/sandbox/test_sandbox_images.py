"""A sandbox of an image other than ``host``: a root directory imported into the image cache (``dir:``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox")


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (busybox-static)")
def test_dir_image_is_the_root(make_sandbox, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "cat", "echo", "ls"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "marker").write_text("from the image")
    sb = make_sandbox(image=f"dir:{rootfs}", env={"PATH": "/bin"})
    assert sb.exec("cat", "/etc/marker").stdout == "from the image"
    assert sb.shell("echo changed > /etc/marker && cat /etc/marker").stdout == "changed\n"
    assert (rootfs / "etc" / "marker").read_text() == "from the image"  # the image stays untouched (overlay)
    assert not sb.fs.exists("/usr/bin/python3")  # nothing of the host's programs
