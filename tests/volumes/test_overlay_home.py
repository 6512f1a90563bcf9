"""A home on an overlayfs whose volumes are in the lower layer (a home baked into an image or a container): the
directory cannot be renamed aside (EXDEV), so removal deletes in place and still never shows a half volume."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_microsandbox import sync

REMOVE_IN_OVERLAY = """
import os, sys
from pytest_microsandbox import sync
merged = sys.argv[1]
try:
    os.rename(os.path.join(merged, "volumes", "baked"), os.path.join(merged, "volumes", "probe"))
except OSError as err:
    print("rename:", err.errno)
sync.Volume.get("baked", home=merged).remove()
listed = sorted(h.name for h in sync.Volume.list(home=merged))
print("left:", listed, sorted(os.listdir(os.path.join(merged, "volumes"))))
"""


def test_a_volume_in_an_overlays_lower_layer_is_removed_in_place(tmp_path: Path) -> None:
    lower, upper, work, merged = (tmp_path / d for d in ("lower", "upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    volume = sync.Volume.create("baked", home=lower)
    volume.fs.mkdir("deep/er")
    volume.fs.write("deep/er/file.txt", b"x" * 1000)
    sync.Volume.create("kept", home=lower)
    options = "" if os.geteuid() == 0 else "userxattr,"  # an unprivileged overlay keeps its xattrs in user.*
    script = textwrap.dedent(f"""
        mount -t overlay overlay -o {options}lowerdir={lower},upperdir={upper},workdir={work} {merged} || exit 77
        exec {sys.executable} -c '{REMOVE_IN_OVERLAY}' {merged}
    """)
    # a mount namespace of our own (a user namespace too when not root: overlayfs mounts there since Linux 5.11)
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    done = subprocess.run([*unshare, "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip(f"this machine cannot mount an overlayfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert "rename: 18" in done.stdout  # the case this test is about: the filesystem refuses the rename
    assert "left: ['kept'] ['kept']" in done.stdout
    assert {h.name for h in sync.Volume.list(home=lower)} == {"baked", "kept"}  # the lower layer is untouched
