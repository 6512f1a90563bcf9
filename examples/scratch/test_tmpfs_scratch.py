"""A size-limited scratch space in memory: work that fills it fails inside the sandbox, not on the host."""


def test_scratch_space_is_limited(sandbox_factory, tmpfs_mount):
    sb = sandbox_factory(volumes={"/scratch": tmpfs_mount(size_mib=8)})
    assert sb.shell("head -c 4M /dev/zero > /scratch/ok").exit_code == 0
    full = sb.shell("head -c 16M /dev/zero > /scratch/too-big")
    assert full.exit_code != 0 and "No space left on device" in full.stderr


def test_scratch_can_forbid_running_binaries(sandbox_factory, tmpfs_mount):
    sb = sandbox_factory(volumes={"/scratch": tmpfs_mount(size_mib=8, noexec=True)})
    sb.shell("cp /bin/true /scratch/true")
    assert sb.shell("/scratch/true").exit_code == 126  # permission denied: noexec
